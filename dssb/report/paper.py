"""Paper tables and plots from sweep run summaries (Hsieh et al. 2023, Tables 1-2, Fig. 4).

Reads EXPERIMENT/runs/*.json, each one run as the sweep writes it (`sweep_run.json`):
{"sweep": name, "settings": {"DATASET", "RECIPE", "FRACTION", "SEED", "MODEL", ...},
"command": str, "results": the run's results.json}. Runs that differ only in SEED form one
cell: mean, standard error over seeds and n. Writes into OUT (default: EXPERIMENT):
  README.md     one table per dataset: our test accuracy (last, best on validation, max over
                evals; see dssb/train/evals.py for which the paper's comparison is), the paper's
                printed value beside (Tables 1-2, T5-Base, 100% of the data; values the paper
                shows only in plots are "plot only"), chance, the teacher's own test accuracy
                computed from its released outputs, and the command of every cell;
  report.json   the same numbers;
  fractions_DATASET.png  accuracy against data fraction: ours with standard-error bars, the
                paper's printed numbers as points, the fractions where the paper's value is
                plot only marked on the axis (never drawn at a height), the teacher and chance
                as horizontal lines.
Every output is a function of the summaries, the data and paper_numbers.json alone: running
the command again gives the same bytes (`python -m dssb.report --check` verifies that).
"""

import json
import os
from typing import Dict, List, Optional, Sequence

from dssb.report.stats import fmt, mean_se, pyplot, save_png
from dssb.report.summaries import load_runs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAPER_NUMBERS = os.path.join(REPO, 'results', 'paper_numbers.json')
KINDS = ('last', 'best_on_validation', 'max_over_evals')
KIND_TITLES = {'last': 'last', 'best_on_validation': 'best on validation',
               'max_over_evals': 'max over evals'}
# Recipe (and teacher) -> row of the paper's Tables 1-2 (T5-Base, 100% of the data).
PAPER_ROWS = {('standard', None): 'standard_finetuning',
              ('single_task_rationale_first', 'palm'): 'single_task_rationale_then_label_palm',
              ('step_by_step', 'palm'): 'step_by_step_palm_540b',
              ('step_by_step', 'gpt_neox'): 'step_by_step_gpt_neox_20b'}
PAPER_SIZES_IN_PLOTS_ONLY = ('large', 'xl', 'xxl', '770m', '11b')
DATASET_TITLES = {'cqa': 'CQA', 'svamp': 'SVAMP', 'esnli': 'e-SNLI', 'anli1': 'ANLI (R1)'}
# The synthetic task of Snell et al. 2022 (dssb/report/context_distill.py writes its fraction
# runs): no paper value, no released teacher.
SYNTHETIC_TITLES = {'addition': 'addition (synthetic, exact scratchpads)'}
TITLES = {**DATASET_TITLES, **SYNTHETIC_TITLES}
UNIFORM_CHANCE = {'cqa': 100 / 5, 'esnli': 100 / 3, 'anli1': 100 / 3}
GROUP_SKIP = ('SEED', 'MODEL_DIR')  # settings that do not define a cell


# ---- cells ----

def _fidelity(run: dict) -> str:
  f = run['results'].get('fidelity')
  if not f:
    return 'not recorded'
  return f'dropout {f["dropout_mode"]}, matmul {f["matmul_precision"]}'


def cell_key(run: dict) -> tuple:
  """What makes a cell: every setting but the seed, and the fidelity settings."""
  settings = {k: v for k, v in run['settings'].items() if k not in GROUP_SKIP}
  return tuple(sorted((k, json.dumps(v)) for k, v in settings.items())) + (
      ('fidelity', _fidelity(run)),)


def score_of(results: dict, kind: str) -> Optional[float]:
  """Test accuracy of one kind of reported number, None if the run lacks it."""
  entry = results.get(kind)
  if kind == 'max_over_evals' and entry is None and 'test_max_over_evals' in results:
    entry = {'test': results['test_max_over_evals']}  # results.json before the labels
  return (entry or {}).get('test', {}).get('accuracy')


def cells(runs: Sequence[dict]) -> List[dict]:
  """One entry per cell: its settings, seeds, mean/SE/n of each kind, its commands."""
  grouped: Dict[tuple, List[dict]] = {}
  for run in runs:
    grouped.setdefault(cell_key(run), []).append(run)
  out = []
  for members in grouped.values():
    members.sort(key=lambda r: (r['settings'].get('SEED', 0), r['file']))
    settings = {k: v for k, v in members[0]['settings'].items() if k not in GROUP_SKIP}
    reported = sorted({r['results'].get('fidelity', {}).get('reported_number', 'last')
                       for r in members})
    out.append({
        'dataset': settings['DATASET'], 'recipe': settings['RECIPE'],
        'fraction': float(settings.get('FRACTION', 1.0)), 'model': settings.get('MODEL'),
        'teacher': settings.get('TEACHER', 'palm'), 'settings': settings,
        'fidelity': _fidelity(members[0]), 'reported_number': ', '.join(reported),
        'seeds': [r['settings'].get('SEED') for r in members],
        'test': {k: mean_se([score_of(r['results'], k) for r in members]) for k in KINDS},
        'command': members[0]['command'], 'files': [r['file'] for r in members]})
  out.sort(key=lambda c: (c['dataset'], c['recipe'], str(c['model']), c['fraction'],
                         json.dumps(c['settings'], sort_keys=True), c['fidelity']))
  return out


# ---- the paper, chance and the teacher ----

def paper_value(cell: dict, paper: dict):
  """The paper's printed value (a float), 'plot only', or None (not in the paper)."""
  if cell['dataset'] in SYNTHETIC_TITLES:  # not a dataset of the paper
    return None
  teacher = None if cell['recipe'] == 'standard' else cell['teacher']
  row = PAPER_ROWS.get((cell['recipe'], teacher))
  in_figures = cell['recipe'] in ('standard', 'step_by_step', 'distill')
  if row is None:
    return 'plot only' if in_figures else None
  model = (cell['model'] or '').lower()
  if cell['fraction'] != 1.0 or any(size in model for size in PAPER_SIZES_IN_PLOTS_ONLY):
    return 'plot only' if in_figures else None
  return paper['tables1_2_t5_base_full_data_accuracy'][row].get(cell['dataset'])


def chance(dataset: str, data_dir: Optional[str] = None) -> dict:
  """Uniform guessing for the label sets; for SVAMP (open-ended equations) the best constant
  answer on test, computed from the test file."""
  if dataset in UNIFORM_CHANCE:
    return {'accuracy': UNIFORM_CHANCE[dataset], 'how': 'uniform guess'}
  if dataset not in DATASET_TITLES:  # the synthetic addition task: exact sums, no chance level
    return {'accuracy': None, 'how': 'synthetic task (exact answers)'}
  from dssb.data import metrics, splits  # pylint: disable=g-import-not-at-top
  try:
    rows = splits.load_split(dataset, 'test', teacher=None, data_dir=data_dir)
  except FileNotFoundError:
    return {'accuracy': None, 'how': 'no test data'}
  golds = [r['label'] for r in rows]
  best = max((metrics.equation_accuracy(golds, [g] * len(golds))['accuracy'], g)
             for g in sorted(set(golds)))
  return {'accuracy': best[0],
          'how': f'the best constant answer on test, {best[1]} = {metrics.safe_eval(best[1]):g}'}


def teacher_accuracy(dataset: str, teacher: str = 'palm',
                     data_dir: Optional[str] = None) -> Optional[float]:
  """The teacher's test accuracy from its released outputs, with the paper's metric."""
  if dataset not in DATASET_TITLES:
    return None
  from dssb.data import metrics, splits  # pylint: disable=g-import-not-at-top
  try:
    rows = splits.load_split(dataset, 'test', teacher=teacher, data_dir=data_dir)
  except FileNotFoundError:
    return None
  metric = metrics.metric_fns(dataset)[0]
  return metric([r['label'] for r in rows], [r['teacher_label'] for r in rows])['accuracy']


# ---- outputs ----

def build(experiment: str, paper_numbers: str = PAPER_NUMBERS,
          data_dir: Optional[str] = None) -> dict:
  """Everything the report shows, as one JSON-able dict."""
  with open(paper_numbers) as f:
    paper = json.load(f)['hsieh2023_distilling_step_by_step']
  table = cells(load_runs(experiment))
  for cell in table:
    cell['paper'] = paper_value(cell, paper)
  datasets = {}
  for name in sorted({c['dataset'] for c in table}):
    teachers = sorted({c['teacher'] for c in table if c['dataset'] == name and c['teacher']
                       and name not in SYNTHETIC_TITLES})  # exact rationales: no teacher
    datasets[name] = {'chance': chance(name, data_dir),
                      'teacher_test_accuracy': {t: teacher_accuracy(name, t, data_dir)
                                                for t in teachers}}
  return {'experiment': os.path.basename(os.path.normpath(experiment)), 'cells': table,
          'datasets': datasets}


def _paper_text(value) -> str:
  return '-' if value is None else value if isinstance(value, str) else f'{value:.2f}'


def _number(value, digits=2) -> str:
  return 'n/a' if value is None else f'{value:.{digits}f}'


def markdown(report: dict) -> str:
  lines = [
      f'# {report["experiment"]}: distilling step-by-step beside the paper',
      '',
      'Written by `python -m dssb.report` from the run summaries in `runs/` (regenerate with '
      f'`python -m dssb.report results/{report["experiment"]}`; edit nothing by hand). Test '
      'accuracy (%), mean ± standard error over seeds (n = seeds). Three numbers per cell '
      '(dssb/train/evals.py): **last** (the final step: the official code\'s last test eval), '
      '**best on validation** (model selection the official code does not do) and **max over '
      'evals** (the best of the per-eval test scores: selection on test, optimistic). The '
      'official code decodes the test split every 250 steps and selects nothing; the paper '
      'does not say which of its logged numbers it prints, so its values compare with **last** '
      'or with **max over evals**, never with best on validation. Paper: Tables 1-2 (T5-Base, '
      '100% of the data); values the paper shows only in plots (Figs. 4-9) are "plot only", '
      'never guessed.',
      '',
  ]
  for name, info in report['datasets'].items():
    title = TITLES.get(name, name)
    chance_ = info['chance']
    teachers = ', '.join(f'{t}: {_number(a)}' for t, a in info['teacher_test_accuracy'].items())
    lines += [
        f'## {title}', '',
        f'Chance: {_number(chance_["accuracy"])} ({chance_["how"]}). Teacher\'s own test '
        f'accuracy from its released outputs: {teachers or "n/a"}.', '',
        '| recipe | model | % data | fidelity | n | last | best on validation | '
        'max over evals | paper (T5-Base) |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for c in (c for c in report['cells'] if c['dataset'] == name):
      extra = {k: v for k, v in c['settings'].items()
               if k not in ('DATASET', 'RECIPE', 'FRACTION', 'MODEL')}
      recipe = c['recipe'] + ''.join(f', {k}={v}' for k, v in sorted(extra.items()))
      lines.append(
          f'| {recipe} | {c["model"] or "-"} | {100 * c["fraction"]:g} | {c["fidelity"]} | '
          f'{c["test"]["last"]["n"]} | {fmt(c["test"]["last"])} | '
          f'{fmt(c["test"]["best_on_validation"])} | {fmt(c["test"]["max_over_evals"])} | '
          f'{_paper_text(c["paper"])} |')
    if any(c['dataset'] == name and c['fraction'] != 1.0 for c in report['cells']):
      lines += ['', f'![{title}: accuracy against data fraction](fractions_{name}.png)']
    lines.append('')
  lines += ['## Commands (the first seed of each cell; the others differ in SEED and '
            'MODEL_DIR)', '']
  for c in report['cells']:
    lines.append(f'- {c["dataset"]} {c["recipe"]} {100 * c["fraction"]:g}% '
                 f'(seeds {", ".join(str(s) for s in c["seeds"])}): `{c["command"]}`')
  return '\n'.join(lines) + '\n'


def fractions_figure(report: dict, dataset: str):
  """Accuracy (last) against data fraction for one dataset, as a matplotlib figure. A fraction
  where the paper's value is plot only gets a '?' in its axis label (and a legend line that says
  so), never a mark in the plot area, where it would read as a data point."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(9.0, 4.4))
  cells_ = [c for c in report['cells'] if c['dataset'] == dataset]
  series: Dict[str, List[dict]] = {}
  for c in cells_:
    label = c['recipe'] + (f' ({c["model"]})' if c['model'] else '')
    series.setdefault(label, []).append(c)
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  unknown_x = set()
  for i, (label, members) in enumerate(sorted(series.items())):
    members.sort(key=lambda c: c['fraction'])
    color = colors[i % len(colors)]
    points = [(100 * c['fraction'], c['test']['last']) for c in members
              if c['test']['last']['mean'] is not None]
    if points:
      ax.errorbar([x for x, _ in points], [s['mean'] for _, s in points],
                  yerr=[s['se'] or 0 for _, s in points], color=color, marker='o', capsize=3,
                  label=f'{label}: ours, mean ± s.e.')
    printed = [(100 * c['fraction'], c['paper']) for c in members
               if isinstance(c['paper'], (int, float))]
    if printed:
      ax.scatter([x for x, _ in printed], [p for _, p in printed], color=color, marker='D',
                 s=40, zorder=3, edgecolors='black', label=f'{label}: paper, T5-Base')
    unknown_x |= {100 * c['fraction'] for c in members if c['paper'] == 'plot only'}
  info = report['datasets'][dataset]
  for teacher, accuracy in info['teacher_test_accuracy'].items():
    if accuracy is not None:
      ax.axhline(accuracy, color='black', linestyle='--', linewidth=1,
                 label=f'teacher ({teacher}) {accuracy:.1f}')
  if info['chance']['accuracy'] is not None:
    ax.axhline(info['chance']['accuracy'], color='gray', linestyle=':', linewidth=1,
               label=f'chance {info["chance"]["accuracy"]:.1f}')
  fractions = sorted({100 * c['fraction'] for c in cells_})
  ax.set_xscale('log', base=2)
  ax.set_xticks(fractions)
  ax.set_xticklabels([f'{f:g} (?)' if f in unknown_x else f'{f:g}' for f in fractions])
  for f, tick in zip(fractions, ax.get_xticklabels()):
    if f in unknown_x:
      tick.set_color('tab:red')
  if unknown_x:  # a legend line only: no marker, no position in the plot
    ax.plot([], [], linestyle='none', label='(?) on the axis: the paper shows this fraction\n'
            'only in a plot; its value is unknown')
  ax.minorticks_off()
  ax.set_xlabel('% of the training set')
  ax.set_ylabel('test accuracy (%), last step')
  ax.set_ylim(0, 100)
  ax.set_title(f'{TITLES.get(dataset, dataset)}: {report["experiment"]}')
  legend = ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
  for text in legend.get_texts():
    if text.get_text().startswith('(?)'):
      text.set_color('tab:red')
  fig.tight_layout()
  return fig


def plot_fractions(report: dict, dataset: str, path: str) -> None:
  """fractions_figure as a PNG at PATH."""
  fig = fractions_figure(report, dataset)
  save_png(fig, path)
  pyplot().close(fig)


def write(experiment: str, out: Optional[str] = None, paper_numbers: str = PAPER_NUMBERS,
          data_dir: Optional[str] = None) -> List[str]:
  """Writes README.md, report.json and the plots into OUT; returns the files written."""
  out = out or experiment
  report = build(experiment, paper_numbers, data_dir)
  os.makedirs(out, exist_ok=True)
  written = {'README.md': markdown(report),
             'report.json': json.dumps(report, indent=1, ensure_ascii=False) + '\n'}
  for name, text in written.items():
    with open(os.path.join(out, name), 'w') as f:
      f.write(text)
  files = list(written)
  for dataset in report['datasets']:
    if any(c['dataset'] == dataset and c['fraction'] != 1.0 for c in report['cells']):
      files.append(f'fractions_{dataset}.png')
      plot_fractions(report, dataset, os.path.join(out, files[-1]))
  return sorted(files)
