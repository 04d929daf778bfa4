"""Overhead of the trainer over its bare train step, and padding with and without packing.

1. Trainer vs bare step, in one process, alternating rounds: the full `dssb.train.train` (data
   pipeline, host-to-device transfer, metric fetches, metrics.jsonl, TensorBoard, async orbax
   checkpoints every 10 steps, progress bar) against the same jitted step looping over batches
   already in memory. Both report target tokens per second; the first log interval (compilation)
   and the final evaluation are excluded. Target: trainer >= 0.9 x bare.
2. Padding: the share of padded token slots in SVAMP and CQA distilling step-by-step batches,
   unpacked (what the trainer feeds) and packed by seqio's EncDecFeatureConverter(pack=True).

  .venv/bin/python experiments/bench_trainer.py [--rounds 3] \\
      [--out results/perf/trainer_benchmark.json]
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import dssb

dssb.import_tensorflow_quietly()

# pylint: disable=g-import-not-at-top,wrong-import-position
import gin
import jax
import jax.numpy as jnp

from dssb import gin_utils, input_pipeline, optimizers, train
from dssb.model import T5, init_params

import perf_report
# pylint: enable=g-import-not-at-top,wrong-import-position

GIN = 'gin/cpu/svamp_step_by_step.gin'
LENGTHS = {'inputs': 128, 'targets': 32, 'rationale_inputs': 128, 'rationale_targets': 128}
STEPS, LOG_EVERY, BATCH = 60, 10, 16
OVERRIDES = [
    f'TASK_FEATURE_LENGTHS = {LENGTHS}', f'TRAIN_STEPS = {STEPS}', f'BATCH_SIZE = {BATCH}',
    f'EVAL_EVERY = {STEPS}', 'model.T5Config.d_model = 256', 'model.T5Config.d_ff = 512',
    'model.T5Config.num_encoder_layers = 4', 'model.T5Config.num_decoder_layers = 4',
    f'train.train.log_every = {LOG_EVERY}', 'train.train.checkpoint_every = 10',
    'train.train.eval_limit = 16', 'train.train.eval_batch_size = 16',
    'train.train.max_decode_length = 8']


def trainer_tokens_per_s(model_dir):
  gin.clear_config()
  gin_utils.parse_gin([GIN], OVERRIDES + [f"MODEL_DIR = '{model_dir}'"])
  gin.get_configurable(train.train)()
  with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
    rows = [json.loads(l) for l in f if 'split' not in l]
  return statistics.median(r['target_tokens_per_second'] for r in rows[1:])


def bare_tokens_per_s(task_name, config, n_steps):
  """The trainer's own jitted step over batches already on the host, no logging or saving."""
  examples = input_pipeline.load_examples(task_name, 'train', LENGTHS)
  sched = optimizers.linear_decay_schedule(1e-3, STEPS)
  tx = optimizers.adamw(sched)
  model = T5(config)
  loss_fn = train.make_loss_fn(model, 0.5, 0.0, 0.0)
  step = jax.jit(train.make_train_step(loss_fn, tx, sched), donate_argnums=0)
  params = init_params(config, jax.random.PRNGKey(1))
  state = train.TrainState(jnp.int32(0), params, tx.init(params))
  batches = [jax.device_put(b) for _, (_, b) in zip(
      range(n_steps + 1), input_pipeline.train_batches(examples, LENGTHS, BATCH, 0, 0))]
  rng = jax.random.PRNGKey(0)
  state, m = step(state, batches[0], rng)
  m['loss'].block_until_ready()
  tokens = 0.0
  start = time.perf_counter()
  for b in batches[1:]:
    state, m = step(state, b, rng)
    tokens += float(m['target_tokens'])  # the trainer fetches metrics every step too
  return tokens / (time.perf_counter() - start)


def label_and_rationale_datasets(ds):
  """Splits step_by_step examples into two {inputs, targets} tf.data datasets, both in the
  order of `ds`, for seqio's feature converters (which know one input and one target)."""
  label = ds.map(lambda ex: {'inputs': ex['inputs'], 'targets': ex['targets']})
  rationale = ds.map(lambda ex: {'inputs': ex['rationale_inputs'],
                                 'targets': ex['rationale_targets']})
  return label, rationale


def padding(dataset, vocab_path):
  import seqio  # pylint: disable=g-import-not-at-top
  from dssb.data import tasks  # pylint: disable=g-import-not-at-top
  name = tasks.get_task_name(dataset, 'step_by_step', vocab_path=vocab_path)
  examples = input_pipeline.load_examples(name, 'train', LENGTHS)
  unpacked = [input_pipeline.padding_fraction(b) for _, (_, b) in zip(
      range(50), input_pipeline.train_batches(examples, LENGTHS, BATCH, 0, 0))]
  ds = seqio.get_mixture_or_task(name).get_dataset(LENGTHS, 'train', shuffle=False)
  label, rationale = label_and_rationale_datasets(ds)
  packed = {}
  for part, part_ds in (('label', label), ('rationale', rationale)):
    lengths = {'inputs': LENGTHS['inputs'],
               'targets': LENGTHS['targets' if part == 'label' else 'rationale_targets']}
    conv = seqio.EncDecFeatureConverter(pack=True)(part_ds, lengths)
    total = filled = rows = 0
    for ex in conv.as_numpy_iterator():
      for key in ('encoder_input_tokens', 'decoder_target_tokens'):
        total += ex[key].size
        filled += int((ex[key] > 0).sum())
      rows += 1
    packed[part] = {'padding': 1 - filled / total, 'rows': rows}
  total_rows = sum(p['rows'] for p in packed.values())
  return {'examples': len(examples), 'unpacked_padding': statistics.mean(unpacked),
          'packed_padding': sum(p['padding'] * p['rows'] for p in packed.values()) / total_rows,
          'packed_rows_per_example': total_rows / (2 * len(examples)), 'packed_parts': packed}


def main_():
  parser = argparse.ArgumentParser()
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--out', default='results/perf/trainer_benchmark.json')
  args = parser.parse_args()
  gin.clear_config()
  gin_utils.parse_gin([GIN], OVERRIDES + ["MODEL_DIR = '/tmp/unused'"])
  task_name = gin.query_parameter('%TASK').scoped_configurable_fn()
  config = gin.query_parameter('%MODEL_CONFIG').scoped_configurable_fn()
  vocab_path = gin.query_parameter('%VOCAB_PATH').scoped_configurable_fn()
  rounds = []
  for _ in range(args.rounds):
    bare = bare_tokens_per_s(task_name, config, STEPS - LOG_EVERY)
    with tempfile.TemporaryDirectory() as d:
      full = trainer_tokens_per_s(d)
    rounds.append({'bare_tokens_per_s': bare, 'trainer_tokens_per_s': full,
                   'ratio': full / bare})
  result = {
      'command': f'python experiments/bench_trainer.py --rounds {args.rounds}',
      'gin': [GIN] + OVERRIDES, 'batch': BATCH, 'feature_lengths': LENGTHS,
      'median_ratio_trainer_over_bare': statistics.median(r['ratio'] for r in rounds),
      'target': '>= 0.9 (overhead under 10%)', 'rounds': rounds,
      'padding': {d: padding(d, vocab_path) for d in ('svamp', 'cqa')},
  }
  lines = []
  lines.append(f"trainer / bare step: {result['median_ratio_trainer_over_bare']:.3f} "
               f"(target >= 0.9); rounds: {[round(r['ratio'], 3) for r in rounds]}")
  for d, p in result['padding'].items():
    lines.append(f"{d}: padding unpacked {p['unpacked_padding']:.1%}, packed "
                 f"{p['packed_padding']:.1%}")
  perf_report.write(args.out, result, lines)


if __name__ == '__main__':
  main_()
