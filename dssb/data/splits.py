"""Official splits and training-data fractions (paper Sec. 4.1, Table 3, Fig. 4).

The official run.py, in this order:
  1. attaches teacher outputs to the rows of each source file (row i <-> i-th
     completion);
  2. with --subsample f < 1, keeps train = Hugging Face
     `train_test_split(test_size=1-f, seed=run)['train']` of the train file;
  3. for CQA and SVAMP (no valid file) carves validation out of that subset:
     `train_test_split(test_size=0.1, seed=0)`; e-SNLI and ANLI use their valid file.

Hugging Face semantics, reproduced by `hf_train_test_split`: n_test = ceil(test_size * n), perm =
numpy.random.default_rng(seed).permutation(n), test = perm[:n_test], train = perm[n_test:] kept in
permuted order.

Nesting: with one seed the permutation does not depend on the fraction and the subset is its tail,
so the subset at a smaller fraction is contained in the subset at a larger one (`subsample`). The
CQA/SVAMP carve-out then permutes each subset with seed 0 again, so the final train and validation
splits of two fractions are NOT nested, and the validation split changes with fraction and seed:
this is the official behaviour, kept here.

`parse_failures='drop'` removes train rows whose teacher label failed to parse (see
teacher_outputs); validation and test are never filtered. `soft_labels` expands each train row
into one row per likely label of the teacher's label distribution, weighted (see soft_labels).
"""

import math
from typing import Any, Mapping

import numpy as np

from dssb.data import soft_labels as soft_labels_lib
from dssb.data import sources
from dssb.data import teacher_outputs

SPLITS = ('train', 'validation', 'test')
VALID_FRACTION = 0.1
VALID_SEED = 0


def hf_train_test_split(n: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) row indices as HF `Dataset.train_test_split` picks them."""
  if not 0.0 < test_size < 1.0:
    raise ValueError(f'test_size must be in (0, 1), got {test_size}.')
  n_test = math.ceil(test_size * n)
  n_train = n - n_test
  if n_test == 0 or n_train == 0:
    raise ValueError(f'test_size={test_size} on {n} rows leaves an empty split.')
  perm = np.random.default_rng(seed).permutation(n)
  return perm[n_test:], perm[:n_test]


def check_fraction(fraction: float) -> float:
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f'fraction must be in (0, 1], got {fraction}.')
  return float(fraction)


def subsample(n: int, fraction: float, seed: int) -> np.ndarray:
  """Rows kept by --subsample `fraction` with --run `seed` (all if 1.0)."""
  if check_fraction(fraction) == 1.0:
    return np.arange(n)
  return hf_train_test_split(n, 1.0 - fraction, seed)[0]


def split_rows(dataset: str, source_sizes: Mapping[str, int], fraction: float = 1.0,
               seed: int = 0) -> dict[str, tuple[str, np.ndarray]]:
  """{split: (source file split, row indices in order)} for train/validation/test.

  `source_sizes` maps each source split ('train', 'test'[, 'valid']) to its number of rows.
  """
  sources.check_dataset(dataset)
  subset = subsample(source_sizes['train'], fraction, seed)
  out = {'test': ('test', np.arange(source_sizes['test']))}
  if 'valid' in sources.SOURCE_SPLITS[dataset]:
    out['train'] = ('train', subset)
    out['validation'] = ('valid', np.arange(source_sizes['valid']))
  else:
    train, valid = hf_train_test_split(len(subset), VALID_FRACTION, VALID_SEED)
    out['train'] = ('train', subset[train])
    out['validation'] = ('train', subset[valid])
  return {k: out[k] for k in SPLITS}


def source_rows(dataset: str, source_split: str, teacher: str | None = 'palm',
                data_dir: str | None = None) -> list[dict[str, Any]]:
  """All rows of a source file, with parsed teacher outputs if `teacher`.

  Teacher fields: teacher_rationale, teacher_label, teacher_failure ('' if the parse succeeded),
  teacher_truncated, teacher_no_answer_marker, teacher_completion (the completion without its
  invented next example).
  """
  rows = sources.read_examples(dataset, source_split, data_dir)
  if teacher is None:
    return rows
  texts = sources.read_teacher_outputs(dataset, source_split, teacher, data_dir, expected=len(rows))
  parsed = teacher_outputs.parse_all(dataset, texts, [r.get('choices') for r in rows])
  return [dict(r, teacher_rationale=p.rationale, teacher_label=p.label, teacher_failure=p.failure,
               teacher_truncated=p.truncated, teacher_no_answer_marker=p.no_answer_marker,
               teacher_completion=teacher_outputs.answer_part(dataset, t))
          for r, p, t in zip(rows, parsed, texts)]


def source_sizes(dataset: str, data_dir: str | None = None) -> dict[str, int]:
  """Rows per source file (reads the files)."""
  return {s: len(sources.read_examples(dataset, s, data_dir))
          for s in sources.SOURCE_SPLITS[dataset]}


def load_split(dataset: str, split: str, *, fraction: float = 1.0, seed: int = 0,
               teacher: str | None = 'palm', parse_failures: str = 'keep',
               data_dir: str | None = None, soft_labels: bool = False,
               soft_label_floor: float = soft_labels_lib.DEFAULT_FLOOR) -> list[dict[str, Any]]:
  """Rows of one official split (train/validation/test), in official order.

  soft_labels: the train split's rows expanded by the teacher's label distributions
  (`{split}_label_probs.json`; soft_labels.expand), each with its 'label_weight'.
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  if parse_failures not in teacher_outputs.PARSE_FAILURE_POLICIES:
    raise ValueError(f'parse_failures must be one of {teacher_outputs.PARSE_FAILURE_POLICIES}.')
  has_valid = 'valid' in sources.SOURCE_SPLITS[dataset]
  if split == 'test' or (split == 'validation' and has_valid):
    # Whole files: no need to read (possibly missing) train inputs.
    source_split = 'test' if split == 'test' else 'valid'
    idx = None
  else:
    n = len(sources.read_examples(dataset, 'train', data_dir))
    sizes = {'train': n, 'valid': 0, 'test': 0}
    source_split, idx = split_rows(dataset, sizes, fraction, seed)[split]
  rows = source_rows(dataset, source_split, teacher, data_dir)
  selected = rows if idx is None else [rows[i] for i in idx]
  if split == 'train' and teacher is not None and parse_failures == 'drop':
    selected = [r for r in selected if not r['teacher_failure']]
  if split == 'train' and soft_labels:
    if teacher is None:
      raise ValueError('soft_labels need a teacher folder holding the label probabilities')
    probs = soft_labels_lib.read(dataset, source_split, teacher, data_dir, expected=len(rows))
    selected = soft_labels_lib.expand(selected, soft_labels_lib.attach(selected, probs),
                                      soft_label_floor)
  return selected
