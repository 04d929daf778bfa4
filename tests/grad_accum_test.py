"""Gradient accumulation (train.grad_accum_steps): k micro-batches make the update of the one
big batch, bucketed or not, packed, with soft targets, sharded FSDP; a resumed run is bitwise.

Real SVAMP step-by-step batches from the trainer's own pipeline; the trainer runs reuse
tests/train_test.py's helpers (in-process runs as the command line runs them; a fresh process
only for the SIGKILL and for a simulated 4-device mesh).
"""

import functools
import json
import os
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dssb import input_pipeline, losses, packing
from dssb.data import tasks
from dssb.model import T5, T5Config, init_params
from dssb.train.step import TrainState, make_loss_fn, make_train_step

import train_test
from train_test import env  # pylint: disable=unused-import  (the module's run environment)

# pylint: disable=protected-access,redefined-outer-name
_train, _cmd, _run = train_test._train, train_test._cmd, train_test._run
_logged_step, _assert_same_losses = train_test._logged_step, train_test._assert_same_losses
# pylint: enable=protected-access

CONFIG = T5Config(vocab_size=384, d_model=32, num_heads=2, head_dim=16, d_ff=64,
                  num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0)
LENGTHS = {'inputs': 64, 'targets': 16, 'rationale_inputs': 64, 'rationale_targets': 48}
ROWS = 8


@functools.lru_cache(maxsize=None)
def _params(seed):
  return jax.jit(init_params, static_argnums=0)(CONFIG, jax.random.PRNGKey(seed))


@pytest.fixture(scope='module')
def examples(svamp_vocab):
  task = tasks.get_task_name('svamp', 'step_by_step', vocab_path=svamp_vocab)
  return input_pipeline.load_examples(task, 'train', LENGTHS)


def _batch(examples, kind):
  """A global batch of the trainer's pipeline (its second step): bucketed, fixed-length or
  packed rows."""
  if kind == 'packed':
    shape = packing.packed_shape(examples, LENGTHS, 12, 2, seed=0, row_multiple=4)
    batches = packing.packed_batches(examples, shape, seed=0, start_step=0)
  else:
    buckets = None if kind == 'fixed' else input_pipeline.DEFAULT_LENGTH_BUCKETS
    batches = input_pipeline.train_batches(examples, LENGTHS, ROWS, seed=0, start_step=0,
                                           length_buckets=buckets)
  next(batches)
  return jax.tree.map(jnp.asarray, next(batches)[1])


def _one_step(batch, k, soft=False):
  """(metrics, params after one step) with k micro-batches; plain SGD, so the
  update is the gradient itself (AdamW's first step is about lr * sign(g), which would hide a
  wrong gradient and magnify rounding in tiny ones)."""
  teacher, teacher_args = None, ()
  if soft:
    teacher = T5(CONFIG)
    teacher_args = (_params(7),)
  loss_fn = make_loss_fn(T5(CONFIG), 0.5, 0.0, 1e-4,
                         losses.SoftTargets(weight=0.5) if soft else None, teacher)
  tx = optax.sgd(0.5)
  step = jax.jit(make_train_step(loss_fn, tx, optax.constant_schedule(0.5), k))
  params = _params(0)
  state = TrainState(jnp.int32(0), params, tx.init(params))
  state, metrics = step(state, batch, jax.random.PRNGKey(1), *teacher_args)
  return jax.tree.map(float, metrics), state.params


@pytest.mark.parametrize('kind,soft,ks', [('bucketed', False, (2, 4)), ('fixed', False, (2,)),
                                          ('packed', False, (2,)), ('bucketed', True, (2,))])
def test_k_micro_batches_make_the_update_of_one_big_batch(examples, kind, soft, ks):
  batch = _batch(examples, kind)
  want_metrics, want = _one_step(batch, 1, soft)
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(want), jax.tree.leaves(_params(0))))
  assert moved > 1e-2  # the step did change the params
  for k in ks:
    got_metrics, got = _one_step(batch, k, soft)
    assert set(got_metrics) == set(want_metrics)
    for key in ('loss', 'label_loss', 'rationale_loss', 'z_loss', 'target_tokens', 'grad_norm'):
      np.testing.assert_allclose(got_metrics[key], want_metrics[key], rtol=2e-5,
                                 err_msg=f'k={k} {key}')
    for (path, w), g in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=2e-6, err_msg=f'k={k} {path}')


def test_token_normalisation_is_the_whole_steps_not_each_micro_batchs(examples):
  """Micro-batches with unequal target tokens: the mean of the micro-batch means (Hugging
  Face's accumulation) is not the big batch's loss; the sum of the rescaled parts is."""
  batch = _batch(examples, 'fixed')
  loss_fn = jax.jit(make_loss_fn(T5(CONFIG), 0.5, 0.0, 0.0))
  params = _params(0)
  rng = jax.random.PRNGKey(1)
  whole = float(loss_fn(params, batch, rng)[0])
  halves = [jax.tree.map(lambda x, j=j: x[j::2], batch) for j in range(2)]
  tokens = [float(h['rationale']['decoder_loss_weights'].sum()) for h in halves]
  assert tokens[0] != tokens[1]
  totals = {n: jnp.sum(batch[n]['decoder_loss_weights'].astype(jnp.float32)) for n in batch}
  rescaled = sum(float(loss_fn(params, h, rng, token_totals=totals)[0]) for h in halves)
  mean_of_means = np.mean([float(loss_fn(params, h, rng)[0]) for h in halves])
  np.testing.assert_allclose(rescaled, whole, rtol=1e-6)
  assert abs(mean_of_means - whole) > 1e-4


def test_batch_that_does_not_split_is_refused(tmp_path):
  with pytest.raises(ValueError, match='grad_accum_steps=3 micro-batches'):
    _train(str(tmp_path / 'run'), 'train.grad_accum_steps=3')


# A constant learning rate: a shorter run takes the same first steps.
COMMON = ['train.schedule=@optimizers.constant_schedule', 'optimizers.adamw.weight_decay=0.01']
ACCUM = ['train.grad_accum_steps=2', *COMMON]


@pytest.fixture(scope='module')
def accum_run(tmp_path_factory):
  """30 uninterrupted steps of 2 micro-batches (decay 0.01, Hugging Face's rule)."""
  model_dir = str(tmp_path_factory.mktemp('accum'))
  _train(model_dir, *train_test.RESUME, *ACCUM)
  return model_dir


def test_accumulated_run_follows_the_one_batch_run_and_records_its_settings(accum_run, tmp_path):
  one_batch = str(tmp_path / 'one_batch')
  _train(one_batch, 'TRAIN_STEPS=6', 'EVAL_EVERY=6', *COMMON)
  _assert_same_losses(accum_run, one_batch, steps=list(range(1, 7)), rtol=2e-5)
  with open(os.path.join(accum_run, 'results.json')) as f:
    summary = json.load(f)
  fidelity = summary['fidelity']
  assert fidelity['grad_accum_steps'] == 2
  assert (fidelity['weight_decay'], fidelity['weight_decay_rule']) == (0.01, 'hugging_face')
  assert summary['host_memory']['peak_rss_mib'] > 100


@pytest.mark.slow
def test_sigkill_resume_of_an_accumulated_run_is_bitwise(env, accum_run, tmp_path):
  model_dir = str(tmp_path / 'run')
  proc = subprocess.Popen(_cmd(model_dir, *train_test.RESUME, *ACCUM),
                          cwd=train_test.REPO, env=env, text=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
  deadline = time.time() + 300
  while (time.time() < deadline and proc.poll() is None
         and _logged_step(model_dir) < 12):
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=300)
  assert proc.returncode == -signal.SIGKILL
  _train(model_dir, *train_test.RESUME, *ACCUM)
  _assert_same_losses(model_dir, accum_run)


@pytest.mark.slow
def test_fsdp_mesh_with_micro_batches_follows_one_device(env, accum_run, tmp_path):
  """4 simulated devices, data 2 x model 2 with FSDP: each micro-batch of 4 rows split over
  the data axis; the same losses as the one-device accumulated run."""
  model_dir = str(tmp_path / 'fsdp')
  mesh = ['sharding.make_mesh.data=2', 'sharding.make_mesh.model=2',
          'sharding.logical_axis_rules.fsdp=True', 'TRAIN_STEPS=6', 'EVAL_EVERY=6']
  _run(env, model_dir, *ACCUM, *mesh,
                  XLA_FLAGS='--xla_force_host_platform_device_count=4')
  _assert_same_losses(model_dir, accum_run, steps=list(range(1, 7)), rtol=2e-5)
