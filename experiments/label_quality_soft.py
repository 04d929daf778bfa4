"""Hard vs soft label-model labels for the student, in the label-quality e-SNLI setting (issue 20).

  DSSB_DATA_DIR=../shared/dss_data nice -n 10 .venv/bin/python experiments/label_quality_soft.py \\
      --out results/label_quality

The setting of experiments/label_quality.py: e-SNLI test inputs as an unlabeled pool (PaLM's
labels and the labeling functions vote; gold never trains), the scikit-learn pair student
(dssb.review.crossfit.PairStudent) trained on the pool, measured on e-SNLI valid gold. Arms:
PaLM's labels; the label model's most likely label (hard); the label model's probabilities as
soft targets (each (row, candidate) pair a positive weighted p and a negative weighted 1 - p, the
expected hard loss; PairStudent.fit_score(label_probs=...)), over the rows the label model
labels. Seeds refit the label model (Snorkel's seed). Mean +- standard error over seeds.

Writes the key 'soft_labels' into OUT/report.json (the rest of the report is left as it is; the
README is rendered from it by the report path, not here).
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
from dssb.review import apply
from dssb.review import combine
from dssb.review import crossfit
from dssb.review import sources
# pylint: enable=g-import-not-at-top,wrong-import-position

KEY = 'soft_labels'


def mean_se(values):
  values = np.asarray(values, float)
  se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
  return float(values.mean()), float(se)


def one_seed(table, student, test_views, test_gold, seed):
  """Student accuracy on e-SNLI valid for each arm, and what the label model's labels are."""
  frame, _ = combine.combine(table, seed=seed)
  lm_labels = [l if isinstance(l, str) else None for l in frame['label_model_label']]
  candidates = list(table.examples['candidates'])
  probs = apply.label_distributions(lm_labels, ['given'] * len(lm_labels), candidates,
                                    list(frame['label_model_probs']))
  gold = list(table.votes['gold'])
  arms = {'PaLM labels': (list(table.votes['palm']), None),
          'label model, hard (most likely label)': (lm_labels, None),
          'label model, soft (probabilities)': (lm_labels, probs)}
  out = {'accuracy': {}, 'seconds': {}}
  for name, (labels, label_probs) in arms.items():
    start = time.time()
    scores = student.fit_score(labels, test_views, label_probs)
    pred = [v['candidates'][int(np.argmax(p))] for v, p in zip(test_views, scores)]
    out['accuracy'][name] = float(np.mean([p == g for p, g in zip(pred, test_gold)]))
    out['seconds'][name] = round(time.time() - start, 1)
  top = np.asarray([max(p.values()) for p in probs if p is not None])
  out['label_model'] = {
      'rows_labelled': int(sum(l is not None for l in lm_labels)),
      'label_accuracy_vs_gold': float(np.mean([l == g for l, g in zip(lm_labels, gold)
                                               if l is not None])),
      'share_of_rows_with_top_probability_below_0.9': float(np.mean(top < 0.9)),
      'mean_top_probability': float(top.mean())}
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default='results/label_quality')
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--limit', type=int, default=None, help='first N rows only (smoke runs)')
  args = parser.parse_args()
  table = sources.build('esnli', 'test')
  if args.limit:
    table = sources.VoteTable(table.examples[:args.limit], table.votes[:args.limit],
                              table.sources)
  views = [sources.example_view('esnli', {'input': x, 'choices': c}, r) for x, c, r in zip(
      table.examples['input'], table.examples['candidates'], table.examples['rationale'])]
  student = crossfit.PairStudent(views)
  test_rows = data_sources.read_examples('esnli', 'valid')[:args.limit]
  test_views = [sources.example_view('esnli', r) for r in test_rows]
  test_gold = [r['label'] for r in test_rows]
  runs = []
  for seed in range(args.seeds):
    start = time.time()
    runs.append(one_seed(table, student, test_views, test_gold, seed))
    print(f'seed {seed}: {time.time() - start:.0f} s {runs[-1]["accuracy"]}', file=sys.stderr,
          flush=True)
  summary = {name: dict(zip(('mean', 'se'), mean_se([r['accuracy'][name] for r in runs])))
             for name in runs[0]['accuracy']}
  soft, hard = (np.asarray([r['accuracy'][f'label model, {k}'] for r in runs]) for k in
                ('soft (probabilities)', 'hard (most likely label)'))
  result = {
      'command': 'DSSB_DATA_DIR=../shared/dss_data nice -n 10 .venv/bin/python '
                 f'experiments/label_quality_soft.py --out {args.out} --seeds {args.seeds}'
                 + (f' --limit {args.limit}' if args.limit else ''),
      'setting': 'e-SNLI test inputs as the pool (PaLM + labeling functions vote), scikit-learn '
                 'pair student trained on the pool, accuracy on e-SNLI valid gold',
      'seeds': list(range(args.seeds)), 'pool_rows': len(table.examples),
      'test_rows': len(test_rows), 'student_test_accuracy': summary,
      'soft_minus_hard': dict(zip(('mean', 'se'), mean_se(soft - hard))), 'runs': runs}
  path = os.path.join(args.out, 'report.json')
  report = {}
  if os.path.exists(path):
    with open(path) as f:
      report = json.load(f)
  report[KEY] = result
  os.makedirs(args.out, exist_ok=True)
  with open(path, 'w') as f:
    json.dump(report, f, indent=1)
  for name, v in summary.items():
    print(f'{name}: {100 * v["mean"]:.2f} +- {100 * v["se"]:.2f}', file=sys.stderr)
  d = result['soft_minus_hard']
  print(f'soft - hard: {100 * d["mean"]:+.2f} +- {100 * d["se"]:.2f} points; wrote {path} '
        f'[{KEY!r}]', file=sys.stderr)


if __name__ == '__main__':
  main()
