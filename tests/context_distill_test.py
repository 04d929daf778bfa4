"""Context distillation end to end on the easiest setting (1-digit addition, tiny T5 from
scratch): the teacher learns scratchpads, samples the distillation set (resumably), the student
learns the extracted answers without the context (hard and soft targets), and is evaluated.
Also: the answer-token alignment, the distillation set's reader, the tasks' features, and the
soft-target step (zero KL for the same context and weights; gradients reach the student only).
"""

import json
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from dssb import gin_utils, input_pipeline, losses, train
from dssb.context_distill import distill_set, evaluate, sample, sources, templates
from dssb.data import addition, tasks, vocab
from dssb.model import T5, T5Config, init_params

TINY = 'gin/cpu/cd_addition_tiny.gin'
LENGTHS = {'inputs': 24, 'targets': 24, 'rationale_inputs': 24, 'rationale_targets': 24}
MINI = 'gin/cpu/cd_addition_mini.gin'


@pytest.fixture(scope='module', autouse=True)
def env(tmp_path_factory):
  saved = dict(os.environ)
  os.environ['DSSB_CACHE_DIR'] = str(tmp_path_factory.mktemp('cache'))
  yield
  os.environ.clear()
  os.environ.update(saved)


def _parse(gin_file, *bindings):
  gin.clear_config()
  gin_utils.parse_gin([gin_file, MINI, TINY], bindings)
  gin_utils.check_required()


def _train(gin_file, model_dir, *bindings):
  try:
    _parse(gin_file, f"MODEL_DIR='{model_dir}'", *bindings)
    return gin_utils.call_configured(train.train, 'train')
  finally:
    gin.clear_config()


def _sample(teacher_dir, out, *bindings):
  try:
    _parse('gin/paper/cd_table3_distill_set.gin', f"TEACHER_DIR='{teacher_dir}'",
           f"DISTILL_FILE='{out}'", *bindings)
    return gin_utils.call_configured(sample.sample_distillation_set, 'sample')
  finally:
    gin.clear_config()


def _data(**kwargs):
  """The tiny gin file's data settings."""
  try:
    _parse('gin/paper/cd_table3_distill_set.gin', "TEACHER_DIR='x'", "DISTILL_FILE='x'")
    return gin.get_configurable(sources.CDSettings)(**kwargs)
  finally:
    gin.clear_config()


# ---------------------------------------------------------------------------------------------
# Pure parts


def test_answer_positions():
  # teacher: '#', 8, 6, '#', EOS; the answer 8 6 sits at positions 2, 3; EOS has no match.
  assert distill_set.answer_positions([5, 8, 6, 5, 1], [8, 6]) == [2, 3, 0]
  # The whole completion is the answer: EOS is matched too.
  assert distill_set.answer_positions([8, 6, 1], [8, 6]) == [1, 2, 3]
  # The last occurrence wins (a scratchpad repeats digits before its answer).
  assert distill_set.answer_positions([8, 6, 7, 8, 6, 5], [8, 6]) == [4, 5, 0]
  assert distill_set.answer_positions([8, 7, 5], [8, 6]) == [0, 0, 0]  # absent: hard targets


def _write_set(path, records, meta=None):
  with open(path, 'w') as f:
    f.write(''.join(json.dumps(r) + '\n' for r in records))
  with open(distill_set.meta_path(path), 'w') as f:
    json.dump(meta or {'settings': {'context': templates.ADDITION.name}}, f)


def test_training_examples_drop_unanswered_samples_and_align(tmp_path):
  path = str(tmp_path / 'set.jsonl')
  _write_set(path, [
      {'id': '3+4', 'input': ' Question: 3 + 4', 'gold': '7',
       'samples': [{'text': 'x #7#', 'ids': [9, 5, 7, 5, 1], 'answer': '7'},
                   {'text': 'x #7', 'ids': [9, 5, 7], 'answer': None}]}])
  rows = distill_set.training_examples(path, lambda text: [int(c) for c in text.split()],
                                       templates.ADDITION)
  assert rows == [{'inputs': ' Question: 3 + 4', 'targets': '7',
                   'teacher_inputs': "Let's think step by step. Question: 3 + 4",
                   'teacher_targets': [9, 5, 7, 5, 1], 'teacher_positions': [3, 0]}]
  assert distill_set.summarize(path)['unanswered'] == 1


def test_distillation_set_errors_name_the_file_and_line(tmp_path):
  path = str(tmp_path / 'set.jsonl')
  good = {'id': 'a', 'input': 'x', 'samples': [{'text': 't', 'ids': [1], 'answer': None}]}
  _write_set(path, [good])
  with pytest.raises(ValueError, match='no teacher sample has an answer'):
    distill_set.training_examples(path, list, templates.ADDITION)
  with open(path, 'a') as f:
    f.write('{"id": "b", "samples": [{"text": 1}]}\n')
  with pytest.raises(ValueError, match='set.jsonl:2: not a distillation record'):
    list(distill_set.read_records(path))
  with open(path, 'w') as f:
    f.write(json.dumps(good) + '\n{"id": "b"')
  with pytest.raises(ValueError, match='set.jsonl:2: incomplete last line'):
    list(distill_set.read_records(path))
  _write_set(path, [good], {'settings': {}, 'context': 'cqa_instructions_4shot'})
  with pytest.raises(ValueError, match='sampled with context'):
    distill_set.training_examples(path, list, templates.ADDITION)


def test_vocabulary_round_trips_and_keeps_digits_one_token():
  v = vocab.get_vocabulary(vocab.cached_addition_vocab())
  for a, b in [(29, 57), (0, 0), (999, 999), (12345678, 87654321)]:
    for text in (addition.teacher_target(a, b), addition.TEACHER_PROMPT + addition.question(a, b),
                 addition.direct_target(a, b)):
      ids = v.encode(text)
      assert v.decode(ids) == text and 2 not in ids  # exact, no unknown piece
  answer = v.encode('8 6')
  assert len(answer) == 2
  assert distill_set.answer_positions(v.encode(addition.teacher_target(29, 57)) + [1],
                                      answer)[0] > 0


# ---------------------------------------------------------------------------------------------
# Gin files and tasks


@gin.configurable('cd_test_probe')
def _probe(lengths=None, steps=None, init=None):
  return lengths, steps, init


@pytest.mark.parametrize('role, length, steps, init', [
    ('teacher', 52, 4000, None), ('student_before', 8, 0, 'T'),
    ('context_distill_hard', 8, 1000, 'T'), ('context_distill_soft', 8, 1000, 'T'),
    ('scratchpad_then_direct', 8, 1000, 'T'), ('oracle', 8, 1000, 'T'),
    ('multitask', 8, 4000, None)])
def test_role_files_resolve_their_lengths_steps_and_start(role, length, steps, init):
  """Size files set STUDENT_* and TEACHER_* lengths; the teacher's role file trains on the
  teacher's (a scratchpad cut to an answer's length would teach nothing); students start from
  the teacher's weights, the teacher and the multi-task baseline from PRETRAINED."""
  try:
    gin.clear_config()
    gin_utils.parse_gin([f'gin/paper/cd_table3_{role}.gin', MINI], [
        "MODEL_DIR='x'", "TEACHER_DIR='T'", "DISTILL_FILE='d'",
        'cd_test_probe.lengths=%TASK_FEATURE_LENGTHS', 'cd_test_probe.steps=%TRAIN_STEPS',
        'cd_test_probe.init=%INIT_CHECKPOINT'])
    gin_utils.check_required()
    lengths, got_steps, got_init = _probe()
  finally:
    gin.clear_config()
  assert lengths['targets'] == length and lengths['teacher_targets'] == 52
  assert lengths['rationale_targets'] == 52 and got_steps == steps and got_init == init


def _examples(recipe, split='train', **kwargs):
  try:
    _parse('gin/paper/cd_table3_teacher.gin', "MODEL_DIR='x'", f"RECIPE='{recipe}'",
           *[f'{k}={v!r}' for k, v in kwargs.items()])
    name = gin.get_configurable(tasks.get_context_distill_task_name)()
  finally:
    gin.clear_config()
  return name, input_pipeline.load_examples(name, split, LENGTHS)


def test_tasks_give_each_recipe_its_templates():
  _, teacher = _examples('teacher')
  assert teacher.texts['inputs'][0].startswith("Let's think step by step. Question: ")
  assert '=>' in teacher.texts['targets'][0] and teacher.texts['targets'][0].endswith('#')
  _, teacher_test = _examples('teacher', 'test')
  assert teacher_test.texts['inputs'][0].startswith("Let's think")
  assert '=>' not in teacher_test.texts['targets'][0]  # eval targets: the gold answer
  name, direct = _examples('direct', 'test')
  assert direct.texts['inputs'][0].startswith(' Question: ')
  _, sbs = _examples('step_by_step', FRACTION=0.5)
  assert len(sbs) == 32 and set(sbs.pairs) == {input_pipeline.PAIRS[0], input_pipeline.PAIRS[1]}
  assert sbs.texts['rationale_inputs'][0] == "Let's think step by step." + sbs.texts['inputs'][0]
  _, oracle = _examples('oracle')
  data = _data()
  assert oracle.texts['targets'] == [r['answer'] for r in data.rows('unlabeled')]
  # Exact metric on the extracted answers: the gold answer scores 100, another answer 0.
  task = seqio.get_mixture_or_task(name)
  post = task.postprocess_fn
  gold = [post(t, is_target=True) for t in direct.texts['targets']]
  assert task.metric_fns[0](gold, [post(t) for t in direct.texts['targets']]) == {
      'accuracy': 100.0}


def test_unknown_recipe_and_missing_distill_file_are_refused():
  with pytest.raises(ValueError, match='recipe must be one of'):
    sources.CDSettings(recipe='scratchpad')
  with pytest.raises(ValueError, match='distill_file is needed'):
    sources.CDSettings(recipe='distill')


# ---------------------------------------------------------------------------------------------
# The soft-target step


def _step_batch(tokens_in, tokens_out, positions=None):
  part = {'encoder_input_tokens': np.asarray(tokens_in, np.int32),
          'decoder_target_tokens': np.asarray(tokens_out, np.int32)}
  part['decoder_input_tokens'] = np.pad(part['decoder_target_tokens'][:, :-1], ((0, 0), (1, 0)))
  part['decoder_loss_weights'] = (part['decoder_target_tokens'] > 0).astype(np.float32)
  if positions is not None:
    part['teacher_positions'] = np.asarray(positions, np.int32)
  return part


@pytest.mark.parametrize('form', ['full', 'top_k', 'sampled'])
def test_soft_loss_is_zero_for_the_same_context_and_weights(form):
  config = T5Config(vocab_size=32, d_model=16, num_heads=2, head_dim=8, d_ff=32,
                    num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)
  params = init_params(config, jax.random.PRNGKey(0))
  soft = losses.SoftTargets(form, top_k=4, num_samples=20)
  loss_fn = train.make_loss_fn(T5(config), 0.5, 0.0, 0.0, soft, T5(config))
  inputs, outputs = [[5, 6, 7, 1], [8, 9, 1, 0]], [[3, 4, 1], [4, 1, 0]]
  # The teacher's own output is the target and the teacher sees the student's input.
  same = {'label': _step_batch(inputs, outputs, [[1, 2, 3], [1, 2, 0]]),
          'teacher': _step_batch(inputs, outputs)}
  loss, metrics = jax.jit(lambda p: loss_fn(p, same, jax.random.PRNGKey(1), False, p))(params)
  assert abs(float(loss)) < 1e-6 and abs(float(metrics['label_kl'])) < 1e-6
  # A teacher with a context: the loss is its KL; the gradient reaches the student only.
  context = {'label': same['label'],
             'teacher': _step_batch([[11, 12, 5, 6, 7, 1], [11, 12, 8, 9, 1, 0]], outputs)}
  teacher_params = init_params(config, jax.random.PRNGKey(2))
  grads = jax.jit(jax.grad(
      lambda p, t: loss_fn(p, context, jax.random.PRNGKey(1), False, t)[0], argnums=(0, 1)))(
          params, teacher_params)
  assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[0])) > 0
  assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[1])) == 0.0


# ---------------------------------------------------------------------------------------------
# End to end: teacher, distillation set, students, evaluation (1-digit addition)


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
  """The tiny teacher trained on 64 one-digit scratchpads (its template: the scratchpad
  trigger)."""
  model_dir = str(tmp_path_factory.mktemp('teacher'))
  _train('gin/paper/cd_table3_teacher.gin', model_dir)
  return model_dir


SAMPLE_ON_LABELLED = ['sample.sample_distillation_set.split="labelled"',
                      'sample.sample_distillation_set.batch_size=16']


@pytest.fixture(scope='module')
def distill_file(teacher, tmp_path_factory):
  """The teacher's samples on its own 64 training questions, used without their labels: the
  only inputs of the 1-digit setting whose answers a teacher this small has learned."""
  out = str(tmp_path_factory.mktemp('set') / 'set.jsonl')
  summary = _sample(teacher, out, *SAMPLE_ON_LABELLED)
  assert summary['inputs'] == 64 and summary['samples'] == 64
  return out


@pytest.mark.slow
def test_sampling_resumes_to_the_same_set_and_refuses_other_settings(teacher, distill_file,
                                                                     tmp_path):
  with open(distill_file) as f:
    full = f.read()
  lines = full.splitlines(keepends=True)
  assert len(lines) == 64
  record = json.loads(lines[0])
  assert record['samples'][0]['ids'][-1] == 1  # EOS reached
  assert 'Final answer: #' in record['samples'][0]['text']  # a whole scratchpad
  assert record['samples'][0]['text'].startswith(record['input'].split(': ')[1][:1])
  out = str(tmp_path / 'killed.jsonl')
  with open(out, 'w') as f:  # a run killed in its second batch, mid-line
    f.write(''.join(lines[:24]) + lines[24][:10])
  with open(distill_file + '.meta.json') as f:
    meta = json.load(f)
  meta.update(complete=False, summary=None)
  with open(distill_set.meta_path(out), 'w') as f:
    json.dump(meta, f)
  _sample(teacher, out, *SAMPLE_ON_LABELLED)
  with open(out) as f:
    assert f.read() == full
  with pytest.raises(ValueError, match="other settings.*'temperature': \\(1.0, 0.5\\)"):
    _sample(teacher, out, *SAMPLE_ON_LABELLED,
            'sample.sample_distillation_set.temperature=0.5')


@pytest.mark.slow
def test_context_distillation_end_to_end(teacher, distill_file, tmp_path):
  """Before: the teacher's weights asked the bare question answer nothing right. After
  distilling (hard targets, as the public code; soft targets, the paper's KL), the student
  answers the bare question right without writing a scratchpad."""
  data = _data()
  with_context = evaluate.answers(teacher, data, 'labelled', 'teacher', max_length=24)
  before = evaluate.answers(teacher, data, 'labelled', 'student', max_length=24)
  assert evaluate.accuracy(with_context) > 50
  assert evaluate.accuracy(before) == 0
  summary = distill_set.summarize(distill_file)
  assert summary['answered'] > 0
  for name, extra in [('hard', ()),
                      ('soft', ("SOFT_FORM='full'",))]:
    gin_file = f'gin/paper/cd_table3_context_distill_{name}.gin'
    student = str(tmp_path / name)
    result = _train(gin_file, student, f"TEACHER_DIR='{teacher}'",
                    f"DISTILL_FILE='{distill_file}'", *extra)
    after = evaluate.answers(student, data, 'labelled', 'student', max_length=24)
    assert evaluate.accuracy(after) > 25, name
    # Inference cost: the student's answers are a few tokens, the teacher's whole scratchpads.
    assert np.mean([a.tokens for a in after]) * 3 < np.mean([a.tokens for a in with_context])
    assert result['last']['test']['decoded_tokens'] < 8
    records = [json.loads(l) for l in open(os.path.join(student, 'metrics.jsonl'))]
    if name == 'soft':
      kls = [r['label_kl'] for r in records if 'label_kl' in r]
      assert kls and kls[-1] < kls[0]


def test_accuracy_and_agreement_of_answers():
  answer = lambda i, key, gold: evaluate.Answer(str(i), key, key, gold, 2, 5)
  first = [answer(0, '12', '12'), answer(1, '7', '8'), answer(2, '', '9')]
  second = [answer(0, '12', '12'), answer(1, '8', '8'), answer(2, '', '9')]
  assert evaluate.accuracy(first) == pytest.approx(100 / 3)
  assert evaluate.agreement(first, second) == pytest.approx(200 / 3)
  with pytest.raises(ValueError, match='not for the same rows'):
    evaluate.agreement(first, second[::-1])
