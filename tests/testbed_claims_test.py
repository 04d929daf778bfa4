"""The verdict rule and the claims' cells, on hand-made run summaries."""

import math

import pytest

from dssb.testbed import claims


def _run(accuracy, seed, **settings):
  return {'sweep': 'testbed_x', 'settings': {**settings, 'SEED': seed}, 'command': f'cmd {seed}',
          'results': {'last': {'step': 10, 'test': {'accuracy': accuracy}}}}


def _cell(values):
  return claims.mean_se(values)


def test_verdict_holds_within_noise_reversed():
  assert claims.verdict(_cell([60, 62, 64]), _cell([40, 42, 44]))['verdict'] == 'holds'
  assert claims.verdict(_cell([40, 42, 44]), _cell([60, 62, 64]))['verdict'] == 'reversed'
  assert claims.verdict(_cell([50, 60, 70]), _cell([48, 58, 68]))['verdict'] == 'within noise'


def test_verdict_threshold_is_two_combined_standard_errors():
  a, b = _cell([10, 12, 14]), _cell([0, 2, 4])  # se 1.1547 each: combined 1.633, diff 10
  out = claims.verdict(a, b)
  assert out['difference'] == pytest.approx(10)
  assert out['se'] == pytest.approx(math.sqrt(2) * 2 / math.sqrt(3))
  # Just inside and just outside 2 combined s.e.: shift b so the difference straddles 2 * se.
  edge = 2 * out['se']
  inside = _cell([v + 10 - edge + 0.01 for v in (0, 2, 4)])
  outside = _cell([v + 10 - edge - 0.01 for v in (0, 2, 4)])
  assert claims.verdict(a, inside)['verdict'] == 'within noise'
  assert claims.verdict(a, outside)['verdict'] == 'holds'


def test_verdict_without_enough_runs():
  assert claims.verdict(_cell([]), _cell([1, 2]))['verdict'] == 'not run'
  one = claims.verdict(_cell([90]), _cell([1, 2, 3]))
  assert one['verdict'] == 'too few seeds' and one['difference'] == pytest.approx(88)
  # Equal seeds without spread: se 0, any positive difference holds.
  assert claims.verdict(_cell([5, 5]), _cell([4, 4]))['verdict'] == 'holds'
  assert claims.verdict(_cell([5, 5]), _cell([5, 5]))['verdict'] == 'within noise'


def test_cells_use_the_defaults_of_settings_a_sweep_did_not_vary():
  runs = [_run(80 + s, s, RECIPE='step_by_step', FRACTION=0.125) for s in range(3)]
  runs += [_run(50 + s, s, RECIPE='standard', FRACTION=1.0) for s in range(3)]
  # The ablation's single-task runs name no FRACTION: they are the 100% cell.
  runs += [_run(30 + s, s, RECIPE='single_task_rationale_first') for s in range(3)]
  one_eighth = claims.judge(runs, claims.CLAIMS[0])
  assert one_eighth[0]['verdict'] == 'holds'
  assert one_eighth[0]['a']['mean'] == pytest.approx(81)
  assert one_eighth[0]['b']['seeds'] == [0, 1, 2]
  assert one_eighth[1]['verdict'] == 'not run'  # step-by-step vs standard at 12.5%
  single = claims.cell(runs, {'RECIPE': 'single_task_rationale_first', 'FRACTION': 1.0})
  assert single['n'] == 3 and single['mean'] == pytest.approx(31)
  assert claims.cell(runs, {'RECIPE': 'standard', 'LABEL_SOURCE': 'teacher'})['n'] == 0
  assert claims.cell(runs, {'RECIPE': 'standard', 'MODEL': 'base'})['n'] == 3


def test_a_cell_with_one_seed_twice_is_an_error():
  runs = [_run(1, 0, RECIPE='distill', LABEL_SOURCE='teacher'),
          _run(2, 0, RECIPE='distill', LABEL_SOURCE='teacher', TEACHER_ERROR=0.25)]
  with pytest.raises(ValueError, match='one seed'):
    claims.cell(runs, {'RECIPE': 'distill', 'LABEL_SOURCE': 'teacher'})


def test_every_claim_names_its_sweep_file_and_compares_cells_of_its_table():
  import os  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for claim in claims.CLAIMS:
    assert os.path.exists(os.path.join(repo, claim.gin_file)), claim.gin_file
    cells = [{**where, **column} for _, where in claim.rows for _, column in claim.columns]
    for comparison in claim.comparisons:
      for side in (comparison.a, comparison.b):
        assert any(all(c.get(k, claims.DEFAULTS.get(k)) == v for k, v in side.items())
                   for c in cells), (claim.key, side)
