"""Batches for the trainer: a seqio task read once into memory, then a pure function of the step.

Why not a streaming tf.data pipeline: exact resume. The training order is fixed by (seed, epoch):
epoch e visits the examples in `default_rng([seed, e]).permutation(n)`, and global step s takes
the rows s*B .. s*B+B-1 of that endless sequence. A resumed run therefore sees exactly the
examples it would have seen, and the only pipeline state to checkpoint is the step. Each host
builds only its own rows of the global batch (rows [i*B/P, (i+1)*B/P) on host i of P).

Tokenisation, prefixes and EOS come from the seqio task; the feature conversion below is the
unpacked EncDecFeatureConverter (decoder inputs = targets shifted right with 0). Distilling
step-by-step examples carry two (inputs, targets) pairs, turned into two sub-batches of the same
rows, 'label' and 'rationale', so both losses are computed on the same examples in one step.

Length bucketing: a batch is padded, per sub-batch and per side, to the smallest of a few bucket
lengths that holds its longest row, not to the feature length (the paper's 1024/256 tokens, which
CQA's 50-token inputs fill to 5%). The rows and their tokens do not change, so neither does the
loss; jit compiles one executable per bucket combination. Every host computes the buckets from
the lengths of the GLOBAL batch's rows (its indices are a pure function of the step), so all
hosts pad alike and then each builds only its own rows. Packing (several examples per row) is
dssb/packing.py.

Soft labels (dssb.data.soft_labels): a task may give each train example a float weight (its
label's probability), which multiplies the loss weights of all its target tokens, in every
sub-batch; without weights every target token weighs 1.

Context distillation examples add a 'teacher' sub-batch (the teacher's template and its sampled
output) and, in 'label', teacher_positions: per student target token, its 1-based position in
the teacher's output (0: none), cut and padded like the targets.
"""

import dataclasses
import functools
from typing import Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

# (batch key, input feature, target feature)
PAIRS = (('label', 'inputs', 'targets'),
         ('rationale', 'rationale_inputs', 'rationale_targets'),
         ('teacher', 'teacher_inputs', 'teacher_targets'))
# Per-token features that follow another feature's length: {feature: the feature it follows}.
FOLLOWERS = {'teacher_positions': 'targets'}
# A float feature: the example's loss weight (dssb.data.soft_labels.WEIGHT_KEY).
WEIGHT_FEATURE = 'label_weight'
# Cut without moving the last token to the end: a teacher's sampled output has no EOS appended.
PLAIN_CUT = ('teacher_targets',)

# Bucket lengths: multiples of 8 up to 48, then each power of two p and 1.25p, 1.5p. Past 48
# tokens a batch then holds at most 1.33x the slots of padding to its own longest row. On CQA at
# 1024/256 (batches of 64) this costs 1.12x the slots of per-batch padding and a 10,000-step run
# compiles 16 shapes (results/perf/paper_settings.md); multiples of 64 would cost 2.0x (label
# targets of 3 tokens padded to 64).
DEFAULT_LENGTH_BUCKETS = (8, 16, 24, 32, 40, 48) + tuple(
    int(p * f) for p in (2 ** i for i in range(6, 14)) for f in (1, 1.25, 1.5))


@dataclasses.dataclass
class Examples:
  """Tokenised examples of one split: per feature, one int32 array per example (EOS included)."""
  tokens: Dict[str, list]
  texts: Dict[str, list]       # *_pretokenized strings where the task keeps them
  truncated: Dict[str, int]    # how many examples were cut per feature
  # Per example, a factor on the loss weights of all its target tokens (soft labels: its
  # label's probability, dssb.data.soft_labels); None: 1 for every example.
  weights: Optional[np.ndarray] = None

  def describe(self) -> str:
    """'720' or '720 (cut to length: inputs 10, rationale_targets 7)'."""
    cut = ', '.join(f'{k} {n}' for k, n in self.truncated.items() if n)
    return f'{len(self)} (cut to length: {cut})' if cut else str(len(self))

  def __len__(self):
    return len(next(iter(self.tokens.values())))

  @functools.cached_property
  def lengths(self) -> Dict[str, np.ndarray]:
    """Per feature, the token count of each example."""
    return {k: np.array([len(t) for t in v], np.int64) for k, v in self.tokens.items()}

  @property
  def pairs(self):
    return tuple(p for p in PAIRS if p[1] in self.tokens and p[2] in self.tokens)


def load_examples(task_name: str, split: str, feature_lengths: Mapping[str, int]) -> Examples:
  """Reads a seqio task split in its fixed order, counting the examples cut to length."""
  import seqio  # pylint: disable=g-import-not-at-top  (slow import, TF)
  task = seqio.get_mixture_or_task(task_name)
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1,
                        use_cached=False, trim_output_features=False)
  lengths = dict(feature_lengths)
  lengths.update({k: lengths[lead] for k, lead in FOLLOWERS.items() if lead in lengths})
  keys = [k for k in lengths if k in ds.element_spec]  # eval splits: no rationales
  tokens = {k: [] for k in keys}
  texts = {k: [] for k in keys}
  truncated = {k: 0 for k in keys}
  weighted = WEIGHT_FEATURE in ds.element_spec
  weights = []
  for ex in ds.as_numpy_iterator():
    if weighted:
      weights.append(float(ex[WEIGHT_FEATURE]))
    for k in keys:
      ids = np.asarray(ex[k], np.int32)
      length = lengths[k]
      if len(ids) > length:  # keep EOS last, as seqio's append_eos_after_trim does
        truncated[k] += 1
        ids = ids[:length] if k in PLAIN_CUT else np.concatenate([ids[:length - 1], ids[-1:]])
      tokens[k].append(ids)
      text = ex.get(f'{k}_pretokenized')
      texts[k].append(text.decode() if isinstance(text, bytes) else text)
  if not keys or not tokens[keys[0]]:
    raise ValueError(f'task {task_name!r} split {split!r} has no examples with features '
                     f'{sorted(feature_lengths)}')
  return Examples(tokens, texts, truncated, np.asarray(weights, np.float32) if weighted else None)


def _pad(rows, length):
  out = np.zeros((len(rows), length), np.int32)
  for i, ids in enumerate(rows):
    out[i, :len(ids)] = ids
  return out


def encdec_batch(examples: Examples, indices, feature_lengths) -> Dict[str, Dict[str, np.ndarray]]:
  """Unpacked encoder-decoder features for the given example indices (-1: an empty row)."""
  batch = {}
  row_weights = example_weights(examples, indices)[:, None]
  for name, inp, tgt in examples.pairs:
    pick = lambda key: [examples.tokens[key][i] if i >= 0 else np.zeros(0, np.int32)
                        for i in indices]
    targets = _pad(pick(tgt), feature_lengths[tgt])
    batch[name] = {
        'encoder_input_tokens': _pad(pick(inp), feature_lengths[inp]),
        'decoder_target_tokens': targets,
        'decoder_input_tokens': np.pad(targets[:, :-1], ((0, 0), (1, 0))),
        'decoder_loss_weights': (targets > 0) * row_weights,
    }
  for key, lead in FOLLOWERS.items():
    if key in examples.tokens:
      rows = [examples.tokens[key][i] if i >= 0 else np.zeros(0, np.int32) for i in indices]
      batch['label'][key] = _pad(rows, feature_lengths[lead])
  return batch


def example_weights(examples: Examples, indices) -> np.ndarray:
  """float32 [len(indices)]: each example's loss-weight factor (-1, an empty row: 0)."""
  idx = np.asarray(indices, np.int64)
  if examples.weights is None:
    return (idx >= 0).astype(np.float32)
  return np.where(idx >= 0, examples.weights[np.maximum(idx, 0)], 0.0).astype(np.float32)


def bucket_length(length: int, feature_length: int, buckets: Optional[Sequence[int]]) -> int:
  """The smallest bucket >= length below feature_length, else feature_length (buckets None:
  fixed padding to feature_length)."""
  if buckets is None:
    return feature_length
  return min([b for b in buckets if length <= b < feature_length] + [feature_length])


def padded_lengths(examples: Examples, global_indices, feature_lengths,
                   buckets: Optional[Sequence[int]]) -> Dict[str, int]:
  """Per feature, the bucket of the longest row of the GLOBAL batch (-1: an empty row)."""
  idx = np.asarray(global_indices)
  idx = idx[idx >= 0]
  out = {}
  for _, inp, tgt in examples.pairs:
    for key in (inp, tgt):
      longest = int(examples.lengths[key][idx].max()) if idx.size else 0
      out[key] = bucket_length(longest, feature_lengths[key], buckets)
  return out


def train_indices(num_examples: int, step: int, global_batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> np.ndarray:
  """This host's example indices for one global step (see the module docstring)."""
  if global_batch_size % process_count:
    raise ValueError(f'batch_size {global_batch_size} does not split over {process_count} hosts')
  per_host = global_batch_size // process_count
  rows = step * global_batch_size + process_index * per_host + np.arange(per_host)
  epochs, within = np.divmod(rows, num_examples)
  out = np.empty(per_host, np.int64)
  for epoch in np.unique(epochs):
    sel = epochs == epoch
    out[sel] = epoch_order(num_examples, seed, int(epoch))[within[sel]]
  return out


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The order in which epoch `epoch` visits the examples."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def host_rows(global_rows: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  """Host i's rows [i*R/P, (i+1)*R/P) of a global batch of R rows."""
  if len(global_rows) % process_count:
    raise ValueError(f'a batch of {len(global_rows)} rows does not split over {process_count} '
                     'hosts')
  per_host = len(global_rows) // process_count
  return global_rows[process_index * per_host:(process_index + 1) * per_host]


def train_batches(examples: Examples, feature_lengths, global_batch_size: int, seed: int,
                  start_step: int, process_index: int = 0, process_count: int = 1,
                  length_buckets: Optional[Sequence[int]] = DEFAULT_LENGTH_BUCKETS
                  ) -> Iterator[Tuple[int, dict]]:
  """(step, host-local batch) from start_step on, forever; length_buckets None: fixed padding."""
  step = start_step
  while True:
    global_idx = train_indices(len(examples), step, global_batch_size, seed)
    lengths = padded_lengths(examples, global_idx, feature_lengths, length_buckets)
    yield step, encdec_batch(examples, host_rows(global_idx, process_index, process_count),
                             lengths)
    step += 1


def eval_order(examples: Examples, n: int, by_length: bool) -> np.ndarray:
  """The first n examples, longest input first when by_length (then each batch holds inputs of
  similar length and pads little); stable, so ties keep their order."""
  if not by_length:
    return np.arange(n)
  return np.argsort(-examples.lengths['inputs'][:n], kind='stable')


def eval_batches(examples: Examples, feature_lengths, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1, limit: Optional[int] = None,
                 length_buckets: Optional[Sequence[int]] = DEFAULT_LENGTH_BUCKETS
                 ) -> Iterator[Tuple[np.ndarray, dict]]:
  """(global example indices, host-local batch); the last batch is filled with -1 rows.

  With length_buckets, examples come sorted by input length (eval_order) and each batch is
  padded to its bucket; without, in their order and padded to feature_lengths. The caller puts
  the results back in order by the indices.
  """
  n = len(examples) if limit is None else min(limit, len(examples))
  order = eval_order(examples, n, length_buckets is not None)
  for start in range(0, n, global_batch_size):
    idx = np.full(global_batch_size, -1, np.int64)
    part = order[start:start + global_batch_size]
    idx[:len(part)] = part
    lengths = padded_lengths(examples, idx, feature_lengths, length_buckets)
    yield idx, encdec_batch(examples, host_rows(idx, process_index, process_count), lengths)


def padding_fraction(batch: Mapping[str, Mapping[str, np.ndarray]]) -> float:
  """Share of token slots that hold padding, over all sub-batches and both sides."""
  total = filled = 0
  for part in batch.values():
    for key in ('encoder_input_tokens', 'decoder_target_tokens'):
      total += part[key].size
      filled += int((part[key] > 0).sum())
  return 1.0 - filled / max(total, 1)
