"""Context distillation (Snell et al. 2022, Table 3) in results/context_distillation/, rebuilt
from the run summaries (FOLDER/runs/seed*/NAME.json, written by experiments/cd_runs.py) alone:
README.md (addition: Table 3 beside the paper, directions, digits, data fractions), addition.json
and addition.png; cqa.md and cqa.json (the CQA instructions experiment). Mean, standard error
and n per cell over seeds.

The addition task's data-fraction runs are also distilling step-by-step's: `fraction_runs`
gives them as sweep run summaries for results/mini_repro/runs/ (the paper-table report shows
them beside CQA and SVAMP).
"""

import glob
import json
import math
import os
from typing import Dict, List

from dssb.report.stats import fmt, mean_se, pyplot, save_png, write_text

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAPER = os.path.join(REPO, 'results', 'paper_numbers.json')

# (run name, row label, paper key in Table 3, gin file)
TABLE3 = [
    ('teacher', 'teacher (with scratchpad)', 'teacher_with_scratchpad', 'cd_table3_teacher'),
    ('teacher_f0.25', '  teacher on 500 scratchpads, the paper\'s count (FRACTION=0.25)', None,
     'cd_table3_teacher'),
    ('before', 'student before distillation', 'student_before', 'cd_table3_student_before'),
    ('cd_hard', 'student after context distillation: hard targets (public code)',
     'student_after', 'cd_table3_context_distill_hard'),
    ('cd_soft_sampled', 'student after context distillation: KL, 100 samples/position '
     '(paper Sec. 2.4)', 'student_after', 'cd_table3_context_distill_soft'),
    ('cd_soft_full', '  KL, full vocabulary', None, 'cd_table3_context_distill_soft'),
    ('cd_soft_top_k', '  KL, top-5 + rest bucket', None, 'cd_table3_context_distill_soft'),
    ('cd_soft_reverse', '  reverse KL, full vocabulary (MiniLLM)', None,
     'cd_table3_context_distill_soft'),
    ('then_direct', 'scratchpad then direct', 'scratchpad_then_direct',
     'cd_table3_scratchpad_then_direct'),
    ('multitask_f1.0', 'multi-task (= distilling step-by-step)', 'multi_task',
     'cd_table3_multitask'),
    ('oracle', 'oracle: gold answers for the distillation inputs (not in the paper)', None,
     'cd_table3_oracle'),
    ('label_only_f1.0', 'label-only: the labelled gold answers, no scratchpad (not in the paper)',
     None, 'cd_label_only'),
]
FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def load_summaries(out: str) -> dict:
  """{run name: [summary per seed, by seed]}."""
  runs = {}
  for path in sorted(glob.glob(os.path.join(out, 'runs', 'seed*', '*.json'))):
    with open(path) as f:
      summary = json.load(f)
    runs.setdefault(summary['name'], []).append(summary)
  for summaries in runs.values():
    summaries.sort(key=lambda s: s['seed'])
  return runs


def test_metric(summary: dict, key: str = 'accuracy'):
  return summary['results']['last']['test'].get(key)


def _cell(runs, name, key='accuracy'):
  return mean_se([test_metric(s, key) for s in runs.get(name, [])])


def _extra(runs, name, *keys):
  values = []
  for s in runs.get(name, []):
    value = s.get('extra', {})
    for k in keys:
      value = value.get(k, {}) if isinstance(value, dict) else None
    values.append(value if isinstance(value, (int, float)) else None)
  return mean_se(values)


def addition_tables(runs: dict, paper: dict) -> dict:
  table3 = []
  for name, label, paper_key, gin_file in TABLE3:
    table3.append({'run': name, 'cell': label, 'paper': paper.get(paper_key),
                   'ours': _cell(runs, name), 'decoded_tokens': _cell(runs, name,
                                                                       'decoded_tokens'),
                   'agreement_with_teacher': _extra(runs, name, 'test',
                                                    'agreement_with_teacher'),
                   'gin': f'gin/paper/{gin_file}.gin',
                   'command': (runs.get(name) or [{}])[0].get('command')})
  fractions = []
  for f in FRACTIONS:
    fractions.append({'fraction': f, 'label_only': _cell(runs, f'label_only_f{f}'),
                      'step_by_step': _cell(runs, f'multitask_f{f}')})
  digits = {}
  for name in ('teacher', 'teacher_f0.25', 'cd_hard', 'cd_soft_sampled', 'oracle',
               'multitask_f1.0'):
    by = {}
    for s in runs.get(name, []):
      for d, acc in s.get('extra', {}).get('test', {}).get('accuracy_by_digits', {}).items():
        by.setdefault(d, []).append(acc)
    digits[name] = {d: mean_se(v) for d, v in sorted(by.items())}
  sets = {k: mean_se([s['extra']['set'].get(k) for s in runs.get('distill_set', [])])
          for k in ('teacher_accuracy_on_samples', 'answered', 'samples',
                    'aligned_for_soft_targets')}
  teacher_tokens = _cell(runs, 'teacher', 'decoded_tokens')['mean']
  student_tokens = _cell(runs, 'cd_hard', 'decoded_tokens')['mean']
  ratio = teacher_tokens / student_tokens if teacher_tokens and student_tokens else None
  minutes = {}
  for name, summaries in runs.items():
    part = ('teacher on 500' if name == 'teacher_f0.25' else
            'fractions' if name.endswith(('_f0.125', '_f0.25', '_f0.5')) else 'table3')
    for s in summaries:
      minutes[part] = minutes.get(part, 0.0) + s.get('seconds', 0.0) / 60
  return {'table3': table3, 'fractions': fractions, 'accuracy_by_digits': digits,
          'distillation_set': sets, 'inference_token_ratio': ratio,
          'wall_minutes': {k: round(v, 1) for k, v in sorted(minutes.items())}}


def _plot_addition(tables: dict, path: str) -> None:
  plt = pyplot()
  fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8),
                                    gridspec_kw={'width_ratios': [1.6, 1]})
  rows = [r for r in tables['table3'] if r['ours']['mean'] is not None]
  xs = range(len(rows))
  left.bar(xs, [r['ours']['mean'] for r in rows], yerr=[r['ours']['se'] or 0 for r in rows],
           color='tab:blue', capsize=3, label='ours (CPU, from scratch), mean ± s.e.')
  paper = [(i, r['paper']) for i, r in enumerate(rows) if r['paper'] is not None]
  left.scatter([i for i, _ in paper], [p for _, p in paper], color='tab:red', marker='D',
               zorder=3, label='paper (T5-small LM-adapted)')
  left.set_xticks(list(xs))
  left.set_xticklabels([r['run'] for r in rows], rotation=35, ha='right', fontsize=8)
  left.set_ylabel('test accuracy (%)')
  left.set_ylim(0, 100)
  left.set_title('Table 3: addition with a scratchpad')
  left.legend(fontsize=8, loc='upper right')
  for key, label, color, style in (
      ('label_only', 'label-only', 'tab:gray', dict(marker='s', linestyle='--')),
      ('step_by_step', 'label + scratchpad rationale', 'tab:green', dict(marker='o'))):
    points = [(r['fraction'], r[key]) for r in tables['fractions'] if r[key]['mean'] is not None]
    if points:
      right.errorbar([100 * f for f, _ in points], [s['mean'] for _, s in points],
                     yerr=[s['se'] or 0 for _, s in points], capsize=3, color=color,
                     label=label, **style)
  right.set_xscale('log', base=2)
  right.set_xticks([12.5, 25, 50, 100])
  right.set_xticklabels(['12.5', '25', '50', '100'])
  right.set_xlabel('% of the labelled examples')
  right.set_ylabel('test accuracy, direct answer (%)')
  right.set_ylim(bottom=0)
  right.set_title('Distilling step-by-step: data fractions')
  right.legend(fontsize=8)
  fig.tight_layout()
  save_png(fig, path, dpi=110)
  plt.close(fig)


# The paper's comparisons (Table 3's text) and distilling step-by-step's one-eighth claim:
# (first run, second run, what the paper found).
DIRECTIONS = [
    ('cd_hard', 'before', 'distillation moves the student off 0 (paper: 0 -> 95)'),
    ('cd_hard', 'teacher', 'the student matches or beats its teacher (paper: 95 vs 93)'),
    ('cd_soft_sampled', 'cd_hard', 'the paper\'s KL against the public code\'s hard targets'),
    ('cd_hard', 'then_direct', 'distillation beats scratchpad-then-direct (paper: 95 vs 72)'),
    ('cd_hard', 'multitask_f1.0', 'distillation beats multi-task (paper: 95 vs 61)'),
    ('cd_hard', 'oracle', 'the teacher\'s answers against gold ones for the same inputs (no '
     'paper number)'),
    ('multitask_f0.125', 'label_only_f1.0', 'Hsieh et al.: 12.5% with rationales beats 100% '
     'without'),
]


def _difference(runs: dict, first: str, second: str) -> str:
  a, b = _cell(runs, first), _cell(runs, second)
  if a['mean'] is None or b['mean'] is None:
    return 'not run'
  diff = a['mean'] - b['mean']
  if a['se'] is None or b['se'] is None:
    return f'{diff:+.1f} points (one seed: no standard error)'
  se = math.sqrt(a['se'] ** 2 + b['se'] ** 2)
  verdict = ('higher' if diff > 0 else 'lower') if abs(diff) > 2 * se else 'within 2 s.e.'
  return f'{diff:+.1f} ± {se:.1f} points: {verdict}'


def _addition_readme(tables: dict, runs: dict) -> str:
  lines = [
      '# Context distillation: Table 3 of Snell et al. 2022 on a CPU',
      '',
      'Written by `python -m dssb.report results/context_distillation` from the run summaries '
      'in `runs/` (edit nothing by hand; run everything: `python '
      'experiments/context_distill_addition.py --work_dir DIR`).',
      '',
      'Stated plainly: these models are small T5s trained **from scratch** on a 2-core CPU '
      '(`gin/cpu/cd_addition_mini.gin`), on 1-3 digit operands; the paper fine-tunes a '
      'pretrained T5-small (LM-adapted) on 1-8 digit operands. Only the direction of the '
      'effects compares, not the levels. Test accuracy (%) of the last checkpoint, exact match '
      'of the answer, mean ± standard error over seeds (n = seeds).',
      '',
      'Wall time of the runs on this shared 2-core machine (other jobs ran beside them): '
      + ', '.join(f'{k} {v:.0f} min' for k, v in tables['wall_minutes'].items()) + '.',
      '',
      '## Table 3',
      '',
      '| cell | paper | ours | tokens per answer | agreement with teacher | gin file |',
      '|---|---|---|---|---|---|',
  ]
  for row in tables['table3']:
    paper = '' if row['paper'] is None else f'{row["paper"]}'
    lines.append(f'| {row["cell"]} | {paper} | {fmt(row["ours"])} | '
                 f'{fmt(row["decoded_tokens"])} | {fmt(row["agreement_with_teacher"])} | '
                 f'`{row["gin"]}` |')
  ratio = tables['inference_token_ratio']
  sets = tables['distillation_set']
  lines += [
      '',
      'Tokens per answer: mean tokens decoded per test question, EOS included. The teacher '
      'writes its scratchpad, the student only the answer: '
      + (f'**{ratio:.1f}x** fewer inference tokens' if ratio else 'not run')
      + ' (paper: 8.0x, with the T5 vocabulary and 1-8 digits). Agreement with teacher: % of '
      'test questions where the student (bare question) gives the answer the teacher gives '
      'with its scratchpad. The paper prints one "after" number (95); its text states the KL '
      'objective and its public code trains hard targets, so both rows stand beside it.',
      '',
      'The distillation set (one teacher sample per unlabeled question, temperature 1, top-k '
      f'50): the teacher\'s sampled answers are right on {fmt(sets["teacher_accuracy_on_samples"])}'
      f' % of the inputs; {fmt(sets["answered"], 0)} of {fmt(sets["samples"], 0)} samples have '
      f'an answer; {fmt(sets["aligned_for_soft_targets"], 0)} align token by token for soft '
      'targets.',
      '',
  ]
  lines += ['## Directions: the paper\'s comparisons here', '',
            '| comparison | ours (first - second, ± combined s.e.) | the claim |', '|---|---|---|']
  for first, second, claim in DIRECTIONS:
    lines.append(f'| `{first}` - `{second}` | {_difference(runs, first, second)} | {claim} |')
  lines += ['', '## Accuracy by operand digit count (test)', '']
  digits = sorted({d for by in tables['accuracy_by_digits'].values() for d in by}, key=int)
  lines.append('| run | ' + ' | '.join(f'{d} digit(s)' for d in digits) + ' |')
  lines.append('|---|' + '---|' * len(digits))
  for name, by in tables['accuracy_by_digits'].items():
    if by:
      lines.append(f'| {name} | ' + ' | '.join(fmt(by.get(d)) for d in digits) + ' |')
  lines += [
      '',
      '## Distilling step-by-step on this task: data fractions',
      '',
      'Label-only (bare question -> gold answer) vs label + scratchpad rationale (distilling '
      'step-by-step, alpha 0.5), both from scratch, the same steps at every fraction of the '
      'labelled examples. Hsieh et al. claim that 12.5% with rationales beats 100% without; '
      'here the rationales are exact scratchpads.',
      '',
      '| % of labelled | label-only | label + rationale |',
      '|---|---|---|',
  ]
  for row in tables['fractions']:
    lines.append(f'| {100 * row["fraction"]:g} | {fmt(row["label_only"])} | '
                 f'{fmt(row["step_by_step"])} |')
  lines += ['', '![Table 3 and fractions](addition.png)', '', '## Commands', '']
  for name, summaries in sorted(runs.items()):
    lines.append(f'- `{name}` (seed {summaries[0]["seed"]}; the other seeds differ in SEED and '
                 f'paths): `{summaries[0]["command"]}`')
  return '\n'.join(lines) + '\n'


def write_addition(folder: str, out: str) -> List[str]:
  """README.md, addition.json and addition.png of the addition experiment (FOLDER/runs/) in OUT;
  returns the files written."""
  with open(PAPER) as f:
    paper = json.load(f)['snell2022_context_distillation']['table3_addition_scratchpad_t5_small']
  runs = {k: v for k, v in load_summaries(folder).items() if not k.startswith('cqa_')}
  if not runs:
    return []
  tables = addition_tables(runs, paper)
  write_text(os.path.join(out, 'addition.json'), json.dumps(tables, indent=1))
  _plot_addition(tables, os.path.join(out, 'addition.png'))
  write_text(os.path.join(out, 'README.md'), _addition_readme(tables, runs))
  return ['README.md', 'addition.json', 'addition.png']


CQA_ROWS = [
    ('cqa_teacher', 'teacher: instruction + exemplars + question', 'cd_table3_teacher'),
    ('cqa_before', 'student before distillation: the teacher\'s weights, bare question',
     'cd_table3_student_before'),
    ('cqa_cd_hard', 'student after context distillation, hard targets',
     'cd_table3_context_distill_hard'),
    ('cqa_cd_soft_full', 'student after context distillation, KL (full vocabulary)',
     'cd_table3_context_distill_soft'),
    ('cqa_oracle', 'oracle: gold answers for the distillation inputs, from the teacher',
     'cd_table3_oracle'),
    ('cqa_label_only', 'label-only from scratch: the labelled gold answers, bare question',
     'cd_label_only'),
]


def write_cqa(folder: str, out: str) -> List[str]:
  """cqa.md and cqa.json of the CQA experiment (FOLDER/runs/, runs named cqa_*) in OUT; returns
  the files written."""
  runs = {k: v for k, v in load_summaries(folder).items() if k.startswith('cqa_')}
  if not runs:
    return []
  rows = []
  for name, label, gin_file in CQA_ROWS:
    rows.append({'run': name, 'cell': label, 'accuracy': _cell(runs, name),
                 'agreement_with_teacher': _extra(runs, name, 'test', 'agreement_with_teacher'),
                 'input_tokens': _extra(runs, name, 'test', 'input_tokens'),
                 'decoded_tokens': _extra(runs, name, 'test', 'decoded_tokens'),
                 'gin': f'gin/paper/{gin_file}.gin + gin/cpu/cd_cqa_mini.gin',
                 'command': (runs.get(name) or [{}])[0].get('command')})
  sets = {k: mean_se([s['extra']['set'].get(k) for s in runs.get('cqa_distill_set', [])])
          for k in ('teacher_accuracy_on_samples', 'answered', 'samples',
                    'aligned_for_soft_targets')}
  tables = {'rows': rows, 'distillation_set': sets}
  write_text(os.path.join(out, 'cqa.json'), json.dumps(tables, indent=1))
  lines = [
      '# Context distillation on real text: internalising instructions and exemplars (CQA)',
      '',
      'Written by `python -m dssb.report results/context_distillation` from '
      '`runs/seed*/cqa_*.json` (run: `python experiments/context_distill_cqa.py --work_dir '
      'DIR`). The teacher\'s '
      'context is an instruction and 2 solved CQA questions; the student sees the bare '
      'question. Small T5s trained **from scratch** on a CPU (`gin/cpu/cd_cqa_mini.gin`): 2000 '
      'labelled questions for the teacher, 2000 unlabeled ones for distillation, the official '
      'CQA test split (1221). Chance is 20% (five choices). Test accuracy (%, exact match of the '
      'choice text), mean ± standard error over seeds.',
      '',
      '| run | accuracy | agreement with teacher | prompt tokens | decoded tokens | gin |',
      '|---|---|---|---|---|---|',
  ]
  for row in rows:
    lines.append(f'| {row["cell"]} | {fmt(row["accuracy"])} | '
                 f'{fmt(row["agreement_with_teacher"])} | {fmt(row["input_tokens"])} | '
                 f'{fmt(row["decoded_tokens"])} | `{row["gin"]}` |')
  lines += [
      '',
      'Agreement with teacher: % of test questions where the run, given the bare question, '
      'answers what the teacher answers with its context. The distillation set: the teacher\'s '
      f'sampled answers are right on {fmt(sets["teacher_accuracy_on_samples"])} % of the '
      f'unlabeled questions; {fmt(sets["aligned_for_soft_targets"], 0)} of '
      f'{fmt(sets["answered"], 0)} answers align token by token for the KL.',
      '',
      '## Commands',
      '',
  ]
  for name, summaries in sorted(runs.items()):
    lines.append(f'- `{name}` (seed {summaries[0]["seed"]}): `{summaries[0]["command"]}`')
  write_text(os.path.join(out, 'cqa.md'), '\n'.join(lines) + '\n')
  return ['cqa.json', 'cqa.md']


def fraction_runs(folder: str) -> Dict[str, str]:
  """The addition task's data-fraction runs (label-only = standard finetuning on the answer,
  multi-task = distilling step-by-step with the exact scratchpad as rationale) as sweep run
  summaries: {runs/<run name>.json: its text}, for results/mini_repro/ (the paper-table report
  shows them beside CQA and SVAMP)."""
  files = {}
  for name, summaries in sorted(load_summaries(folder).items()):
    recipe = {'label_only': 'standard', 'multitask': 'step_by_step'}.get(name.split('_f')[0])
    if recipe is None or '_f' not in name:
      continue
    fraction = float(name.rsplit('_f', 1)[1])
    for s in summaries:
      settings = {'DATASET': 'addition', 'RECIPE': recipe, 'FRACTION': fraction,
                  'SEED': s['seed']}
      run = ','.join(f'{k.lower()}={v}' for k, v in settings.items())
      files[os.path.join('runs', f'{run}.json')] = json.dumps(
          {'sweep': 'context_distillation_fractions', 'run': run, 'settings': settings,
           'command': s['command'], 'results': s['results'], 'seconds': s.get('seconds')},
          indent=1) + '\n'
  return files


def write(folder: str, out: str) -> List[str]:
  """Every file of the report on FOLDER/runs/seed*/ into OUT; returns their names."""
  if not glob.glob(os.path.join(folder, 'runs', 'seed*', '*.json')):
    raise FileNotFoundError(f'{folder}/runs/seed*/ holds no context-distillation summaries')
  return sorted(write_addition(folder, out) + write_cqa(folder, out))
