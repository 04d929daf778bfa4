"""Distilling step-by-step at the paper's settings: dssb's trainer and evaluation against the
official code's pipeline, on CQA, CPU, T5 v1.1-small size (random init), as ratios.

Training: batches of 64 CQA examples, each a 'label' and a 'rationale' sub-batch, feature
lengths 1024 inputs / 256 targets; every contender trains on the same examples.
  - dssb fixed: today's padding of every batch to 1024/256 (only --fixed_batch examples per
    round: at 64 it would need tens of GB and minutes per step here);
  - dssb bucketed (the default): each sub-batch and side padded to its length bucket;
  - dssb packed (packing=4): the same examples packed about 4 per row (dssb/packing.py);
  - dssb padded to each batch's own longest row: a diagnostic (it compiles a shape per batch)
    that separates the framework's speed from the padding each scheme adds;
  - official: the official run.py rebuilt in PyTorch: transformers' T5ForConditionalGeneration
    with the same weights, DataCollatorForSeq2Seq (pads each sub-batch to its longest row, labels
    with -100) on the 'predict' and the 'explain' features, two forward passes, alpha 0.5,
    clipping at 1.0, torch AdamW, linear decay.
Every timed step includes building its batch on the host. Rounds alternate the contenders; the
figures are medians over rounds of examples/s and non-pad tokens/s, and the per-round ratios to
the official pipeline. dssb's compile time is reported apart (AOT lower + compile per shape).

Evaluation: greedy decoding of 64 tokens over all of CQA validation, dssb (sorted by input
length, bucketed batches of 64, two batches decoding at once on this one-device CPU host, as
dssb.evaluate does by default; and one batch at a time, its own figure) against Hugging Face
`generate` on batches of 64 in order, padded to their longest row, as the official
Seq2SeqTrainer runs it (generation_max_length 64); the official trainer also runs a
teacher-forced forward pass per batch for the eval loss, timed apart. dssb's decoding is
compiled for each input bucket before the passes (reported apart); the passes alternate which
goes first (the order reverses every round). Both sides' ids are decoded to text by the task's
vocabulary, so the predictions compare like for like (a random model emits ids the HF tokenizer
decodes otherwise).
A breakdown on the longest sorted batch times decoding 1 and 64 tokens in both frameworks.
The evaluation part lives in paper_settings_eval.py; the settings, data and both models, which
the profilers share, in paper_settings_setup.py; the .md's text in paper_settings_summary.py.

Each part runs in a process of its own, one after another: the same-model check, the
evaluation (both frameworks' passes in one process, so their rounds alternate as before), and
every training contender in a fresh process per round, in the round's rotated order; each
warms up (dssb compiles each shape; both fault the step's buffers in) before its timed pass,
and the warm-ups are reported apart. A persistent compilation cache, one per invocation, makes
later rounds' compiles a read. Every process is restarted with glibc tunables that keep freed
memory (dssb/host_memory.py, as `python -m dssb.train` does; by default blocks under 32 MiB,
DSSB_KEEP_FREED_MEMORY=1 all): without them page faults took a third of dssb's step and a
seventh of PyTorch's here (results/perf/train_step_profile*.md).
Why a process per part: a kept heap holds every high-water mark its process reached. When
every part and contender ran in one process (until 2026-12-04), handing freed memory back
between parts (malloc_trim) did not bound training: on a reduced invocation (--rounds 1
--batches 1 --fixed_batch 1 --eval_rounds 1 --eval_limit 64, commit 3c5a574, stopped in its
first round) the peak RSS after the warm-ups was 10.5 GB (dssb bucketed), 10.5 (packed), 12.5
(official), 18.1 (longest row) and 18.2 GB (fixed), and 21.2 GB in the first round; 22.8 GB
at the documented settings (issue 22), on a 23 GB machine. Now the machine holds one part's
memory at a time plus this parent's (1.3 GB): the result records each process's peak RSS
(VmHWM) and the largest. At the documented settings that was 11.0 GB (the official pipeline's;
2026-12-05 04:29) and 15.8 GB (dssb bucketed's in one round; 08:08, paper_settings.md). On the
reduced invocation dssb bucketed's process reached 15.4 GB (packed 7.8, longest row 9.2,
official 11.0, fixed 5.4, evaluation 2.9 GB): a process's kept heap grows by about one
step's XLA temporaries (6.3 GB in results/perf/grad_accum.md) on a later step, then stays
(a throwaway script, 4 passes of the bucketed batch in one process: 9.7, 9.7, 15.9, 15.9 GB
after each): most likely small allocations split the hole the previous step's block left, so
the next block goes on top. A trainer process at these settings may reach the same
(grad_accum.md's 2 steps would not show it). experiments/bench_malloc_settings.py measures a
setting that bounds it (large blocks mmapped, huge pages) and its cost (0.88x the step speed).

The model is random (no pretrained weights here) and has T5's 32128 logits; the SentencePiece
vocabulary is trained on CQA. This machine is shared with other jobs: absolute figures move with
the load, the ratios of alternating rounds much less.

  DSSB_DATA_DIR=/work/shared/dss_data python -m dssb.data train_vocab --dataset cqa \\
      --vocab_size 8000 --out /tmp/cqa_8000.model
  DSSB_DATA_DIR=/work/shared/dss_data python experiments/bench_paper_settings.py \\
      --vocab /tmp/cqa_8000.model --rounds 3 --batches 1 --fixed_batch 2 --eval_rounds 2
  python experiments/bench_paper_settings.py --render  # the .md again from the JSON
"""

import argparse
import json
import os

# The shared settings, data and models; importing it first sets OMP_WAIT_POLICY and silences
# TensorFlow before torch and seqio load.
from paper_settings_setup import (ALPHA, BATCH, LENGTHS, LR, PACK_PER_ROW, PAPER_STEPS,
                                  hf_model, hf_tokenizer, load_cqa, model_config, non_pad_tokens,
                                  official_collate, official_features)
# pylint: disable=g-import-not-at-top,wrong-import-position,g-bad-import-order
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from dssb import host_memory, input_pipeline, optimizers, packing, sweep, train
from dssb.model import T5, init_params

import perf_report
from paper_settings_eval import eval_rounds
from paper_settings_summary import summary_lines
# pylint: enable=g-import-not-at-top,wrong-import-position,g-bad-import-order

DEFAULT_OUT = 'results/perf/paper_settings.json'
TRAIN_CONTENDERS = ('dssb_fixed', 'dssb_bucketed', 'dssb_packed', 'dssb_longest_row', 'official')
TRAIN_ORDER = ('dssb_bucketed', 'dssb_packed', 'official', 'dssb_longest_row', 'dssb_fixed')


# ---------------------------------------------------------------- dssb training


class DssbTrainer:
  """The trainer's own jitted step, compiled ahead of time once per batch shape; one train
  state for every dssb contender (the weights do not change the speed)."""

  def __init__(self, config, params):
    sched = optimizers.linear_decay_schedule(LR, PAPER_STEPS)
    tx = optimizers.adamw(sched)
    step = train.make_train_step(train.make_loss_fn(T5(config), ALPHA, 0.0, 0.0), tx, sched)
    self.jitted = jax.jit(step, donate_argnums=0)
    self.state = train.TrainState(jnp.int32(0), jax.tree.map(jnp.array, params),
                                  tx.init(params))
    self.rng = jax.random.PRNGKey(0)
    self.compiled, self.compile_s = {}, {}

  def run(self, batch, contender):
    key = (contender, str(jax.tree.map(np.shape, batch)))
    if key not in self.compiled:
      start = time.perf_counter()
      self.compiled[key] = self.jitted.lower(self.state, batch, self.rng).compile()
      self.compile_s[key] = time.perf_counter() - start
    self.state, metrics = self.compiled[key](self.state, batch, self.rng)
    return float(metrics['loss'])

  def compile_report(self, contender):
    times = [t for (name, _), t in self.compile_s.items() if name == contender]
    return {'compiled_shapes': len(times), 'compile_seconds': sum(times)}


def dssb_contenders(examples, batches_idx, fixed_idx, shape):
  """name -> list of zero-argument batch makers (each builds its batch when called)."""
  longest = lambda idx: input_pipeline.padded_lengths(examples, idx, LENGTHS, range(1, 1025))
  plans = packing.plan_steps(examples, np.concatenate(batches_idx), shape)
  return {
      'dssb_fixed': [lambda: input_pipeline.encdec_batch(examples, fixed_idx, LENGTHS)],
      'dssb_bucketed': [
          lambda idx=idx: input_pipeline.encdec_batch(
              examples, idx, input_pipeline.padded_lengths(
                  examples, idx, LENGTHS, input_pipeline.DEFAULT_LENGTH_BUCKETS))
          for idx in batches_idx],
      'dssb_packed': [lambda p=p: packing.packed_batch(examples, p, shape) for p in plans],
      'dssb_longest_row': [lambda idx=idx: input_pipeline.encdec_batch(examples, idx, longest(idx))
                           for idx in batches_idx],
  }


# ---------------------------------------------------------------- the official pipeline


def same_model_check(config, params, model, tokenizer, examples, idx):
  """Both pipelines' step-by-step loss on one batch with dropout off: the same function."""
  from transformers import DataCollatorForSeq2Seq  # pylint: disable=g-import-not-at-top
  batch = input_pipeline.encdec_batch(examples, idx, input_pipeline.padded_lengths(
      examples, idx, LENGTHS, input_pipeline.DEFAULT_LENGTH_BUCKETS))
  loss_fn = train.make_loss_fn(T5(config), ALPHA, 0.0, 0.0)
  ours = float(loss_fn(params, batch, jax.random.PRNGKey(0), enable_dropout=False)[0])
  collator = DataCollatorForSeq2Seq(tokenizer=tokenizer, model=model)
  inputs = official_collate(collator, official_features(examples, idx))
  model.eval()
  with torch.no_grad():
    theirs = float(ALPHA * model(**inputs['pred']).loss
                   + (1 - ALPHA) * model(**inputs['expl']).loss)
  return {'dssb_loss': ours, 'official_loss': theirs}


class OfficialTrainer:
  """run.py's TaskPrefixDataCollator + TaskPrefixTrainer.compute_loss + the HF Trainer's step."""

  def __init__(self, model, tokenizer):
    from transformers import DataCollatorForSeq2Seq  # pylint: disable=g-import-not-at-top
    from transformers import get_linear_schedule_with_warmup  # pylint: disable=g-import-not-at-top
    self.model = model.train()
    self.collator = DataCollatorForSeq2Seq(tokenizer=tokenizer, model=model)
    self.opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    self.sched = get_linear_schedule_with_warmup(self.opt, 0, PAPER_STEPS)

  def run(self, features):
    inputs = official_collate(self.collator, features)
    loss = (ALPHA * self.model(**inputs['pred']).loss
            + (1 - ALPHA) * self.model(**inputs['expl']).loss)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
    self.opt.step()
    self.sched.step()
    self.model.zero_grad(set_to_none=True)
    return float(loss.detach())


# ---------------------------------------------------------------- training rounds


def train_contender(args, name, examples, config, params, model, tokenizer):
  """One training contender in this (child) process: a warm-up pass over its batches (dssb:
  compiles each shape; both: faults the step's buffers in), reported apart, then the timed pass.
  Returns its figures for one round."""
  batches_idx = [input_pipeline.train_indices(len(examples), s, BATCH, seed=0)
                 for s in range(args.batches)]
  fixed_idx = batches_idx[0][:args.fixed_batch]
  shape = packing.packed_shape(examples, LENGTHS, BATCH, PACK_PER_ROW, seed=0)
  makers = dssb_contenders(examples, batches_idx, fixed_idx, shape)
  if name == 'official':
    official = OfficialTrainer(model, tokenizer)
    features = [official_features(examples, idx) for idx in batches_idx]
    run = lambda: [official.run(f) for f in features]
  else:
    trainer = DssbTrainer(config, params)
    run = lambda: [trainer.run(make(), name) for make in makers[name]]
  # The official collator pads to each sub-batch's longest row, as dssb_longest_row does.
  slots_of = makers['dssb_longest_row' if name == 'official' else name]
  out = {'examples': args.fixed_batch if name == 'dssb_fixed' else BATCH * args.batches,
         'non_pad_tokens': non_pad_tokens(
             examples, fixed_idx if name == 'dssb_fixed' else np.concatenate(batches_idx)),
         'token_share_of_slots': 1 - statistics.mean(
             input_pipeline.padding_fraction(make()) for make in slots_of),
         'packed_shape': {'rows': shape.rows, 'lengths': dict(shape.lengths),
                          'steps': len(makers['dssb_packed'])}}
  start = time.perf_counter()
  run()
  out['warmup_seconds'] = time.perf_counter() - start
  out['peak_rss_mib_after_warmup'] = host_memory.peak_rss_mib()
  start = time.perf_counter()
  run()
  out['seconds'] = time.perf_counter() - start
  if name != 'official':
    out.update(trainer.compile_report(name))
  return out


def train_rounds(args, tmp):
  """Alternating rounds, each contender a fresh child process per round (rotated order): the
  machine holds one contender's memory at a time, and each round's figures are a cold start's
  (the persistent compilation cache in tmp makes later rounds' compiles cheaper)."""
  rounds = []
  for r in range(args.rounds):
    order = TRAIN_ORDER[r % len(TRAIN_ORDER):] + TRAIN_ORDER[:r % len(TRAIN_ORDER)]
    figures = {name: run_child(args, name, r, tmp) for name in order}
    rounds.append({name: dict(f, examples_per_s=f['examples'] / f['seconds'],
                              tokens_per_s=f['non_pad_tokens'] / f['seconds'])
                   for name, f in figures.items()})
    print(f'train round {r}: ' + ', '.join(
        f'{n} {v["examples_per_s"]:.2f} ex/s ({v["peak_rss_mib"] / 1024:.1f} GB)'
        for n, v in rounds[-1].items()), flush=True)
  return summarize_train(rounds)


def summarize_train(rounds):
  """Medians over rounds of each contender's figures and of its per-round ratio to official."""
  med = lambda name, key: statistics.median(r[name][key] for r in rounds)
  ratio = lambda name: statistics.median(r[name]['examples_per_s'] / r['official']['examples_per_s']
                                         for r in rounds)
  first = rounds[0]
  out = {'examples_per_round': {name: f['examples'] for name, f in first.items()},
         'non_pad_tokens_per_round': {name: f['non_pad_tokens'] for name, f in first.items()},
         'packed_shape': first['official']['packed_shape'], 'rounds': rounds, 'contenders': {}}
  for name in TRAIN_CONTENDERS:
    c = out['contenders'][name] = {
        'median_examples_per_s': med(name, 'examples_per_s'),
        'median_non_pad_tokens_per_s': med(name, 'tokens_per_s'),
        'median_ratio_to_official': ratio(name),
        'token_share_of_slots': first[name]['token_share_of_slots'],
        'warmup_seconds_per_round': [r[name]['warmup_seconds'] for r in rounds],
        'peak_rss_mib_per_round': [r[name]['peak_rss_mib'] for r in rounds]}
    if 'compiled_shapes' in first[name]:
      c['compiled_shapes'] = first[name]['compiled_shapes']
      c['compile_seconds'] = first[name]['compile_seconds']  # round 0: a cold cache
      c['compile_seconds_per_round'] = [r[name]['compile_seconds'] for r in rounds]
  return out


# ---------------------------------------------------------------- a real run's shapes


def run_shapes(examples):
  """What a 10,000-step CQA run at batch 64 compiles and pads, from its batches' lengths."""
  keys = list(LENGTHS)
  cost = {'fixed': 0, 'bucketed': 0, 'longest_row': 0}
  shapes = set()
  for step in range(PAPER_STEPS):
    idx = input_pipeline.train_indices(len(examples), step, BATCH, seed=0)
    lengths = input_pipeline.padded_lengths(examples, idx, LENGTHS,
                                            input_pipeline.DEFAULT_LENGTH_BUCKETS)
    shapes.add(tuple(lengths[k] for k in keys))
    cost['bucketed'] += BATCH * sum(lengths.values())
    cost['longest_row'] += BATCH * sum(int(examples.lengths[k][idx].max()) for k in keys)
    cost['fixed'] += BATCH * sum(LENGTHS.values())
  tokens = PAPER_STEPS * BATCH * sum(examples.lengths[k].mean() for k in keys)
  return {'steps': PAPER_STEPS, 'batch': BATCH, 'compiled_shapes': len(shapes),
          'token_share_of_slots': {k: tokens / v for k, v in cost.items()}}


# ---------------------------------------------------------------- one process per part


def run_child(args, part, round_index, tmp):
  """Runs one part (setup, evaluation or a training contender in one round) in a fresh process:
  this script with --child, which writes its figures and its own peak RSS to a JSON file."""
  out = os.path.join(tmp, f'{part}_{round_index}.json')
  cmd = [sys.executable, os.path.abspath(__file__), '--vocab', args.vocab, '--child', part,
         '--round', str(round_index), '--child_out', out, '--compilation_cache',
         os.path.join(tmp, 'jax_cache'), '--batches', str(args.batches), '--fixed_batch',
         str(args.fixed_batch), '--eval_rounds', str(args.eval_rounds)]
  if args.eval_limit:
    cmd += ['--eval_limit', str(args.eval_limit)]
  start = time.perf_counter()
  proc = subprocess.run(cmd, check=False)  # its output goes to this one's
  if proc.returncode or not os.path.exists(out):
    raise SystemExit(f'{part} (round {round_index}) failed: exit status {proc.returncode}')
  with open(out) as f:
    figures = json.load(f)
  figures['process_seconds'] = time.perf_counter() - start  # start-up and loading included
  return figures


def child(args):
  """One part in this process; its figures, with this process's peak RSS, go to --child_out."""
  sweep.use_compilation_cache(args.compilation_cache)
  transformers.logging.set_verbosity_error()  # each process would repeat the same warnings
  transformers.logging.disable_progress_bar()
  torch.set_flush_denormal(True)  # ENVIRONMENT.md: else PyTorch T5 runs 4x slower here
  task, train_ex, valid_ex = load_cqa(args.vocab, args.eval_limit)
  config = model_config()
  params = init_params(config, jax.random.PRNGKey(0))  # the same weights in every process
  with tempfile.TemporaryDirectory() as tmp:
    tokenizer = hf_tokenizer(args.vocab, tmp)
    model = hf_model(config, params, os.path.join(tmp, 'hf'))
  if args.child == 'setup':
    out = same_model_check(config, params, model, tokenizer, train_ex,
                           input_pipeline.train_indices(len(train_ex), 0, BATCH, seed=0))
    print(f'same model, dropout off: {out}', flush=True)
  elif args.child == 'evaluation':
    out = eval_rounds(args, config, params, model, tokenizer, task, valid_ex)
  else:
    out = train_contender(args, args.child, train_ex, config, params, model, tokenizer)
  out['peak_rss_mib'] = host_memory.peak_rss_mib()
  with open(args.child_out, 'w') as f:
    json.dump(out, f)


# ---------------------------------------------------------------- main


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--vocab', help='SentencePiece model trained on CQA (required to run)')
  parser.add_argument('--rounds', type=int, default=3, help='alternating train rounds')
  parser.add_argument('--batches', type=int, default=1, help='batches of 64 per train round')
  parser.add_argument('--fixed_batch', type=int, default=2,
                      help='examples per round for dssb_fixed (1024/256 padding)')
  parser.add_argument('--eval_rounds', type=int, default=2, help='full evaluation passes each')
  parser.add_argument('--eval_limit', type=int, help='first N validation examples (smoke runs)')
  # A child process runs one part (main() starts them): 'setup', 'evaluation' or a contender.
  parser.add_argument('--child', choices=('setup', 'evaluation') + TRAIN_ORDER,
                      help=argparse.SUPPRESS)
  parser.add_argument('--round', type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument('--child_out', help=argparse.SUPPRESS)
  parser.add_argument('--compilation_cache', help=argparse.SUPPRESS)
  parser.add_argument('--out', default=DEFAULT_OUT)
  parser.add_argument('--render', action='store_true',
                      help='only write the markdown summary of an existing --out JSON')
  args = parser.parse_args()
  if not args.render and not args.vocab:
    parser.error('--vocab is required (python -m dssb.data train_vocab --dataset cqa ...)')
  return args


def settings_record(args, config, task, train_ex):
  """The command, machine and settings of this run, and what a full CQA run would pad."""
  return {
      'command': perf_report.command(
          'bench_paper_settings.py',
          f'--vocab {args.vocab} --rounds {args.rounds} --batches {args.batches} --fixed_batch '
          f'{args.fixed_batch} --eval_rounds {args.eval_rounds}'
          + (f' --eval_limit {args.eval_limit}' if args.eval_limit else ''), args.out,
          DEFAULT_OUT),
      'machine': f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
      'versions': {'jax': jax.__version__, 'torch': torch.__version__,
                   'transformers': transformers.__version__},
      'load_average_at_start': os.getloadavg(),
      'keeps_freed_memory': host_memory.keeps_freed_memory(),
      'torch_threads': torch.get_num_threads(),
      'OMP_WAIT_POLICY': os.environ['OMP_WAIT_POLICY'],
      'vocab': {'path': args.vocab, 'size': task.output_features['targets'].vocabulary.vocab_size},
      'model': {k: getattr(config, k) for k in config.__dataclass_fields__},
      'feature_lengths': LENGTHS, 'batch': BATCH, 'length_buckets':
          list(input_pipeline.DEFAULT_LENGTH_BUCKETS), 'packing_examples_per_row': PACK_PER_ROW,
      'cqa_run': run_shapes(train_ex)}


def main():
  args = parse_args()
  if args.render:
    with open(args.out) as f:
      result = json.load(f)
    perf_report.write(args.out, result, summary_lines(result), measured=False)
    return
  # Every process keeps freed memory (dssb/host_memory.py's setting); the children inherit it.
  host_memory.restart_keeping_freed_memory()
  if args.child:
    child(args)
    return
  os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
  task, train_ex, _ = load_cqa(args.vocab, args.eval_limit)
  result = settings_record(args, model_config(), task, train_ex)
  del train_ex
  with tempfile.TemporaryDirectory() as tmp:
    setup = run_child(args, 'setup', 0, tmp)
    result['same_model_loss_without_dropout'] = {k: setup[k]
                                                 for k in ('dssb_loss', 'official_loss')}
    result['evaluation'] = run_child(args, 'evaluation', 0, tmp)
    result['train'] = train_rounds(args, tmp)
  result['peak_rss_mib'] = peak_rss_by_process(result, setup)
  result['targets'] = targets(result)
  result['load_average_at_end'] = os.getloadavg()
  with open(args.out, 'w') as f:  # first, so a summary can be rendered again (--render)
    json.dump(result, f, indent=1)
  perf_report.write(args.out, result, summary_lines(result))


def peak_rss_by_process(result, setup):
  """Each process's peak resident memory (VmHWM), MiB. The processes run one after another, so
  the machine's peak for the command is at most this parent's plus the largest child's."""
  train = {name: max(c['peak_rss_mib_per_round'])
           for name, c in result['train']['contenders'].items()}
  children = dict(setup=setup['peak_rss_mib'], evaluation=result['evaluation']['peak_rss_mib'],
                  **{f'train {name}': v for name, v in train.items()})
  largest = max(children, key=children.get)
  parent = host_memory.peak_rss_mib()
  return {'parent': parent, 'children': children, 'largest_child': largest,
          'largest_process': max(parent, children[largest]),
          'parent_plus_largest_child': parent + children[largest]}


# issue 12's targets: (what, measured ratio's place in the result, at least)
TARGETS = (('bucketed train examples/s vs official', ('train', 'dssb_bucketed'), 1.2),
           ('packed train examples/s vs official', ('train', 'dssb_packed'), 1.5),
           ('evaluation pass vs official generate', ('evaluation', 'median_speedup'), 2.0))


def targets(result):
  """Each target with its measured ratio and whether it is met."""
  out = []
  for what, (part, key), least in TARGETS:
    ratio = (result['train']['contenders'][key]['median_ratio_to_official'] if part == 'train'
             else result['evaluation'][key])
    out.append({'target': what, 'at_least': least, 'measured': ratio, 'met': ratio >= least})
  return out


if __name__ == '__main__':
  main()
