"""Label quality (results/label_quality/): README.md tables and PNGs from report.json alone,
which experiments/label_quality.py writes (per seed and dataset: flagging precision and recall
by review budget, label and student accuracy against the budget, sources and combiners; and
the synthetic combiner benchmark). The budgets are read from report.json's keys, so a run with
other budgets renders without touching this module. review_page.png beside them is a
screenshot (experiments/screenshot_review_page.py), not rendered here.
"""

import json
import os
from typing import List

import numpy as np

from dssb.report.stats import pyplot, save_png, write_text

REPORT = 'report.json'
DPI = 110
NAMES = {'cqa': 'CQA train (8,766 rows, PaLM labels)',
         'esnli': 'e-SNLI test inputs as a pool (9,824 rows, PaLM labels)'}
ISSUE_SET = 'cleanlab find_label_issues set'


def has_report(folder: str) -> bool:
  """Whether FOLDER holds a report.json of the label-quality schema."""
  path = os.path.join(folder, REPORT)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    report = json.load(f)
  return isinstance(report, dict) and {'command', 'seeds', 'datasets'} <= set(report)


def _mean_se(values):
  """Mean and standard error (numpy's ddof=1 std / sqrt(n); 0 for one seed, so smoke runs
  render): the arithmetic the committed tables were made with."""
  values = np.asarray(values, float)
  se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
  return float(values.mean()), float(se)


def _agg(runs, get):
  return _mean_se([get(r) for r in runs])


def _fmt(m_se, scale=100.0):
  m, se = m_se
  return f'{scale * m:.1f} +- {scale * se:.1f}'


def _budgets(keys):
  """[(key, fraction)] of budget keys as report.json spells them ('0.01'), in its order."""
  return [(k, float(k)) for k in keys]


def _tables(dataset, runs):
  """The README section of one dataset."""
  rankings = [m for m in runs[0]['flagging'] if not m.endswith('set')]
  budgets = _budgets(runs[0]['flagging'][rankings[0]])
  curve = _budgets(runs[0]['curve'])
  student_keys = [k for k in runs[0]['curve'][curve[0][0]] if k.startswith('student')]
  student_budgets = [(k, b) for k, b in curve
                     if any(s.startswith('student') for s in runs[0]['curve'][k])]
  lines = [f'## {NAMES.get(dataset, dataset)}', '',
           f"Rows {runs[0]['rows']}, with a parseable PaLM label {runs[0]['labelled']}; "
           f"PaLM right on {_fmt(_agg(runs, lambda r: r['given_label_accuracy']))}% of rows; "
           f"base error rate among labelled rows "
           f"{_fmt(_agg(runs, lambda r: r['base_error_rate']))}%. Student (scikit-learn "
           f"pair student{', reads the rationale' if dataset == 'cqa' else ''}), out of fold, "
           f"right on {_fmt(_agg(runs, lambda r: r['student_oof_accuracy']))}% vs gold.", '',
           '### Flagging: precision / recall of the reviewed set at each budget (% of rows)',
           '', '| ranking | ' + ' | '.join(f'{100 * b:g}%' for _, b in budgets) + ' |',
           '|---|' + '---|' * len(budgets)]
  for method in rankings:
    cells = [f"{_fmt(_agg(runs, lambda r, k=k: r['flagging'][method][k][0]))} / "
             f"{_fmt(_agg(runs, lambda r, k=k: r['flagging'][method][k][1]))}"
             for k, _ in budgets]
    lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
  curve_keys = [k for k in runs[0]['curve'][curve[0][0]] if not k.startswith('student')]
  lines += ['', f"cleanlab's find_label_issues flags "
            f"{_agg(runs, lambda r: r['flagging'][ISSUE_SET]['all'][2])[0]:.0f} rows: precision "
            f"{_fmt(_agg(runs, lambda r: r['flagging'][ISSUE_SET]['all'][0]))}%, recall "
            f"{_fmt(_agg(runs, lambda r: r['flagging'][ISSUE_SET]['all'][1]))}%.", '',
            '### Label accuracy (% of all rows right; no label counts as wrong) vs budget', '',
            'Review: the budget goes to the lowest-quality rows (flagged) or to random rows; '
            "a reviewed row gets gold. The rest of cleanlab's find_label_issues set is then "
            'dropped (its accuracy is over the kept rows, which also leaves out the rows with '
            'no parseable PaLM label) or relabelled by the student where its out-of-fold '
            'probability is >= 0.5 (neighbour relabel).', '',
            '| budget | ' + ' | '.join(curve_keys) + ' |', '|---|' + '---|' * len(curve_keys)]
  for key, b in curve:
    keys = [k for k in runs[0]['curve'][key] if not k.startswith('student')]
    lines.append(f'| {100 * b:g}% | ' + ' | '.join(
        _fmt(_agg(runs, lambda r, k=k: r['curve'][key][k])) for k in keys) + ' |')
  if student_keys:
    lines += ['', '### Student test accuracy (scikit-learn student trained on the curated '
              'pool, measured on e-SNLI valid gold, a split no curation touches)', '',
              '| budget | ' + ' | '.join(k.split(': ')[1] for k in student_keys) + ' |',
              '|---|' + '---|' * len(student_keys)]
    for key, b in student_budgets:
      cur = runs[0]['curve'][key]
      lines.append(f'| {100 * b:g}% | ' + ' | '.join(
          _fmt(_agg(runs, lambda r, k=k: r['curve'][key][k])) if k in cur else '-'
          for k in student_keys) + ' |')
  multi = runs[0]['multi_signal']
  lines += ['', '### Multi-signal: sources and combiners (% of all rows right)', '',
            '| source | coverage | right, % of all rows | right, % of rows it votes on |',
            '|---|---|---|---|']
  for s_name, v in runs[0]['sources'].items():
    lines.append(f"| {s_name} | {100 * v['coverage']:.1f} | {100 * v['accuracy']:.1f} | "
                 f"{100 * v['accuracy'] / max(v['coverage'], 1e-9):.1f} |")
  signal = {k: _fmt(_agg(runs, lambda r, k=k: r['multi_signal'][k]))
            for k in ('best single source', 'majority ties', 'majority vote', 'label model')}
  lines += ['', '| combiner | accuracy |', '|---|---|',
            f"| best single source ({multi['best single source name']}) | "
            f"{signal['best single source']} |",
            f"| majority vote (ties {signal['majority ties']}% of rows, no label) | "
            f"{signal['majority vote']} |",
            f"| Snorkel label model | {signal['label model']} |", '']
  return lines


def _plots(dataset, runs, out):
  """flagging_, label_accuracy_ and (with student runs) student_accuracy_DATASET.png in OUT;
  returns their names."""
  plt = pyplot()
  rankings = [m for m in runs[0]['flagging'] if not m.endswith('set')]
  budgets = _budgets(runs[0]['flagging'][rankings[0]])
  curve = _budgets(runs[0]['curve'])
  student_keys = [k for k in runs[0]['curve'][curve[0][0]] if k.startswith('student')]
  names = []
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for method in rankings:
    for ax, idx in zip(axes, (0, 1)):
      vals = [_agg(runs, lambda r, k=k: r['flagging'][method][k][idx]) for k, _ in budgets]
      ax.errorbar([100 * b for _, b in budgets], [100 * v[0] for v in vals],
                  yerr=[100 * v[1] for v in vals], marker='o', capsize=3, label=method)
  base = 100 * _agg(runs, lambda r: r['base_error_rate'])[0]
  axes[0].axhline(base, color='gray', ls='--', label=f'base error rate {base:.1f}%')
  axes[0].set(xlabel='review budget (% of rows)', ylabel='precision (% flagged that are wrong)',
              xscale='log', title=f'{dataset}: flagging precision')
  axes[1].set(xlabel='review budget (% of rows)', ylabel='recall (% of wrong labels found)',
              xscale='log', title=f'{dataset}: flagging recall')
  axes[0].legend(fontsize=7)
  names.append(_save(plt, fig, out, f'flagging_{dataset}.png'))
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for key in [k for k in runs[0]['curve'][curve[0][0]] if not k.startswith(('student', 'rows'))]:
    vals = [_agg(runs, lambda r, c=c: r['curve'][c][key]) for c, _ in curve]
    ax.errorbar([100 * b for _, b in curve], [100 * v[0] for v in vals],
                yerr=[100 * v[1] for v in vals], marker='o', capsize=3, label=key)
  ax.set(xlabel='review budget (% of rows)', ylabel='labels right (%)',
         title=f'{dataset}: label accuracy vs review budget')
  ax.legend(fontsize=7)
  names.append(_save(plt, fig, out, f'label_accuracy_{dataset}.png'))
  if student_keys:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key in student_keys:
      bs = [(c, b) for c, b in curve if key in runs[0]['curve'][c]]
      vals = [_agg(runs, lambda r, c=c: r['curve'][c][key]) for c, _ in bs]
      ax.errorbar([100 * b for _, b in bs], [100 * v[0] for v in vals],
                  yerr=[100 * v[1] for v in vals], marker='o', capsize=3,
                  label=key.split(': ')[1])
    ax.set(xlabel='review budget (% of pool rows)', ylabel='student accuracy on e-SNLI valid (%)',
           title='student trained on the curated pool')
    ax.legend(fontsize=7)
    names.append(_save(plt, fig, out, f'student_accuracy_{dataset}.png'))
  return names


def _save(plt, fig, out, name):
  fig.tight_layout()
  save_png(fig, os.path.join(out, name), dpi=DPI)
  plt.close(fig)
  return name


def _synthetic(synthetic, out):
  """The synthetic benchmark's README lines and synthetic_combiners.png in OUT."""
  lines = ['## Synthetic combiner benchmark (synthetic sources, 5,000 rows, 3 classes)', '',
           'One good source (accuracy 0.8, coverage 0.5) and m weak sources (0.6, coverage '
           '0.8), independent given gold or in copied pairs (correlated). Accuracy %, '
           'no label counts as wrong.', '', '| setting | majority vote | label model | '
           'best single source |', '|---|---|---|---|']
  for setting, res in synthetic.items():
    lines.append(f'| {setting} | ' + ' | '.join(_fmt(_mean_se(res[k])) for k in (
        'majority vote', 'label model', 'best single source')) + ' |')
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for correlated in ('independent', 'correlated pairs'):
    keys = [k for k in synthetic if k.startswith(correlated)]
    ms = [int(k.split('+ ')[1].split()[0]) for k in keys]
    for method, style in (('majority vote', '--'), ('label model', '-')):
      vals = [_mean_se(synthetic[k][method]) for k in keys]
      ax.errorbar(ms, [100 * v[0] for v in vals], yerr=[100 * v[1] for v in vals], ls=style,
                  marker='o', capsize=3, label=f'{method}, {correlated}')
  ax.set(xlabel='weak sources added (accuracy 0.6)', ylabel='accuracy (%)', xscale='log',
         title='synthetic: combiners as weak sources are added')
  ax.legend(fontsize=7)
  return lines, _save(plt, fig, out, 'synthetic_combiners.png')


def _soft_labels(soft):
  """README lines for experiments/label_quality_soft.py's measurements (report.json
  'soft_labels'): the student trained on hard vs soft label-model targets."""
  lines = ['## Soft label targets (the label model\'s probabilities as training targets)', '',
           f"Produced by `{soft['command']}`. Setting: {soft['setting']}; {soft['pool_rows']:,} "
           f"pool rows, {soft['test_rows']:,} test rows, seeds {soft['seeds']} (label model "
           'seed; the PaLM-label student has no seed of its own). Student test accuracy %:', '',
           '| training labels | student test accuracy |', '|---|---|']
  for name, m_se in soft['student_test_accuracy'].items():
    lines.append(f"| {name} | {_fmt((m_se['mean'], m_se['se']))} |")
  diff = soft['soft_minus_hard']
  delta = _fmt((diff['mean'], diff['se']))
  verdict = ('soft helps' if diff['mean'] - 2 * diff['se'] > 0 else
             'soft hurts' if diff['mean'] + 2 * diff['se'] < 0 else 'within noise')
  lines += ['', f'Soft minus hard: {delta} points ({verdict}: the difference against twice its '
            'standard error).', '']
  return lines


def write(folder: str, out: str) -> List[str]:
  """README.md and the PNGs in OUT from FOLDER/report.json; returns their names, sorted."""
  path = os.path.join(folder, REPORT)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no label-quality report (run experiments/label_quality.py'
                            ' first)')
  with open(path) as f:
    report = json.load(f)
  for field in ('command', 'seeds', 'datasets'):
    if field not in report:
      raise ValueError(f'{path}: no "{field}" field')
  lines = ['# Label quality: flagging, review budgets, combiners (issue 20)', '',
           f"Produced by `{report['command']}`; tables and plots by `python -m dssb.report "
           f"results/label_quality` from its report.json. Seeds {report['seeds']}: "
           'numbers are mean +- standard error over seeds (5-fold split, random review, label '
           'model). The reviewer is simulated by gold. Percentages.', '',
           'The real label sources are those in the multi-signal tables: PaLM-540B\'s released '
           'outputs (one sample per row) and the heuristic labeling functions of '
           'dssb/review/lfs.py. No open LLM runs on this machine, so no second teacher, no '
           'samples and no narrow prompts were annotated here (`python -m dssb.review sources '
           '--teacher/--narrow_prompt` takes them), and a T5 trained from scratch here does not '
           'learn CQA (results/mini_repro): the synthetic benchmark at the end stands in for '
           'sources of known accuracy.', '']
  written = ['README.md']
  for dataset, runs in report['datasets'].items():
    lines += _tables(dataset, runs)
    written += _plots(dataset, runs, out)
  if 'soft_labels' in report:
    lines += _soft_labels(report['soft_labels'])
  if 'synthetic' in report:
    synthetic_lines, name = _synthetic(report['synthetic'], out)
    lines += synthetic_lines
    written.append(name)
  write_text(os.path.join(out, 'README.md'), '\n'.join(lines) + '\n')
  return sorted(written)
