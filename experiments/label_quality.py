"""Label quality on the released data: flagging, review budgets, combiners (issue 20).

  DSSB_DATA_DIR=../shared/dss_data nice -n 10 .venv/bin/python experiments/label_quality.py \\
      --out results/label_quality

Data: CQA train (the trainer's train split of the source file: 8,766 rows, PaLM's labels) and
e-SNLI test inputs as an unlabeled pool (PaLM's labels; gold only simulates the reviewer and
measures; never a reported test set). The student that flags is the scikit-learn pair student
(dssb.review.crossfit.PairStudent), 5-fold cross-fitted; on CQA it reads PaLM's rationale too
(on inputs alone it is at chance on CQA). The reviewer is simulated by gold: a reviewed row gets
its gold label. Student test accuracy: the scikit-learn student trained on the curated e-SNLI
pool, measured on e-SNLI valid gold (untouched by any curation). 3 seeds (folds, random review,
label model); mean +- standard error. Also a synthetic benchmark of the combiners (sources of
known accuracy, coverage and correlation; stated as synthetic). All of it through dssb.review.

This writes the measurements (report.json); the README.md tables and PNGs are rendered from it
by the one report path, `python -m dssb.report results/label_quality` (dssb/report/
label_quality.py), which this script calls at the end and `--all --check` checks.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from dssb.data import sources as data_sources
from dssb.data import splits
from dssb.report import dispatch
from dssb.review import combine
from dssb.review import crossfit
from dssb.review import flag
from dssb.review import sources
# pylint: enable=g-import-not-at-top,wrong-import-position

BUDGETS = (0.01, 0.05, 0.10, 0.25)
CURVE = (0.0, 0.01, 0.025, 0.05, 0.10, 0.15, 0.25)
STUDENT_BUDGETS = (0.0, 0.10, 0.25)


def load(dataset, limit=None):
  """(vote table restricted to the rows studied, views)."""
  split = 'train' if dataset == 'cqa' else 'test'
  table = sources.build(dataset, split)
  if dataset == 'cqa':  # the trainer's train split (the rest of the file is its validation)
    n = len(table.examples)
    rows = np.sort(splits.split_rows('cqa', {'train': n, 'test': 0})['train'][1])
    table = sources.VoteTable(table.examples.iloc[rows].reset_index(drop=True),
                              table.votes.iloc[rows].reset_index(drop=True), table.sources)
  if limit:  # smoke runs
    table = sources.VoteTable(table.examples[:limit], table.votes[:limit], table.sources)
  views = [sources.example_view(dataset, {'input': x, 'choices': c}, r) for x, c, r in zip(
      table.examples['input'], table.examples['candidates'], table.examples['rationale'])]
  return table, views


def teacher_confidence(table, given, rng):
  """Share of the other voting sources (labeling functions, incl. rationale-label consistency on
  CQA) that agree with the given label, among those that vote; random tie-break. Low first."""
  others = [s for s in table.source_names(combine.VOTING_KINDS) if s != 'palm']
  agree = np.zeros(len(given))
  votes = np.zeros(len(given))
  for s in others:
    v = table.votes[s]
    voted = np.asarray([x is not None for x in v])
    agree += np.asarray([x is not None and x == g for x, g in zip(v, given)])
    votes += voted
  score = np.where(votes > 0, agree / np.maximum(votes, 1), 0.5)
  return score + 1e-6 * rng.random(len(given))


def precision_recall(order, wrong, k):
  top = order[:k]
  return float(wrong[top].mean()), float(wrong[top].sum() / max(wrong.sum(), 1))


def accuracy(labels, gold):
  return float(np.mean([l is not None and l == g for l, g in zip(labels, gold)]))


def review(given, gold, rows):
  out = list(given)
  for i in rows:
    out[i] = gold[i]
  return out


def one_seed(dataset, table, views, seed, with_student_test, test_views, test_gold):
  rng = np.random.default_rng(seed)
  given = list(table.votes['palm'])
  gold = list(table.votes['gold'])
  n = len(given)
  labelled = np.asarray([g is not None for g in given])
  wrong = np.asarray([g is not None and g != t for g, t in zip(given, gold)])
  start = time.time()
  student = crossfit.PairStudent(views, use_rationale=dataset == 'cqa')
  probs, _, _ = crossfit.cross_fit(student.fit_predict(given), n, 5, seed)
  cross_fit_s = time.time() - start
  candidates = list(table.examples['candidates'])
  quality, issues = flag.quality_and_issues(given, probs, candidates)
  lab = np.flatnonzero(labelled)
  frame, _ = combine.combine(table, seed=seed)
  lm_given = np.asarray([p[list(c).index(g)] if g is not None else 0.0 for p, c, g in zip(
      frame['label_model_probs'], candidates, given)])
  rankings = {
      'cleanlab (student, out of fold)': lab[np.argsort(quality[lab], kind='stable')],
      'random': rng.permutation(lab),
      'teacher confidence (LF agreement)': lab[np.argsort(
          teacher_confidence(table, given, rng)[lab], kind='stable')],
      'label model P(given label)': lab[np.argsort(lm_given[lab] + 1e-9 * rng.random(len(lab)),
                                                   kind='stable')],
  }
  flagging = {name: {f'{b:g}': precision_recall(order, wrong, int(round(b * len(lab))))
                     for b in BUDGETS} for name, order in rankings.items()}
  flagging['cleanlab find_label_issues set'] = {
      'all': (float(wrong[issues].mean()), float(wrong[issues].sum() / wrong.sum()),
              int(issues.sum()))}
  # label accuracy against the review budget
  relabels = [c[int(np.argmax(p))] if p.max() >= 0.5 else None for p, c in zip(probs, candidates)]
  flagged_order = rankings['cleanlab (student, out of fold)']
  curve = {}
  for b in CURVE:
    k = int(round(b * n))
    reviewed = set(flagged_order[:k].tolist())
    rest = [i for i in np.flatnonzero(issues) if i not in reviewed]
    fixed = review(given, gold, flagged_order[:k])
    dropped = list(fixed)
    for i in rest:
      dropped[i] = None
    neighbours = list(fixed)
    for i in rest:
      if relabels[i] is not None:
        neighbours[i] = relabels[i]
    kept = [i for i, l in enumerate(dropped) if l is not None]
    curve[f'{b:g}'] = {
        'random review': accuracy(review(given, gold, rng.permutation(n)[:k]), gold),
        'flagged review': accuracy(fixed, gold),
        'flagged review + drop unreviewed flags (kept rows)':
            accuracy([dropped[i] for i in kept], [gold[i] for i in kept]),
        'rows kept after drop': len(kept) / n,
        'flagged review + neighbour relabel of unreviewed flags': accuracy(neighbours, gold),
    }
    if with_student_test and b in STUDENT_BUDGETS:
      sets = {'random review': review(given, gold, rng.permutation(n)[:k]),
              'flagged review': fixed, 'flagged review + drop unreviewed flags': dropped,
              'flagged review + neighbour relabel of unreviewed flags': neighbours}
      if b == 0:
        sets['gold labels (upper bound)'] = gold
      for name, labels in sets.items():
        test_probs = student.fit_score(labels, test_views)
        pred = [v['candidates'][int(np.argmax(p))] for v, p in zip(test_views, test_probs)]
        curve[f'{b:g}'][f'student test accuracy: {name}'] = float(np.mean(
            [p == g for p, g in zip(pred, test_gold)]))
  sources_acc = {s: accuracy(table.votes[s], gold) for s in table.source_names(
      combine.VOTING_KINDS)}
  coverage = {s: float(np.mean([v is not None for v in table.votes[s]]))
              for s in sources_acc}
  multi = {'majority vote': accuracy(frame['majority_label'], gold),
           'majority ties': float(np.mean(frame['majority_status'] == 'tie')),
           'label model': accuracy(frame['label_model_label'], gold),
           'best single source': max(sources_acc.values()),
           'best single source name': max(sources_acc, key=sources_acc.get)}
  return {'rows': n, 'labelled': int(labelled.sum()), 'base_error_rate':
          float(wrong[labelled].mean()), 'given_label_accuracy': accuracy(given, gold),
          'student_oof_accuracy': float(np.mean([c[int(np.argmax(p))] == g for p, c, g in zip(
              probs, candidates, gold)])), 'cross_fit_seconds': round(cross_fit_s, 1),
          'flagging': flagging, 'curve': curve, 'multi_signal': multi,
          'sources': {s: {'accuracy': sources_acc[s], 'coverage': coverage[s]}
                      for s in sources_acc}}


def synthetic(seeds):
  """Combiners on synthetic sources (stated as synthetic): one good source (accuracy 0.8,
  coverage 0.5) and m weak ones (0.6, coverage 0.8), independent or in correlated pairs."""
  out = {}
  for correlated in (False, True):
    for m in (2, 4, 8, 16):
      accs, covs = [0.8] + [0.6] * m, [0.5] + [0.8] * m
      copies = tuple(range(2, m + 1, 2)) if correlated else ()
      res = {'majority vote': [], 'label model': [], 'best single source': []}
      for seed in seeds:
        matrix, gold = combine.synthetic_votes(5000, accs, covs, 3, seed, copies)
        mv, _, _ = combine.majority(matrix, 3)
        lm, _, _ = combine.label_model(matrix, 3, seed)
        res['majority vote'].append(float((mv == gold).mean()))
        res['label model'].append(float((lm == gold).mean()))
        res['best single source'].append(float(max((matrix[:, j] == gold).mean()
                                                    for j in range(matrix.shape[1]))))
      out[f'{"correlated pairs" if correlated else "independent"}, 1 good + {m} weak'] = res
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default='results/label_quality')
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--datasets', nargs='*', default=['cqa', 'esnli'])
  parser.add_argument('--limit', type=int, default=None, help='first N rows only (smoke runs)')
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  seeds = list(range(args.seeds))
  report = {'command': 'DSSB_DATA_DIR=../shared/dss_data nice -n 10 .venv/bin/python '
                       f'experiments/label_quality.py --out {args.out} --seeds {args.seeds}',
            'seeds': seeds, 'datasets': {}}
  test_rows = data_sources.read_examples('esnli', 'valid')[:args.limit]
  test_views = [sources.example_view('esnli', r) for r in test_rows]
  test_gold = [r['label'] for r in test_rows]
  for dataset in args.datasets:
    table, views = load(dataset, args.limit)
    runs = []
    for seed in seeds:
      start = time.time()
      runs.append(one_seed(dataset, table, views, seed, dataset == 'esnli', test_views,
                           test_gold))
      print(f'{dataset} seed {seed}: {time.time() - start:.0f} s', file=sys.stderr, flush=True)
    report['datasets'][dataset] = runs
    with open(os.path.join(args.out, 'report.json'), 'w') as f:
      json.dump(report, f, indent=1)
  report['synthetic'] = synthetic(seeds)
  with open(os.path.join(args.out, 'report.json'), 'w') as f:
    json.dump(report, f, indent=1)
  dispatch.write(args.out)
  print(f'wrote {args.out}/report.json, README.md and PNGs', file=sys.stderr)


if __name__ == '__main__':
  main()
