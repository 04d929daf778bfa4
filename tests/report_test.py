"""`python -m dssb.report`: tables, plots and byte-for-byte regeneration from run summaries.

The fixture runs are real tiny trainings on SVAMP (three seeds of standard finetuning on all
the data, one step-by-step run on half), laid out as the sweep writes them.
"""

import glob
import json
import math
import os
import shlex
import shutil
import statistics
import sys
import types

import gin
import pytest

from dssb import gin_utils, train
from dssb.report import dispatch, label_quality, open_teacher, paper, stats, summaries
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
  stat = stats.mean_se(values)
  assert stat['n'] == 3 and stat['mean'] == pytest.approx(statistics.mean(values))
  assert stat['se'] == pytest.approx(statistics.stdev(values) / math.sqrt(3))
  assert stats.mean_se([5.0]) == {'mean': 5.0, 'se': None, 'n': 1}
  assert stats.fmt(stat) == f'{statistics.mean(values):.1f} ± {stat["se"]:.1f} (n=3)'


@pytest.mark.slow  # the fixture trains 4 tiny runs (about 45 s)
def test_cells_hold_mean_and_standard_error_over_the_seeds(experiment, tmp_path):
  files = dispatch.write(experiment, str(tmp_path))
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
  assert row + stats.fmt(cell['test']['last']) + ' |' in readme
  assert '| plot only |' in readme and runs[0]['command'] in readme


@pytest.mark.slow  # the same fixture
def test_the_report_is_rebuilt_byte_for_byte(experiment, tmp_path):
  first, second = tmp_path / 'a', tmp_path / 'b'
  names = dispatch.write(experiment, str(first))
  assert dispatch.write(experiment, str(second)) == names
  for name in names:
    assert _read(first / name, 'rb') == _read(second / name, 'rb'), name
  png = _read(first / 'fractions_svamp.png', 'rb')
  assert png.startswith(b'\x89PNG') and b'Software' not in png and b'matplotlib' not in png
  assert dispatch.main([experiment, '--out', str(first), '--check']) == 0
  with open(first / 'README.md', 'a') as f:
    f.write(' ')
  assert dispatch.main([experiment, '--out', str(first), '--check']) == 1


def test_every_committed_results_folder_regenerates_byte_for_byte(dss_data_dir):
  """`python -m dssb.report --all --check`: every report folder under results/ (and the
  addition fraction runs it derives into mini_repro/runs/) is exactly what a rebuild gives."""
  folders = {os.path.basename(os.path.dirname(f)): dispatch.kind_of(f)
             for f in dispatch.report_folders()}
  assert {'mini_repro': 'paper', 'context_distillation': 'context_distillation',
          'open_teacher': 'open_teacher', 'label_quality': 'label_quality'}.items() <= \
      folders.items()
  assert 'perf' not in folders  # benchmark outputs: made by experiments/bench_*.py
  assert dispatch.check_all(data_dir=dss_data_dir) == []


def test_check_all_names_a_changed_file_and_all_restores_it(dss_data_dir, tmp_path):
  results = tmp_path / 'results'
  for name in ('context_distillation', 'open_teacher', 'label_quality'):
    shutil.copytree(os.path.join(REPO, 'results', name), results / name)
  os.makedirs(results / 'mini_repro' / 'runs')  # receives the fraction runs only
  for path in glob.glob(os.path.join(REPO, 'results', 'mini_repro', 'runs', '*')):
    if 'dataset=addition' not in path:
      shutil.copy(path, results / 'mini_repro' / 'runs')
  assert dispatch.main(['--all', '--results', str(results), '--data_dir', dss_data_dir]) == 0
  assert dispatch.check_all(str(results), data_dir=dss_data_dir) == []
  for name in ('mini_repro/fractions_cqa.png', 'context_distillation/cqa.md',
               'open_teacher/README.md', 'context_distillation/addition.png',
               'label_quality/README.md', 'label_quality/flagging_esnli.png',
               'mini_repro/runs/dataset=addition,recipe=standard,fraction=1.0,seed=0.json'):
    assert _read(results / name, 'rb') == _read(os.path.join(REPO, 'results', name), 'rb'), name
  with open(results / 'context_distillation' / 'cqa.md', 'a') as f:
    f.write(' ')
  png = results / 'label_quality' / 'synthetic_combiners.png'
  data = bytearray(png.read_bytes())
  data[-13] ^= 1  # one byte of the PNG (in its last data chunk's checksum)
  png.write_bytes(bytes(data))
  with open(results / 'mini_repro' / 'runs' /
            'dataset=addition,recipe=step_by_step,fraction=0.125,seed=0.json', 'a') as f:
    f.write('\n')  # the same numbers: only the derived file itself differs
  assert sorted(os.path.relpath(p, results) for p in dispatch.check_all(
      str(results), data_dir=dss_data_dir)) == [
          'context_distillation/cqa.md', 'label_quality/synthetic_combiners.png',
          'mini_repro/runs/dataset=addition,recipe=step_by_step,fraction=0.125,seed=0.json']
  assert dispatch.main(['--all', '--check', '--results', str(results),
                        '--data_dir', dss_data_dir]) == 1


def test_the_plot_only_fraction_is_marked_on_the_axis_not_in_the_plot(dss_data_dir):
  built = paper.build(os.path.join(REPO, 'results', 'mini_repro'), data_dir=dss_data_dir)
  fig = paper.fractions_figure(built, 'cqa')
  (ax,) = fig.axes
  try:
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ['12.5 (?)', '100']  # the paper prints CQA at 100% only (Table 1)
    assert [t.get_color() for t in ax.get_xticklabels()][0] == 'tab:red'
    from matplotlib.collections import PathCollection  # pylint: disable=g-import-not-at-top
    marked = [tuple(xy) for c in ax.collections if isinstance(c, PathCollection)
              for xy in c.get_offsets()]
    assert sorted(marked) == [(100.0, 62.19), (100.0, 63.29)]  # the paper's printed points only
    assert any(t.get_text().startswith('(?) on the axis')
               for t in ax.get_legend().get_texts())
  finally:
    stats.pyplot().close(fig)


def _testbed_run(folder, recipe, seed, accuracy, sweep='testbed_fractions'):
  run = {'sweep': sweep, 'settings': {'RECIPE': recipe, 'SEED': seed}, 'command': f'c {seed}',
         'results': {'last': {'test': {'accuracy': accuracy}}}}
  os.makedirs(folder / 'runs', exist_ok=True)
  (folder / 'runs' / f'{recipe}_{seed}.json').write_text(json.dumps(run))


def _mean_renderer(summaries_, out_dir):
  """A testbed renderer of the interface dssb.testbed.report.render has: one table file."""
  lines = sorted(f'{r["settings"]["RECIPE"]} {r["results"]["last"]["test"]["accuracy"]}'
                 for r in summaries_)
  os.makedirs(os.path.join(out_dir, 'tables'), exist_ok=True)
  path = os.path.join(out_dir, 'tables', 'means.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return [path]


def test_testbed_folders_go_to_the_testbed_renderer(tmp_path, monkeypatch):
  renderer = types.ModuleType('report_test_renderer')
  renderer.render = _mean_renderer
  monkeypatch.setitem(sys.modules, 'report_test_renderer', renderer)
  monkeypatch.setattr(dispatch, 'TESTBED_RENDERER', 'report_test_renderer')
  folder = tmp_path / 'testbed'
  for seed, accuracy in enumerate((40.0, 50.0)):
    _testbed_run(folder, 'step_by_step', seed, accuracy)
  _testbed_run(folder, 'standard', 0, 20.0, sweep='testbed_sizes')
  assert dispatch.kind_of(str(folder)) == 'testbed'
  assert dispatch.write(str(folder)) == [os.path.join('tables', 'means.md')]
  assert _read(folder / 'tables' / 'means.md') == 'standard 20.0\nstep_by_step 40.0\n' \
      'step_by_step 50.0\n'
  assert dispatch.main([str(folder), '--check']) == 0
  (folder / 'tables' / 'means.md').write_text('hand-edited\n')
  assert dispatch.main([str(folder), '--check']) == 1
  _testbed_run(folder, 'standard', 1, 20.0, sweep='mini_repro')  # one sweep not a testbed's
  assert dispatch.kind_of(str(folder)) == 'paper'


def test_open_teacher_readme_is_rendered_from_its_summary_alone(tmp_path):
  committed = os.path.join(REPO, 'results', 'open_teacher')
  shutil.copy(os.path.join(committed, 'summary.json'), tmp_path)
  assert dispatch.kind_of(str(tmp_path)) == 'open_teacher'
  assert dispatch.write(str(tmp_path)) == ['README.md']
  assert _read(tmp_path / 'README.md') == _read(os.path.join(committed, 'README.md'))
  summary = json.loads(_read(tmp_path / 'summary.json'))
  del summary['students']
  (tmp_path / 'summary.json').write_text(json.dumps(summary))
  with pytest.raises(ValueError, match=r'summary.json: no "students"'):
    open_teacher.write(str(tmp_path), str(tmp_path))
  assert dispatch.main([str(tmp_path / 'empty')]) == 2  # nothing to report: a named error


def test_label_quality_is_rendered_from_its_report_alone(tmp_path):
  """README.md and PNGs from report.json (experiments/label_quality.py's measurements); the
  budgets come from the report's keys, so a report without the synthetic part or with fewer
  budgets renders what it holds."""
  committed = os.path.join(REPO, 'results', 'label_quality')
  shutil.copy(os.path.join(committed, 'report.json'), tmp_path)
  assert dispatch.kind_of(str(tmp_path)) == 'label_quality'
  written = dispatch.write(str(tmp_path))
  assert written == sorted(['README.md', 'flagging_cqa.png', 'flagging_esnli.png',
                            'label_accuracy_cqa.png', 'label_accuracy_esnli.png',
                            'student_accuracy_esnli.png', 'synthetic_combiners.png'])
  for name in written:
    assert _read(tmp_path / name, 'rb') == _read(os.path.join(committed, name), 'rb'), name
  assert 'Soft minus hard: ' in _read(tmp_path / 'README.md')  # report.json's 'soft_labels'
  report = json.loads(_read(tmp_path / 'report.json'))
  del report['synthetic'], report['datasets']['esnli'], report['soft_labels']
  for run in report['datasets']['cqa']:
    for ranking in run['flagging'].values():
      ranking.pop('0.25', None)
  out = tmp_path / 'smaller'
  (out / 'report.json').parent.mkdir()
  (out / 'report.json').write_text(json.dumps(report))
  assert dispatch.write(str(out)) == ['README.md', 'flagging_cqa.png', 'label_accuracy_cqa.png']
  readme = _read(out / 'README.md')
  assert '| ranking | 1% | 5% | 10% |\n' in readme and 'Synthetic' not in readme
  assert 'Soft label targets' not in readme
  del report['seeds']
  (out / 'report.json').write_text(json.dumps(report))
  assert dispatch.kind_of(str(out)) is None  # not the label-quality schema: nothing to report
  with pytest.raises(ValueError, match=r'report.json: no "seeds"'):
    label_quality.write(str(out), str(out))


def test_teacher_accuracy_is_the_metric_on_the_released_outputs(dss_data_dir):
  gold = [r['label'] for r in sources.read_examples('cqa', 'test', dss_data_dir)]
  parsed = teacher_outputs.parse_all('cqa', sources.read_teacher_outputs('cqa', 'test', 'palm',
                                                                         dss_data_dir))
  want = metrics.exact_match(gold, [p.label for p in parsed])['accuracy']
  assert paper.teacher_accuracy('cqa', 'palm', dss_data_dir) == want
  assert want == pytest.approx(77.23, abs=5e-3)  # what the official code prints
  svamp = paper.chance('svamp', dss_data_dir)
  assert 0 < svamp['accuracy'] < 20 and svamp['how'].startswith('the best constant answer')
  assert paper.chance('cqa')['accuracy'] == 20.0


def test_a_malformed_summary_is_named(tmp_path):
  os.makedirs(tmp_path / 'runs')
  (tmp_path / 'runs' / 'bad.json').write_text(json.dumps({'settings': {}, 'command': 'x'}))
  with pytest.raises(ValueError, match=r'bad.json: no "results"'):
    summaries.load_runs(str(tmp_path))
  assert dispatch.main([str(tmp_path / 'nowhere')]) == 2


def test_collect_copies_only_finished_runs_of_a_sweep(tmp_path):
  root, experiment = tmp_path / 'sweep_root', tmp_path / 'results_exp'
  (root / 'dataset=svamp,seed=0').mkdir(parents=True)
  (root / 'dataset=svamp,seed=1' / 'checkpoints').mkdir(parents=True)  # unfinished: no summary
  summary = json.dumps({'settings': {'DATASET': 'svamp'}, 'command': 'c', 'results': {}})
  (root / 'dataset=svamp,seed=0' / 'sweep_run.json').write_text(summary)
  assert dispatch.collect(str(root), str(experiment)) == ['dataset=svamp,seed=0']
  assert (experiment / 'runs' / 'dataset=svamp,seed=0.json').read_text() == summary
  assert sorted(os.listdir(experiment / 'runs')) == ['dataset=svamp,seed=0.json']
  with pytest.raises(FileNotFoundError, match='no finished runs'):
    dispatch.collect(str(tmp_path / 'empty'), str(experiment))
