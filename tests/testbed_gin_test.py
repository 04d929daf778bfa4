"""Every gin file of the testbed (gin/testbed/) builds what its command would build, without
training: each sweep at every value of every axis, the CQA check as a run; the shared root's
run names never mean two different settings; the pre-registered settings are what
dssb.testbed.claims takes as defaults."""

import os

import gin
import pytest

from dssb import gin_utils, train
from dssb.sweep import __main__ as sweep_cli
from dssb.testbed import claims

SWEEPS = {'testbed/one_eighth.gin': 'testbed_one_eighth',
          'testbed/one_eighth_short.gin': 'testbed_one_eighth',
          'testbed/ablation.gin': 'testbed_ablation', 'testbed/unlabeled.gin': 'testbed_unlabeled',
          'testbed/teacher_error.gin': 'testbed_teacher_error',
          'testbed/sizes.gin': 'testbed_sizes',
          'testbed/sizes_unlabeled.gin': 'testbed_sizes_unlabeled',
          'testbed/tune.gin': 'testbed_tune'}


@pytest.fixture(scope='module', autouse=True)
def env(dss_data_dir, tmp_path_factory):
  saved = dict(os.environ)
  os.environ.update(DSSB_DATA_DIR=dss_data_dir, DSSB_CACHE_DIR=str(tmp_path_factory.mktemp('c')))
  yield
  os.environ.clear()
  os.environ.update(saved)


def _train_args(gin_files, bindings):
  gin.clear_config()
  try:
    gin_utils.parse_gin(gin_files, bindings)
    gin_utils.check_required()
    args = {}
    for name in ('model_config', 'task', 'feature_lengths', 'batch_size', 'num_steps',
                 'learning_rate', 'length_buckets', 'max_decode_length'):
      try:
        value = gin.query_parameter(f'train.train.{name}')
      except ValueError:  # not bound: the trainer's default
        continue
      if isinstance(value, gin.config.ConfigurableReference):
        value = value.scoped_configurable_fn()
      args[name] = value
    return args
  finally:
    gin.clear_config()


def _covering(runs):
  wanted = {item for run in runs for item in run.settings}
  chosen = []
  for run in runs:
    if wanted & set(run.settings):
      chosen.append(run)
      wanted -= set(run.settings)
  return chosen


def _macro(value):
  return value.scoped_configurable_fn() if isinstance(
      value, gin.config.ConfigurableReference) else value


@pytest.mark.parametrize('key', sorted(SWEEPS))
def test_sweep_builds_every_value_of_every_axis(key):
  spec, runs = sweep_cli.load_runs([f'gin/{key}'], [])
  assert spec.name == SWEEPS[key]
  for run in _covering(runs):
    args = _train_args(run.gin_files, run.train_bindings('/tmp/dssb_testbed_root'))
    assert args['task'].startswith('dssb_tb_wp_')
    settings = dict(run.settings)
    assert f'_{settings.get("RECIPE", "standard")}_' in args['task']
    width = 32 if settings.get('MODEL') == 'small' else 64
    assert args['model_config'].d_model == width
    assert args['length_buckets'] is None  # fixed shapes: no recompiles after step 1
    if 'FRACTION' in settings:
      assert f'_f{settings["FRACTION"]:g}_'.replace('.', '_') in args['task']


def test_run_names_of_the_shared_root_mean_one_setting():
  """Sweeps share runs/testbed: one run name must always be the same command."""
  commands = {}
  for key in SWEEPS:
    if key == 'testbed/tune.gin':
      continue
    _, runs = sweep_cli.load_runs([f'gin/{key}'], [])
    for run in runs:
      bindings = tuple(sorted(run.train_bindings('/root')))
      assert commands.setdefault(run.name, bindings) == bindings, run.name


def test_settings_are_the_claims_defaults_and_the_cqa_check_runs_the_real_data():
  gin.clear_config()
  try:
    gin_utils.parse_gin(['gin/testbed/settings.gin'], ["MODEL_DIR='/tmp/x'", "RECIPE='standard'"])
    for key, value in claims.DEFAULTS.items():
      if key == 'MODEL':
        continue
      got = _macro(gin.query_parameter(f'%{key}'))
      assert (got or 'gold') == value, key
  finally:
    gin.clear_config()
  args = _train_args(['gin/testbed/cqa_check.gin'], ["MODEL_DIR='/tmp/x'"])
  assert args['task'].startswith('dssb_cqa_step_by_step_gold_palm_f0.125')
  assert args['num_steps'] == 30
