"""Likely-wrong labels: cleanlab over out-of-fold student probabilities -> a ranked review queue.

Confident learning (Northcutt et al. 2021): where a student that never saw a row gives its
given label a low probability, and confidently prefers another, the label is suspect.
`cleanlab.filter.find_label_issues` picks the suspects, `cleanlab.rank.get_label_quality_scores`
orders them (self-confidence: the student's probability of the given label; low = review first).

The queue is JSONL, one flagged example a line, rank 1 first, in the format the review page
reads (issue 20's interface): rank, id, dataset, split, index, input, given_label, rationale,
candidates, votes (every voting source; null = abstain), student_probs (out of fold, sums to 1),
quality, and gold only when asked (simulated review).
"""

import argparse
import math
import sys
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from dssb import paths
from dssb.review import combine
from dssb.review import crossfit
from dssb.review import sources
from dssb.teacher import layout

STUDENT_FILE = 'student.parquet'


def label_probs(probs: Sequence[np.ndarray], candidates: Sequence[Sequence[str]],
                width: int) -> np.ndarray:
  """[n, width] probabilities by candidate index, a duplicated candidate's mass on its first
  occurrence (CQA has rows whose choices repeat), rows renormalised."""
  out = np.zeros((len(probs), width))
  for i, (p, cands) in enumerate(zip(probs, candidates)):
    for j, c in enumerate(cands):
      out[i, list(cands).index(c)] += p[j]
  return out / out.sum(1, keepdims=True)


def quality_and_issues(given: Sequence[Optional[str]], probs: Sequence[np.ndarray],
                       candidates: Sequence[Sequence[str]], filter_by: str = 'prune_by_noise_rate'):
  """(quality [n], is_issue [n]) for rows with a given label; NaN / False where there is none."""
  from cleanlab.filter import find_label_issues  # pylint: disable=g-import-not-at-top
  from cleanlab.rank import get_label_quality_scores  # pylint: disable=g-import-not-at-top
  labelled = np.asarray([g is not None for g in given])
  rows = np.flatnonzero(labelled)
  width = max(len(c) for c in candidates)
  pred = label_probs([probs[i] for i in rows], [candidates[i] for i in rows], width)
  y = np.asarray([list(candidates[i]).index(given[i]) for i in rows])
  quality = np.full(len(given), np.nan)
  issues = np.zeros(len(given), bool)
  quality[rows] = get_label_quality_scores(y, pred, method='self_confidence')
  issues[rows] = find_label_issues(y, pred, filter_by=filter_by)
  return quality, issues


def given_labels(table: sources.VoteTable, label_source: str,
                 combined: Optional[pd.DataFrame] = None) -> list:
  """The labels training would use now: a source's votes, or a combiner's labels."""
  if label_source in combine.METHODS:
    if combined is None:
      raise ValueError(f'--label_source {label_source}: run `python -m dssb.review combine` first')
    return list(combined[f'{label_source}_label'])
  if label_source not in table.votes.columns:
    raise ValueError(f'no source {label_source!r} in the vote table; it has '
                     f'{list(table.votes.columns)} (or use {combine.METHODS})')
  return list(table.votes[label_source])


def queue_records(table: sources.VoteTable, given, probs, quality, order,
                  with_gold: bool = False) -> list:
  """Queue lines (rank order) in the interface format."""
  voters = table.source_names(combine.VOTING_KINDS)
  ex = table.examples
  records = []
  for rank, i in enumerate(order, 1):
    cands = list(ex['candidates'][i])
    student = {}
    for c, p in zip(cands, probs[i]):
      student[c] = round(student.get(c, 0.0) + float(p), 6)
    record = {'rank': rank, 'id': ex['id'][i], 'dataset': ex['dataset'][i],
              'split': ex['split'][i], 'index': int(ex['index'][i]), 'input': ex['input'][i],
              'given_label': given[i], 'rationale': ex['rationale'][i], 'candidates': cands,
              'votes': {s: table.votes[s][i] for s in voters}, 'student_probs': student,
              'quality': round(float(quality[i]), 6)}
    if with_gold and 'gold' in table.votes.columns:
      record['gold'] = table.votes['gold'][i]
    records.append(record)
  return records


def review_order(quality, issues, budget: Optional[int] = None) -> np.ndarray:
  """Row indices to review, lowest quality first: cleanlab's issues, or with a budget the
  `budget` lowest-quality labelled rows (issues or not)."""
  labelled = np.flatnonzero(~np.isnan(quality))
  ranked = labelled[np.argsort(quality[labelled], kind='stable')]
  if budget is None:
    return ranked[issues[ranked]]
  return ranked[:budget]


def write_student(folder: str, ids, probs, folds) -> str:
  path = str(paths.path(folder, STUDENT_FILE))
  sources.write_parquet(pd.DataFrame({'id': list(ids), 'probs': [list(p) for p in probs],
                                      'fold': np.asarray(folds)}), path)
  return path


def read_student(folder: str) -> pd.DataFrame:
  frame = sources.read_parquet(paths.path(folder, STUDENT_FILE))
  frame['probs'] = [np.asarray(p) for p in frame['probs']]
  return frame


# --- command line: python -m dssb.review flag ------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--votes', required=True, help='the vote table folder')
  parser.add_argument('--label_source', default='palm',
                      help="the labels to check: a source name (default palm) or a combiner's "
                      "('label_model', 'majority': run combine first)")
  parser.add_argument('--student', default='sklearn', choices=('sklearn', 't5'),
                      help="sklearn: the pair student (seconds); t5: the project's trainer per "
                      'fold, rank classification (source train split only; --gin_file needed)')
  parser.add_argument('--use_rationale', action='store_true',
                      help="the sklearn student also reads the teacher's rationale")
  parser.add_argument('--gin_file', action='append', default=[],
                      help='gin files of the T5 fold runs (e.g. gin/runs/train.gin ...)')
  parser.add_argument('--gin', action='append', default=[], metavar='KEY=VALUE',
                      help='gin overrides of the T5 fold runs')
  parser.add_argument('--work_dir', default=None, help='T5 fold folders (default VOTES/t5_folds)')
  parser.add_argument('--folds', type=int, default=5)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--budget', type=float, default=None,
                      help="queue the N (or, below 1, that fraction of the rows) lowest-quality "
                      "labels; default: cleanlab's find_label_issues set")
  parser.add_argument('--with_gold', action='store_true',
                      help='write gold into the queue (simulated review only)')
  parser.add_argument('--out', required=True, help='the queue (JSONL, local or gs://)')


def _student_probs(args, table, given):
  dataset, split = table.examples['dataset'][0], table.examples['split'][0]
  views = [sources.example_view(dataset, {'input': x, 'choices': c}, r) for x, c, r in zip(
      table.examples['input'], table.examples['candidates'], table.examples['rationale'])]
  if args.student == 'sklearn':
    fit_predict = crossfit.PairStudent(views, args.use_rationale).fit_predict(given)
  else:
    if split != 'train' or not args.gin_file:
      raise ValueError('--student t5 trains with the project trainer: the vote table must be of '
                       'a source train split, and --gin_file must name the run files')
    work = args.work_dir or str(paths.path(args.votes, 't5_folds'))
    fit_predict = crossfit.t5_fit_predict(
        dataset, split, given, list(table.examples['rationale']), views, work, args.gin_file,
        [f'--gin.{g}' for g in args.gin], prefix='')
  return crossfit.cross_fit(fit_predict, len(views), args.folds, args.seed, progress=True)


def run(args) -> int:
  table = sources.read(args.votes)
  combined = None
  if args.label_source in combine.METHODS:
    combined = combine.read(args.votes)
  given = given_labels(table, args.label_source, combined)
  probs, folds, _ = _student_probs(args, table, given)
  write_student(args.votes, table.examples['id'], probs, folds)
  quality, issues = quality_and_issues(given, probs, list(table.examples['candidates']))
  budget = args.budget
  if budget is not None and budget < 1:
    budget = math.ceil(budget * len(given))
  order = review_order(quality, issues, None if budget is None else int(budget))
  records = queue_records(table, given, probs, quality, order, args.with_gold)
  layout.write_jsonl(args.out, records)
  n_given = sum(g is not None for g in given)
  print(f'{len(given)} rows, {n_given} with a {args.label_source} label; cleanlab flags '
        f'{int(issues.sum())} ({100 * issues.sum() / max(n_given, 1):.1f}%); queue of '
        f'{len(records)} written to {args.out}', file=sys.stderr)
  if 'gold' in table.votes.columns and records:
    wrong = np.mean([r['given_label'] != table.votes['gold'][table.examples.index[
        table.examples['id'] == r['id']][0]] for r in records])
    base = np.mean([g != t for g, t in zip(given, table.votes['gold']) if g is not None])
    print(f'  against gold: {100 * wrong:.1f}% of the queue is wrong (base rate '
          f'{100 * base:.1f}%)', file=sys.stderr)
  return 0
