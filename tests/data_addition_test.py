"""The synthetic addition task: the public code's scratchpad format, the answer extractor on
well-formed, truncated and malformed completions, the exact checker, the seeded generator."""

import random

import pytest

from dssb.data import addition

# The example of the public code's format, as PAPERS.md (section 2) quotes it.
PUBLIC_EXAMPLE = ('2 9 + 5 7 , C: 0 => 2 + 5 , 6  C: 1 => , 8 6  C: 0 => 0 8 6 '
                  'Final answer: #8 6#')


def test_scratchpad_is_the_public_format():
  assert addition.teacher_target(29, 57) == PUBLIC_EXAMPLE
  assert addition.question(29, 57) == ' Question: 2 9 + 5 7'
  assert addition.TEACHER_PROMPT == "Let's think step by step." and addition.STUDENT_PROMPT == ''
  # By hand: 9+9 = 18 (8, carry 1), 9+9+1 = 19 (9, carry 1), twice; the final carry leads.
  assert addition.teacher_target(999, 999) == (
      '9 9 9 + 9 9 9 , C: 0 => 9 + 9 , 8  C: 1 => 9 + 9 , 9 8  C: 1 => , 9 9 8  C: 1 => '
      '1 9 9 8 Final answer: #1 9 9 8#')
  assert addition.teacher_target(7, 5) == '7 + 5 , C: 0 => , 2  C: 1 => 1 2 Final answer: #1 2#'
  assert addition.direct_target(29, 57) == '8 6'


def test_scratchpad_steps_add_up():
  """Each step's partial sum is the sum of the columns seen so far, the carry the one left."""
  rng = random.Random(0)
  for _ in range(300):
    digits = rng.randint(1, 9)
    a, b = rng.randrange(10 ** digits), rng.randrange(10 ** digits)
    steps = addition.scratchpad(a, b).split(' => ')
    width = len(str(max(a, b)))
    assert len(steps) == width + 2
    final = steps[-1].replace(' ', '')
    assert int(final) == a + b and len(final) == width + 1
    for k, step in enumerate(steps[1:-1], 1):
      partial, carry = step.rsplit(', ', 1)[-1].split('  C: ')
      low = 10 ** k
      assert int(partial.replace(' ', '')) == (a % low + b % low) % low
      assert int(carry) == (a % low + b % low) // low


@pytest.mark.parametrize('completion, digits', [
    (PUBLIC_EXAMPLE, '86'),
    ('Final answer: #1 9 9 8#', '1998'),
    ('Final answer: #0 8 6#', '086'),        # a leading zero is kept: the checker rejects it
    ('junk #8 6# more', '86'),
])
def test_extractor_on_well_formed_completions(completion, digits):
  assert addition.extract_answer(completion) == digits


@pytest.mark.parametrize('cut', [10, 40, len(PUBLIC_EXAMPLE) - 4, len(PUBLIC_EXAMPLE) - 1])
def test_extractor_on_truncated_scratchpads(cut):
  assert addition.extract_answer(PUBLIC_EXAMPLE[:cut]) is None


@pytest.mark.parametrize('completion', [
    '', 'Final answer: 8 6', 'Final answer: #8 x#', 'Final answer: # #', '##',
    'Final answer: #8 6# and #1#',           # greedy, as the public regex: '86and1', not digits
    'Final answer: #8\n6#',                  # the regex stops at a newline
    'Final answer: #\u0668 6#',              # a non-ASCII digit
])
def test_extractor_on_malformed_completions(completion):
  assert addition.extract_answer(completion) is None


def test_extractor_strips_what_the_public_code_strips():
  assert addition.extract_answer('#-8 6#') == '86'  # '-' removed, as the public code does


def test_checker_is_exact():
  assert addition.is_correct('86', 29, 57)
  for wrong in ('086', '8 6', '85', '', None, '86 '):
    assert not addition.is_correct(wrong, 29, 57)
  assert addition.is_correct('0', 0, 0) and not addition.is_correct('00', 0, 0)
  assert addition.direct_answer(' 8 6 .\n') == '86' and addition.direct_answer('8 6') == '86'
  assert addition.canonical_answer('086') == '8 6'
  with pytest.raises(ValueError, match='not an answer'):
    addition.canonical_answer('8a')


def test_generator_is_reproducible_by_seed():
  first = addition.sample_problems((1, 2, 3), 500, seed=7)
  assert first == addition.sample_problems((1, 2, 3), 500, seed=7)
  assert first != addition.sample_problems((1, 2, 3), 500, seed=8)
  assert len(set(first)) == 500
  for a, b in first:
    assert len(str(a)) == len(str(b)) or max(a, b) < 10  # both operands share a digit count
  assert set(addition.digit_counts(first)) == {1, 2, 3}


def test_generator_excludes_and_refuses_what_cannot_exist():
  taken = addition.sample_problems((1,), 60, seed=0)
  rest = addition.sample_problems((1,), 40, seed=1, exclude=taken)
  assert not set(rest) & set(taken) and len(set(rest) | set(taken)) == 100
  with pytest.raises(ValueError, match='only 0 remain'):
    addition.sample_problems((1,), 1, seed=2, exclude=taken + rest)
  with pytest.raises(ValueError, match='distinct problems'):
    addition.AdditionSettings(digits=(1,), num_labelled=90, num_validation=5, num_test=5,
                              num_unlabeled=1)


def test_splits_are_disjoint_and_sized():
  settings = addition.AdditionSettings((1, 2), 300, 50, 100, 1000, seed=3)
  parts = addition.problems(settings)
  assert {k: len(v) for k, v in parts.items()} == settings.sizes()
  seen = set()
  for pairs in parts.values():
    assert not seen & set(pairs)
    seen |= set(pairs)
  rows = addition.rows(settings, 'test')
  assert rows[0]['input'] == addition.question(*parts['test'][0])
  assert rows[0]['answer'] == addition.direct_target(*parts['test'][0])
  assert addition.rows(settings, 'test') == rows  # the same seed, the same rows
  assert addition.rows(addition.AdditionSettings((1, 2), 300, 50, 100, 1000, seed=4),
                       'test') != rows
