"""`python -m dssb.report`: tables, plots and byte-for-byte regeneration from run summaries.

The fixture runs are real tiny trainings on SVAMP (three seeds of standard finetuning on all
the data, one step-by-step run on half), laid out as the sweep writes them.
"""

import glob
import json
import math
import os
import shlex
import statistics

import gin
import pytest

from dssb import gin_utils, report, train
from dssb.data import metrics, sources, teacher_outputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['TASK_FEATURE_LENGTHS={"inputs": 48, "targets": 16, "rationale_inputs": 48, '
        '"rationale_targets": 32}', 'TRAIN_STEPS=2', 'EVAL_EVERY=1', 'BATCH_SIZE=4',
        'TEST_AT_EVERY_EVAL=True', 'train.eval_limit=4', 'train.eval_batch_size=4',
        'train.max_decode_length=4']
RUNS = [('standard', 1.0, 0), ('standard', 1.0, 1), ('standard', 1.0, 2),
        ('step_by_step', 0.5, 0)]


def _sweep_run(work, recipe, fraction, seed):
  """One real training and its sweep_run.json summary."""
  gin_file = f'gin/cpu/svamp_{recipe}.gin'
  bindings = [f"MODEL_DIR='{work}/{recipe}_{fraction}_{seed}'", f'FRACTION={fraction}',
              f'SEED={seed}', *TINY]
  gin.clear_config()
  try:
    gin_utils.parse_gin([gin_file], bindings)
    gin_utils.check_required()
    results = gin_utils.call_configured(train.train, 'train')
  finally:
    gin.clear_config()
  command = ' '.join(['python -m dssb.train', f'--gin_file={gin_file}']
                     + [shlex.quote(f'--gin.{b}') for b in bindings])
  return {'sweep': 'report_test', 'command': command, 'results': json.loads(json.dumps(results)),
          'settings': {'DATASET': 'svamp', 'RECIPE': recipe, 'FRACTION': fraction, 'SEED': seed,
                       'MODEL': 'tiny'}}


@pytest.fixture(scope='module')
def experiment(dss_data_dir, tmp_path_factory):
  saved = dict(os.environ)
  os.environ.update(DSSB_DATA_DIR=dss_data_dir,
                    DSSB_CACHE_DIR=str(tmp_path_factory.mktemp('cache')))
  try:
    root = tmp_path_factory.mktemp('exp') / 'tiny_svamp'
    work = tmp_path_factory.mktemp('work')
    os.makedirs(root / 'runs')
    for recipe, fraction, seed in RUNS:
      with open(root / 'runs' / f'{recipe}_f{fraction}_s{seed}.json', 'w') as f:
        json.dump(_sweep_run(work, recipe, fraction, seed), f)
    yield str(root)
  finally:
    os.environ.clear()
    os.environ.update(saved)


def _read(path, mode='r'):
  with open(path, mode) as f:
    return f.read()


def test_mean_and_standard_error_by_hand():
  values = [61.0, 64.5, 62.0]
  stat = report.mean_se(values)
  assert stat['n'] == 3 and stat['mean'] == pytest.approx(statistics.mean(values))
  assert stat['se'] == pytest.approx(statistics.stdev(values) / math.sqrt(3))
  assert report.mean_se([5.0]) == {'mean': 5.0, 'se': None, 'n': 1}
  assert report.fmt(stat) == f'{statistics.mean(values):.1f} ± {stat["se"]:.1f} (n=3)'


@pytest.mark.slow  # the fixture trains 4 tiny runs (about 45 s)
def test_cells_hold_mean_and_standard_error_over_the_seeds(experiment, tmp_path):
  files = report.write(experiment, str(tmp_path))
  assert files == ['README.md', 'fractions_svamp.png', 'report.json']
  built = json.loads(_read(tmp_path / 'report.json'))
  runs = [json.loads(_read(p)) for p in sorted(glob.glob(f'{experiment}/runs/standard_*'))]
  (cell,) = [c for c in built['cells'] if c['recipe'] == 'standard']
  assert cell['seeds'] == [0, 1, 2] and cell['fraction'] == 1.0
  for kind in ('last', 'best_on_validation', 'max_over_evals'):
    values = [r['results'][kind]['test']['accuracy'] for r in runs]
    assert cell['test'][kind]['n'] == 3
    assert cell['test'][kind]['mean'] == pytest.approx(statistics.mean(values))
    assert cell['test'][kind]['se'] == pytest.approx(statistics.stdev(values) / math.sqrt(3))
  assert cell['fidelity'] == 'dropout shared, matmul default'
  with open(os.path.join(REPO, 'results', 'paper_numbers.json')) as f:
    paper = json.load(f)['hsieh2023_distilling_step_by_step']
  assert cell['paper'] == paper['tables1_2_t5_base_full_data_accuracy'][
      'standard_finetuning']['svamp']
  (half,) = [c for c in built['cells'] if c['recipe'] == 'step_by_step']
  assert half['paper'] == 'plot only' and half['test']['last']['n'] == 1
  readme = _read(tmp_path / 'README.md')
  row = '| standard | tiny | 100 | dropout shared, matmul default | 3 | '
  assert row + report.fmt(cell['test']['last']) + ' |' in readme
  assert '| plot only |' in readme and runs[0]['command'] in readme


@pytest.mark.slow  # the same fixture
def test_the_report_is_rebuilt_byte_for_byte(experiment, tmp_path):
  first, second = tmp_path / 'a', tmp_path / 'b'
  names = report.write(experiment, str(first))
  assert report.write(experiment, str(second)) == names
  for name in names:
    assert _read(first / name, 'rb') == _read(second / name, 'rb'), name
  png = _read(first / 'fractions_svamp.png', 'rb')
  assert png.startswith(b'\x89PNG') and b'Software' not in png and b'matplotlib' not in png
  assert report.main([experiment, '--out', str(first), '--check']) == 0
  with open(first / 'README.md', 'a') as f:
    f.write(' ')
  assert report.main([experiment, '--out', str(first), '--check']) == 1


def test_committed_reports_regenerate_byte_for_byte():
  experiments = [os.path.dirname(os.path.dirname(p)) for p in
                 sorted(glob.glob(os.path.join(REPO, 'results', '*', 'runs', '*.json')))]
  experiments = sorted({e for e in experiments if os.path.exists(f'{e}/report.json')})
  if not experiments:
    pytest.skip('no committed dssb.report output under results/ yet')
  for experiment in experiments:
    assert report.differences(experiment, experiment) == [], experiment


def test_teacher_accuracy_is_the_metric_on_the_released_outputs(dss_data_dir):
  gold = [r['label'] for r in sources.read_examples('cqa', 'test', dss_data_dir)]
  parsed = teacher_outputs.parse_all('cqa', sources.read_teacher_outputs('cqa', 'test', 'palm',
                                                                         dss_data_dir))
  want = metrics.exact_match(gold, [p.label for p in parsed])['accuracy']
  assert report.teacher_accuracy('cqa', 'palm', dss_data_dir) == want
  assert want == pytest.approx(77.23, abs=5e-3)  # what the official code prints
  svamp = report.chance('svamp', dss_data_dir)
  assert 0 < svamp['accuracy'] < 20 and svamp['how'].startswith('the best constant answer')
  assert report.chance('cqa')['accuracy'] == 20.0


def test_a_malformed_summary_is_named(tmp_path):
  os.makedirs(tmp_path / 'runs')
  (tmp_path / 'runs' / 'bad.json').write_text(json.dumps({'settings': {}, 'command': 'x'}))
  with pytest.raises(ValueError, match=r'bad.json: no "results"'):
    report.load_runs(str(tmp_path))
  assert report.main([str(tmp_path / 'nowhere')]) == 2


def test_collect_copies_only_finished_runs_of_a_sweep(tmp_path):
  root, experiment = tmp_path / 'sweep_root', tmp_path / 'results_exp'
  (root / 'dataset=svamp,seed=0').mkdir(parents=True)
  (root / 'dataset=svamp,seed=1' / 'checkpoints').mkdir(parents=True)  # unfinished: no summary
  summary = json.dumps({'settings': {'DATASET': 'svamp'}, 'command': 'c', 'results': {}})
  (root / 'dataset=svamp,seed=0' / 'sweep_run.json').write_text(summary)
  assert report.collect(str(root), str(experiment)) == ['dataset=svamp,seed=0']
  assert (experiment / 'runs' / 'dataset=svamp,seed=0.json').read_text() == summary
  assert sorted(os.listdir(experiment / 'runs')) == ['dataset=svamp,seed=0.json']
  with pytest.raises(FileNotFoundError, match='no finished runs'):
    report.collect(str(tmp_path / 'empty'), str(experiment))
