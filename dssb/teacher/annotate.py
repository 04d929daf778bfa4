"""Annotate a split with a teacher: rationales and labels, n samples per input, nothing lost.

Paper Sec. 3.1 (Hsieh et al. 2023): a teacher answers each input with few-shot chain of
thought; its rationale and label become the student's targets. Here the teacher is any open
model (dssb.teacher.backends), the prompt a versioned file (dssb.teacher.prompts), and n > 1
samples per input are majority-voted over their parsed labels (self-consistency, Wang et al.
2023). Every answer goes to the SQLite cache (dssb.teacher.cache) the moment it arrives: a killed
run restarts where it stopped, and a finished one reruns from the cache without a request.
Outputs follow the official layout under the teacher's name (dssb.teacher.layout).
"""

import asyncio
import os
import sys
import time
from typing import Optional

from dssb.data import metrics
from dssb.data import sources
from dssb.data import teacher_outputs
from dssb.teacher import backends as backends_lib
from dssb.teacher import layout
from dssb.teacher import prompts as prompts_lib
from dssb.teacher import votes
from dssb.teacher.cache import Cache, make_key
from dssb.teacher.config import TeacherConfig

CACHE_NAME = 'annotation_cache.sqlite'


def default_cache(out_dir: str) -> str:
  """OUT/annotation_cache.sqlite (SQLite needs a local disk: ~/.cache for a remote OUT)."""
  if '://' in out_dir:
    return os.path.join(os.path.expanduser('~'), '.cache', 'dssb', CACHE_NAME)
  return os.path.join(out_dir, CACHE_NAME)


class _Progress:
  """tqdm over samples, with completion tokens per second and unparseable answers so far."""

  def __init__(self, total, initial, dataset, enabled):
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    self.bar = tqdm(total=total, initial=initial, unit='sample', dynamic_ncols=True,
                    mininterval=1.0, file=sys.stderr, disable=not enabled)
    self.dataset, self.start, self.tokens, self.unparsed, self.sent = dataset, time.time(), 0, 0, 0

  def update(self, sample):
    self.sent += 1
    self.tokens += sample.completion_tokens or 0
    self.unparsed += bool(teacher_outputs.parse(self.dataset, sample.text).failure)
    rate = self.tokens / max(time.time() - self.start, 1e-9)
    self.bar.set_postfix_str(f'{rate:.0f} tok/s, unparsed {self.unparsed}', refresh=False)
    self.bar.update(1)


async def _request_all(backend, cache, jobs, config, prompt, progress):
  """Sends the jobs with `concurrency` workers; each answer is committed when it arrives."""
  queue = iter(jobs)

  async def worker():
    for key, text, seed, body in queue:
      sample = await backend.complete(body)
      cache.put(key, teacher=config.name, prompt=prompt.identity, text=text, seed=seed,
                request=body, response=sample.to_json())
      progress.update(sample)

  workers = [asyncio.ensure_future(worker()) for _ in range(min(config.concurrency, len(jobs)))]
  try:
    await asyncio.gather(*workers)
  finally:
    for w in workers:
      w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


def _plan(config, backend, prompt, rows, sampling):
  """Per row its n cache keys, and the unique requests {key: (text, seed, body)}."""
  keys, requests = [], {}
  for row in rows:
    row_keys = []
    for i in range(config.n):
      seed = config.seed + i
      key = make_key(config.name, backend.identity, prompt.identity, row['input'], sampling,
                     seed)
      row_keys.append(key)
      if key not in requests:
        requests[key] = (row['input'], seed)
    keys.append(row_keys)
  return keys, requests


def _percent(hits):
  return round(100.0 * sum(hits) / len(hits), 4) if hits else None


def assemble(dataset: str, rows: list, keys: list, results: dict, n: int):
  """(completions for the CoT file, one record per row, summary fields) from cached answers."""
  completions, records, all_parsed, chosen_parsed = [], [], [], []
  hits_majority, hits_samples, hits_first, agreements, logprobs = [], [], [], [], []
  for row, row_keys in zip(rows, keys):
    samples = [results[k]['response'] for k in row_keys]
    parsed = [teacher_outputs.parse(dataset, s['text'].lstrip(), row.get('choices'))
              for s in samples]
    vote = votes.majority(dataset, [None if p.failure else p.label for p in parsed])
    chosen = vote.winner if vote.winner is not None else 0
    label = parsed[chosen].label if vote.winner is not None else None
    correct = [not p.failure and votes.is_correct(dataset, p.label, row['label']) for p in parsed]
    hits_majority.append(label is not None and votes.is_correct(dataset, label, row['label']))
    hits_samples.extend(correct)
    hits_first.append(correct[0])
    agreements.append(vote.agreement)
    all_parsed.extend(parsed)
    chosen_parsed.append(parsed[chosen])
    completions.append(samples[chosen]['text'].lstrip())
    for s in samples:
      if s.get('token_logprobs'):
        logprobs.extend(x for x in s['token_logprobs'] if x is not None)
    records.append({
        'row': row['row'], 'id': row['id'], 'gold': row['label'], 'label': label,
        'correct': hits_majority[-1], 'agreement': vote.agreement, 'votes': vote.counts,
        'chosen': chosen,
        'samples': [{'text': s['text'], 'finish_reason': s['finish_reason'], 'label': p.label,
                     'failure': p.failure, 'truncated': p.truncated,
                     'no_answer_marker': p.no_answer_marker,
                     'completion_tokens': s.get('completion_tokens'),
                     'logprob': sum(x for x in s['token_logprobs'] if x is not None)
                     if s.get('token_logprobs') else None}
                    for s, p in zip(samples, parsed)]})
  histogram = {f'{k}/{n}': sum(round(a * n) == k for a in agreements) for k in range(n, -1, -1)}
  fields = {
      'accuracy': {'majority': _percent(hits_majority), 'per_sample': _percent(hits_samples),
                   'first_sample': _percent(hits_first)},
      'parse': {'samples': teacher_outputs.failure_report(all_parsed),
                'chosen': teacher_outputs.failure_report(chosen_parsed)},
      'agreement': {'mean': round(sum(agreements) / max(len(agreements), 1), 4),
                    'unanimous': _percent([a == 1.0 for a in agreements]),
                    'histogram': histogram},
      'mean_token_logprob': round(sum(logprobs) / len(logprobs), 4) if logprobs else None,
  }
  return completions, records, fields


def annotate(config: TeacherConfig, dataset: str, split: str, out_dir: str, *,
             data_dir: Optional[str] = None, limit: Optional[int] = None,
             cache_path: Optional[str] = None, progress: bool = True) -> dict:
  """Annotates one source split; returns the summary (also written beside the outputs).

  Args:
    config: the teacher (dssb.teacher.config.load).
    dataset: 'cqa', 'svamp', 'esnli' or 'anli1'.
    split: a source split of the dataset ('train', 'test', and 'valid' for the NLI sets).
    out_dir: becomes a data folder: DSSB_DATA_DIR=out_dir trains on the outputs.
    data_dir: the source data folder (default $DSSB_DATA_DIR).
    limit: annotate the first `limit` rows only (the out folder gets those rows as its input).
    cache_path: the SQLite cache (default out_dir/annotation_cache.sqlite).
    progress: show the progress bar.
  """
  rows = sources.read_examples(dataset, split, data_dir)[:limit]
  prompt = prompts_lib.load(config.prompt, dataset)
  folder = layout.prepare(out_dir, dataset, split, config.name, data_dir, limit)
  sampling = config.sampling(prompt.stop)
  cache = Cache(cache_path or default_cache(out_dir))

  async def run():
    backend = backends_lib.create(config)
    try:
      keys, requests = _plan(config, backend, prompt, rows, sampling)
      cached = cache.get_many(requests)
      jobs = [(key, text, seed, backend.request(prompt, text, sampling, seed))
              for key, (text, seed) in requests.items() if key not in cached]
      print(f'annotate {dataset} {split}: {len(rows)} inputs x {config.n} samples, '
            f'{len(requests)} distinct requests: {len(cached)} cached, {len(jobs)} to send to '
            f'{backend.describe()}; prompt {prompt.identity}', file=sys.stderr, flush=True)
      bar = _Progress(len(requests), len(cached), dataset, progress)
      start = time.time()
      try:
        await _request_all(backend, cache, jobs, config, prompt, bar)
      finally:
        bar.bar.close()
      return keys, requests, len(cached), len(jobs), time.time() - start, bar.tokens, backend
    finally:
      await backend.aclose()

  try:
    keys, requests, n_cached, n_sent, seconds, tokens, backend = asyncio.run(run())
    results = cache.get_many(requests)
  finally:
    cache.close()
  completions, records, fields = assemble(dataset, rows, keys, results, config.n)
  exemplar_inputs = {ex['input'] for ex in prompt.exemplars}
  summary = {
      'teacher': config.name, 'backend': backend.identity, 'prompt': prompt.identity,
      'prompt_file': prompt.path, 'dataset': dataset, 'split': split, 'rows': len(rows),
      'n': config.n, 'sampling': sampling, 'seed': config.seed, **fields,
      'metric': metrics.metric_fns(dataset)[0].__name__,
      'exemplar_overlap': sum(r['input'] in exemplar_inputs for r in rows),
      'requests': {'distinct': len(requests), 'cached_before': n_cached, 'sent': n_sent,
                   'seconds': round(seconds, 3),
                   'samples_per_second': round(n_sent / seconds, 3) if n_sent else None,
                   'completion_tokens_per_second': round(tokens / seconds, 1) if n_sent
                   else None},
      'cache': cache.path,
  }
  summary['files'] = layout.write_outputs(folder, split, completions, records, summary)
  return summary


def describe(summary: dict) -> str:
  """A few lines for people."""
  acc, parse, agree = summary['accuracy'], summary['parse'], summary['agreement']
  failed = parse['samples']['n'] - parse['samples']['ok']
  return (f"teacher {summary['teacher']} on {summary['dataset']} {summary['split']} "
          f"({summary['rows']} inputs x {summary['n']}): accuracy vs gold "
          f"{acc['majority']}% (majority vote; per sample {acc['per_sample']}%)\n"
          f"  unparseable samples {failed}/{parse['samples']['n']} "
          f"(empty label {parse['samples']['empty_label']}, label not in set "
          f"{parse['samples']['label_not_in_set']}); chosen completions unparseable "
          f"{parse['chosen']['n'] - parse['chosen']['ok']}/{parse['chosen']['n']}\n"
          f"  vote agreement {agree['mean']} (unanimous {agree['unanimous']}%); requests sent "
          f"{summary['requests']['sent']}, from cache {summary['requests']['cached_before']}\n"
          f"  outputs: {summary['files']['completions']}")
