"""Every gin file under gin/ parses and builds what its command would build, without training:
the entry function's arguments (the model config, the seqio task, the feature lengths, ...).
A typo in a pod-sized file fails here, not on the pod.

Run files are built as their command builds them; a sweep file as each of its size files and
every value of every axis (not the whole product); a file that only serves others (a size,
role, defaults or CPU file) as part of the files that use it; a teacher file through
dssb.teacher's loader. A new gin file must be placed in one of the tables below.
"""

import inspect
import os

import gin
import pytest

from dssb import gin_utils, train
from dssb.context_distill import sample
from dssb.model import T5Config
from dssb.sweep import __main__ as sweep_cli
from dssb.teacher import config as teacher_config

GIN = gin_utils.GIN_DIR
# Placeholders for the REQUIRED settings a file leaves open (nothing is read or trained).
REQUIRED = {'MODEL_DIR': "'/tmp/dssb_gin_files_test'", 'PRETRAINED': 'None',
            'TEACHER_DIR': "'/tmp/teacher'", 'DISTILL_FILE': "'/tmp/distill.jsonl'"}

# Files that are a run (python -m dssb.train / dssb.context_distill) with these files after them.
RUNS = {
    'cpu/svamp_standard.gin': [], 'cpu/svamp_distill.gin': [], 'cpu/svamp_step_by_step.gin': [],
    'cpu/svamp_single_task_rationale_first.gin': [], 'cpu/svamp_cot_teacher.gin': [],
    **{f'paper/cd_{n}.gin': [] for n in (
        'label_only', 'table3_context_distill_hard', 'table3_context_distill_soft',
        'table3_distill_set', 'table3_multitask', 'table3_oracle',
        'table3_scratchpad_then_direct', 'table3_student_before', 'table3_teacher')},
    # The CPU sizes of the context-distillation files.
    'paper/cd_table3_teacher.gin+cpu': ['cpu/cd_addition_mini.gin'],
    'paper/cd_table3_context_distill_soft.gin+cpu': ['cpu/cd_addition_mini.gin',
                                                     'cpu/cd_addition_tiny.gin'],
    'paper/cd_table3_distill_set.gin+cpu': ['cpu/cd_cqa_mini.gin'],
    # Defaults files that a run adds after runs/train.gin.
    'cpu/svamp_standard.gin+adafactor+fsdp': ['runs/adafactor.gin', 'runs/fsdp.gin'],
}
# Sweep files (gin/paper, distilling step-by-step), at their size and shrunk to CPU size.
SWEEPS = {
    'paper/table1_2.gin': [], 'paper/table1_gptneox.gin': [], 'paper/fig4_fractions.gin': [],
    'paper/fig5_unlabeled.gin': [], 'paper/fig6_sizes.gin': [],
    'paper/fig7_sizes_unlabeled.gin': [], 'paper/fig8_sizes_fractions.gin': [],
    'paper/fig9_sizes_fractions_unlabeled.gin': [],
    'paper/fig6_sizes.gin+cpu': ['cpu/paper_tiny.gin'],
    'cpu/mini_repro.gin': ['cpu/tiny.gin'], 'cpu/mini_repro_short.gin': ['cpu/tiny.gin'],
}
# The short mini-reproduction is a subset of the full one's grid, under the same name (and root).
SWEEP_NAMES = {'cpu/mini_repro_short.gin': 'mini_repro'}
# Files used only by others: which entry above covers each.
SERVES = {
    'runs/train.gin': 'cpu/svamp_standard.gin',
    'runs/context_distill.gin': 'paper/cd_table3_teacher.gin',
    'runs/context_distill_data.gin': 'paper/cd_table3_distill_set.gin',
    'runs/adafactor.gin': 'cpu/svamp_standard.gin+adafactor+fsdp',
    'runs/fsdp.gin': 'paper/fig6_sizes.gin', 'cpu/tiny.gin': 'cpu/svamp_standard.gin',
    'cpu/cd_addition_mini.gin': 'paper/cd_table3_teacher.gin+cpu',
    'cpu/cd_addition_tiny.gin': 'paper/cd_table3_context_distill_soft.gin+cpu',
    'cpu/cd_cqa_mini.gin': 'paper/cd_table3_distill_set.gin+cpu',
    'cpu/paper_tiny.gin': 'paper/fig6_sizes.gin+cpu',
    'paper/cd_table3_settings.gin': 'paper/cd_table3_teacher.gin',
    'paper/hsieh_settings.gin': 'paper/fig4_fractions.gin',
    **{f'paper/hsieh_t5_{s}.gin': 'paper/fig6_sizes.gin' for s in ('base', 'large', 'xxl')},
    # Declarations of the context-distillation runs (read by experiments/cd_runs.py).
    'paper/cd_table3_runs.gin': 'cd_runs_test.py', 'cpu/cd_cqa_runs.gin': 'cd_runs_test.py',
    **{f'testbed/{f}.gin': 'testbed_gin_test.py' for f in (
        'run', 'settings', 'tune', 'one_eighth', 'one_eighth_short', 'ablation', 'unlabeled',
        'teacher_error', 'sizes', 'sizes_unlabeled', 'model_small', 'cqa_check')},
    **{f'models/{m}.gin': 'gin_models_test.py' for m in (
        't5_1_0', 't5_1_1', 'tiny', *[f't5_1_{v}_{s}' for v in (0, 1)
                                      for s in ('small', 'base', 'large', 'xl', 'xxl')])},
}
TEACHERS = ['openai_compatible', 'openai_chat', 'dssb_checkpoint', 'dssb_serve']


@pytest.fixture(scope='module', autouse=True)
def env(dss_data_dir, tmp_path_factory):
  saved = dict(os.environ)
  os.environ.update(DSSB_DATA_DIR=dss_data_dir, DSSB_CACHE_DIR=str(tmp_path_factory.mktemp('c')))
  yield
  os.environ.clear()
  os.environ.update(saved)


def test_every_gin_file_is_covered():
  found = {os.path.relpath(os.path.join(root, f), GIN) for root, _, files in os.walk(GIN)
           for f in files if f.endswith('.gin')}
  covered = ({k.partition('+')[0] for k in list(RUNS) + list(SWEEPS)} | set(SERVES)
             | {f'teachers/{t}.gin' for t in TEACHERS})
  assert sorted(found - covered) == [], 'gin files no test builds: add them to the tables'
  assert sorted(covered - found) == [], 'the tables name gin files that do not exist'


def _resolve(value):
  """A gin value as the entry function receives it: macros and @fn() references evaluated."""
  if isinstance(value, gin.config.ConfigurableReference):
    return value.scoped_configurable_fn() if value.evaluate else value
  if isinstance(value, (list, tuple)):
    return type(value)(_resolve(v) for v in value)
  if isinstance(value, dict):
    return {k: _resolve(v) for k, v in value.items()}
  return value


def _entry_arguments(fn, name):
  """{argument: value} of every argument gin binds for `fn` (gin: `name`), evaluated."""
  found = {}
  for arg in inspect.signature(fn).parameters:
    try:
      value = gin.query_parameter(f'{name}.{arg}')
    except ValueError:  # not bound in gin: the function's default
      continue
    found[arg] = _resolve(value)
  return found


def _placeholders(gin_files, bindings):
  """Bindings for the REQUIRED settings the files leave open (each must have a placeholder)."""
  gin.clear_config()
  try:
    gin_utils.parse_gin(gin_files, bindings)
    unset = [line.split(' = ')[0] for line in gin.config_str().splitlines()
             if line.endswith(' = %gin.REQUIRED')]
  finally:
    gin.clear_config()
  assert set(unset) <= set(REQUIRED), f'{gin_files}: no placeholder for {unset}'
  return [f'{name}={REQUIRED[name]}' for name in unset]


def _build(gin_files, bindings=()):
  """Parses like the command line and builds the entry's arguments (no training)."""
  bindings = list(bindings) + _placeholders(gin_files, bindings)
  gin.clear_config()
  try:
    gin_utils.parse_gin(gin_files, bindings)
    gin_utils.check_required()
    sampled = _entry_arguments(sample.sample_distillation_set, 'sample.sample_distillation_set')
    if sampled:
      assert {'teacher_checkpoint', 'out', 'data'} <= set(sampled)
      return sampled
    args = _entry_arguments(train.train, 'train.train')
    missing = [a for a, p in inspect.signature(train.train).parameters.items()
               if p.default is inspect.Parameter.empty and a not in args]
    assert not missing, f'{gin_files}: train.train lacks {missing}'
    assert isinstance(args['model_config'], T5Config)
    assert isinstance(args['task'], str) and args['task']
    assert set(args['feature_lengths']) >= {'inputs', 'targets'}
    assert args['batch_size'] > 0 and args['num_steps'] >= 0
    return args
  finally:
    gin.clear_config()


@pytest.mark.parametrize('key', sorted(RUNS))
def test_run_file_builds(key):
  _build([key.partition('+')[0], *RUNS[key]])


def _covering_runs(runs):
  """Runs that together take every value of every axis (not the whole grid)."""
  values = {}
  for run in runs:
    for axis, value in run.settings:
      values.setdefault(axis, []).append(value)
  wanted = {(a, v) for a, vs in values.items() for v in vs}
  chosen = []
  for run in runs:
    if wanted & set(run.settings):
      chosen.append(run)
      wanted -= set(run.settings)
  return chosen


@pytest.mark.parametrize('key', sorted(SWEEPS))
def test_sweep_file_builds_every_value_of_every_axis(key):
  cpu = bool(SWEEPS[key])
  files = [f'gin/{key.partition("+")[0]}', *[f'gin/{f}' for f in SWEEPS[key]]]
  # At CPU size the vocabulary is trained on the dataset's text: SVAMP only, to stay fast.
  bindings = ['PRETRAINED=None'] + (["sweep.grid.axes={'DATASET': ['svamp'], "
                              "'RECIPE': ['standard', 'step_by_step'], 'SEED': [0]}"]
                             if cpu else [])
  spec, runs = sweep_cli.load_runs(files, bindings)
  default_name = os.path.basename(key.partition('+')[0])[:-len('.gin')]
  assert spec.name == SWEEP_NAMES.get(key, default_name)
  built = [_build(run.gin_files, run.train_bindings('/tmp/dssb_sweep_root'))
           for run in _covering_runs(runs)]
  assert built
  for run, args in zip(_covering_runs(runs), built):
    settings = dict(run.settings)
    assert settings.get('DATASET', '') in args['task']
    if 'MODEL' in settings and not cpu:  # the size file's model, batch and steps
      want = {'220M': (768, 64, 10000), '770M': (1024, 64, 10000), '11B': (4096, 32, 4000)}
      got = (args['model_config'].d_model, args['batch_size'], args['num_steps'])
      assert got == want[settings['MODEL']]
    if cpu:  # from scratch, at most the mini-reproduction's width
      assert args['model_config'].d_model <= 128 and args['init_checkpoint'] is None


def test_paper_settings_are_the_papers():
  args = _build(['gin/paper/fig4_fractions.gin'], ["DATASET='cqa'", "RECIPE='step_by_step'"])
  assert (args['learning_rate'], args['alpha'], args['eval_every']) == (5e-5, 0.5, 250)
  assert args['feature_lengths'] == {'inputs': 1024, 'targets': 256, 'rationale_inputs': 1024,
                                     'rationale_targets': 256}
  assert args['test_at_every_eval'] is True
  assert (args['matmul_precision'], args['reported_number']) == ('float32', 'last')
  assert args['model_config'].dropout_mode == 'per_element'  # the official fidelity values


@pytest.mark.parametrize('name', TEACHERS)
def test_teacher_file_loads(name, monkeypatch):
  for var in ('DSSB_TEACHER_NAME', 'DSSB_TEACHER_MODEL', 'DSSB_TEACHER_CHECKPOINT'):
    monkeypatch.setenv(var, 'x')
  cfg = teacher_config.load(name)
  assert cfg.name == 'x'



def test_a_runs_folder_in_the_working_directory_does_not_break_includes(tmp_path, monkeypatch):
  """A sweep's default root is ./runs/NAME; gin's package-resource reader used to take the
  include 'runs/train.gin' for the namespace package 'runs' and crash."""
  (tmp_path / 'runs' / 'mini_repro').mkdir(parents=True)
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  for _ in range(2):
    gin.clear_config()
    gin_utils.parse_gin([os.path.join(gin_utils.GIN_DIR, 'cpu', 'mini_repro_short.gin')])
  assert gin.query_parameter('%TRAIN_STEPS') == 150  # from cpu/mini_repro.gin
  gin.clear_config()
