"""Tests of dssb.data.teacher_outputs on hand-written completions and the data."""

import pytest

from dssb.data import metrics
from dssb.data import sources
from dssb.data import splits
from dssb.data.teacher_outputs import failure_report, parse, parse_all, Parsed

CHOICES = ['bank', 'library', 'wooded area', 'zoo', 'park']


def test_cqa_run_on_into_invented_example():
  p = parse('cqa', 'Beavers need wood. So the answer is (c) wooded area.\n\nQ: Where is a fish?'
            '\nAnswer Choices:\n(a) sea\nA: So the answer is (a) sea.', CHOICES)
  assert p == Parsed('Beavers need wood.', 'wooded area')


def test_cqa_failure_shapes():
  no_letter = parse('cqa', 'Hmm. So the answer is wooded area.', CHOICES)
  assert (no_letter.label, no_letter.failure) == (' ', 'empty_label')
  assert no_letter.truncated and not no_letter.no_answer_marker
  outside = parse('cqa', 'R. So the answer is (b) library or (d) zoo.\n\nQ: x', CHOICES)
  assert outside.label == 'library or'  # Text up to the next '(x)'.
  assert outside.failure == 'label_not_in_set' and not outside.truncated
  cut = parse('cqa', 'The answer must be a place where', CHOICES)
  assert cut == Parsed('The answer must be a place where', ' ', 'empty_label', truncated=True,
                       no_answer_marker=True)
  assert parse('cqa', 'R. So the answer is (c) anything.').failure == ''


def test_svamp_parses():
  p = parse('svamp', 'He got 10 - (3 + 6) = 1. The answer is (10 - (3 + 6)).'
            '\n\nQ: There are 15 trees. How many?\nA: The answer is (21 - 15).')
  assert p == Parsed('He got 10 - (3 + 6) = 1.', '(10 - (3 + 6))')


def test_svamp_failure_shapes():
  cut = parse('svamp', 'Bob has 9 + 6 = 15 apples. The answer is (9 + 6')
  assert (cut.label, cut.failure, cut.truncated) == (' ', 'empty_label', True)
  twice = parse('svamp', 'A. The answer is (1 + 2). The answer is (3).')
  assert (twice.rationale, twice.label) == (' ', ' ')  # As the official code.
  assert twice.failure == 'empty_label' and not twice.no_answer_marker
  words = parse('svamp', 'So. The answer is (175, 5).\n\nQ: next')
  assert words.label == '(175, 5)' and words.failure == 'label_not_in_set'
  assert not words.truncated
  none = parse('svamp', 'No answer here.\n\nQ: next')
  assert none.no_answer_marker and none.failure == 'empty_label'


def test_esnli_shapes():
  ok = parse('esnli', 'Not all churches have cracks.\nAnswer: neutral\n\n'
             'Premise: A choir.\nHypothesis: B.\nAnswer: entailment')
  assert ok == Parsed('Not all churches have cracks.', 'neutral')
  cut = parse('esnli', 'The man is a photographer.\nAnswer: neutral\n\nPre')
  assert cut.label == 'neutral\n\nPre'  # Official: kept as is.
  assert cut.failure == 'label_not_in_set' and cut.truncated
  empty = parse('esnli', 'The woman is not sleeping.\nAnswer')
  assert empty == Parsed('The woman is not sleeping.\nAnswer', ' ', 'empty_label',
                         truncated=True, no_answer_marker=True)


def test_anli_shapes():
  ok = parse('anli1', 'Oxford Street is in London. So the answer is contradiction.\n\n'
             'Premise: X.\nHypothesis: Y.\nAnswer: Z.')
  assert ok == Parsed('Oxford Street is in London.', 'contradiction')
  lower = parse('anli1', 'Since 2000, so the answer is entailment.\n\nPremise: X.')
  assert (lower.rationale, lower.label) == ('', '')  # Official failure value.
  assert lower.failure == 'empty_label' and lower.no_answer_marker
  assert not lower.truncated
  no_period = parse('anli1', 'R. So the answer is neutral')
  assert no_period.label == 'neutra'  # Official: drops the last character.
  assert no_period.failure == 'label_not_in_set' and no_period.truncated


def test_report_counts():
  parsed = parse_all('svamp', ['A. The answer is (1 + 2).', 'B. The answer is (1 +',
                               'C. The answer is (x).\n\nQ: d', 'no marker'])
  assert failure_report(parsed) == {'n': 4, 'ok': 1, 'empty_label': 2, 'label_not_in_set': 1,
                                    'truncated': 2, 'no_answer_marker': 1}


def test_unknown_dataset():
  with pytest.raises(ValueError, match='Unknown dataset'):
    parse('gsm8k', 'x')


def _report(rows):
  return failure_report([Parsed(r['teacher_rationale'], r['teacher_label'], r['teacher_failure'],
                                r['teacher_truncated'], r['teacher_no_answer_marker'])
                         for r in rows])


def test_palm_cqa_test_matches_official_log(dss_data_dir):
  rows = splits.source_rows('cqa', 'test', 'palm', dss_data_dir)
  acc = metrics.exact_match([r['label'] for r in rows],
                            [r['teacher_label'] for r in rows])['accuracy']
  assert round(acc / 100, 4) == 0.7723  # Printed by the official run.py.
  assert _report(rows) == {'n': 1221, 'ok': 1175, 'empty_label': 0, 'label_not_in_set': 46,
                           'truncated': 0, 'no_answer_marker': 0}


def test_palm_failure_counts(dss_data_dir):
  rows = splits.source_rows('svamp', 'train', 'palm', dss_data_dir)
  assert _report(rows) == {'n': 800, 'ok': 766, 'empty_label': 13, 'label_not_in_set': 21,
                           'truncated': 13, 'no_answer_marker': 11}
  rows = splits.source_rows('anli1', 'valid', 'palm', dss_data_dir)
  assert _report(rows)['no_answer_marker'] == 9
  texts = sources.read_teacher_outputs('anli1', 'train', 'palm', dss_data_dir)
  assert len(texts) == 16946
