"""Annotation throughput against dssb.serve: concurrency 16 vs 1, and a fully cached rerun.

One server (a T5 v1.1 small-sized model, random init: 77M parameters, vocabulary 32128; the
SVAMP 1000-piece SentencePiece model for text), the same inputs (the first SVAMP train rows, bare
prompt), one sample per input, max_tokens decoded per request (a random model practically never
emits EOS, so every request costs the same). Rounds alternate 1 / 16 / 16 / 1 ... after a
warm-up that compiles every decode shape they can meet; each round starts from an empty cache. The
speedup is the ratio of median throughputs; it comes from the server decoding concurrent requests
as one batch.
Then the same command reruns on a full cache, as a user would run it (a subprocess, timed whole).

  python experiments/bench_annotate.py [--rounds 3] [--inputs 32] [--max_tokens 32]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'experiments'))

import perf_report  # pylint: disable=g-import-not-at-top,wrong-import-position


def _model(workdir):
  from dssb import checkpoints  # pylint: disable=g-import-not-at-top
  from dssb.model import T5Config, init_params  # pylint: disable=g-import-not-at-top
  config = T5Config(vocab_size=32128, d_model=512, num_heads=6, head_dim=64, d_ff=1024,
                    num_encoder_layers=8, num_decoder_layers=8, dropout_rate=0.0)
  path = os.path.join(workdir, 't5_small_random')
  checkpoints.export_hf(config, init_params(config), path)
  return path, checkpoints.param_count(init_params(config))


def _serve(checkpoint, vocab, workdir, max_batch, batch_wait_ms):
  env = dict(os.environ, PYTHONPATH=REPO)
  proc = subprocess.Popen(
      [sys.executable, '-m', 'dssb.serve', '--checkpoint', checkpoint, '--vocab', vocab,
       '--port', '0', '--model_name', 'bench', '--max_batch', str(max_batch),
       '--max_tokens_limit', '256', '--batch_wait_ms', str(batch_wait_ms)],
      cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
      stderr=open(os.path.join(workdir, 'serve.err'), 'w'))
  port = int(re.search(r':(\d+)/v1', proc.stdout.readline()).group(1))
  return proc, port


def _health(port):
  with urllib.request.urlopen(f'http://127.0.0.1:{port}/health') as r:
    return json.load(r)


def _config_file(workdir, port, concurrency, max_tokens):
  path = os.path.join(workdir, f'bench_c{concurrency}.gin')
  with open(path, 'w') as f:
    f.write('from __gin__ import dynamic_registration\nfrom dssb.teacher import config\n'
            f"config.TeacherConfig:\n  name = 'bench'\n  model = 'bench'\n"
            f"  base_url = 'http://127.0.0.1:{port}/v1'\n  api_key_env = ''\n"
            f"  prompt = 'bare_v1'\n  n = 1\n  temperature = 1.0\n  max_tokens = {max_tokens}\n"
            f'  concurrency = {concurrency}\n  timeout_s = 600.0\n')
  return path


def _compile_shapes(port, vocab_path, inputs, max_tokens):
  """Sends one request of b prompts for every batch bucket b <= 16 and every input-length
  bucket of the benchmark's inputs, so that no round pays for a compilation."""
  import openai  # pylint: disable=g-import-not-at-top
  from dssb import inference  # pylint: disable=g-import-not-at-top
  from dssb.data import sources  # pylint: disable=g-import-not-at-top
  tokenizer = inference.Tokenizer(vocab_path)
  texts = [r['input'] for r in sources.read_examples('svamp', 'train')[:inputs]]
  by_bucket = {}
  for text in texts:
    by_bucket.setdefault(inference.bucket(len(tokenizer.encode(text))), text)
  client = openai.OpenAI(base_url=f'http://127.0.0.1:{port}/v1', api_key='none', timeout=600)
  for text in by_bucket.values():
    for rows in (1, 2, 4, 8, 16):
      client.completions.create(model='bench', prompt=[text] * rows, max_tokens=max_tokens,
                                temperature=1.0, seed=0)
  return sorted(by_bucket)


def _round(config_path, out, inputs, port):
  from dssb.teacher import annotate, config  # pylint: disable=g-import-not-at-top
  before = _health(port)
  summary = annotate.annotate(config.load(config_path), 'svamp', 'train', out, limit=inputs,
                              progress=False)
  after = _health(port)
  batches = after['batches'] - before['batches']
  return {'samples_per_second': summary['requests']['samples_per_second'],
          'seconds': summary['requests']['seconds'], 'sent': summary['requests']['sent'],
          'mean_batch_rows': (after['rows'] - before['rows']) / max(batches, 1)}


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--inputs', type=int, default=32)
  parser.add_argument('--max_tokens', type=int, default=32)
  parser.add_argument('--batch_wait_ms', type=float, default=15.0,
                      help="dssb.serve's quiet gap that closes a batch (its default: 15)")
  parser.add_argument('--out', default=os.path.join(REPO, 'results', 'perf',
                                                    'annotate_benchmark.json'))
  args = parser.parse_args()
  if not os.environ.get('DSSB_DATA_DIR'):
    os.environ['DSSB_DATA_DIR'] = os.path.normpath(os.path.join(REPO, '..', 'shared',
                                                                'dss_data'))
  from dssb.data import vocab  # pylint: disable=g-import-not-at-top
  vocab_path = vocab.cached_vocab('svamp')
  workdir = tempfile.mkdtemp(prefix='bench_annotate_')
  checkpoint, n_params = _model(workdir)
  proc, port = _serve(checkpoint, vocab_path, workdir, 16, args.batch_wait_ms)
  try:
    configs = {c: _config_file(workdir, port, c, args.max_tokens) for c in (1, 16)}
    compiled = _compile_shapes(port, vocab_path, args.inputs, args.max_tokens)
    for c in (16, 1):  # warm-up of the client side
      _round(configs[c], os.path.join(workdir, f'warm{c}'), 16, port)
    runs = {1: [], 16: []}
    for r in range(args.rounds):
      for c in ((1, 16) if r % 2 == 0 else (16, 1)):
        runs[c].append(_round(configs[c], os.path.join(workdir, f'r{r}_c{c}'), args.inputs,
                              port))
        print(f'round {r} concurrency {c}: {runs[c][-1]}', flush=True)
    # a fully cached rerun, as a user runs it: the whole command, imports included
    out = os.path.join(workdir, 'r0_c16')
    start = time.time()
    rerun = subprocess.run(
        [sys.executable, '-m', 'dssb.teacher', 'annotate', '--teacher', configs[16],
         '--dataset', 'svamp', '--split', 'train', '--out', out, '--limit', str(args.inputs),
         '--no_progress'], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), text=True,
        capture_output=True, check=True)
    cached_seconds = time.time() - start
    with open(os.path.join(out, 'datasets', 'svamp', 'llm_bench', 'train_summary.json')) as f:
      cached = json.load(f)['requests']
    assert cached['sent'] == 0, rerun.stderr
  finally:
    proc.terminate()
    proc.wait(30)

  med = {c: statistics.median(x['samples_per_second'] for x in runs[c]) for c in runs}
  result = {
      'command': 'python experiments/bench_annotate.py ' + ' '.join(sys.argv[1:]),
      'model': f'T5 v1.1 small architecture, random init, {n_params} parameters, vocab 32128',
      'inputs': args.inputs, 'max_tokens': args.max_tokens,
      'server': {'max_batch': 16, 'batch_wait_ms': args.batch_wait_ms}, 'rounds': runs,
      'median_samples_per_second': med, 'speedup_16_vs_1': med[16] / med[1],
      'cached_rerun': {'command_seconds': round(cached_seconds, 2),
                       'requests_sent': cached['sent'],
                       'samples_from_cache': cached['cached_before']},
      'input_length_buckets_compiled': compiled,
      'cpu': os.cpu_count(),
  }
  lines = [
      f'model: {result["model"]}',
      f'{args.inputs} SVAMP inputs per round, {args.max_tokens} tokens each, '
      f'{args.rounds} alternating rounds per setting (after a warm-up)',
      f'concurrency  1: median {med[1]:.2f} samples/s '
      f'(mean decode batch {statistics.mean(x["mean_batch_rows"] for x in runs[1]):.1f} rows)',
      f'concurrency 16: median {med[16]:.2f} samples/s '
      f'(mean decode batch {statistics.mean(x["mean_batch_rows"] for x in runs[16]):.1f} rows)',
      f'speedup 16 vs 1: {result["speedup_16_vs_1"]:.2f}x',
      f'fully cached rerun (the whole command, Python start and imports included): '
      f'{cached_seconds:.1f} s, {cached["sent"]} requests sent',
  ]
  perf_report.write(args.out, result, lines)


if __name__ == '__main__':
  main()
