"""The open-teacher pipeline end to end, with real processes and no stand-ins: a tiny T5 is
trained by the trainer (recipe cot_completion, a few hundred steps on eight SVAMP rows) to answer
in the PaLM format; dssb.serve serves its run folder; `python -m dssb.teacher annotate` (the
`openai` client) annotates the rows; the outputs parse with the PaLM parsers and the summary's
counts are theirs; the trainer trains a student on them with --gin.TEACHER. The chat endpoint
and the in-process backend give the same greedy completions as the completions endpoint.
"""

import json
import os
import subprocess
import sys

import pytest

import teacher_testlib as lib
from dssb.data import sources
from dssb.data import teacher_outputs

pytestmark = pytest.mark.slow
KEY_ENV = 'DSSB_TEST_TEACHER_KEY'
KEY = 'sk-dssb-e2e-5f3a9c0d1e'


def _train(env, model_dir, *extra):
  cmd = [sys.executable, '-m', 'dssb.train', '--gin_file=gin/cpu/svamp_step_by_step.gin',
         f"--gin.MODEL_DIR='{model_dir}'", '--gin.BATCH_SIZE=8', '--gin.train.eval_batch_size=8',
         '--gin.train.log_every=50', *extra]
  run = subprocess.run(cmd, cwd=lib.REPO, env=env, text=True, capture_output=True, timeout=600)
  assert run.returncode == 0, run.stderr[-4000:]
  return run


@pytest.fixture(scope='module')
def teacher(dss_data_dir, svamp_vocab, tmp_path_factory):
  """A trainer run whose T5 answers these eight inputs in the PaLM format, served with a key."""
  root = tmp_path_factory.mktemp('teacher')
  data = lib.small_svamp(str(root / 'data'), dss_data_dir)
  env = lib.env(DSSB_DATA_DIR=data, DSSB_CACHE_DIR=str(root / 'cache'))
  model_dir = str(root / 'run')
  _train(env, model_dir, "--gin.RECIPE='cot_completion'", f"--gin.VOCAB_PATH='{svamp_vocab}'",
         '--gin.TASK_FEATURE_LENGTHS={"inputs": 64, "targets": 48}', '--gin.TRAIN_STEPS=300',
         '--gin.EVAL_EVERY=300', '--gin.LEARNING_RATE=3e-3', '--gin.train.max_decode_length=48')
  server = lib.Server(model_dir, '--api_key_env', KEY_ENV, log_dir=str(root),
                      extra_env={KEY_ENV: KEY}, name='teacher')
  yield {'data': data, 'model_dir': model_dir, 'server': server, 'vocab': svamp_vocab,
         'root': root}
  server.stop()


def _config(tmp_path, name, **fields):
  lines = ''.join(f'  {k} = {v}\n' for k, v in fields.items())
  path = tmp_path / f'{name}.gin'
  path.write_text('from __gin__ import dynamic_registration\nfrom dssb.teacher import config\n'
                  f"config.TeacherConfig:\n  name = '{name}'\n  prompt = 'bare_v1'\n"
                  f'  max_tokens = 48\n{lines}')
  return str(path)


def _openai(url, **fields):
  return dict(model="'teacher'", base_url=f"'{url}'", api_key_env=f"'{KEY_ENV}'", **fields)


def _annotate(teacher, config_path, out, *extra):
  env = lib.env(DSSB_DATA_DIR=teacher['data'], **{KEY_ENV: KEY})
  run = subprocess.run(lib.teacher_cmd('annotate', '--teacher', config_path, '--dataset', 'svamp',
                                       '--split', 'train', '--out', out, *extra),
                       cwd=lib.REPO, env=env, text=True, capture_output=True, timeout=600)
  assert run.returncode == 0, run.stderr[-4000:]
  assert KEY not in run.stdout + run.stderr
  return run


def test_annotations_parse_and_train_a_student(teacher, tmp_path):
  out = str(tmp_path / 'out')
  config_path = _config(tmp_path, 'tiny_t5', **_openai(teacher['server'].url), n=3,
                        temperature=0.5, logprobs=True, concurrency=8)
  run = _annotate(teacher, config_path, out)
  assert 'accuracy vs gold' in run.stderr

  folder = sources.teacher_dir('svamp', 'tiny_t5', out)
  with open(os.path.join(folder, 'train_summary.json')) as f:
    summary = json.load(f)
  rows = sources.read_examples('svamp', 'train', out)
  texts = sources.read_teacher_outputs('svamp', 'train', 'tiny_t5', out, expected=len(rows))
  records = lib.read_jsonl(os.path.join(folder, 'train_annotations.jsonl'))
  # the existing parsers read the outputs, and the summary's counts are theirs
  chosen = teacher_outputs.parse_all('svamp', texts)
  assert summary['parse']['chosen'] == teacher_outputs.failure_report(chosen)
  every = teacher_outputs.parse_all('svamp', [s['text'].lstrip() for r in records
                                               for s in r['samples']])
  assert summary['parse']['samples'] == teacher_outputs.failure_report(every)
  assert summary['parse']['samples']['n'] == 3 * len(rows) == 24
  assert sum(not p.failure for p in chosen) >= 6, texts  # 7 rows were trained on
  assert summary['prompt'].startswith('svamp_bare_v1@') and summary['n'] == 3
  hits = [r['label'] is not None and teacher_outputs.metrics.equations_equal(r['label'], r['gold'])
          for r in records]
  assert summary['accuracy']['majority'] == pytest.approx(100 * sum(hits) / len(hits))
  assert all(s['logprob'] is not None and s['logprob'] <= 0 for r in records
             for s in r['samples'])
  assert summary['mean_token_logprob'] < 0

  # the out folder is a data folder: the trainer trains a student on this teacher unchanged
  env = lib.env(DSSB_DATA_DIR=out, DSSB_CACHE_DIR=str(tmp_path / 'cache'))
  student = _train(env, str(tmp_path / 'student'), "--gin.TEACHER='tiny_t5'",
                   f"--gin.VOCAB_PATH='{teacher['vocab']}'", "--gin.LABEL_SOURCE='teacher'",
                   '--gin.TRAIN_STEPS=3', '--gin.EVAL_EVERY=3', '--gin.train.eval_limit=8',
                   '--gin.train.max_decode_length=8',
                   '--gin.TASK_FEATURE_LENGTHS={"inputs": 64, "targets": 16, '
                   '"rationale_inputs": 64, "rationale_targets": 48}')
  assert 'step_by_step_teacher_tiny_t5' in student.stderr and 'train 7' in student.stderr
  with open(tmp_path / 'student' / 'results.json') as f:
    assert json.load(f)['last']['step'] == 3

  # nothing the key touched kept it
  for root, _, files in os.walk(out):
    for name in files:
      with open(os.path.join(root, name), 'rb') as f:
        assert KEY.encode() not in f.read(), name


def test_chat_and_in_process_backends_give_the_same_greedy_answers(teacher, tmp_path):
  url = teacher['server'].url
  completions = _config(tmp_path, 'greedy', **_openai(url), endpoint="'completions'")
  chat = _config(tmp_path, 'greedy_chat', **_openai(url), endpoint="'chat'")
  local = _config(tmp_path, 'greedy_local', backend="'dssb'",
                  checkpoint=f"'{teacher['model_dir']}'")
  outputs = {}
  for path, name in ((completions, 'greedy'), (chat, 'greedy_chat'), (local, 'greedy_local')):
    run = _annotate(teacher, path, str(tmp_path / name), '--limit', '4', '--no_progress')
    outputs[name] = sources.read_teacher_outputs('svamp', 'train', name, str(tmp_path / name))
    assert '4 inputs x 1 samples' in run.stderr
  assert outputs['greedy'] == outputs['greedy_chat'] == outputs['greedy_local']
  assert sum(not p.failure for p in teacher_outputs.parse_all('svamp', outputs['greedy'])) >= 3
