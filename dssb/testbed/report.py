"""results/testbed: the claims table, one table and plot per claim, the pre-registration and the
runs' cost, from the sweep run summaries alone (`python -m dssb.report results/testbed`
dispatches here for sweeps named testbed*).

  render(summaries, out_dir) -> the paths written: README.md, report.json, one PNG per claim.

Scores are the test accuracy (%) of each run's last checkpoint; a cell is mean ± standard error
over seeds (n = seeds); every verdict comes from dssb.testbed.claims.verdict. The runs of the
pre-registration search (sweep 'testbed_tune', standard finetuning only) are listed with their
validation accuracy and never enter a claim. Same summaries, same bytes.
"""

import json
import os
import statistics
from typing import List, Sequence

from dssb.report.stats import fmt, pyplot, save_png, write_text
from dssb.testbed import claims

TUNE_SWEEP = 'testbed_tune'
SETTINGS_FILE = 'gin/testbed/settings.gin'
# The commit that fixed SETTINGS_FILE before any step-by-step vs standard comparison ran.
PREREGISTRATION_COMMIT = '0dabb9f7a1472b2b98785aa8a9f0a618fd09eac2'
VERDICT_MARK = {'holds': 'holds', 'within noise': 'within noise', 'reversed': '**reversed**',
                'too few seeds': 'too few seeds', 'not run': 'not run'}


def _difference(judged: dict) -> str:
  if judged['difference'] is None:
    return '-'
  se = f' ± {judged["se"]:.1f}' if judged['se'] is not None else ''
  return f'{judged["difference"]:+.1f}{se}'


def build(summaries: Sequence[dict]) -> dict:
  """Everything the report shows, JSON-able."""
  tune = [s for s in summaries if s.get('sweep') == TUNE_SWEEP]
  runs = [s for s in summaries if s.get('sweep') != TUNE_SWEEP]
  out = {'claims': [], 'tuning': [], 'cost': _cost(runs),
         'preregistration': {'file': SETTINGS_FILE, 'commit': PREREGISTRATION_COMMIT},
         'rule': claims.verdict(claims.mean_se([]), claims.mean_se([]))['rule'],
         'min_seeds': claims.MIN_SEEDS}
  for claim in claims.CLAIMS:
    out['claims'].append({
        'key': claim.key, 'title': claim.title, 'source': claim.source,
        'gin_file': claim.gin_file, 'x_label': claim.x_label,
        'columns': [label for label, _ in claim.columns],
        'table': claims.table(runs, claim), 'comparisons': claims.judge(runs, claim)})
  for s in sorted(tune, key=lambda s: json.dumps(s['settings'], sort_keys=True)):
    best = s['results'].get('best_on_validation', {})
    out['tuning'].append({'settings': s['settings'], 'validation': best.get('score'),
                          'step': best.get('step'), 'command': s['command']})
  return out


def _cost(runs: Sequence[dict]) -> dict:
  seconds = [s['seconds'] for s in runs if s.get('seconds') is not None]
  return {'runs': len(runs), 'timed': len(seconds),
          'median_seconds': statistics.median(seconds) if seconds else None,
          'total_seconds': sum(seconds) if seconds else None}


def markdown(report: dict) -> str:
  """README.md of results/testbed."""
  prereg = report['preregistration']
  commit = f'commit `{prereg["commit"]}`' if prereg['commit'] else 'a commit not recorded here'
  lines = [
      '# The testbed: the claims of distilling step-by-step, tested in minutes on a CPU', '',
      'Written by `python -m dssb.report results/testbed` from the run summaries in `runs/` '
      '(collect new ones with `--collect runs/testbed`); edit nothing by hand. The task: '
      'multi-step arithmetic word problems generated from templates '
      '(`dssb/data/word_problems.py`), label = the final quantity, rationale = the equations, '
      'a simulated teacher whose wrong rationales end in its wrong labels. Small T5s trained '
      'from scratch through the same trainer, recipes and sweeps as the paper\'s runs. '
      'Score: test accuracy (%, exact match) of the last checkpoint, mean ± standard error '
      'over seeds (n = seeds).', '',
      f'**Verdicts** are computed (`dssb/testbed/claims.py`): for "A beats B", the {report["rule"]}'
      ': **holds** if A - B > 2 s.e., **reversed** if A - B < -2 s.e., **within noise** '
      f'otherwise; fewer than {report["min_seeds"]} seeds: too few seeds. With 3 seeds a '
      'standard error is itself rough: "holds" is evidence, not proof.', '',
      f'**Pre-registration**: `{prereg["file"]}` (task sizes, model, steps, learning rate) was '
      f'fixed in {commit} before any step-by-step vs standard comparison ran, tuned on '
      'standard finetuning\'s validation accuracy only (the search is below).', '',
      '## Claims', '',
      '| claim | comparison (A beats B) | A | B | A - B ± s.e. | verdict |',
      '|---|---|---|---|---|---|']
  for claim in report['claims']:
    for judged in claim['comparisons']:
      lines.append(f'| {claim["key"]} | {judged["comparison"]} | {fmt(judged["a"])} | '
                   f'{fmt(judged["b"])} | {_difference(judged)} | '
                   f'{VERDICT_MARK[judged["verdict"]]} |')
  lines.append('')
  for claim in report['claims']:
    lines += _claim_section(claim)
  lines += _tuning_section(report['tuning'])
  cost = report['cost']
  if cost['median_seconds'] is not None:
    lines += ['## Cost', '',
              f'{cost["runs"]} runs; {cost["timed"]} timed by the invocation that trained them: '
              f'median {cost["median_seconds"]:.0f} s per run (compile included), '
              f'{cost["total_seconds"] / 60:.1f} min in all, on the machine and load that ran '
              'them.', '']
  return '\n'.join(lines)


def _claim_section(claim: dict) -> List[str]:
  lines = [f'## {claim["key"]}: {claim["title"]}', '',
           f'Source: {claim["source"]}. Sweep: `python -m dssb.sweep '
           f'--gin_file={claim["gin_file"]} --root runs/testbed`.', '',
           f'| {claim["x_label"] or "setting"} | ' + ' | '.join(claim['columns']) + ' |',
           '|---|' + '---|' * len(claim['columns'])]
  for label, cells in claim['table']:
    lines.append(f'| {label} | ' + ' | '.join(fmt(c) for c in cells) + ' |')
  lines += ['', f'![{claim["key"]}]({claim["key"]}.png)', '', 'Commands (seed 0 of each cell; '
            'the other seeds differ in `--gin.SEED` and MODEL_DIR):', '']
  commands = [c['command'] for _, cells in claim['table'] for c in cells if c['command']]
  lines += [f'    {c}' for c in commands] or ['    (not run)']
  return lines + ['']


def _tuning_section(tuning: list) -> List[str]:
  if not tuning:
    return []
  keys = sorted({k for t in tuning for k in t['settings'] if k != 'SEED'})
  lines = ['## The pre-registration search (standard finetuning only)', '',
           'Validation accuracy (%) of standard finetuning on 100% of the human labels, seed 0, '
           'one run per point (`gin/testbed/tune.gin`); no step-by-step run took part. The rule, '
           'written in tune.gin before the 2-step points were read: the largest NUM_STEPS whose '
           'best learning rate gives standard finetuning 20-80% (it learns something; room '
           'above it), at that learning rate; steps and model are fixed by the time budget. '
           f'The outcome is `{SETTINGS_FILE}`.', '',
           '| ' + ' | '.join(keys) + ' | validation |', '|' + '---|' * (len(keys) + 1)]
  for t in tuning:
    value = 'n/a' if t['validation'] is None else f'{t["validation"]:.1f}'
    lines.append('| ' + ' | '.join(str(t['settings'].get(k)) for k in keys) + f' | {value} |')
  return lines + ['']


def figure(claim: dict):
  """Accuracy per row (x) and column (one series each), standard-error bars."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  rows = [label for label, _ in claim['table']]
  xs = list(range(len(rows)))
  count = len(claim['columns'])
  width = 0.8 / count
  for j, column in enumerate(claim['columns']):
    means = [cells[j]['mean'] for _, cells in claim['table']]
    errors = [cells[j]['se'] or 0.0 for _, cells in claim['table']]
    if len(rows) > 2 and claim['key'] != 'sizes':  # a curve over the x axis
      points = [(x, m, e) for x, m, e in zip(xs, means, errors) if m is not None]
      if points:
        ax.errorbar([p[0] for p in points], [p[1] for p in points],
                    yerr=[p[2] for p in points], marker='o', capsize=4, label=column)
      else:
        ax.plot([], [], marker='o', label=f'{column} (not run)')
    else:  # bars
      bars = [(x - 0.4 + width * (j + 0.5), m, e) for x, m, e in zip(xs, means, errors)
              if m is not None]  # a cell not run gets no bar (never one at 0)
      ax.bar([b[0] for b in bars], [b[1] for b in bars], width, yerr=[b[2] for b in bars],
             capsize=4, label=column if bars else f'{column} (not run)')
      for x, mean, error in bars:
        ax.annotate(f'{mean:.1f}', (x, mean + error), textcoords='offset points',
                    xytext=(0, 3), ha='center', fontsize=8)
  ax.set_xticks(xs)
  ax.set_xticklabels(rows)
  ax.set_xlabel(claim['x_label'] or 'setting')
  ax.set_ylabel('test accuracy (%)')
  ax.set_ylim(0, 100)
  ax.set_title(claim['title'], fontsize=9)
  ax.grid(axis='y', alpha=0.3)
  ax.legend(fontsize=8, loc='upper left')
  fig.tight_layout()
  return fig


def render(summaries: Sequence[dict], out_dir: str) -> List[str]:
  """Writes README.md, report.json and one PNG per claim into out_dir; returns their absolute
  paths."""
  report = build(summaries)
  out_dir = os.path.abspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  written = []
  path = os.path.join(out_dir, 'README.md')
  write_text(path, markdown(report) + '\n')
  written.append(path)
  path = os.path.join(out_dir, 'report.json')
  write_text(path, json.dumps(report, indent=1, sort_keys=True) + '\n')
  written.append(path)
  plt = pyplot()
  for claim in report['claims']:
    fig = figure(claim)
    path = os.path.join(out_dir, f'{claim["key"]}.png')
    save_png(fig, path)
    plt.close(fig)
    written.append(path)
  return written
