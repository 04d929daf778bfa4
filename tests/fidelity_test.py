"""The fidelity settings: dropout mode, matmul precision, and the reported test number.

Dropout masks are read from a real T5 forward pass (every nn.Dropout call intercepted); matmul
precision from the lowered train loss and from inside a real train() run; the reported numbers
from the results.json of real tiny trainings on SVAMP, against their own metrics.jsonl.
"""

import json
import os

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dssb import gin_utils, optimizers, train
from dssb.model import T5, T5Config, init_params
from dssb.train.step import make_loss_fn

GIN = 'gin/cpu/svamp_step_by_step.gin'
SMALL = ['TASK_FEATURE_LENGTHS={"inputs": 64, "targets": 16, "rationale_inputs": 64, '
         '"rationale_targets": 48}', 'BATCH_SIZE=8', 'train.log_every=1', 'train.eval_limit=8',
         'train.eval_batch_size=8', 'train.max_decode_length=8']
CONFIG = T5Config(vocab_size=64, d_model=32, num_heads=2, head_dim=8, d_ff=48,
                  num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.5)


@pytest.fixture(scope='module', autouse=True)
def env(dss_data_dir, tmp_path_factory):
  saved = dict(os.environ)
  os.environ.update(DSSB_DATA_DIR=dss_data_dir,
                    DSSB_CACHE_DIR=str(tmp_path_factory.mktemp('cache')))
  yield
  os.environ.clear()
  os.environ.update(saved)


def _dropout_masks(mode: str):
  """[(mask, input shape)] of every dropout in one T5 forward pass with dropout on."""
  config = T5Config(**{**CONFIG.__dict__, 'dropout_mode': mode})
  params = init_params(config)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 12), 3, 64)
  masks = []

  def record(next_fun, args, kwargs, context):
    if not isinstance(context.module, nn.Dropout) or kwargs.get('deterministic', True):
      return next_fun(*args, **kwargs)
    kept = next_fun(jnp.ones_like(args[0]), *args[1:], **kwargs)  # 1/keep where kept, else 0
    masks.append(np.asarray(kept != 0))
    return kept * args[0]  # what the dropout of args[0] gives

  with nn.intercept_methods(record):
    T5(config).apply({'params': params}, tokens, tokens, tokens, enable_dropout=True,
                     rngs={'dropout': jax.random.PRNGKey(2)})
  return masks


def test_shared_dropout_masks_are_the_same_at_every_position():
  masks = _dropout_masks('shared')
  assert len(masks) > 10  # embeddings, attention weights, MLP, residuals, final norms
  for mask in masks:
    assert (mask == mask[..., :1, :]).all()  # one mask along the length (query) axis
  keep = np.mean(np.concatenate([m[..., 0, :].ravel() for m in masks]))
  assert abs(keep - 0.5) < 0.05


def test_per_element_dropout_masks_differ_across_positions():
  masks = _dropout_masks('per_element')
  assert len(masks) == len(_dropout_masks('shared'))
  for mask in masks:
    assert not (mask == mask[..., :1, :]).all()
  keep = np.mean(np.concatenate([m.ravel() for m in masks]))
  assert abs(keep - 0.5) < 0.02


def test_dropout_mode_is_a_runtime_field():
  """It changes no parameter and is no architecture change: checkpoints load either way."""
  shared, per_element = CONFIG, T5Config(**{**CONFIG.__dict__, 'dropout_mode': 'per_element'})
  assert 'dropout_mode' in T5Config.RUNTIME_FIELDS
  assert not per_element.architecture_diff(shared) and not per_element.param_shape_diff(shared)
  a, b = init_params(shared), init_params(per_element)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert all(jax.tree.leaves(jax.tree.map(lambda x, y: bool((x == y).all()), a, b)))
  with pytest.raises(ValueError, match='dropout_mode'):
    T5Config(dropout_mode='per_row')


def _dot_precisions(precision):
  config = T5Config(**{**CONFIG.__dict__, 'dropout_rate': 0.0})
  loss_fn = make_loss_fn(T5(config), 0.5, 0.0, 0.0)
  tokens = jnp.ones((2, 8), jnp.int32)
  batch = {'label': {'encoder_input_tokens': tokens, 'decoder_input_tokens': tokens,
                     'decoder_target_tokens': tokens, 'decoder_loss_weights': tokens}}
  grad = jax.jit(jax.grad(lambda p: loss_fn(p, batch, jax.random.PRNGKey(0))[0]))
  with jax.default_matmul_precision(precision):
    text = grad.lower(init_params(config)).as_text()
  return {line.split('precision = ')[1].split(']')[0] + ']'
          for line in text.splitlines() if 'dot_general' in line}


def test_float32_matmul_precision_reaches_every_matmul_of_the_step():
  assert _dot_precisions('float32') == {'[HIGHEST, HIGHEST]'}
  assert _dot_precisions(None) == {'[DEFAULT, DEFAULT]'}


def _train(model_dir, *extra):
  gin.clear_config()
  try:
    gin_utils.parse_gin([GIN], [f"MODEL_DIR='{model_dir}'", *SMALL, *extra])
    gin_utils.check_required()
    return gin_utils.call_configured(train.train, 'train')
  finally:
    gin.clear_config()


def _test_records(model_dir):
  with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r.get('split') == 'test']


@pytest.mark.slow  # about 30 s
def test_results_json_labels_three_test_numbers_and_the_fidelity_settings(tmp_path):
  """Official settings: per-element dropout, float32 matmuls (seen inside the run by the
  optimizer factory, which train() calls under the run's contexts), test at every eval."""
  seen = []

  def probe_adamw(schedule):
    seen.append(jax.config.jax_default_matmul_precision)
    return optimizers.adamw(schedule)

  gin.external_configurable(probe_adamw, module='fidelity_test')
  model_dir = str(tmp_path / 'run')
  summary = _train(model_dir, 'TRAIN_STEPS=8', 'EVAL_EVERY=4', "DROPOUT_MODE='per_element'",
                   "MATMUL_PRECISION='float32'", "REPORTED_NUMBER='max_over_evals'",
                   'TEST_AT_EVERY_EVAL=True', 'train.optimizer=@fidelity_test.probe_adamw')
  assert seen == ['float32']
  with open(os.path.join(model_dir, 'results.json')) as f:
    results = json.load(f)
  assert results == json.loads(json.dumps(summary))
  assert results['fidelity'] == {'dropout_mode': 'per_element', 'dropout_rate': 0.0,
                                 'matmul_precision': 'float32',
                                 'reported_number': 'max_over_evals',
                                 'test_at_every_eval': True, 'optimizer': 'probe_adamw',
                                 'weight_decay': 0.0, 'weight_decay_rule': 'hugging_face',
                                 'grad_accum_steps': 1}
  tests = _test_records(model_dir)
  assert [r['step'] for r in tests] == [4, 8]
  strip = lambda r: {k: v for k, v in r.items() if k not in ('step', 'split')}
  assert results['last'] == {'step': 8, 'test': strip(tests[-1])}
  best = results['best_on_validation']
  assert best['test'] == strip(tests[[4, 8].index(best['step'])])
  top = max(tests, key=lambda r: r['accuracy'])
  assert results['max_over_evals'] == {'step': top['step'], 'metric': 'accuracy',
                                       'test': strip(top), 'over_steps': [4, 8]}
  assert results['reported'] == dict(results['max_over_evals'], kind='max_over_evals')
  assert set(results['labels']) == {'last', 'best_on_validation', 'max_over_evals'}


@pytest.mark.slow  # about 30 s
def test_a_resumed_run_takes_the_max_over_every_eval(tmp_path):
  """The test evals before a resume are kept (checkpoint meta), not only the later ones."""
  model_dir = str(tmp_path / 'run')
  both = ['EVAL_EVERY=2', 'TEST_AT_EVERY_EVAL=True', 'train.keep_checkpoints=1']
  _train(model_dir, 'TRAIN_STEPS=2', *both)
  summary = _train(model_dir, 'TRAIN_STEPS=4', *both)
  assert summary['max_over_evals']['over_steps'] == [2, 4]
  assert summary['fidelity']['dropout_mode'] == 'shared'  # the defaults
  assert summary['fidelity']['matmul_precision'] == 'default'
  assert summary['reported']['kind'] == 'last'


def test_bad_fidelity_settings_are_refused_by_name(tmp_path):
  with pytest.raises(ValueError, match='MATMUL_PRECISION'):
    _train(str(tmp_path / 'a'), "MATMUL_PRECISION='float31'")
  with pytest.raises(ValueError, match='TEST_AT_EVERY_EVAL'):
    _train(str(tmp_path / 'b'), "REPORTED_NUMBER='max_over_evals'")
  with pytest.raises(ValueError, match='REPORTED_NUMBER'):
    _train(str(tmp_path / 'c'), "REPORTED_NUMBER='best'")
