"""Soft label targets: train on a label distribution p(c | x) instead of one label (issue 20).

A label model (dssb.review.combine: Snorkel's LabelModel) gives, per row, probabilities over the
row's candidate labels. The student's soft-label loss is the expected cross-entropy under them,

    L(x) = sum_c p(c | x) * NLL(c | x),

the KL from the label distribution to the student's sequence distribution restricted to the
candidates, up to the distribution's entropy (a constant). It is built from the existing parts,
with no new loss: a row becomes one training example per candidate with p(c) >= `floor` (the
kept probabilities renormalised to sum to 1), and each copy carries p(c) as its weight, which
the input pipeline multiplies into the copy's per-token loss weights (input_pipeline.Examples.
weights). The trainer's mean over weighted target tokens then gives, for a sub-batch,

    sum_rows sum_c p(c) NLL(c) / sum_rows sum_c p(c) len(c)      (len: target tokens, EOS too)

which is the hard loss's normalisation (per task, per target token) with each token counted
p(c) times: a one-hot p gives exactly the hard label set, copy for copy. The same weight applies
to every sub-batch of a copy, so with distilling step-by-step the rationale (one per row, the
same text in every copy) still counts once per row: its weights add up to 1. Why this and not a
first-token distribution through the token KL (losses.soft_target_loss): CQA's candidates are
free text whose first tokens can coincide, and the KL needs a teacher network; the weights need
neither. What it costs: a row with k kept candidates is k examples of the epoch and of a batch
(computed k times, the rationale included); `floor` drops the negligible ones.

The probabilities travel beside the completions in the teacher folder, so the hard path reads the
folder unchanged:

    datasets/{dataset}/llm_{teacher}/{split}_label_probs.json
        a JSON array aligned with the rows of {dataset}_{split}.json: null (no label) or
        {candidate label: probability}.

Written by `python -m dssb.review apply --soft` (dssb.review.curated); read when a task is built
with get_task_name(..., soft_labels=True) (gin: tasks.get_task_name.soft_labels = True).
"""

import json
import math
from typing import Any, Mapping, Optional, Sequence

from dssb import paths
from dssb.data import sources

WEIGHT_KEY = 'label_weight'  # the per-example weight feature of an expanded row
DEFAULT_FLOOR = 0.05


def probs_path(dataset: str, split: str, teacher: str, root: Optional[str] = None) -> str:
  return str(paths.path(sources.teacher_dir(dataset, teacher, root), f'{split}_label_probs.json'))


def check_probs(probs: Optional[Mapping[str, float]], where: str) -> Optional[dict]:
  """A row's {label: probability} (finite, >= 0, summing to 1 within 1e-4), or None."""
  if probs is None:
    return None
  if not isinstance(probs, Mapping) or not probs:
    raise ValueError(f'{where}: expected null or a non-empty {{label: probability}} object, got '
                     f'{probs!r}')
  out = {str(k): float(v) for k, v in probs.items()}
  if any(not math.isfinite(v) or v < 0 for v in out.values()):
    raise ValueError(f'{where}: probabilities must be finite and >= 0, got {out}')
  if abs(sum(out.values()) - 1.0) > 1e-4:
    raise ValueError(f'{where}: probabilities sum to {sum(out.values()):.6f}, not 1')
  return out


def write(folder: str, split: str, probs: Sequence[Optional[Mapping[str, float]]]) -> str:
  """Writes `{split}_label_probs.json` into a teacher folder; returns its path."""
  from dssb.teacher import layout  # pylint: disable=g-import-not-at-top
  rows = [check_probs(p, f'row {i}') for i, p in enumerate(probs)]
  path = str(paths.path(folder, f'{split}_label_probs.json'))
  layout.write_json(path, rows)
  return path


def read(dataset: str, split: str, teacher: str, root: Optional[str] = None,
         expected: Optional[int] = None) -> list:
  """The rows' label distributions (None where a row has none) of a teacher folder."""
  path = probs_path(dataset, split, teacher, root)
  if not paths.path(path).exists():
    raise FileNotFoundError(
        f'soft labels asked for, but teacher {teacher!r} has no {path}: write the label '
        'probabilities with `python -m dssb.review apply --soft --teacher_folder ...`, or train '
        'on the hard labels (soft_labels=False)')
  data = json.loads(paths.path(path).read_text(encoding='utf-8'))
  if not isinstance(data, list):
    raise ValueError(f'{path}: expected a JSON array')
  if expected is not None and len(data) != expected:
    raise ValueError(f'{path} has {len(data)} rows but {dataset} {split} has {expected}')
  return [check_probs(p, f'{path} row {i}') for i, p in enumerate(data)]


def expand(rows: Sequence[dict], probs: Sequence[Optional[Mapping[str, float]]],
           floor: float = DEFAULT_FLOOR) -> list:
  """One row per candidate label with p >= floor (renormalised), as teacher_label, with its
  weight under WEIGHT_KEY; rows without probabilities stay as they are, with weight 1.

  probs[i] belongs to rows[i]. A row whose candidates all fall below the floor keeps its most
  likely one (weight 1).
  """
  if not 0.0 <= floor < 1.0:
    raise ValueError(f'soft label floor must be in [0, 1), got {floor}')
  out = []
  for row, p in zip(rows, probs, strict=True):
    if p is None:
      out.append({**row, WEIGHT_KEY: 1.0})
      continue
    kept = {c: v for c, v in p.items() if v >= floor and v > 0} or {max(p, key=p.get): 1.0}
    total = sum(kept.values())
    for label, v in kept.items():
      out.append({**row, 'teacher_label': label, 'teacher_failure': '', WEIGHT_KEY: v / total})
  return out


def attach(rows: Sequence[dict[str, Any]], probs: Sequence[Optional[dict]]) -> list:
  """Each row's distribution by its source row index ('row')."""
  return [probs[r['row']] for r in rows]
