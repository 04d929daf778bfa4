"""The testbed's word problems: reproducible by seed, no problem in two splits, the exact checker,
the simulated teacher's error rate and the consistency of its wrong rationales with its labels."""

import math

import pytest

from dssb.data import word_problems as wp


def _settings(**kwargs):
  base = dict(num_steps=2, num_labelled=300, num_unlabeled=300, num_validation=100,
              num_test=200, teacher_error=0.25, seed=0)
  return wp.WordProblemSettings(**{**base, **kwargs})


def test_rationale_and_label_by_hand():
  problem = wp.Problem('Ann', 'pens', 7, (('+', 5), ('-', 3)))
  assert wp.question(problem) == ('Ann has 7 pens . She buys 5 more . She gives away 3 . '
                                  'How many pens now ?')
  assert wp.question(problem, (2, 1)) == ('Ann has 7 pens . She gets 5 more . She loses 3 . '
                                          'How many pens now ?')
  assert wp.rationale(problem.start, problem.ops) == '7 + 5 = 1 2 , 1 2 - 3 = 9'
  assert wp.answer(problem) == 9 and wp.label(9) == '9'
  times = wp.Problem('Bob', 'eggs', 17, (('*', 3), ('-', 8)))
  assert wp.rationale(times.start, times.ops) == '1 7 * 3 = 5 1 , 5 1 - 8 = 4 3'
  assert wp.answer(times) == 43
  # A slip of +2 in step 0 propagates: 7 + 5 = 14 (wrong), 14 - 3 = 11.
  assert wp.rationale(7, problem.ops, 0, 2) == '7 + 5 = 1 4 , 1 4 - 3 = 1 1'


def test_checker_is_exact():
  problem = wp.Problem('Eve', 'cards', 19, (('-', 1), ('-', 6)))
  assert wp.is_correct('1 2', problem) and wp.is_correct(' 1 2 ', problem)
  for wrong in ('12', '1 2 .', '0 1 2', '1 3', '', '1 2 1', 'twelve', '- 1 2'):
    assert not wp.is_correct(wrong, problem), wrong
  assert wp.parse_label('1 2') == 12 and wp.parse_label('- 3') == -3
  assert wp.parse_label('12') is None and wp.parse_label('1 2 x') is None
  assert wp.rationale_answer('3 - 1 = 2 , 2 - 1 = 1') == 1
  assert wp.rationale_answer('3 - 1 = 2 , 2 - 1 =') is None


def test_reproducible_by_seed_and_seeds_differ():
  first = {split: wp.rows(_settings(), split) for split in wp.SPLITS}
  wp.problems.cache_clear()
  again = {split: wp.rows(_settings(), split) for split in wp.SPLITS}
  assert first == again
  other = wp.rows(_settings(seed=1), 'test')
  assert [r['input'] for r in other] != [r['input'] for r in first['test']]


def test_no_problem_repeats_within_or_across_splits():
  settings = _settings(num_labelled=2000, num_unlabeled=2000)
  keys = [r['problem'].key() for split in wp.SPLITS for r in wp.rows(settings, split)]
  assert len(keys) == 2000 + 2000 + 100 + 200
  assert len(set(keys)) == len(keys)
  # The splits' sizes are what was asked and no input text repeats either.
  texts = [r['input'] for split in wp.SPLITS for r in wp.rows(settings, split)]
  assert len(set(texts)) == len(texts)


def test_gold_rows_are_right_and_quantities_stay_in_range():
  for num_steps in (1, 2, 3, 4):
    for r in wp.rows(_settings(num_steps=num_steps, teacher_error=0.0), 'labelled'):
      problem = r['problem']
      assert len(problem.ops) == num_steps
      assert wp.is_correct(r['label'], problem)
      assert r['teacher_label'] == r['label']
      assert r['teacher_rationale'] == wp.rationale(problem.start, problem.ops)
      assert wp.rationale_answer(r['teacher_rationale']) == wp.answer(problem)
      assert all(0 <= v <= wp.MAX_VALUE for v in wp.values(problem.start, problem.ops))


@pytest.mark.parametrize('error', [0.0, 0.25, 0.5])
def test_teacher_error_rate_is_as_asked(error):
  n = 4000
  rows = wp.rows(_settings(num_labelled=n, teacher_error=error), 'labelled')
  wrong = sum(r['teacher_label'] != r['label'] for r in rows)
  if error == 0.0:
    assert wrong == 0
  else:  # within 4 binomial standard deviations
    assert abs(wrong - n * error) <= 4 * math.sqrt(n * error * (1 - error)), wrong


def test_teacher_wrong_rationales_end_in_its_wrong_label():
  rows = wp.rows(_settings(num_labelled=1000, teacher_error=0.5, num_steps=3), 'labelled')
  wrong = [r for r in rows if r['teacher_label'] != r['label']]
  assert len(wrong) > 400
  for r in rows:
    # Every rationale, right or wrong, ends in the teacher's own label ...
    assert wp.label(wp.rationale_answer(r['teacher_rationale'])) == r['teacher_label']
  for r in wrong:
    problem = r['problem']
    # ... a wrong one keeps the problem's operations, its first wrong number is one step's
    # result, and it never shows a negative quantity.
    steps = r['teacher_rationale'].split(' , ')
    assert len(steps) == len(problem.ops)
    for step, (op, amount) in zip(steps, problem.ops):
      assert f' {op} {wp.spaced(amount)} = ' in f' {step}'
    assert '- ' not in ' '.join(s.split(' = ')[1] for s in steps)
    assert r['teacher_rationale'] != wp.rationale(problem.start, problem.ops)


def test_teacher_slips_are_seeded_and_shared_by_error_rates_of_one_seed():
  a = wp.rows(_settings(teacher_error=0.25), 'unlabeled')
  b = wp.rows(_settings(teacher_error=0.25), 'unlabeled')
  assert a == b
  # The problems do not depend on the error rate (the experiment varies the teacher alone).
  c = wp.rows(_settings(teacher_error=0.5), 'unlabeled')
  assert [r['input'] for r in a] == [r['input'] for r in c]


def test_bad_settings_are_refused():
  with pytest.raises(ValueError, match='num_steps'):
    _settings(num_steps=0)
  with pytest.raises(ValueError, match='teacher_error'):
    _settings(teacher_error=1.5)
  with pytest.raises(ValueError, match='num_test'):
    _settings(num_test=-1)
  with pytest.raises(ValueError, match='split'):
    wp.rows(_settings(), 'train')
