"""The trainer end to end on real SVAMP data: exact resume, sharding, multi-host, bad config.

Each run is the real command line (`python -m dssb.train`) with the tiny CPU gin file, in a
subprocess, so device counts and signals are those of a real run.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dssb import train
from dssb.model import T5, T5Config, init_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = 'gin/cpu/svamp_step_by_step.gin'
SMALL = ['--gin.TASK_FEATURE_LENGTHS={"inputs": 64, "targets": 16, "rationale_inputs": 64, '
         '"rationale_targets": 48}',
         '--gin.BATCH_SIZE=8', '--gin.train.log_every=1', '--gin.train.eval_limit=8',
         '--gin.train.eval_batch_size=8', '--gin.train.max_decode_length=8']


@pytest.fixture(scope='module')
def env(dss_data_dir, tmp_path_factory):
  cache = tmp_path_factory.mktemp('cache')
  return dict(os.environ, DSSB_DATA_DIR=dss_data_dir, DSSB_CACHE_DIR=str(cache),
              PYTHONUNBUFFERED='1')


def _cmd(model_dir, *extra):
  return [sys.executable, '-m', 'dssb.train', f'--gin_file={GIN}',
          f"--gin.MODEL_DIR='{model_dir}'", *SMALL, *extra]


def _run(env, model_dir, *extra, check=True, **kw):
  proc = subprocess.run(_cmd(model_dir, *extra), cwd=REPO, env=dict(env, **kw), text=True,
                        capture_output=True, timeout=600)
  if check and proc.returncode:
    raise AssertionError(f'train failed ({proc.returncode}):\n{proc.stderr[-4000:]}')
  return proc


def _train_losses(model_dir):
  """{step: record} of train records; a step must be logged once (a resume drops the records
  that a killed run wrote past its last checkpoint)."""
  out = {}
  with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
    for line in f:
      rec = json.loads(line)
      if 'split' not in rec:
        assert rec['step'] not in out, f"step {rec['step']} logged twice"
        out[rec['step']] = rec
  return out


def _kill_when_logged(env, model_dir, step, sig, *extra):
  proc = subprocess.Popen(_cmd(model_dir, *extra), cwd=REPO, env=env, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  path = os.path.join(model_dir, 'metrics.jsonl')
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(path) and max(_train_losses(model_dir), default=0) >= step:
      proc.send_signal(sig)
      break
    time.sleep(0.05)
  _, stderr = proc.communicate(timeout=300)
  return proc.returncode, stderr


RESUME = ['--gin.TRAIN_STEPS=30', '--gin.EVAL_EVERY=30', '--gin.train.checkpoint_every=5']


@pytest.fixture(scope='module')
def uninterrupted(env, tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp('full'))
  _run(env, model_dir, *RESUME)
  return model_dir


def test_uninterrupted_run_writes_its_outputs(uninterrupted):
  files = set(os.listdir(uninterrupted))
  assert {'config.gin', 'operative_config.gin', 'metrics.jsonl', 'results.json', 'tb',
          'checkpoints', 'best'} <= files
  losses_by_step = _train_losses(uninterrupted)
  assert sorted(losses_by_step) == list(range(1, 31))
  rec = losses_by_step[30]
  for key in ('loss', 'label_loss', 'rationale_loss', 'learning_rate',
              'target_tokens_per_second'):
    assert np.isfinite(rec[key]), key
  assert losses_by_step[30]['loss'] < losses_by_step[1]['loss']
  with open(os.path.join(uninterrupted, 'results.json')) as f:
    results = json.load(f)
  assert results['last']['step'] == 30 and 'accuracy' in results['last']['test']
  assert results['best_on_validation']['metric'] == 'accuracy'


@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGTERM], ids=['sigkill', 'sigterm'])
def test_resume_after_a_kill_logs_the_same_losses(env, uninterrupted, tmp_path, sig):
  model_dir = str(tmp_path / 'run')
  code, stderr = _kill_when_logged(env, model_dir, 12, sig, *RESUME)
  if sig == signal.SIGTERM:
    assert code == 143, stderr[-3000:]
    assert 'SIGTERM: saved step' in stderr
    saved = sorted(int(s) for s in os.listdir(os.path.join(model_dir, 'checkpoints'))
                   if s.isdigit())
    assert saved[-1] >= 12  # saved at the notice, not only at the last multiple of 5
  else:
    assert code == -signal.SIGKILL
  proc = _run(env, model_dir, *RESUME)
  assert 'resumed from' in proc.stderr
  want, got = _train_losses(uninterrupted), _train_losses(model_dir)
  assert sorted(got) == sorted(want)
  for step in want:
    for key in ('loss', 'label_loss', 'rationale_loss', 'grad_norm', 'learning_rate'):
      assert got[step][key] == want[step][key], (step, key)  # bitwise


def test_sharded_8_devices_match_one_device(env, tmp_path):
  steps = ['--gin.TRAIN_STEPS=6', '--gin.EVAL_EVERY=6']
  _run(env, str(tmp_path / 'one'), *steps)
  _run(env, str(tmp_path / 'mesh'), *steps, '--gin.sharding.make_mesh.data=4',
       '--gin.sharding.make_mesh.model=2', '--gin.sharding.logical_axis_rules.fsdp=True',
       XLA_FLAGS='--xla_force_host_platform_device_count=8')
  one, mesh = _train_losses(str(tmp_path / 'one')), _train_losses(str(tmp_path / 'mesh'))
  assert sorted(one) == sorted(mesh) == list(range(1, 7))
  for step in one:
    np.testing.assert_allclose(mesh[step]['loss'], one[step]['loss'], rtol=2e-5)
  with open(os.path.join(tmp_path / 'mesh', 'config.gin')) as f:
    assert 'make_mesh.model = 2' in f.read()


def test_two_processes_match_one_process(env, tmp_path):
  steps = ['--gin.TRAIN_STEPS=4', '--gin.EVAL_EVERY=4']
  _run(env, str(tmp_path / 'single'), *steps)
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  model_dir = str(tmp_path / 'multi')
  procs = [subprocess.Popen(
      _cmd(model_dir, *steps, f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
           f'--process_id={i}'), cwd=REPO, env=env, text=True, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  single, multi = _train_losses(str(tmp_path / 'single')), _train_losses(model_dir)
  assert sorted(multi) == sorted(single) == [1, 2, 3, 4]
  for step in single:
    np.testing.assert_allclose(multi[step]['loss'], single[step]['loss'], rtol=2e-5)


def test_nan_stops_and_keeps_the_last_good_checkpoint(env, tmp_path):
  model_dir = str(tmp_path / 'nan')
  proc = _run(env, model_dir, '--gin.TRAIN_STEPS=20', '--gin.EVAL_EVERY=20',
              '--gin.LEARNING_RATE=1e30', '--gin.train.checkpoint_every=1', check=False)
  assert proc.returncode != 0
  assert 'became' in proc.stderr and 'last good checkpoint' in proc.stderr
  bad_step = int(proc.stderr.split(' at step ')[1].split(';')[0])
  saved = [int(s) for s in os.listdir(os.path.join(model_dir, 'checkpoints')) if s.isdigit()]
  assert saved and max(saved) < bad_step


def test_bad_gin_says_what_to_fix(env, tmp_path):
  proc = _run(env, str(tmp_path / 'a'), '--gin.train.train.no_such_setting=3', check=False)
  assert proc.returncode != 0 and 'no_such_setting' in proc.stderr
  proc = subprocess.run([sys.executable, '-m', 'dssb.train', f'--gin_file={GIN}'], cwd=REPO,
                        env=env, text=True, capture_output=True, timeout=300)
  assert proc.returncode != 0 and 'MODEL_DIR' in proc.stderr


def test_model_dir_of_another_model_is_refused(env, uninterrupted, tmp_path):
  model_dir = str(tmp_path / 'copy')
  shutil.copytree(uninterrupted, model_dir)
  proc = _run(env, model_dir, *RESUME, '--gin.model.T5Config.d_model=32', check=False)
  assert proc.returncode != 0
  assert 'different model config' in proc.stderr and 'd_model' in proc.stderr
  proc = _run(env, model_dir, *RESUME, '--gin.BATCH_SIZE=4', check=False)
  assert proc.returncode != 0
  assert 'data-order settings' in proc.stderr and 'batch_size' in proc.stderr


def _batch(rng, b=3, l=7, t=5):
  part = lambda: {
      'encoder_input_tokens': rng.integers(2, 50, (b, l)).astype(np.int32),
      'decoder_target_tokens': rng.integers(2, 50, (b, t)).astype(np.int32)}
  batch = {'label': part(), 'rationale': part()}
  batch['rationale']['decoder_target_tokens'][:, 3:] = 0  # fewer rationale tokens
  for p in batch.values():
    p['decoder_input_tokens'] = np.pad(p['decoder_target_tokens'][:, :-1], ((0, 0), (1, 0)))
    p['decoder_loss_weights'] = (p['decoder_target_tokens'] > 0).astype(np.float32)
  return batch


def test_step_by_step_loss_of_the_model_is_the_weighted_sum():
  config = T5Config(vocab_size=50, d_model=16, num_heads=2, head_dim=8, d_ff=32,
                    num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)
  params = init_params(config)
  batch = _batch(np.random.default_rng(0))
  model = T5(config)

  def mean_ce(part):
    logits = model.apply({'params': params}, part['encoder_input_tokens'],
                         part['decoder_input_tokens'], part['decoder_target_tokens'])
    logp = np.asarray(jax.nn.log_softmax(logits))
    tok = -np.take_along_axis(logp, part['decoder_target_tokens'][..., None], -1)[..., 0]
    w = part['decoder_loss_weights']
    return (tok * w).sum() / w.sum()

  loss_fn = train.make_loss_fn(model, alpha=0.3, label_smoothing=0.0, z_loss=0.0)
  loss, metrics = loss_fn(params, batch, jax.random.PRNGKey(0), enable_dropout=False)
  want = 0.3 * mean_ce(batch['label']) + 0.7 * mean_ce(batch['rationale'])
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics['rationale_loss'], mean_ce(batch['rationale']), rtol=1e-5)

  # alpha = 1 is standard finetuning on the label part: same loss and same gradients.
  sbs = train.make_loss_fn(model, alpha=1.0, label_smoothing=0.0, z_loss=0.0)
  std = train.make_loss_fn(model, alpha=0.5, label_smoothing=0.0, z_loss=0.0)
  label_only = {'label': batch['label']}
  g1 = jax.grad(lambda p: sbs(p, batch, jax.random.PRNGKey(0), False)[0])(params)
  g2 = jax.grad(lambda p: std(p, label_only, jax.random.PRNGKey(0), False)[0])(params)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert any(float(jnp.abs(a).max()) > 0 for a in jax.tree.leaves(g1))


@pytest.mark.parametrize('recipe', ['standard', 'distill', 'single_task_rationale_first'])
def test_each_recipe_runs_end_to_end(env, tmp_path, recipe):
  model_dir = str(tmp_path / recipe)
  proc = subprocess.run(
      [sys.executable, '-m', 'dssb.train', f'--gin_file=gin/cpu/svamp_{recipe}.gin',
       f"--gin.MODEL_DIR='{model_dir}'", '--gin.TRAIN_STEPS=2', '--gin.EVAL_EVERY=2',
       '--gin.BATCH_SIZE=4', '--gin.train.eval_limit=4', '--gin.train.eval_batch_size=4',
       '--gin.train.max_decode_length=4'],
      cwd=REPO, env=env, text=True, capture_output=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rec = _train_losses(model_dir)[2]
  assert np.isfinite(rec['loss']) and 'rationale_loss' not in rec  # one target per example
  with open(os.path.join(model_dir, 'results.json')) as f:
    assert json.load(f)['last']['test']['num_examples'] == 4


def test_init_checkpoint_starts_from_its_weights(env, tmp_path):
  """A Hugging Face folder as init_checkpoint: with lr 0 the saved params are its params."""
  import gin  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from dssb import checkpoints, main  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  main.parse_gin(['models/tiny.gin'], ['model.T5Config.vocab_size = 1024'])
  config = gin.query_parameter('%MODEL_CONFIG').scoped_configurable_fn()
  gin.clear_config()
  params = init_params(config, jax.random.PRNGKey(7))
  hf_dir = str(tmp_path / 'hf')
  checkpoints.export_hf(config, params, hf_dir)
  model_dir = str(tmp_path / 'run')
  _run(env, model_dir, '--gin.TRAIN_STEPS=1', '--gin.EVAL_EVERY=1', '--gin.LEARNING_RATE=0.0',
       f"--gin.INIT_CHECKPOINT='{hf_dir}'")
  saved = ocp.StandardCheckpointer().restore(os.path.join(model_dir, 'checkpoints', '1', 'state'))
  for a, b in zip(jax.tree.leaves(saved['params']), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  proc = _run(env, str(tmp_path / 'other'), '--gin.TRAIN_STEPS=1',
              f"--gin.INIT_CHECKPOINT='{hf_dir}'", '--gin.model.T5Config.d_ff=64', check=False)
  assert proc.returncode != 0 and 'd_ff' in proc.stderr and hf_dir in proc.stderr
