"""Several teachers combined: majority vote over their parsed labels (SVAMP answers by value), who
agreed per row, and rows below the agreement threshold dropped by PARSE_FAILURES='drop' without
any change to the task code. Teachers: PaLM's released SVAMP train outputs and two teachers made
from them by changing the answers of some rows (data written here, read by the real parsers)."""

import json
import os
import re

import pytest

from dssb.data import metrics
from dssb.data import sources
from dssb.data import splits
from dssb.data import teacher_outputs
from dssb.teacher import combine
from dssb.teacher import votes


def _shifted(text, delta):
  """The completion with its answer equation changed to (equation + delta)."""
  return re.sub(r'The answer is (\(.*\))', lambda m: f'The answer is ({m.group(1)} + {delta})',
                text, count=1)


@pytest.fixture(scope='module')
def teachers(dss_data_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp('teachers')
  palm = sources.read_teacher_outputs('svamp', 'train', 'palm', dss_data_dir)
  made = {'plus1': lambda i: i % 3 == 0, 'plus2': lambda i: i % 4 == 0}
  for delta, (name, changed) in enumerate(made.items(), 1):
    folder = root / name / 'datasets' / 'svamp' / f'llm_{name}'
    folder.mkdir(parents=True)
    for entry in ('svamp_train.json', 'svamp_test.json'):
      os.symlink(os.path.join(dss_data_dir, 'datasets', 'svamp', entry),
                 root / name / 'datasets' / 'svamp' / entry)
    texts = [_shifted(t, delta) if changed(i) else t for i, t in enumerate(palm)]
    (folder / 'train_CoT_0.json').write_text(json.dumps(texts))
  return {'palm': None, 'plus1': str(root / 'plus1'), 'plus2': str(root / 'plus2')}


def test_majority_vote_and_agreement(teachers, dss_data_dir, tmp_path):
  out = str(tmp_path / 'combined')
  order = [('palm', None), ('plus1', teachers['plus1']), ('plus2', teachers['plus2'])]
  summary = combine.combine('svamp', 'train', order, 'vote3', out, min_agreement=2,
                            data_dir=dss_data_dir)
  labels = {}
  for name, folder in order:
    texts = sources.read_teacher_outputs('svamp', 'train', name, folder or dss_data_dir)
    labels[name] = [None if p.failure else metrics.safe_eval(p.label)
                    for p in teacher_outputs.parse_all('svamp', texts)]
  records = [json.loads(l) for l in open(os.path.join(
      sources.teacher_dir('svamp', 'vote3', out), 'train_annotations.jsonl'))]
  combined = sources.read_teacher_outputs('svamp', 'train', 'vote3', out, expected=800)
  palm = sources.read_teacher_outputs('svamp', 'train', 'palm', dss_data_dir)
  expected_kept = 0
  for i, record in enumerate(records):
    values = [labels[n][i] for n, _ in order]
    best = max((sum(v is not None and w is not None and abs(v - w) < 1e-6 for w in values)
                for v in values), default=0)
    kept = best >= 2
    expected_kept += kept
    assert record['kept'] == kept, (i, values, record)
    assert len(record['agreed']) == best
    if kept and labels['palm'][i] is not None and 'palm' in record['agreed']:
      assert combined[i] == palm[i] and record['from'] == 'palm'  # priority order
    if not kept:
      assert combined[i] == ''
  assert summary['kept'] == expected_kept and 0 < expected_kept < 800
  assert summary['agreement_histogram']['3/3'] == sum(len(r['agreed']) == 3 for r in records)
  assert summary['accuracy']['palm'] > summary['accuracy']['plus1']

  # training reads the combined teacher like any other; 'drop' leaves out the rows below 2/3
  kept_rows = splits.load_split('svamp', 'train', teacher='vote3', parse_failures='drop',
                                data_dir=out)
  all_rows = splits.load_split('svamp', 'train', teacher='vote3', data_dir=out)
  dropped = {r['row'] for r in all_rows} - {r['row'] for r in kept_rows}
  not_kept = {r['row'] for r in records if not r['kept']}
  assert dropped == not_kept & {r['row'] for r in all_rows} and dropped


def test_votes_compare_answers_not_strings():
  vote = votes.majority('svamp', ['(3 + 4)', '(4 + 3)', '(2 * 3)', None])
  assert (vote.winner, vote.votes, vote.voters) == (0, 2, 4) and vote.agreement == 0.5
  tie = votes.majority('cqa', ['ocean', 'lake', 'lake', 'ocean'])
  assert tie.winner == 0  # ties go to the answer that came first
  assert votes.majority('svamp', ['(1234567)', '(1234568)']).votes == 1  # values, not digits
  assert votes.majority('svamp', ['(0.1 + 0.2)', '(0.3)']).votes == 2
  assert votes.majority('esnli', [None, None]).winner is None


def test_bad_combinations_are_refused(dss_data_dir, tmp_path):
  with pytest.raises(ValueError, match='at least two teachers'):
    combine.combine('svamp', 'train', [('palm', None)], 'x', str(tmp_path), data_dir=dss_data_dir)
  with pytest.raises(ValueError, match=r'min_agreement must be in \[1, 2\]'):
    combine.combine('svamp', 'train', [('palm', None), ('palm', None)], 'x', str(tmp_path),
                    min_agreement=3, data_dir=dss_data_dir)
  with pytest.raises(FileNotFoundError, match='llm_nobody'):
    combine.combine('svamp', 'train', [('palm', None), ('nobody', None)], 'x', str(tmp_path),
                    data_dir=dss_data_dir)
