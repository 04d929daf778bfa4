"""Soft label targets (dssb.data.soft_labels): the label model's probabilities as weighted
examples. The loss is the expected cross-entropy, checked against the model's own NLLs; one-hot
probabilities give exactly the hard examples; `python -m dssb.review apply --soft` writes what
the trainer reads, and the trainer runs on it. Data: a small CQA folder cut from the shared data
(the first 150 train and 20 test rows, with PaLM's outputs)."""

import json
import os
import re
import subprocess
import sys

import gin
import jax
import numpy as np
import pytest

from dssb import gin_utils, input_pipeline, packing, train
from dssb.data import soft_labels
from dssb.data import sources as data_sources
from dssb.data import splits
from dssb.model import T5, T5Config, init_params
from dssb.review import combine
from dssb.review import curated
from dssb.review import sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TRAIN, N_TEST = 150, 20


def test_expand_keeps_likely_labels_renormalised():
  rows = [{'row': 0, 'teacher_label': 'a', 'teacher_failure': ''},
          {'row': 1, 'teacher_label': 'b', 'teacher_failure': ''}]
  out = soft_labels.expand(rows, [{'a': 0.7, 'b': 0.27, 'c': 0.03}, None], floor=0.05)
  assert [(r['row'], r['teacher_label']) for r in out] == [(0, 'a'), (0, 'b'), (1, 'b')]
  np.testing.assert_allclose([r['label_weight'] for r in out], [0.7 / 0.97, 0.27 / 0.97, 1.0])
  only = soft_labels.expand(rows[:1], [{'a': 0.02, 'b': 0.98}], floor=0.99)
  assert [(r['teacher_label'], r['label_weight']) for r in only] == [('b', 1.0)]
  with pytest.raises(ValueError, match='sum to'):
    soft_labels.check_probs({'a': 0.7, 'b': 0.2}, 'row 3')


def _nll(model, params, inputs, target):
  """-sum log p(target | inputs) of the model, token by token (EOS included)."""
  enc = np.asarray([inputs], np.int32)
  dec_t = np.asarray([target], np.int32)
  dec_in = np.pad(dec_t[:, :-1], ((0, 0), (1, 0)))
  logp = np.asarray(jax.nn.log_softmax(model.apply({'params': params}, enc, dec_in, dec_t)),
                    np.float64)
  return -np.take_along_axis(logp, dec_t[..., None], -1).sum()


def test_soft_row_loss_is_the_expected_cross_entropy():
  """A row with p = (0.7, 0.3) over labels a (2 tokens + EOS) and b (4 + EOS), beside a hard
  row: the label loss is (0.7 NLL(a) + 0.3 NLL(b) + NLL(c)) / (0.7*3 + 0.3*5 + len(c)), the
  trainer's mean over target tokens with each token counted p times; the rationale (the same in
  both copies) counts once. Unpacked and packed batches agree."""
  config = T5Config(vocab_size=40, d_model=16, num_heads=2, head_dim=8, d_ff=32,
                    num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)
  params = init_params(config, jax.random.PRNGKey(3))
  model = T5(config)
  x, x2 = [5, 6, 7, 1], [9, 8, 1]
  a, b, c = [11, 12, 1], [13, 14, 15, 16, 1], [17, 1]
  r, r2 = [20, 21, 22, 1], [23, 1]
  rows = soft_labels.expand([{'row': 0, 'teacher_label': 'a'}, {'row': 1, 'teacher_label': 'c'}],
                            [{'a': 0.7, 'b': 0.3}, None], floor=0.0)
  targets = {'a': a, 'b': b, 'c': c}
  as_ids = lambda seqs: [np.asarray(s, np.int32) for s in seqs]
  examples = input_pipeline.Examples(
      {'inputs': as_ids([x, x, x2]), 'targets': as_ids([targets[e['teacher_label']] for e in rows]),
       'rationale_inputs': as_ids([x, x, x2]), 'rationale_targets': as_ids([r, r, r2])}, {}, {},
      np.asarray([e['label_weight'] for e in rows], np.float32))
  lengths = {'inputs': 8, 'targets': 8, 'rationale_inputs': 8, 'rationale_targets': 8}
  batch = input_pipeline.encdec_batch(examples, np.arange(3), lengths)
  loss_fn = train.make_loss_fn(model, alpha=0.4, label_smoothing=0.0, z_loss=0.0)
  loss, metrics = loss_fn(params, batch, jax.random.PRNGKey(0), enable_dropout=False)

  nll = lambda inputs, target: _nll(model, params, inputs, target)
  want_label = ((0.7 * nll(x, a) + 0.3 * nll(x, b) + nll(x2, c))
                / (0.7 * len(a) + 0.3 * len(b) + len(c)))
  want_rationale = (nll(x, r) + nll(x2, r2)) / (len(r) + len(r2))
  np.testing.assert_allclose(metrics['label_loss'], want_label, rtol=1e-5)
  np.testing.assert_allclose(metrics['rationale_loss'], want_rationale, rtol=1e-5)
  np.testing.assert_allclose(loss, 0.4 * want_label + 0.6 * want_rationale, rtol=1e-5)
  # a hard-label batch of the same rows weighs a and b alike: a different loss
  hard = input_pipeline.Examples(examples.tokens, {}, {})
  _, hard_metrics = loss_fn(params, input_pipeline.encdec_batch(hard, np.arange(3), lengths),
                            jax.random.PRNGKey(0), enable_dropout=False)
  assert abs(float(hard_metrics['label_loss']) - want_label) > 1e-3

  shape = packing.PackedShape(2, {k: 16 for k in lengths})
  plan = packing.StepPlan(np.arange(3), {'label': np.asarray([0, 1, 0]),
                                         'rationale': np.asarray([0, 1, 0])})
  packed = packing.packed_batch(examples, plan, shape)
  _, packed_metrics = loss_fn(params, packed, jax.random.PRNGKey(0), enable_dropout=False)
  np.testing.assert_allclose(packed_metrics['label_loss'], want_label, rtol=1e-5)
  np.testing.assert_allclose(packed_metrics['rationale_loss'], want_rationale, rtol=1e-5)


# --- a small CQA folder, a curated teacher folder with label distributions -----------------------


@pytest.fixture(scope='module')
def small_cqa(dss_data_dir, tmp_path_factory):
  """DATA/datasets/cqa with the first N_TRAIN train and N_TEST test rows and PaLM's outputs."""
  root = tmp_path_factory.mktemp('cqa_small')
  folder = root / 'datasets' / 'cqa'
  (folder / 'llm').mkdir(parents=True)
  for split, n in (('train', N_TRAIN), ('test', N_TEST)):
    lines = open(data_sources.source_path('cqa', split, dss_data_dir)).read().splitlines()
    (folder / f'cqa_{split}.json').write_text('\n'.join(lines[:n]) + '\n')
    outputs = data_sources.read_teacher_outputs('cqa', split, 'palm', dss_data_dir)[:n]
    (folder / 'llm' / f'{split}_CoT_0.json').write_text(json.dumps(outputs))
  return str(root)


@pytest.fixture(scope='module')
def soft_folder(small_cqa, tmp_path_factory):
  """`python -m dssb.review apply --soft` on the small CQA train split: votes (PaLM and the
  labeling functions), the label model, two reviewed rows (one relabelled, one dropped)."""
  work = tmp_path_factory.mktemp('review')
  votes = str(work / 'votes')
  table = sources.build('cqa', 'train', data_dir=small_cqa)
  sources.write(table, votes)
  frame, report = combine.combine(table, seed=0)
  combine.write(frame, report, votes)
  frame = combine.read(votes)  # as apply reads it (no label: None, not pandas' NaN)
  ids = list(table.examples['id'])
  relabel_to = [c for c in table.examples['candidates'][0] if c != frame['label_model_label'][0]][0]
  (work / 'queue.jsonl').write_text(''.join(json.dumps({'rank': k + 1, 'id': i}) + '\n'
                                            for k, i in enumerate(ids[:2])))
  (work / 'decisions.jsonl').write_text(''.join(json.dumps(d) + '\n' for d in [
      {'id': ids[0], 'action': 'relabel', 'label': relabel_to, 'reviewer': 'ana',
       'decided_at': '2026-12-05T02:00:00Z'},
      {'id': ids[1], 'action': 'drop', 'label': None, 'reviewer': 'ana',
       'decided_at': '2026-12-05T02:00:01Z'}]))
  out = str(work / 'teachers')
  cmd = [sys.executable, '-m', 'dssb.review', 'apply', '--votes', votes, '--queue',
         str(work / 'queue.jsonl'), '--decisions', str(work / 'decisions.jsonl'),
         '--label_source', 'label_model', '--teacher_folder', out, '--teacher_name', 'soft',
         '--data_dir', small_cqa]
  refused = subprocess.run(cmd[:-4] + ['--label_source', 'palm', '--soft'], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
  assert refused.returncode != 0 and '--soft needs a combiner' in refused.stderr
  run = subprocess.run(cmd + ['--soft'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'soft_labels=True' in run.stderr
  return {'root': out, 'frame': frame, 'table': table, 'relabel_to': relabel_to}


def test_apply_soft_writes_the_label_model_distributions(soft_folder):
  frame, table = soft_folder['frame'], soft_folder['table']
  probs = soft_labels.read('cqa', 'train', 'soft', soft_folder['root'], expected=N_TRAIN)
  assert probs[0] == {soft_folder['relabel_to']: 1.0}  # a person's relabel: one-hot
  assert probs[1] is None  # dropped
  texts = data_sources.read_teacher_outputs('cqa', 'train', 'soft', soft_folder['root'])
  assert texts[1] == ''
  soft_rows = 0
  for i in range(2, N_TRAIN):
    if frame['label_model_label'][i] is None:
      assert probs[i] is None
      continue
    want = {}
    for cand, p in zip(table.examples['candidates'][i], frame['label_model_probs'][i]):
      want[cand] = want.get(cand, 0.0) + p
    assert probs[i].keys() == want.keys()
    np.testing.assert_allclose([probs[i][k] for k in want], list(want.values()), rtol=1e-5)
    assert frame['label_model_label'][i] in texts[i]  # the completion keeps the hard label
    soft_rows += max(want.values()) < 0.95
  assert soft_rows >= 10  # the label model is unsure of many rows: the test is not one-hot only


def _task(data_dir, teacher, soft):
  from dssb.data import tasks  # pylint: disable=g-import-not-at-top
  return tasks.get_task_name('cqa', 'step_by_step', teacher=teacher, label_source='teacher',
                             parse_failures='drop', vocab_path=_vocab(data_dir),
                             data_dir=data_dir, soft_labels=soft, soft_label_floor=0.0)


def _vocab(data_dir):
  from dssb.data import vocab  # pylint: disable=g-import-not-at-top
  return vocab.train_vocab('cqa', 300, os.path.join(data_dir, 'cqa_300.model'), data_dir=data_dir)


def test_one_hot_probabilities_give_the_hard_examples(small_cqa, tmp_path):
  """A curated folder whose distributions are one-hot on its labels: the soft task's examples
  are the hard task's, token for token, each weighing 1; a non-one-hot row adds its copies."""
  rows = data_sources.read_examples('cqa', 'train', small_cqa)
  labels = [r['label'] if i % 7 else None for i, r in enumerate(rows)]
  rationales = [f'because of {r["label"]}' for r in rows]
  root = str(tmp_path / 'teachers')
  lengths = {'inputs': 96, 'targets': 24, 'rationale_inputs': 96, 'rationale_targets': 24}
  one_hot = [None if l is None else {l: 1.0} for l in labels]
  curated.write_teacher_folder(root, 'cqa', 'train', 'onehot', labels, rationales, small_cqa,
                               label_probs=one_hot)
  hard = input_pipeline.load_examples(_task(root, 'onehot', False), 'train', lengths)
  soft = input_pipeline.load_examples(_task(root, 'onehot', True), 'train', lengths)
  train_rows = splits.split_rows('cqa', {'train': N_TRAIN, 'test': N_TEST})['train'][1]
  assert hard.weights is None and len(soft) == len(hard) == sum(
      labels[i] is not None for i in train_rows)  # the rest: the carved-out validation
  np.testing.assert_array_equal(soft.weights, np.ones(len(hard), np.float32))
  for key, seqs in hard.tokens.items():
    assert all(np.array_equal(s, h) for s, h in zip(soft.tokens[key], seqs, strict=True)), key
  idx = np.arange(8)
  hard_batch = input_pipeline.encdec_batch(hard, idx, lengths)
  soft_batch = input_pipeline.encdec_batch(soft, idx, lengths)
  for name in hard_batch:
    for key in hard_batch[name]:
      np.testing.assert_array_equal(soft_batch[name][key], hard_batch[name][key])

  # a train row split 0.6 / 0.4 between its label and another choice: two weighted copies
  split = list(one_hot)
  i = next(int(i) for i in train_rows if labels[i] is not None)
  other = [c for c in rows[i]['choices'] if c != labels[i]][0]
  split[i] = {labels[i]: 0.6, other: 0.4}
  curated.write_teacher_folder(root, 'cqa', 'train', 'split', labels, rationales, small_cqa,
                               label_probs=split)
  soft2 = input_pipeline.load_examples(_task(root, 'split', True), 'train', lengths)
  assert len(soft2) == len(hard) + 1
  np.testing.assert_allclose(sorted(soft2.weights)[:2], [0.4, 0.6], rtol=1e-6)
  # rewriting the folder without distributions removes them: soft training then refuses
  curated.write_teacher_folder(root, 'cqa', 'train', 'split', labels, rationales, small_cqa)
  with pytest.raises(FileNotFoundError, match='apply --soft'):
    soft_labels.read('cqa', 'train', 'split', root)


def test_trainer_runs_two_steps_on_a_soft_curated_folder(soft_folder, small_cqa, tmp_path,
                                                          monkeypatch, capfd):
  """python -m dssb.train's gin path on the folder apply --soft wrote: the task is the soft one
  and holds more train examples than labelled rows (the unsure rows' copies)."""
  monkeypatch.setenv('DSSB_DATA_DIR', soft_folder['root'])
  monkeypatch.setenv('DSSB_CACHE_DIR', str(tmp_path / 'cache'))
  model_dir = str(tmp_path / 'run')
  bindings = [f"MODEL_DIR='{model_dir}'", "DATASET='cqa'", "TEACHER='soft'",
              "LABEL_SOURCE='teacher'", "PARSE_FAILURES='drop'",
              'tasks.get_task_name.soft_labels=True', 'vocab.cached_vocab.vocab_size=300',
              'TRAIN_STEPS=2', 'EVAL_EVERY=2', 'BATCH_SIZE=4', 'train.log_every=1',
              'train.eval_limit=4', 'train.eval_batch_size=4', 'train.max_decode_length=4']
  gin.clear_config()
  try:
    gin_utils.parse_gin(['gin/cpu/svamp_step_by_step.gin'], bindings)
    gin_utils.check_required()
    summary = gin_utils.call_configured(train.train, 'train')
  finally:
    gin.clear_config()
  with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
    records = [json.loads(l) for l in f if 'split' not in json.loads(l)]
  assert [r['step'] for r in records] == [1, 2]
  assert all(np.isfinite(r['label_loss']) and np.isfinite(r['rationale_loss']) for r in records)
  assert summary['last']['test']['num_examples'] == 4
  log = capfd.readouterr().err
  match = re.search(r'task (\S+): train (\d+)', log)
  probs = soft_labels.read('cqa', 'train', 'soft', soft_folder['root'])
  train_rows = splits.split_rows('cqa', {'train': N_TRAIN, 'test': N_TEST})['train'][1]
  labelled = sum(probs[i] is not None for i in train_rows)
  assert match and match.group(1).endswith('_soft0.05'), log[-2000:]
  assert int(match.group(2)) > labelled, (match.group(2), labelled)
  with open(os.path.join(model_dir, 'config.gin')) as f:
    assert 'soft_labels = True' in f.read()


def test_pair_student_soft_labels(dss_data_dir):
  """The scikit-learn pair student (experiments/label_quality_soft.py): one-hot distributions
  fit exactly the hard labels' model; split distributions fit another one."""
  from dssb.review import crossfit  # pylint: disable=g-import-not-at-top
  rows = data_sources.read_examples('esnli', 'valid', dss_data_dir)[:300]
  views = [sources.example_view('esnli', r) for r in rows]
  student = crossfit.PairStudent(views)
  labels = [r['label'] for r in rows]
  hard = student.fit_score(labels, views[:50])
  one_hot = student.fit_score(labels, views[:50], [{l: 1.0} for l in labels])
  np.testing.assert_allclose(np.asarray(one_hot), np.asarray(hard), rtol=1e-6, atol=1e-9)
  split = [{l: 0.5, ('neutral' if l != 'neutral' else 'entailment'): 0.5} for l in labels]
  soft = student.fit_score(labels, views[:50], split)
  assert np.abs(np.asarray(soft) - np.asarray(hard)).max() > 1e-3
