"""Several label sources -> one label per example: majority vote and Snorkel's label model.

Majority vote counts every source alike. Snorkel's LabelModel (Ratner et al. 2019) learns each
source's accuracy from how the sources agree and disagree, without gold, and weights them by it:
it helps when sources differ in accuracy and are not too correlated, and it cannot beat a source
that is far better than the rest combined. Both give hard and probabilistic labels.

Labels are candidate indices (sources.VoteTable.label_matrix: -1 abstains), so a CQA row's five
choices are classes 0..4 and the NLI labels 0..2. No row is silently dropped: every row gets a
status, `voted` (a label), `tie` (majority only: the top classes tie; no label, probabilities
split over the tied classes) or `abstain` (no source voted; no label, uniform probabilities).

The per-source report is Snorkel's LFAnalysis: coverage, overlap, conflict, and where gold
exists, empirical accuracy.
"""

import argparse
import warnings
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from dssb import paths
from dssb.review import sources

COMBINED_FILE = 'combined.parquet'
REPORT_FILE = 'source_report.csv'
VOTING_KINDS = ('teacher', 'sample', 'narrow_prompt', 'lf')
STATUSES = ('voted', 'tie', 'abstain')
METHODS = ('majority', 'label_model')


def majority(matrix: np.ndarray, cardinality: int):
  """(labels [n] with -1 for tie or abstain, probabilities [n, k], statuses [n])."""
  counts = np.stack([(matrix == c).sum(1) for c in range(cardinality)], 1).astype(float)
  top = counts.max(1, keepdims=True)
  winners = (counts == top) & (top > 0)
  n_winners = winners.sum(1)
  probs = np.where(n_winners[:, None] > 0, winners / np.maximum(n_winners, 1)[:, None],
                   1.0 / cardinality)
  labels = np.where(n_winners == 1, counts.argmax(1), -1)
  status = np.where(n_winners == 0, 'abstain', np.where(n_winners == 1, 'voted', 'tie'))
  return labels, probs, status


def label_model(matrix: np.ndarray, cardinality: int, seed: int = 0, n_epochs: int = 500,
                lr: float = 0.01, class_balance: Optional[Sequence[float]] = None):
  """Snorkel's LabelModel fit on the votes (no gold): (labels, probabilities, statuses).

  A row no source voted on gets no label and uniform probabilities (Snorkel would give it the
  class prior); `class_balance` fixes the prior (default: Snorkel's, uniform).
  """
  import torch  # pylint: disable=g-import-not-at-top
  from snorkel.labeling.model import LabelModel  # pylint: disable=g-import-not-at-top
  # The model is a few k x k matrices: torch's thread pool only fights the other processes of a
  # small shared machine (a 3,000-row fit: 0.8 s on one thread, 10-30 s on the default pool).
  torch.set_num_threads(1)
  model = LabelModel(cardinality=cardinality, verbose=False, device='cpu')
  with warnings.catch_warnings():  # scipy's FutureWarning on snorkel's diags call
    warnings.simplefilter('ignore', FutureWarning)
    model.fit(matrix, n_epochs=n_epochs, lr=lr, seed=seed, progress_bar=False,
              class_balance=None if class_balance is None else list(class_balance))
    probs = model.predict_proba(matrix)
  none = (matrix == -1).all(1)
  probs[none] = 1.0 / cardinality
  labels = np.where(none, -1, probs.argmax(1))
  status = np.where(none, 'abstain', 'voted')
  return labels, probs, status


def source_report(matrix: np.ndarray, names: Sequence[str],
                  gold: Optional[np.ndarray] = None) -> pd.DataFrame:
  """Snorkel's LFAnalysis summary (Coverage, Overlaps, Conflicts; with gold Correct, Incorrect,
  Emp. Acc.), one row per source."""
  from snorkel.labeling import LFAnalysis  # pylint: disable=g-import-not-at-top
  report = LFAnalysis(matrix).lf_summary(Y=gold)
  report.index = list(names)
  report.index.name = 'source'
  return report.drop(columns=['j', 'Polarity'], errors='ignore')


def cardinality_of(table: sources.VoteTable) -> int:
  return max(len(c) for c in table.examples['candidates'])


def gold_indices(table: sources.VoteTable) -> Optional[np.ndarray]:
  if 'gold' not in table.votes.columns:
    return None
  return table.label_matrix(['gold'])[:, 0]


def combine(table: sources.VoteTable, names: Optional[Sequence[str]] = None,
            seed: int = 0, n_epochs: int = 500):
  """(combined frame, source report) of a vote table.

  The frame has, per row: id, and for each method in METHODS `{method}_label` (a candidate, or
  None), `{method}_status`, `{method}_probs` (over the row's candidates) and
  `{method}_confidence` (the label's probability).
  """
  names = list(names or table.source_names(VOTING_KINDS))
  if not names:
    raise ValueError('combine: no voting sources (teacher, sample, narrow_prompt or lf) in the '
                     'table')
  matrix = table.label_matrix(names)
  k = cardinality_of(table)
  out = pd.DataFrame({'id': table.examples['id']})
  candidates = list(table.examples['candidates'])
  results = {'majority': majority(matrix, k)}
  if len(names) >= 3:
    results['label_model'] = label_model(matrix, k, seed, n_epochs)
  else:  # Snorkel's LabelModel needs three sources to identify their accuracies
    results['label_model'] = results['majority']
  for method, (labels, probs, status) in results.items():
    out[f'{method}_label'] = [c[l] if l >= 0 else None for l, c in zip(labels, candidates)]
    out[f'{method}_status'] = status
    out[f'{method}_probs'] = [list(p[:len(c)]) for p, c in zip(probs, candidates)]
    out[f'{method}_confidence'] = [float(p[l]) if l >= 0 else 0.0 for l, p in zip(labels, probs)]
  gold = gold_indices(table)
  return out, source_report(matrix, names, gold)


def accuracy(labels: Sequence[Optional[str]], gold: Sequence[str]) -> float:
  """Share of rows whose label is gold (no label counts as wrong)."""
  return float(np.mean([l is not None and l == g for l, g in zip(labels, gold)]))


def synthetic_votes(n: int, accuracies: Sequence[float], coverages: Sequence[float],
                    cardinality: int = 3, seed: int = 0, copies: Sequence[int] = ()):
  """(label matrix, gold) of synthetic sources of known accuracy and coverage (conditionally
  independent given gold, except `copies`: source j in `copies` repeats source j-1's votes
  where both vote, a correlated pair). Wrong votes are uniform over the other classes."""
  rng = np.random.default_rng(seed)
  gold = rng.integers(0, cardinality, n)
  matrix = np.full((n, len(accuracies)), -1)
  for j, (acc, cov) in enumerate(zip(accuracies, coverages)):
    right = rng.random(n) < acc
    wrong = (gold + rng.integers(1, cardinality, n)) % cardinality
    votes = np.where(right, gold, wrong)
    if j in copies:
      votes = np.where(matrix[:, j - 1] >= 0, matrix[:, j - 1], votes)
    matrix[:, j] = np.where(rng.random(n) < cov, votes, -1)
  return matrix, gold


def write(frame: pd.DataFrame, report: pd.DataFrame, folder: str) -> dict:
  out = {'combined': str(paths.path(folder, COMBINED_FILE)),
         'report': str(paths.path(folder, REPORT_FILE))}
  sources.write_parquet(frame, out['combined'])
  paths.path(out['report']).write_text(report.to_csv())
  return out


def read(folder: str) -> pd.DataFrame:
  frame = sources.read_parquet(paths.path(folder, COMBINED_FILE))
  for method in METHODS:
    frame[f'{method}_label'] = frame[f'{method}_label'].astype(object).where(
        frame[f'{method}_label'].notna(), None)
    frame[f'{method}_probs'] = [list(p) for p in frame[f'{method}_probs']]
  return frame


# --- command line: python -m dssb.review combine ---------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--votes', required=True,
                      help='the vote table folder (python -m dssb.review sources --out)')
  parser.add_argument('--sources', nargs='*', default=None,
                      help='source names to combine (default: every teacher, sample, '
                      'narrow_prompt and lf source)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--epochs', type=int, default=500, help="the label model's epochs")


def run(args) -> int:
  table = sources.read(args.votes)
  frame, report = combine(table, args.sources, args.seed, args.epochs)
  written = write(frame, report, args.votes)
  print(report.to_string(float_format=lambda x: f'{x:.3f}'))
  gold = list(table.votes['gold']) if 'gold' in table.votes.columns else None
  for method in METHODS:
    counts = frame[f'{method}_status'].value_counts().to_dict()
    line = f'{method}: ' + ', '.join(f'{s} {counts.get(s, 0)}' for s in STATUSES)
    if gold is not None:
      line += f'; accuracy vs gold {accuracy(frame[f"{method}_label"], gold):.4f}'
    print(line)
  print(f"wrote {written['combined']} and {written['report']}")
  return 0
