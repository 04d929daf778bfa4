"""The trainer end to end on real SVAMP data: exact resume, sharding, multi-host, bad config.

Runs call the gin-configured `train()` in this process, as the command line does. A fresh
process is used only where the process itself is under test: a SIGKILL, an XLA_FLAGS device
count, two jax.distributed processes. All runs of a module share one baseline run.
"""

import dataclasses
import json
import os
import signal
import shutil
import subprocess
import sys
import threading
import time

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dssb import gin_utils, input_pipeline, optimizers, sharding, train
from dssb.model import T5, T5Config, init_params
from dssb.run_checkpoints import RunCheckpoints
from dssb.train import __main__ as cli
from dssb.train import state as state_lib

import hosts_testlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = 'gin/cpu/svamp_step_by_step.gin'
SMALL = ['TASK_FEATURE_LENGTHS={"inputs": 64, "targets": 16, "rationale_inputs": 64, '
         '"rationale_targets": 48}',
         'BATCH_SIZE=8', 'train.log_every=1', 'train.eval_limit=8', 'train.eval_batch_size=8',
         'train.max_decode_length=8']
RESUME = ['TRAIN_STEPS=30', 'EVAL_EVERY=30', 'train.checkpoint_every=5']


@pytest.fixture(scope='module', autouse=True)
def env(dss_data_dir, tmp_path_factory):
  """The environment of in-process and subprocess runs: data, a vocab cache of this module."""
  saved = dict(os.environ)
  os.environ.update(DSSB_DATA_DIR=dss_data_dir, PYTHONUNBUFFERED='1',
                    DSSB_CACHE_DIR=str(tmp_path_factory.mktemp('cache')))
  yield dict(os.environ)
  os.environ.clear()
  os.environ.update(saved)


def _bindings(model_dir, *extra):
  return [f"MODEL_DIR='{model_dir}'", *SMALL, *extra]


def _train(model_dir, *extra, gin_file=GIN):
  """One run in this process, as `python -m dssb.train` runs it."""
  gin.clear_config()
  try:
    gin_utils.parse_gin([gin_file], _bindings(model_dir, *extra))
    gin_utils.check_required()
    return gin_utils.call_configured(train.train, 'train')
  finally:
    gin.clear_config()


def _cmd(model_dir, *extra):
  return [sys.executable, '-m', 'dssb.train', f'--gin_file={GIN}',
          *[f'--gin.{b}' for b in _bindings(model_dir, *extra)]]


def _run(env, model_dir, *extra, **kw):
  proc = subprocess.run(_cmd(model_dir, *extra), cwd=REPO, env=dict(env, **kw), text=True,
                        capture_output=True, timeout=600)
  if proc.returncode:
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


def _logged_step(model_dir):
  path = os.path.join(model_dir, 'metrics.jsonl')
  return max(_train_losses(model_dir), default=0) if os.path.exists(path) else 0


@pytest.fixture(scope='module')
def baseline(tmp_path_factory):
  """30 uninterrupted steps, checkpoints every 5: what every other run is compared with."""
  model_dir = str(tmp_path_factory.mktemp('baseline'))
  _train(model_dir, *RESUME)
  return model_dir


def _assert_same_losses(model_dir, baseline_dir, steps=None, rtol=0.0):
  want, got = _train_losses(baseline_dir), _train_losses(model_dir)
  steps = sorted(want) if steps is None else steps
  assert [s for s in sorted(got) if s in steps] == steps
  for step in steps:
    for key in ('loss', 'label_loss', 'rationale_loss', 'grad_norm', 'learning_rate'):
      if rtol:
        np.testing.assert_allclose(got[step][key], want[step][key], rtol=rtol)
      else:
        assert got[step][key] == want[step][key], (step, key)  # bitwise


def test_uninterrupted_run_writes_its_outputs(baseline):
  files = set(os.listdir(baseline))
  assert {'config.gin', 'operative_config.gin', 'metrics.jsonl', 'results.json', 'tb',
          'checkpoints', 'best'} <= files
  losses_by_step = _train_losses(baseline)
  assert sorted(losses_by_step) == list(range(1, 31))
  rec = losses_by_step[30]
  for key in ('loss', 'label_loss', 'rationale_loss', 'learning_rate',
              'target_tokens_per_second'):
    assert np.isfinite(rec[key]), key
  assert losses_by_step[30]['loss'] < losses_by_step[1]['loss']
  with open(os.path.join(baseline, 'results.json')) as f:
    results = json.load(f)
  assert results['last']['step'] == 30 and 'accuracy' in results['last']['test']
  assert results['best_on_validation']['metric'] == 'accuracy'


@pytest.mark.slow
def test_resume_after_sigkill_logs_the_same_losses(env, baseline, tmp_path, capfd):
  model_dir = str(tmp_path / 'run')
  proc = subprocess.Popen(_cmd(model_dir, *RESUME), cwd=REPO, env=env, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None and _logged_step(model_dir) < 12:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=300)
  assert proc.returncode == -signal.SIGKILL
  _train(model_dir, *RESUME)
  assert 'resumed from' in capfd.readouterr().err
  _assert_same_losses(model_dir, baseline)


def test_sigterm_saves_exits_143_and_resumes_the_same_losses(baseline, tmp_path, capfd):
  """The handler sets a flag; the loop saves, train() raises Preempted, the command line
  returns 143, and the process's own SIGTERM handler is back in place afterwards."""
  model_dir = str(tmp_path / 'run')
  before = signal.getsignal(signal.SIGTERM)
  sent = threading.Event()

  def preempt_at_step_12():
    deadline = time.time() + 300
    while time.time() < deadline and _logged_step(model_dir) < 12:
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)
    sent.set()

  watcher = threading.Thread(target=preempt_at_step_12, daemon=True)
  watcher.start()
  gin.clear_config()
  try:
    code = cli.main([f'--gin_file={GIN}'] + [f'--gin.{b}' for b in
                                              _bindings(model_dir, *RESUME)])
  finally:
    gin.clear_config()
  assert sent.is_set() and code == 143
  assert signal.getsignal(signal.SIGTERM) is before
  assert 'SIGTERM: saved step' in capfd.readouterr().err
  saved = sorted(int(s) for s in os.listdir(os.path.join(model_dir, 'checkpoints'))
                 if s.isdigit())
  assert saved[-1] >= 12  # saved at the notice, not only at the last multiple of 5
  _train(model_dir, *RESUME)
  _assert_same_losses(model_dir, baseline)


@pytest.mark.slow
def test_two_hosts_of_4_devices_sharded_data_model_fsdp_match_one_device(env, baseline,
                                                                           tmp_path):
  """Two jax.distributed processes with 4 simulated devices each: one 8-device mesh (data 4 x
  model 2, FSDP) across hosts, each host feeding its rows of the global batch."""
  model_dir = str(tmp_path / 'multi')
  mesh = ['train.checkpoint_every=30', 'sharding.make_mesh.data=4', 'sharding.make_mesh.model=2',
          'sharding.logical_axis_rules.fsdp=True']
  log_paths = [tmp_path / f'host{i}.log' for i in range(2)]
  codes = hosts_testlib.run(
      lambda i, port: _cmd(model_dir, *RESUME, *mesh) + [
          f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}'],
      log_paths, env=dict(env, XLA_FLAGS='--xla_force_host_platform_device_count=4'), cwd=REPO)
  logs = [log_path.read_text() for log_path in log_paths]
  assert codes == [0, 0], '\n'.join(f'host {i} exited {c}: ...{e[-6000:]}'
                                     for i, (c, e) in enumerate(zip(codes, logs)))
  # 4 local devices each: the 8-device mesh exists only if both hosts joined it.
  assert "on mesh {'data': 4, 'model': 2}" in logs[0], logs[0][-3000:]
  _assert_same_losses(model_dir, baseline, steps=list(range(1, 7)), rtol=2e-5)
  with open(os.path.join(model_dir, 'config.gin')) as f:
    assert 'make_mesh.model = 2' in f.read()


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  model_dir = str(tmp_path / 'nan')
  with pytest.raises(FloatingPointError, match='became .* last good checkpoint') as e:
    _train(model_dir, 'TRAIN_STEPS=20', 'EVAL_EVERY=20', 'LEARNING_RATE=1e30',
           'train.checkpoint_every=1')
  bad_step = int(str(e.value).split(' at step ')[1].split(';')[0])
  saved = [int(s) for s in os.listdir(os.path.join(model_dir, 'checkpoints')) if s.isdigit()]
  assert saved and max(saved) < bad_step


def test_bad_gin_says_what_to_fix(tmp_path, capsys):
  gin.clear_config()
  code = cli.main([f'--gin_file={GIN}', f"--gin.MODEL_DIR='{tmp_path}'",
                   '--gin.train.train.no_such_setting=3'])
  assert code == 2 and 'no_such_setting' in capsys.readouterr().err
  gin.clear_config()
  code = cli.main([f'--gin_file={GIN}'])
  assert code == 2 and 'MODEL_DIR' in capsys.readouterr().err
  gin.clear_config()


def _initial_state(model_dir, config, run_settings, init_checkpoint=None):
  tx = optimizers.adamw(optimizers.linear_decay_schedule(1e-3, 30))
  abstract, shardings = state_lib.state_shardings(config, tx, sharding.make_mesh(),
                                                  sharding.logical_axis_rules())
  ckpt = RunCheckpoints(model_dir, keep=3, async_save=False)
  try:
    return state_lib.initial_state(ckpt, config, tx, abstract, shardings, run_settings,
                                   jax.random.PRNGKey(0), init_checkpoint)
  finally:
    ckpt.close()


def test_model_dir_of_another_model_or_data_order_is_refused(baseline):
  meta = RunCheckpoints(baseline, keep=3).meta('best')
  config = T5Config(**meta['model_config'])
  settings = {'data_seed': 0, 'batch_size': 8, 'packing': 0}
  with pytest.raises(ValueError, match='different model config.*d_model'):
    _initial_state(baseline, T5Config(**dict(meta['model_config'], d_model=32)), settings)
  with pytest.raises(ValueError, match='data-order settings.*batch_size'):
    _initial_state(baseline, config, dict(settings, batch_size=4))
  with pytest.raises(ValueError, match='data-order settings.*data_seed'):
    _initial_state(baseline, config, dict(settings, data_seed=1))
  with pytest.raises(ValueError, match='data-order settings.*packing'):
    _initial_state(baseline, config, dict(settings, packing=4))


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
  g1 = jax.jit(jax.grad(lambda p: sbs(p, batch, jax.random.PRNGKey(0), False)[0]))(params)
  g2 = jax.jit(jax.grad(lambda p: std(p, label_only, jax.random.PRNGKey(0), False)[0]))(params)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert any(float(jnp.abs(a).max()) > 0 for a in jax.tree.leaves(g1))


def test_bucketed_batches_give_the_fixed_padding_loss_and_gradients():
  """The same rows padded to their buckets or to the feature lengths: the same step-by-step
  loss (1e-5) and gradients."""
  config = T5Config(vocab_size=50, d_model=16, num_heads=2, head_dim=8, d_ff=32,
                    num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0)
  params = init_params(config, jax.random.PRNGKey(1))
  rng = np.random.default_rng(0)
  toks = lambda hi: [np.append(rng.integers(2, 50, rng.integers(1, hi)), 1).astype(np.int32)
                     for _ in range(20)]
  examples = input_pipeline.Examples({'inputs': toks(20), 'targets': toks(4),
                                      'rationale_inputs': toks(20),
                                      'rationale_targets': toks(12)}, {}, {})
  lengths = {'inputs': 64, 'targets': 32, 'rationale_inputs': 64, 'rationale_targets': 32}
  batches = lambda buckets: input_pipeline.train_batches(examples, lengths, 6, 0, 2,
                                                         length_buckets=buckets)
  fixed, bucketed = next(batches(None))[1], next(batches((8, 16, 24)))[1]
  assert bucketed['rationale']['encoder_input_tokens'].shape[1] <= 24
  assert bucketed['label']['decoder_target_tokens'].shape[1] == 8
  loss_fn = train.make_loss_fn(T5(config), alpha=0.4, label_smoothing=0.1, z_loss=1e-4)
  grad_fn = jax.jit(jax.value_and_grad(
      lambda p, b: loss_fn(p, b, jax.random.PRNGKey(0), enable_dropout=False), has_aux=True))
  (loss_f, metrics_f), grads_f = grad_fn(params, fixed)
  (loss_b, metrics_b), grads_b = grad_fn(params, bucketed)
  np.testing.assert_allclose(loss_b, loss_f, rtol=1e-5)
  for key in ('label_loss', 'rationale_loss', 'target_tokens'):
    np.testing.assert_allclose(metrics_b[key], metrics_f[key], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads_b), jax.tree.leaves(grads_f)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_packed_run_resumes_with_the_same_losses(tmp_path, capfd):
  """train(packing=3): a run resumed from its step-3 checkpoint logs steps 4-6 bitwise as the
  uninterrupted run did."""
  model_dir = str(tmp_path / 'packed')
  settings = ('TRAIN_STEPS=6', 'EVAL_EVERY=6', 'train.checkpoint_every=3', 'train.packing=3')
  _train(model_dir, *settings)
  assert 'packing: ' in capfd.readouterr().err
  first = _train_losses(model_dir)
  shutil.rmtree(os.path.join(model_dir, 'checkpoints', '6'))
  _train(model_dir, *settings)
  assert 'resumed from' in capfd.readouterr().err
  again = _train_losses(model_dir)
  assert sorted(again) == list(range(1, 7))
  for step in (4, 5, 6):
    for key in ('loss', 'label_loss', 'rationale_loss', 'grad_norm'):
      assert again[step][key] == first[step][key], (step, key)


@pytest.mark.parametrize('recipe', ['standard', 'distill', 'single_task_rationale_first'])
def test_each_recipe_runs_end_to_end(tmp_path, recipe):
  model_dir = str(tmp_path / recipe)
  summary = _train(model_dir, 'TRAIN_STEPS=2', 'EVAL_EVERY=2', 'BATCH_SIZE=4',
                   'train.eval_limit=4', 'train.eval_batch_size=4', 'train.max_decode_length=4',
                   gin_file=f'gin/cpu/svamp_{recipe}.gin')
  rec = _train_losses(model_dir)[2]
  assert np.isfinite(rec['loss']) and 'rationale_loss' not in rec  # one target per example
  assert summary['last']['test']['num_examples'] == 4
  with open(os.path.join(model_dir, 'results.json')) as f:
    assert json.load(f) == json.loads(json.dumps(summary))


def test_init_checkpoint_starts_from_its_weights(tmp_path):
  """A Hugging Face folder as init_checkpoint: the first state holds exactly its params; a
  checkpoint of another shape is refused, naming the folder and the field."""
  from dssb import checkpoints  # pylint: disable=g-import-not-at-top
  config = T5Config(vocab_size=64, d_model=16, num_heads=2, head_dim=8, d_ff=32,
                    num_encoder_layers=1, num_decoder_layers=1)
  params = init_params(config, jax.random.PRNGKey(7))
  hf_dir = str(tmp_path / 'hf')
  checkpoints.export_hf(config, params, hf_dir)
  state, start_step = _initial_state(str(tmp_path / 'run'), config, {}, hf_dir)
  assert start_step == 0 and int(state.step) == 0
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  other = dataclasses.replace(config, d_ff=64)
  with pytest.raises(checkpoints.CheckpointError, match=f'{hf_dir}.*d_ff'):
    _initial_state(str(tmp_path / 'other'), other, {}, hf_dir)


def test_soft_targets_from_a_dssb_teacher(baseline, tmp_path):
  """Knowledge distillation for distilling step-by-step: a student started from the teacher's
  run (init_checkpoint = its MODEL_DIR) learns the teacher's token distributions on both
  sub-batches. At the first step teacher and student are the same function (no dropout in the
  tiny runs), so the KL is 0; after one update it is not. A run dir of another model is refused."""
  model_dir = str(tmp_path / 'kd')
  _train(model_dir, 'TRAIN_STEPS=3', 'EVAL_EVERY=3', f"INIT_CHECKPOINT='{baseline}'",
         'SOFT_TARGETS=@losses.SoftTargets()', f"TEACHER_CHECKPOINT='{baseline}'",
         'losses.SoftTargets.form="top_k"')
  records = _train_losses(model_dir)
  assert abs(records[1]['label_kl']) < 1e-6 and abs(records[1]['rationale_kl']) < 1e-6
  assert records[3]['label_kl'] > 1e-7 and records[3]['rationale_kl'] > 1e-7
  with pytest.raises(ValueError, match='need a teacher'):
    _train(str(tmp_path / 'no_teacher'), 'TRAIN_STEPS=1', 'SOFT_TARGETS=@losses.SoftTargets()')
  with pytest.raises(ValueError, match=f'{baseline}.*another model config.*d_ff'):
    _train(str(tmp_path / 'other'), 'TRAIN_STEPS=1', f"INIT_CHECKPOINT='{baseline}'",
           'model.T5Config.d_ff=64')
