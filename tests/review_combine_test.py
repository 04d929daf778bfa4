"""Combiners: majority vote with explicit ties and abstentions, Snorkel's label model beating it
on synthetic sources of unequal accuracy, LFAnalysis per source, and the combined labels of a real
vote table (PaLM and the labeling functions on e-SNLI test inputs, an unlabeled pool)."""

import numpy as np
import pytest

from dssb.review import combine
from dssb.review import sources


def test_majority_marks_ties_and_abstentions():
  matrix = np.array([[0, 0, 1], [0, 1, -1], [-1, -1, -1], [2, -1, -1]])
  labels, probs, status = combine.majority(matrix, 3)
  assert list(labels) == [0, -1, -1, 2]
  assert list(status) == ['voted', 'tie', 'abstain', 'voted']
  np.testing.assert_allclose(probs[1], [0.5, 0.5, 0.0])
  np.testing.assert_allclose(probs[2], [1 / 3] * 3)
  np.testing.assert_allclose(probs.sum(1), 1.0)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_label_model_beats_majority_on_sources_of_unequal_accuracy(seed):
  # two good sources (0.9, 0.85) voting on 60% of rows, four weak ones (0.55) on 90%
  matrix, gold = combine.synthetic_votes(3000, [0.9, 0.85, 0.55, 0.55, 0.55, 0.55],
                                         [0.6, 0.6, 0.9, 0.9, 0.9, 0.9], 3, seed)
  matrix[:20] = -1  # rows no source labels: kept, marked
  mv, _, mv_status = combine.majority(matrix, 3)
  lm, probs, lm_status = combine.label_model(matrix, 3, seed)
  mv_acc, lm_acc = (mv == gold)[20:].mean(), (lm == gold)[20:].mean()
  assert lm_acc >= mv_acc + 0.08, (lm_acc, mv_acc)  # measured: 0.87 vs 0.72-0.74
  np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
  none = (matrix == -1).all(1)
  assert none.sum() == 20 and (lm_status[none] == 'abstain').all() and (lm[none] == -1).all()
  assert (mv_status[none] == 'abstain').all()
  report = combine.source_report(matrix, [f's{j}' for j in range(6)], gold)
  np.testing.assert_allclose(report['Emp. Acc.'], [0.9, 0.85, 0.55, 0.55, 0.55, 0.55], atol=0.04)
  np.testing.assert_allclose(report['Coverage'], [0.6, 0.6, 0.9, 0.9, 0.9, 0.9], atol=0.03)


def test_combined_labels_of_a_real_vote_table(dss_data_dir, tmp_path):
  table = sources.build('esnli', 'test', data_dir=dss_data_dir)
  frame, report = combine.combine(table)
  assert len(frame) == len(table.examples)  # no row dropped
  assert set(frame['majority_status']) <= set(combine.STATUSES)
  assert 'gold' not in report.index and list(report.index) == table.source_names(['teacher', 'lf'])
  assert {'Coverage', 'Overlaps', 'Conflicts', 'Emp. Acc.'} <= set(report.columns)
  gold = list(table.votes['gold'])
  palm = combine.accuracy(table.votes['palm'], gold)
  mv = combine.accuracy(frame['majority_label'], gold)
  ties = (frame['majority_status'] == 'tie').sum()
  assert ties > 0 and frame.loc[frame['majority_status'] == 'tie', 'majority_label'].isna().all()
  assert 0.6 < palm < 0.8 and 0.5 < mv < 0.85
  written = combine.write(frame, report, str(tmp_path))
  back = combine.read(str(tmp_path))
  assert list(back['label_model_label']) == list(frame['label_model_label'])
  assert 'Emp. Acc.' in open(written['report']).read()
