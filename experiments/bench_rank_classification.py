"""Rank classification vs greedy decoding: a T5 student's label for each CQA train row.

  DSSB_DATA_DIR=../shared/dss_data nice -n 10 .venv/bin/python \\
      experiments/bench_rank_classification.py --model_dir STUDENT_RUN \\
      --out results/perf/rank_classification.json

The student of results/perf/rank_classification.json (20 minutes on the shared 2-core CPU):
  DSSB_DATA_DIR=../shared/dss_data nice -n 10 .venv/bin/python -m dssb.train \\
      --gin_file=gin/runs/train.gin --gin_file=gin/models/t5_1_1_small.gin \\
      --gin_file=gin/cpu/tiny.gin --gin.MODEL_DIR="'/tmp/h4/student'" --gin.DATASET="'cqa'" \\
      --gin.RECIPE="'standard'" --gin.TRAIN_STEPS=150 --gin.EVAL_EVERY=150 \\
      --gin.train.eval_limit=64

Both read the same rows of CQA train (the trainer's train split, 8,766 rows x 5 choices; --every
k times every k-th row, so the lengths are those of the whole split) with the same model: a
trained student run (--model_dir, e.g. T5 v1.1 small trained from scratch on CQA by dssb.train
with gin/cpu/tiny.gin: the CPU runs' 1,000-piece vocabulary) or, without it, T5 v1.1 small's
architecture with random weights over that vocabulary. float32, batch 32 for every method.
  - rank classification (dssb.review.crossfit.rank_scores): one encoder pass per batch, each
    row's 5 candidates packed into one teacher-forced decoder row;
  - the previous rank classification (commit 6f69d70, kept here as the reference): candidates
    grouped by length, one decoder row per candidate over a gathered copy of its encoded input;
  - greedy decoding as the trainer evaluates (dssb.evaluate.predict over the seqio task, length-
    bucketed batches, two in flight on a one-CPU host, dssb.model.generate stopping when every
    row of a batch has emitted EOS) at the label task's max decode length: 64 (gin/runs/
    train.gin, the paper's) and 24 (gin/cpu/tiny.gin); and at each batch's longest gold label +
    EOS (a decode length no user can know: the most generous to decoding).
Rounds alternate over the methods after one untimed pass each (compiles); medians of per-row
time, projected to all 8,766 rows; ratios within this invocation; peak RSS (VmHWM) and load.
--profile breaks one batch of each rank classification down by phase (see profile_batch).
"""

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=g-import-not-at-top,wrong-import-position
import flax.linen as nn
import jax
import jax.numpy as jnp
from dssb import evaluate
from dssb import inference
from dssb import input_pipeline
from dssb import sharding
from dssb.data import splits
from dssb.data import tasks
from dssb.data import vocab as vocab_lib
from dssb.model import T5, T5Config, generate, init_params
from dssb.review import crossfit
import perf_report
# pylint: enable=g-import-not-at-top,wrong-import-position

BATCH = 32
FEATURE_LENGTHS = {'inputs': 1024, 'targets': 256}  # no CQA input is cut (longest 137 tokens)


# ------------------------------------------------------------------------------------------------
# The previous rank classification (commit 6f69d70), the reference for the speed-up


@functools.lru_cache(maxsize=2)
def _previous_scorer(config):
  t5 = T5(config)

  @jax.jit
  def encode(params, enc_BxL):
    return t5.apply({'params': params}, enc_BxL, method=T5.encode)

  @jax.jit
  def decode(params, encoded_BxLxE, enc_BxL, index_P, targets_PxT):
    inputs = jnp.pad(targets_PxT[:, :-1], ((0, 0), (1, 0)))
    logits = t5.apply({'params': params}, encoded_BxLxE[index_P], enc_BxL[index_P], inputs,
                      targets_PxT, method=T5.decode)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)),
                               targets_PxT[..., None], -1)[..., 0]
    return jnp.where(targets_PxT > 0, logp, 0.0).sum(-1)

  return encode, decode


def _previous_groups(tokenizer, inputs, candidates, start, batch_size):
  """One batch of the previous method: (encoder tokens, {length: (row index, targets, pairs)})."""
  batch_in = [tokenizer.encode(x) for x in inputs[start:start + batch_size]]
  batch_cands = [[tokenizer.encode(c) for c in cands]
                 for cands in candidates[start:start + batch_size]]
  rows = batch_size if len(inputs) > batch_size else inference.bucket(len(batch_in), 1)
  enc = np.zeros((rows, inference.bucket(max(map(len, batch_in)))), np.int32)
  for i, ids in enumerate(batch_in):
    enc[i, :len(ids)] = ids
  groups = {}
  for i, cands in enumerate(batch_cands):
    for j, t in enumerate(cands):
      groups.setdefault(inference.bucket(len(t), 4), []).append((i, j, t))
  out = {}
  for length, pairs in sorted(groups.items()):
    size = inference.bucket(len(pairs), 8)
    index, dec = np.zeros(size, np.int32), np.zeros((size, length), np.int32)
    for p, (i, _, t) in enumerate(pairs):
      index[p], dec[p, :len(t)] = i, t
    out[length] = (index, dec, pairs)
  return enc, out, [np.zeros(len(c)) for c in batch_cands]


def previous_rank_scores(model, inputs, candidates, batch_size=BATCH):
  tokenizer = inference.Tokenizer(model.vocab_path)
  encode, decode = _previous_scorer(model.config)
  out = []
  for start in range(0, len(inputs), batch_size):
    enc, groups, scores = _previous_groups(tokenizer, inputs, candidates, start, batch_size)
    encoded = encode(model.params, enc)
    for index, dec, pairs in groups.values():
      got = np.asarray(decode(model.params, encoded, enc, index, dec))
      for p, (i, j, _) in enumerate(pairs):
        scores[i][j] = got[p]
    out.extend(scores)
  return out


# ------------------------------------------------------------------------------------------------
# Profile: where one batch's time goes


def _timed(fn, *args, repeats=3):
  """(first call seconds (compile + run), median of later calls): jitted fn, outputs ready."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  runs = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    runs.append(time.perf_counter() - start)
  return first, statistics.median(runs)


def profile_batch(model, inputs, candidates) -> dict:
  """Milliseconds per phase of one batch of BATCH rows (a batch of the split's median lengths).

  Previous method: host tokenization and grouping; the encoder; per length group the gathered
  inputs' cross-attention keys/values alone (Decoder.init_cache on the gathered copies) and the
  whole decoder pass; the logits projection + log_softmax alone. New method: tokenization and
  packing on the host, the jitted encoder + packed decoder, the same cross K/V once per row.
  """
  config, params = model.config, model.params
  t5 = T5(config)
  tokenizer = inference.Tokenizer(model.vocab_path)
  out = {'rows': len(inputs)}
  start = time.perf_counter()
  enc, groups, _ = _previous_groups(tokenizer, inputs, candidates, 0, BATCH)
  out['previous host tokenize + group'] = time.perf_counter() - start
  encode, decode = _previous_scorer(config)
  compile_s, out['previous encoder'] = _timed(encode, params, enc)
  encoded = encode(params, enc)
  cross = jax.jit(lambda p, e: t5.apply({'params': p}, e, 1, method=T5.init_cache))
  out['previous cross K/V of gathered copies'] = 0.0
  out['previous decoder pass (cross K/V included)'] = 0.0
  out['logits + log_softmax alone (previous)'] = 0.0
  out['previous decoder tokens (padded)'] = 0
  out['previous compile'] = compile_s

  def logits_only(p, y):
    return jax.nn.log_softmax(t5.apply({'params': p}, y, False, method=lambda m, y, d: (
        m.decoder._logits(y, d))).astype(jnp.float32))

  logits_fn = jax.jit(logits_only)
  for index, dec, _ in groups.values():
    c, t = _timed(cross, params, encoded[index])
    out['previous cross K/V of gathered copies'] += t
    out['previous compile'] += c
    c, t = _timed(decode, params, encoded, enc, index, dec)
    out['previous decoder pass (cross K/V included)'] += t
    out['previous compile'] += c
    c, t = _timed(logits_fn, params, jnp.zeros(dec.shape + (config.d_model,), jnp.float32))
    out['logits + log_softmax alone (previous)'] += t
    out['previous decoder tokens (padded)'] += int(dec.size)
  out['previous decoder tokens (real)'] = int(sum((d > 0).sum() for _, d, _ in groups.values()))
  score = crossfit._packed_scorer(config)  # pylint: disable=protected-access
  tok_ids = [tokenizer.encode(x) for x in inputs]
  cand_ids = [[tokenizer.encode(c) for c in cs] for cs in candidates]
  start = time.perf_counter()
  _ = ([tokenizer.encode(x) for x in inputs],
       [[tokenizer.encode(c) for c in cs] for cs in candidates])
  out['new host tokenize'] = time.perf_counter() - start
  start = time.perf_counter()
  rows = crossfit._packed_order(tok_ids, cand_ids, BATCH)[0]  # pylint: disable=protected-access
  enc2, targets, dec_in, segments = crossfit._pack_rows(  # pylint: disable=protected-access
      tok_ids, cand_ids, rows, BATCH)
  out['new host pack'] = time.perf_counter() - start
  out['new compile'], out['new encoder + packed decoder'] = _timed(
      score, params, enc2, dec_in, targets, segments)
  _, out['new encoder alone'] = _timed(encode, params, enc2)
  encoded2 = encode(params, enc2)
  _, out['new cross K/V once per row'] = _timed(cross, params, encoded2)
  _, out['logits + log_softmax alone (new)'] = _timed(
      logits_fn, params, jnp.zeros(targets.shape + (config.d_model,), jnp.float32))
  out['new decoder tokens (padded)'] = int(targets.size)
  out['new decoder tokens (real)'] = int((targets > 0).sum())
  out['encoder tokens (padded): previous, new'] = [int(enc.size), int(enc2.size)]
  return {k: round(1000 * v, 1) if isinstance(v, float) else v for k, v in out.items()}


def flops_per_row(config: T5Config, enc_tokens: float, dec_tokens: float, cross_rows: float,
                  steps: float = 0.0) -> float:
  """Matmul FLOPs per row (2 per multiply-add, attention scores left out: short sequences):
  encoder over enc_tokens, cross K/V projected cross_rows times over them, the decoder's other
  matmuls and the logits over dec_tokens (teacher forcing) or `steps` tokens (greedy)."""
  e, inner, f = config.d_model, config.num_heads * config.head_dim, config.d_ff
  mlp = len(config.mlp_activations) * e * f + f * e
  encoder = config.num_encoder_layers * (4 * e * inner + mlp)
  cross_kv = config.num_decoder_layers * 2 * e * inner
  decoder = config.num_decoder_layers * (6 * e * inner + mlp) + e * config.vocab_size
  return 2.0 * (enc_tokens * encoder + cross_rows * enc_tokens * cross_kv +
                (dec_tokens + steps) * decoder)


# ------------------------------------------------------------------------------------------------


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model_dir', default=None, help='trained student run (default: random)')
  parser.add_argument('--every', type=int, default=8, help='time every k-th train row')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--methods', default='rank,previous,greedy64,greedy24,greedy_gold')
  parser.add_argument('--out', default='results/perf/rank_classification.json')
  parser.add_argument('--render', action='store_true',
                      help='rewrite the .md from the JSON at --out (no measuring)')
  args = parser.parse_args()
  if args.render:
    with open(args.out) as f:
      result = json.load(f)
    perf_report.write(args.out, result, summary_lines(result), measured=False)
    return
  all_rows = splits.load_split('cqa', 'train', teacher=None)
  vocab = vocab_lib.cached_vocab('cqa', 1000)
  if args.model_dir:
    model = inference.load_model(args.model_dir)
    model = inference.Model(model.config, model.params, vocab, model.source)
  else:
    config = T5Config(vocab_size=1024, d_model=512, num_heads=6, head_dim=64, d_ff=1024,
                      num_encoder_layers=8, num_decoder_layers=8,
                      mlp_activations=('gelu', 'linear'), tie_embeddings=False, dropout_rate=0.0)
    model = inference.Model(config, init_params(config), vocab,
                            'random T5 v1.1 small (vocab 1024)')
  config = model.config
  mesh, rules = sharding.make_mesh(), sharding.logical_axis_rules()
  task_name = tasks.get_task_name('cqa', 'standard', vocab_path=vocab)
  import seqio  # pylint: disable=g-import-not-at-top
  task = seqio.get_mixture_or_task(task_name)
  examples = input_pipeline.load_examples(task_name, 'train', FEATURE_LENGTHS)
  assert len(examples) == len(all_rows), (len(examples), len(all_rows))
  sel = np.arange(0, len(all_rows), args.every)
  sub = input_pipeline.Examples({k: [v[i] for i in sel] for k, v in examples.tokens.items()},
                                {k: [v[i] for i in sel] for k, v in examples.texts.items()},
                                examples.truncated)
  rows = [all_rows[i] for i in sel]
  inputs = [r['input'] for r in rows]
  candidates = [r['choices'] for r in rows]
  tokenizer = inference.Tokenizer(vocab)
  assert all(list(sub.tokens['inputs'][i]) == tokenizer.encode(x) for i, x in enumerate(inputs))
  make_global = lambda x: sharding.host_to_global(x, mesh)
  gold_steps = {}
  for _, batch in input_pipeline.eval_batches(sub, FEATURE_LENGTHS, BATCH):
    enc = batch['label']['encoder_input_tokens']
    gold_steps[enc.tobytes()] = int((batch['label']['decoder_target_tokens'] > 0).sum(1).max())
  stats = {}

  def rank():
    timings = {}
    scores = crossfit.rank_scores(model, inputs, candidates, BATCH, mesh, rules, timings=timings)
    stats['rank phases s'] = timings
    return [c[int(np.argmax(s))] for s, c in zip(scores, candidates)]

  def previous():
    with _context(mesh, rules):
      scores = previous_rank_scores(model, inputs, candidates)
    return [c[int(np.argmax(s))] for s, c in zip(scores, candidates)]

  def greedy(max_length):
    def decode(params, enc):
      steps = max_length or gold_steps[np.asarray(enc).tobytes()]
      return generate(config, params, enc, steps)
    preds, _, decoded = evaluate.predict(decode, model.params, sub, task, FEATURE_LENGTHS, BATCH,
                                         make_global, context=lambda: _context(mesh, rules))
    stats[f'greedy{max_length or "_gold"} decoded tokens per row'] = float(np.mean(decoded))
    return preds

  methods = {'rank': rank, 'previous': previous, 'greedy64': lambda: greedy(64),
             'greedy24': lambda: greedy(24), 'greedy_gold': lambda: greedy(None)}
  names = args.methods.split(',')
  profile = profile_batch(model, inputs[:BATCH], candidates[:BATCH])
  print(json.dumps(profile, indent=1), file=sys.stderr)
  answers, first = {}, {}
  for name in names:  # compile every shape once (untimed)
    start = time.perf_counter()
    answers[name] = methods[name]()
    first[name] = time.perf_counter() - start
    print(f'{name}: first pass {first[name]:.1f} s', file=sys.stderr, flush=True)
  times = {name: [] for name in names}
  loads = []
  for _ in range(args.rounds):
    for name in names:
      start = time.perf_counter()
      methods[name]()
      times[name].append((time.perf_counter() - start) / len(inputs))
      loads.append(os.getloadavg()[0])
      print(f'{name}: {1000 * times[name][-1]:.2f} ms/row', file=sys.stderr, flush=True)
  medians = {k: statistics.median(v) for k, v in times.items()}
  gold = [r['label'] for r in rows]
  agree = {}
  if 'rank' in answers:
    for name in names:
      if name.startswith('greedy'):
        among = [i for i, a in enumerate(answers[name]) if a in candidates[i]]
        agree[name] = {'decode is a candidate': len(among),
                       'rank picks the decode': sum(answers['rank'][i] == answers[name][i]
                                                    for i in among)}
  enc_tokens = float(np.mean([len(x) for x in sub.tokens['inputs']]))
  cand_tokens = float(np.mean([sum(len(tokenizer.encode(c)) for c in cs) for cs in candidates]))
  greedy_steps = {k: v for k, v in stats.items() if 'decoded tokens' in k}
  result = {
      'command': 'DSSB_DATA_DIR=../shared/dss_data nice -n 10 .venv/bin/python '
                 'experiments/bench_rank_classification.py '
                 + (f'--model_dir {args.model_dir} ' if args.model_dir else '')
                 + f'--every {args.every} --rounds {args.rounds} --methods {args.methods} '
                 f'--out {args.out}',
      'model': model.source, 'config': {k: getattr(config, k) for k in (
          'vocab_size', 'd_model', 'num_heads', 'head_dim', 'd_ff', 'num_encoder_layers',
          'num_decoder_layers')},
      'rows_timed': len(inputs), 'train_rows': len(all_rows), 'candidates_per_row': 5,
      'batch': BATCH, 'mean_input_tokens': round(enc_tokens, 2),
      'mean_candidate_tokens_per_row': round(cand_tokens, 2),
      'greedy_mean_decoded_tokens_per_row': {k: round(v, 2) for k, v in greedy_steps.items()},
      'accuracy_vs_gold': {k: round(float(np.mean([a == g for a, g in zip(v, gold)])), 4)
                           for k, v in answers.items()},
      'rank_agrees_with_greedy': agree,
      'first_pass_seconds (compiles)': {k: round(v, 1) for k, v in first.items()},
      'ms_per_row': {k: [round(1000 * t, 3) for t in v] for k, v in times.items()},
      'median_ms_per_row': {k: round(1000 * v, 3) for k, v in medians.items()},
      'projected_seconds_all_train_rows': {k: round(v * len(all_rows), 1)
                                           for k, v in medians.items()},
      'rank_phases_last_round_s': {k: round(v, 2) for k, v in stats.get('rank phases s',
                                                                          {}).items()},
      'profile_one_batch_ms': profile,
      'gflops_per_row': {
          'rank (packed: cross K/V once)': round(flops_per_row(
              config, enc_tokens, cand_tokens, 1) / 1e9, 3),
          'previous rank (cross K/V per candidate)': round(flops_per_row(
              config, enc_tokens, cand_tokens, 5) / 1e9, 3),
          **{f'greedy, {k.split(" ")[0]} ({v:.1f} steps)': round(flops_per_row(
              config, enc_tokens, 0, 1, v) / 1e9, 3) for k, v in greedy_steps.items()},
          'encoder + cross K/V alone (shared floor)': round(flops_per_row(
              config, enc_tokens, 0, 1) / 1e9, 3)},
      'speedup_vs': {f'{k} / rank': round(medians[k] / medians['rank'], 2)
                     for k in names if k != 'rank' and 'rank' in medians},
      'target': '>= 3x (greedy / rank)',
      'load_average_during_rounds': [round(min(loads), 2), round(max(loads), 2)]}
  perf_report.write(args.out, result, summary_lines(result))


def summary_lines(r: dict) -> list:
  """The markdown summary of a result (every figure read from it)."""
  lines = [f'Model: {r["model"]}, {r["config"]}; {r["rows_timed"]} of {r["train_rows"]} rows '
           f'timed (every k-th), batch {r["batch"]}, {r["candidates_per_row"]} candidates per '
           f'row; mean input {r["mean_input_tokens"]} tokens, candidates '
           f'{r["mean_candidate_tokens_per_row"]} tokens per row (EOS included). Load average '
           'during the rounds '
           f'{r["load_average_during_rounds"]}.', '',
           '| method | median ms/row | rounds (ms/row) | projected s, 8,766 rows | time / rank\'s '
           '| accuracy vs gold |', '|---|---|---|---|---|---|']
  for k, v in r['median_ms_per_row'].items():
    ratio = r['speedup_vs'].get(f'{k} / rank', 1.0)
    lines.append(f'| {k} | {v:.1f} | {", ".join(f"{t:.1f}" for t in r["ms_per_row"][k])} | '
                 f'{r["projected_seconds_all_train_rows"][k]:,.0f} | {ratio:.2f}x | '
                 f'{r["accuracy_vs_gold"].get(k, float("nan")):.3f} |')
  lines += ['', 'Greedy decoded tokens per row (EOS included): '
            + ', '.join(f'{k}: {v}' for k, v in r['greedy_mean_decoded_tokens_per_row'].items()),
            '', 'Rank picks the greedy decode where the decode is a candidate: '
            + ', '.join(f'{k}: {v["rank picks the decode"]} of {v["decode is a candidate"]}'
                        for k, v in r['rank_agrees_with_greedy'].items()),
            '', 'Matmul GFLOPs per row (analytic, attention scores left out):', '']
  lines += [f'- {k}: {v}' for k, v in r['gflops_per_row'].items()]
  lines += ['', 'One batch of 32 rows, ms per phase (warm medians of 3 calls; compile: the first '
            'call, compile + one run):', '']
  lines += [f'- {k}: {v}' for k, v in r['profile_one_batch_ms'].items()]
  lines += ['', 'Rank classification phases over the last timed round (s): '
            + ', '.join(f'{k} {v}' for k, v in r['rank_phases_last_round_s'].items()),
            '', f'First (compiling) pass, s: {r["first_pass_seconds (compiles)"]}']
  return lines


@contextlib.contextmanager
def _context(mesh, rules):
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


if __name__ == '__main__':
  main()
