"""The claims of distilling step-by-step (Hsieh et al. 2023) as comparisons of testbed cells, and
the verdict rule that judges each one from run summaries: never a hand-written verdict.

A cell is the runs whose settings match a dict of values (settings a sweep does not vary take
the defaults of gin/testbed/settings.gin, DEFAULTS here); its score is the test accuracy of the
last checkpoint, mean and standard error over seeds. A comparison says "cell A beats cell B";
its verdict (`verdict`):

  holds          mean(A) - mean(B) >  2 * sqrt(se(A)^2 + se(B)^2)
  reversed       mean(A) - mean(B) < -2 * sqrt(se(A)^2 + se(B)^2)
  within noise   otherwise (the difference is inside two combined standard errors)
  not run        a cell has no runs
  too few seeds  a cell has fewer than MIN_SEEDS runs (no standard error to judge by)

Two combined standard errors is about a 95% interval of the difference for large n; with 3 seeds
a cell's standard error is itself noisy, so "holds" is evidence, not proof. The rule is the same
for every claim and fixed before any comparison ran (the pre-registration).
"""

import dataclasses
import math
from typing import Optional, Sequence

from dssb.report.stats import mean_se

MIN_SEEDS = 2
NOISE_SES = 2.0
# Settings a sweep may leave out, as gin/testbed/settings.gin sets them.
DEFAULTS = {'FRACTION': 1.0, 'LABEL_SOURCE': 'gold', 'TEACHER_ERROR': 0.25, 'MODEL': 'base',
            'NUM_STEPS': 1}
VERDICTS = ('holds', 'within noise', 'reversed', 'too few seeds', 'not run')


def verdict(a: dict, b: dict, min_seeds: int = MIN_SEEDS, noise_ses: float = NOISE_SES) -> dict:
  """Does cell `a` beat cell `b`? Both are mean_se dicts ({'mean', 'se', 'n'}).

  Returns:
    {'verdict': one of VERDICTS, 'difference': mean(a) - mean(b) or None, 'se': the combined
    standard error or None, 'rule': the rule in words}.
  """
  rule = f'difference of means against {noise_ses:g} combined standard errors'
  if not a.get('n') or not b.get('n'):
    return {'verdict': 'not run', 'difference': None, 'se': None, 'rule': rule}
  difference = a['mean'] - b['mean']
  if a['n'] < min_seeds or b['n'] < min_seeds:
    return {'verdict': 'too few seeds', 'difference': difference, 'se': None, 'rule': rule}
  se = math.sqrt(a['se'] ** 2 + b['se'] ** 2)
  if difference > noise_ses * se:
    word = 'holds'
  elif difference < -noise_ses * se:
    word = 'reversed'
  else:
    word = 'within noise'
  return {'verdict': word, 'difference': difference, 'se': se, 'rule': rule}


def setting(summary: dict, key: str):
  """A run's setting, or the testbed default when its sweep did not vary it."""
  value = summary['settings'].get(key, DEFAULTS.get(key))
  return 'gold' if key == 'LABEL_SOURCE' and value is None else value


def _same(value, wanted) -> bool:
  if isinstance(wanted, float) or isinstance(value, float):
    try:
      return math.isclose(float(value), float(wanted))
    except (TypeError, ValueError):
      return False
  return str(value) == str(wanted)


def matches(summary: dict, where: dict) -> bool:
  return all(_same(setting(summary, k), v) for k, v in where.items())


def score(summary: dict) -> Optional[float]:
  """Test accuracy (%) of the run's last checkpoint."""
  return summary['results'].get('last', {}).get('test', {}).get('accuracy')


def cell(summaries: Sequence[dict], where: dict) -> dict:
  """mean_se of the matching runs' scores, with their seeds and one command; settings `where`
  leaves out take their DEFAULTS (a cell is always one point of every setting)."""
  where = {**DEFAULTS, **where}
  members = sorted((s for s in summaries if matches(s, where)),
                   key=lambda s: str(s['settings'].get('SEED')))
  stat = mean_se([score(s) for s in members])
  seeds = sorted(s['settings'].get('SEED') for s in members)
  if len(seeds) != len(set(seeds)):
    raise ValueError(f'cell {where}: two runs with one seed ({[s.get("file") for s in members]})')
  return dict(stat, seeds=seeds, command=members[0]['command'] if members else None)


@dataclasses.dataclass(frozen=True)
class Comparison:
  """`a` beats `b` (settings of each cell), as a claim states it."""
  text: str
  a: dict
  b: dict


@dataclasses.dataclass(frozen=True)
class Claim:
  """One claim of the paper (or beyond it): its comparisons, the table's rows and columns, the
  gin file of its sweep."""
  key: str
  title: str
  source: str
  gin_file: str
  comparisons: tuple
  rows: tuple            # (row label, settings) pairs of the table
  columns: tuple         # (column label, settings) pairs; a cell is a row's and a column's union
  x_label: str = ''


def _fraction_rows():
  return tuple((f'{f * 100:g}%', {'FRACTION': f}) for f in (0.125, 0.25, 0.5, 1.0))


STANDARD = {'RECIPE': 'standard'}
SBS = {'RECIPE': 'step_by_step'}
TEACHER = {'LABEL_SOURCE': 'teacher'}

CLAIMS = (
    Claim(
        'one_eighth', 'Less data: step-by-step at 12.5% beats standard finetuning at 100%',
        'Hsieh et al. 2023, Fig. 4 (human labels)', 'gin/testbed/one_eighth.gin',
        (Comparison('step-by-step, 12.5% of the data > standard finetuning, 100%',
                    {**SBS, 'FRACTION': 0.125}, {**STANDARD, 'FRACTION': 1.0}),) + tuple(
            Comparison(f'step-by-step > standard finetuning at {label}', {**SBS, **w},
                       {**STANDARD, **w}) for label, w in _fraction_rows()),
        _fraction_rows(), (('standard finetuning', STANDARD), ('distilling step-by-step', SBS)),
        '% of the labelled training set'),
    Claim(
        'teacher_error', "The teacher's errors: step-by-step vs standard distillation as the "
        "teacher's error rate grows", 'not in the paper (teacher labels, no human labels)',
        'gin/testbed/teacher_error.gin',
        tuple(Comparison(f'step-by-step > standard distillation, teacher {e * 100:g}% wrong',
                         {**SBS, **TEACHER, 'TEACHER_ERROR': e},
                         {'RECIPE': 'distill', **TEACHER, 'TEACHER_ERROR': e})
              for e in (0.0, 0.25, 0.5)),
        tuple((f'{e * 100:g}% wrong', {**TEACHER, 'TEACHER_ERROR': e}) for e in (0.0, 0.25, 0.5)),
        (('standard distillation', {'RECIPE': 'distill'}), ('distilling step-by-step', SBS)),
        "teacher's error rate (%)"),
    Claim(
        'ablation', 'Multi-task training beats single-task rationale-then-label and label-only',
        'Hsieh et al. 2023, Tables 1-2 (100% of the data, human labels)',
        'gin/testbed/ablation.gin',
        (Comparison('multi-task (step-by-step) > single-task rationale then label',
                    SBS, {'RECIPE': 'single_task_rationale_first'}),
         Comparison('multi-task (step-by-step) > label-only (standard finetuning)',
                    SBS, STANDARD)),
        (('100%', {'FRACTION': 1.0}),),
        (('label-only (standard)', STANDARD),
         ('single-task: rationale then label', {'RECIPE': 'single_task_rationale_first'}),
         ('multi-task (step-by-step)', SBS)), '% of the labelled training set'),
    Claim(
        'sizes', 'A smaller step-by-step model beats a larger standard one',
        'Hsieh et al. 2023, Fig. 6 (human labels)', 'gin/testbed/sizes.gin',
        (Comparison('step-by-step, small model > standard finetuning, base model',
                    {**SBS, 'MODEL': 'small'}, {**STANDARD, 'MODEL': 'base'}),),
        (('small (d_model 32)', {'MODEL': 'small'}), ('base (d_model 64)', {'MODEL': 'base'})),
        (('standard finetuning', STANDARD), ('distilling step-by-step', SBS)), 'model size'),
    Claim(
        'sizes_unlabeled', 'No human labels: a smaller step-by-step model beats a larger '
        'distilled one', "Hsieh et al. 2023, Fig. 7 (the teacher's labels)",
        'gin/testbed/sizes_unlabeled.gin',
        (Comparison('step-by-step, small model > standard distillation, base model',
                    {**SBS, **TEACHER, 'MODEL': 'small'},
                    {'RECIPE': 'distill', **TEACHER, 'MODEL': 'base'}),),
        (('small (d_model 32)', {**TEACHER, 'MODEL': 'small'}),
         ('base (d_model 64)', {**TEACHER, 'MODEL': 'base'})),
        (('standard distillation', {'RECIPE': 'distill'}), ('distilling step-by-step', SBS)),
        'model size'),
    Claim(
        'unlabeled', "No human labels: step-by-step beats standard distillation on the teacher's "
        'labels', 'Hsieh et al. 2023, Fig. 5', 'gin/testbed/unlabeled.gin',
        (Comparison('step-by-step > standard distillation, 100% of the unlabeled pool',
                    {**SBS, **TEACHER, 'FRACTION': 1.0},
                    {'RECIPE': 'distill', **TEACHER, 'FRACTION': 1.0}),
         Comparison('step-by-step, 12.5% > standard distillation, 100%',
                    {**SBS, **TEACHER, 'FRACTION': 0.125},
                    {'RECIPE': 'distill', **TEACHER, 'FRACTION': 1.0})),
        tuple((label, {**w, **TEACHER}) for label, w in _fraction_rows()
              if w['FRACTION'] in (0.125, 1.0)),
        (('standard distillation', {'RECIPE': 'distill'}), ('distilling step-by-step', SBS)),
        '% of the unlabeled pool'),
)


def judge(summaries: Sequence[dict], claim: Claim) -> list:
  """Each comparison of `claim` with its two cells and its verdict."""
  out = []
  for comparison in claim.comparisons:
    a, b = cell(summaries, comparison.a), cell(summaries, comparison.b)
    out.append({'comparison': comparison.text, 'a': a, 'b': b, **verdict(a, b)})
  return out


def table(summaries: Sequence[dict], claim: Claim) -> list:
  """[[row label, cell per column], ...] of the claim's table."""
  return [[label, [cell(summaries, {**where, **column}) for _, column in claim.columns]]
          for label, where in claim.rows]
