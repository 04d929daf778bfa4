"""Packing (opt-in): several examples per row, t5x-style, so a batch holds almost no padding.

Each sub-batch ('label', 'rationale') of a packed step has a fixed shape for the whole run:
`rows` rows whose length per feature fits about `examples_per_row` examples. A step takes
examples from the epoch's order (input_pipeline.epoch_order) as long as each one still fits a row
of every sub-batch (first fit), so both losses are still computed on the same examples, and the
number of examples varies from step to step; the row count is chosen so that steps hold at least
batch_size examples on average. The loss stays the mean over each sub-batch's target tokens.

Exact resume: the plan of epoch e depends only on (seed, e) and the example lengths, and steps do
not straddle epochs (an epoch's last step holds what is left), so step s maps to its examples
without any state; every host computes the same plan and builds only its own rows.

Segments follow t5x's packed feature converter: segment ids 1, 2, ... per row (0 for padding),
positions restart at 0 in each segment, and decoder inputs are the targets shifted right WITHIN
each segment (0 at each segment's start), so no example sees another's last token. T5's attention
needs no positions: its relative bias depends only on key minus query position, which inside a
contiguous segment equals the unpacked one, and dssb/model/network.py masks attention between
segments (encoder, decoder and cross-attention). The positions are in the batch as t5x has them.
Weighted examples (soft labels) carry their weight on their own segment's target tokens.
"""

import dataclasses
import math
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from dssb import input_pipeline

Examples = input_pipeline.Examples


@dataclasses.dataclass(frozen=True)
class PackedShape:
  """Global rows per sub-batch, and the row length per feature: fixed for a run."""
  rows: int
  lengths: Mapping[str, int]


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """One packed step: its examples in order, and per sub-batch the row each one goes to."""
  examples: np.ndarray
  rows: Mapping[str, np.ndarray]


def plan_steps(examples: Examples, order: np.ndarray, shape: PackedShape) -> List[StepPlan]:
  """Packs `order` into consecutive steps, first fit; the last step holds what is left."""
  lengths = {k: examples.lengths[k][order] for k in shape.lengths}
  steps, start = [], 0
  while start < len(order):
    free = {k: np.full(shape.rows, length, np.int64) for k, length in shape.lengths.items()}
    rows: Dict[str, list] = {name: [] for name, _, _ in examples.pairs}
    i = start
    while i < len(order):
      chosen = {}
      for name, inp, tgt in examples.pairs:
        fits = (free[inp] >= lengths[inp][i]) & (free[tgt] >= lengths[tgt][i])
        if not fits.any():
          break
        chosen[name] = int(np.argmax(fits))
      else:
        for name, inp, tgt in examples.pairs:
          free[inp][chosen[name]] -= lengths[inp][i]
          free[tgt][chosen[name]] -= lengths[tgt][i]
          rows[name].append(chosen[name])
        i += 1
        continue
      break
    if i == start:
      raise ValueError(f'example {order[i]} does not fit an empty packed row {shape}')
    steps.append(StepPlan(order[start:i], {k: np.asarray(v, np.int64) for k, v in rows.items()}))
    start = i
  return steps


def packed_shape(examples: Examples, feature_lengths: Mapping[str, int], batch_size: int,
                 examples_per_row: int, seed: int, row_multiple: int = 1,
                 length_buckets: Optional[Sequence[int]] = input_pipeline.DEFAULT_LENGTH_BUCKETS
                 ) -> PackedShape:
  """The packed rows of a run, from the training split's lengths.

  A feature's row length is the bucket that holds both its longest example (so no example is
  cut further than feature_lengths cuts it) and examples_per_row examples of mean length
  (length_buckets None: the feature length, as t5x packs). The row count is the smallest
  multiple of row_multiple with which the first steps of epoch 0 hold at least batch_size
  examples on average.
  """
  lengths = {}
  for _, inp, tgt in examples.pairs:
    for k in (inp, tgt):
      need = max(int(examples.lengths[k].max()),
                 math.ceil(examples_per_row * examples.lengths[k].mean()))
      lengths[k] = input_pipeline.bucket_length(need, feature_lengths[k], length_buckets)
  sample = input_pipeline.epoch_order(len(examples), seed, 0)[:16 * batch_size]
  rows = row_multiple * max(1, math.ceil(batch_size / examples_per_row / row_multiple))
  while True:
    shape = PackedShape(rows, lengths)
    steps = plan_steps(examples, sample, shape)
    full = steps[:-1] or steps
    if np.mean([len(s.examples) for s in full]) >= min(batch_size, len(sample)):
      return shape
    rows += row_multiple


class Plan:
  """step -> StepPlan, a pure function of (seed, step): epochs are planned when first reached
  (from epoch 0, to count their steps) and kept."""

  def __init__(self, examples: Examples, shape: PackedShape, seed: int):
    self.examples, self.shape, self.seed = examples, shape, seed
    self._epochs: List[List[StepPlan]] = []

  def __call__(self, step: int) -> StepPlan:
    epoch = 0
    while True:
      if epoch == len(self._epochs):
        order = input_pipeline.epoch_order(len(self.examples), self.seed, epoch)
        self._epochs.append(plan_steps(self.examples, order, self.shape))
      if step < len(self._epochs[epoch]):
        return self._epochs[epoch][step]
      step -= len(self._epochs[epoch])
      epoch += 1


def packed_batch(examples: Examples, plan: StepPlan, shape: PackedShape, process_index: int = 0,
                 process_count: int = 1) -> Dict[str, Dict[str, np.ndarray]]:
  """This host's rows of a packed step: tokens, segment ids and positions per side."""
  mine = input_pipeline.host_rows(np.arange(shape.rows), process_index, process_count)
  batch = {}
  for name, inp, tgt in examples.pairs:
    keep = np.isin(plan.rows[name], mine)
    ids, rows = plan.examples[keep], plan.rows[name][keep] - mine[0]
    tokens, segments, positions = {}, {}, {}
    for side, feature in (('encoder', inp), ('decoder', tgt)):
      tokens[side], segments[side], positions[side] = _fill_rows(
          [examples.tokens[feature][i] for i in ids], rows, len(mine), shape.lengths[feature])
    targets = tokens['decoder']
    shifted = np.pad(targets[:, :-1], ((0, 0), (1, 0)))
    batch[name] = {
        'encoder_input_tokens': tokens['encoder'],
        'encoder_segment_ids': segments['encoder'],
        'encoder_positions': positions['encoder'],
        'decoder_target_tokens': targets,
        'decoder_input_tokens': np.where(positions['decoder'] > 0, shifted, 0).astype(np.int32),
        'decoder_segment_ids': segments['decoder'],
        'decoder_positions': positions['decoder'],
        'decoder_loss_weights': (targets > 0) * _fill_weights(
            input_pipeline.example_weights(examples, ids), segments['decoder'], rows,
            len(mine)),
    }
  return batch


def _fill_weights(weights, segments, rows, num_rows: int) -> np.ndarray:
  """Each example's weight on its segment's tokens (float32, 0 on padding)."""
  out = np.zeros(segments.shape, np.float32)
  count = np.zeros(num_rows, np.int32)
  for weight, row in zip(weights, rows):
    count[row] += 1
    out[row][segments[row] == count[row]] = weight
  return out


def _fill_rows(sequences, rows, num_rows: int, length: int) -> Tuple[np.ndarray, ...]:
  """Sequences laid end to end in their rows: (tokens, segment ids, positions)."""
  tokens, segments, positions = (np.zeros((num_rows, length), np.int32) for _ in range(3))
  used = np.zeros(num_rows, np.int64)
  count = np.zeros(num_rows, np.int32)
  for seq, row in zip(sequences, rows):
    start, end = used[row], used[row] + len(seq)
    count[row] += 1
    tokens[row, start:end] = seq
    segments[row, start:end] = count[row]
    positions[row, start:end] = np.arange(len(seq))
    used[row] = end
  return tokens, segments, positions


def packed_batches(examples: Examples, shape: PackedShape, seed: int, start_step: int,
                   process_index: int = 0, process_count: int = 1
                   ) -> Iterator[Tuple[int, dict]]:
  """(step, host-local packed batch) from start_step on, forever."""
  plan = Plan(examples, shape, seed)
  step = start_step
  while True:
    yield step, packed_batch(examples, plan(step), shape, process_index, process_count)
    step += 1
