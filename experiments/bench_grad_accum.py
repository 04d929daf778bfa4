"""Gradient accumulation at the paper's settings: host memory and step time with 1, 2 and 4
micro-batches (train.grad_accum_steps), and what one length bucket per step costs in padding
against one bucket per micro-batch.

CQA distilling step-by-step, T5 v1.1-small size (random init), global batch 64, feature lengths
1024 inputs / 256 targets, AdamW: the trainer's own step (dssb.train.make_train_step), jitted
with the state donated, on the run's first batch padded to its length bucket, as the trainer
pads it. Each k runs in a process of its own (peak RSS is a high-water mark), started as
`python -m dssb.train` starts (glibc's setting from dssb/host_memory.py). Per k:
  - peak RSS (VmHWM) of that process after --steps steps (compile included);
  - XLA's compiled buffers for that step (arguments, outputs, temporaries);
  - the median step time.
The largest k runs first: k=1 needs the most memory.
Buckets: over the first --bucket_steps steps of the CQA run, the token slots (rows x padded
lengths, both sub-batches) of one bucket per step (what dssb does: lax.scan needs one shape)
and of one bucket per micro-batch (what a step of k separately compiled micro-steps could pad).

  DSSB_DATA_DIR=/work/shared/dss_data python -m dssb.data train_vocab --dataset cqa \\
      --vocab_size 8000 --out /tmp/cqa_8000.model
  DSSB_DATA_DIR=/work/shared/dss_data python experiments/bench_grad_accum.py \\
      --vocab /tmp/cqa_8000.model
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

# pylint: disable=g-import-not-at-top,wrong-import-position
import dssb

dssb.import_tensorflow_quietly()

import gin
import jax
import jax.numpy as jnp

from dssb import gin_utils, host_memory, input_pipeline, optimizers, train
from dssb.data import tasks
from dssb.model import T5, init_params

import perf_report
# pylint: enable=g-import-not-at-top,wrong-import-position

LENGTHS = {'inputs': 1024, 'targets': 256, 'rationale_inputs': 1024, 'rationale_targets': 256}
BATCH, ALPHA, LR, PAPER_STEPS = 64, 0.5, 5e-5, 10000
MODEL_GIN = 'gin/models/t5_1_1_small.gin'
DEFAULT_OUT = 'results/perf/grad_accum.json'


def model_config():
  gin.clear_config()
  gin_utils.parse_gin([MODEL_GIN])
  return gin.query_parameter('%MODEL_CONFIG').scoped_configurable_fn()


def load_train(vocab):
  name = tasks.get_task_name('cqa', 'step_by_step', vocab_path=vocab)
  return input_pipeline.load_examples(name, 'train', LENGTHS)


def compiled_bytes(compiled) -> dict:
  m = compiled.memory_analysis()
  return {'argument_mib': round(m.argument_size_in_bytes / 2**20, 1),
          'output_mib': round(m.output_size_in_bytes / 2**20, 1),
          'temp_mib': round(m.temp_size_in_bytes / 2**20, 1)}


def child(args) -> dict:
  """One k: compile, run --steps steps, read the peak RSS."""
  k = args.child
  examples = load_train(args.vocab)
  config = model_config()
  idx = input_pipeline.train_indices(len(examples), 0, BATCH, seed=0)
  lengths = input_pipeline.padded_lengths(examples, idx, LENGTHS,
                                          input_pipeline.DEFAULT_LENGTH_BUCKETS)
  batch = jax.tree.map(jnp.asarray, input_pipeline.encdec_batch(examples, idx, lengths))
  sched = optimizers.linear_decay_schedule(LR, PAPER_STEPS)
  tx = optimizers.adamw(sched)
  step = jax.jit(train.make_train_step(train.make_loss_fn(T5(config), ALPHA, 0.0, 0.0), tx,
                                       sched, k), donate_argnums=0)
  params = init_params(config, jax.random.PRNGKey(0))
  state = train.TrainState(jnp.int32(0), params, tx.init(params))
  rng = jax.random.PRNGKey(0)
  rss_before_compile = host_memory.peak_rss_mib()
  start = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - start
  seconds, losses = [], []
  for _ in range(args.steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, rng)
    losses.append(float(metrics['loss']))
    seconds.append(time.perf_counter() - start)
  out = {'grad_accum_steps': k, 'padded_lengths': lengths,
         'peak_rss_mib': host_memory.peak_rss_mib(),
         'peak_rss_mib_before_compile': rss_before_compile,
         'keeps_freed_memory': host_memory.keeps_freed_memory(),
         'compiled': compiled_bytes(compiled), 'compile_seconds': round(compile_s, 1),
         'step_seconds': [round(s, 2) for s in seconds],
         'median_step_seconds': round(statistics.median(seconds), 2), 'losses': losses}
  return out


def bucket_slots(examples, k_values, num_steps) -> dict:
  """Token slots of one bucket per step vs one per micro-batch, summed over num_steps steps."""
  slots = lambda idx: len(idx) * sum(input_pipeline.padded_lengths(
      examples, idx, LENGTHS, input_pipeline.DEFAULT_LENGTH_BUCKETS).values())
  out = {}
  for k in k_values:
    per_step = per_micro = tokens = 0
    for s in range(num_steps):
      idx = input_pipeline.train_indices(len(examples), s, BATCH, seed=0)
      per_step += slots(idx)
      per_micro += sum(slots(idx[j::k]) for j in range(k))
      tokens += int(sum(examples.lengths[f][idx].sum() for f in LENGTHS))
    out[k] = {'slots_one_bucket_per_step': per_step,
              'slots_one_bucket_per_micro_batch': per_micro, 'non_pad_tokens': tokens,
              'per_step_over_per_micro_batch': round(per_step / per_micro, 4)}
  return out


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--vocab', required=True, help='SentencePiece model trained on CQA')
  parser.add_argument('--ks', default='4,2,1', help='micro-batch counts')
  parser.add_argument('--steps', type=int, default=2, help='timed steps per k')
  parser.add_argument('--bucket_steps', type=int, default=100)
  parser.add_argument('--child', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--out', default=DEFAULT_OUT)
  return parser.parse_args()


def main():
  args = parse_args()
  host_memory.restart_keeping_freed_memory()  # the children inherit the tunables
  if args.child:
    print('RESULT ' + json.dumps(child(args)), flush=True)
    return
  ks = [int(k) for k in args.ks.split(',')]
  runs = []
  for k in ks:
    cmd = [sys.executable, os.path.abspath(__file__), '--vocab', args.vocab, '--child', str(k),
           '--steps', str(args.steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
    if proc.returncode or not lines:
      raise SystemExit(f'k={k} failed ({proc.returncode}):\n{proc.stderr[-3000:]}')
    runs.append(json.loads(lines[-1][len('RESULT '):]))
    print(json.dumps(runs[-1]), flush=True)
  result = {
      'command': perf_report.command(
          'bench_grad_accum.py', f'--vocab {args.vocab} --ks {args.ks} --steps {args.steps} '
          f'--bucket_steps {args.bucket_steps}',
          args.out, DEFAULT_OUT),
      'machine': f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
      'load_average_at_end': os.getloadavg(), 'batch': BATCH, 'feature_lengths': LENGTHS,
      'model_gin': MODEL_GIN, 'runs': runs,
      'buckets': bucket_slots(load_train(args.vocab), [k for k in ks if k > 1],
                              args.bucket_steps)}
  perf_report.write(args.out, result, summary_lines(result))


def summary_lines(result) -> list:
  lines = [f'CQA step-by-step, T5 v1.1-small size, global batch {result["batch"]}, '
           f'1024/256, AdamW; each k in its own process; load {result["load_average_at_end"]}',
           '',
           f'{"k":>3} {"peak RSS MiB":>13} {"XLA temp MiB":>13} {"XLA args MiB":>13} '
           f'{"step s":>7}  padded lengths']
  for r in sorted(result['runs'], key=lambda r: r['grad_accum_steps']):
    lines.append(f'{r["grad_accum_steps"]:>3} {r["peak_rss_mib"]:>13.0f} '
                 f'{r["compiled"]["temp_mib"]:>13.0f} {r["compiled"]["argument_mib"]:>13.0f} '
                 f'{r["median_step_seconds"]:>7.2f}  {r["padded_lengths"]}')
  lines += ['', 'One length bucket per step (dssb) vs one per micro-batch, token slots over the '
            'first steps:']
  for k, b in result['buckets'].items():
    lines.append(f'  k={k}: {b["slots_one_bucket_per_step"]:,} vs '
                 f'{b["slots_one_bucket_per_micro_batch"]:,} slots '
                 f'(x{b["per_step_over_per_micro_batch"]}); non-pad tokens '
                 f'{b["non_pad_tokens"]:,}')
  return lines


if __name__ == '__main__':
  main()
