"""The testbed's seqio tasks (dssb.data.tasks.get_testbed_task_name): each recipe's features on
the word problems, which rows each label source trains on, nested fractions, the vocabulary's
exact round trip, the single-task label read-out and the exact-match metric."""

import pytest
import seqio

from dssb.data import metrics
from dssb.data import tasks
from dssb.data import vocab as vocab_lib
from dssb.data import word_problems as wp

SIZES = dict(num_labelled=64, num_unlabeled=48, num_validation=16, num_test=24)


@pytest.fixture(scope='module')
def vocab_path(tmp_path_factory):
  out = tmp_path_factory.mktemp('vocab') / 'word_problems.model'
  return vocab_lib.train_piece_vocab(wp.vocabulary_text(), wp.VOCAB_SYMBOLS, str(out))


def _rows(name, split='train'):
  ds = seqio.get_mixture_or_task(name).get_dataset(None, split=split, shuffle=False)
  return [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in ex.items()}
          for ex in ds.as_numpy_iterator()]


def _settings(**kwargs):
  return wp.WordProblemSettings(**{**SIZES, 'teacher_error': 0.5, **kwargs})


def test_vocabulary_round_trips_every_text(vocab_path):
  vocabulary = seqio.SentencePieceVocabulary(vocab_path)
  assert vocabulary.vocab_size <= 128  # the settings' model has 128 embeddings
  for split in wp.SPLITS:
    for r in wp.rows(_settings(num_steps=3), split):
      for text in ('predict: ' + r['input'], 'explain: ' + r['input'], r['teacher_rationale'],
                   r['teacher_rationale'] + ' [label] ' + r['label']):
        ids = vocabulary.encode(text)
        assert 2 not in ids, text  # no unknown piece
        assert vocabulary.decode(ids) == text


def test_recipes_features(vocab_path):
  gold = wp.rows(_settings(), 'labelled')
  pool = wp.rows(_settings(), 'unlabeled')
  common = dict(teacher_error=0.5, vocab_path=vocab_path, **SIZES)
  standard = _rows(tasks.get_testbed_task_name('standard', **common))
  assert [r['inputs_pretokenized'] for r in standard] == [r['input'] for r in gold]
  assert [r['targets_pretokenized'] for r in standard] == [r['label'] for r in gold]
  assert 'rationale_targets' not in standard[0]
  sbs = _rows(tasks.get_testbed_task_name('step_by_step', **common))
  assert [r['inputs_pretokenized'] for r in sbs] == ['predict: ' + r['input'] for r in gold]
  assert [r['targets_pretokenized'] for r in sbs] == [r['label'] for r in gold]
  assert [r['rationale_inputs_pretokenized'] for r in sbs] == [
      'explain: ' + r['input'] for r in gold]
  assert [r['rationale_targets_pretokenized'] for r in sbs] == [
      r['teacher_rationale'] for r in gold]
  # The teacher's labels: the unlabeled pool, annotated by the simulated teacher.
  distill = _rows(tasks.get_testbed_task_name('distill', **common))
  assert [r['targets_pretokenized'] for r in distill] == [r['teacher_label'] for r in pool]
  assert sum(r['teacher_label'] != r['label'] for r in pool) > 10
  unlabeled = _rows(tasks.get_testbed_task_name('step_by_step', label_source='teacher', **common))
  assert [r['targets_pretokenized'] for r in unlabeled] == [r['teacher_label'] for r in pool]
  single = _rows(tasks.get_testbed_task_name('single_task_rationale_first', **common))
  assert [r['targets_pretokenized'] for r in single] == [
      f"{r['teacher_rationale']} [label] {r['label']}" for r in gold]
  # Eval splits: gold labels, the recipe's input template.
  test = _rows(tasks.get_testbed_task_name('step_by_step', **common), 'test')
  assert [r['targets_pretokenized'] for r in test] == [
      r['label'] for r in wp.rows(_settings(), 'test')]
  assert all(r['inputs_pretokenized'].startswith('predict: ') for r in test)


def test_fractions_nest_and_names_differ(vocab_path):
  common = dict(vocab_path=vocab_path, **SIZES)
  names = {f: tasks.get_testbed_task_name('standard', fraction=f, **common)
           for f in (0.25, 0.5, 1.0)}
  assert len(set(names.values())) == 3
  inputs = {f: {r['inputs_pretokenized'] for r in _rows(n)} for f, n in names.items()}
  assert len(inputs[0.25]) == 16 and len(inputs[0.5]) == 32 and len(inputs[1.0]) == 64
  assert inputs[0.25] <= inputs[0.5] <= inputs[1.0]
  assert tasks.get_testbed_task_name('standard', fraction=0.5, **common) == names[0.5]


def test_single_task_read_out_and_exact_match(vocab_path):
  name = tasks.get_testbed_task_name('single_task_rationale_first', vocab_path=vocab_path,
                                     **SIZES)
  post = seqio.get_mixture_or_task(name).postprocess_fn
  assert post('3 + 4 = 7 , 7 - 1 = 6 [label] 6') == '6'
  assert post('3 + 4 = 7 , 7 - 1 = 6') == ''  # no label marker: wrong, never guessed
  assert post('1 2', is_target=True) == '1 2'
  assert metrics.exact_match(['1 2', '6'], ['1 2', '6 ']) == {'accuracy': 50.0}


def test_bad_recipe_and_label_source_are_refused(vocab_path):
  with pytest.raises(ValueError, match='label_source'):
    tasks.get_testbed_task_name('standard', label_source='teacher', vocab_path=vocab_path)
  with pytest.raises(ValueError, match='recipe'):
    tasks.get_testbed_task_name('cot_completion', vocab_path=vocab_path)
  with pytest.raises(ValueError, match='teacher_error'):
    tasks.get_testbed_task_name('standard', teacher_error=2.0, vocab_path=vocab_path)
