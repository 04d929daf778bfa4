"""Sweeps: the grid from gin, run names and bindings, states, the dry-run listing, and a sweep
killed part way that, started again, skips the finished run, resumes the interrupted one and
ends with the results of an uninterrupted sweep."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dssb import sweep
from dssb.sweep import __main__ as cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ['gin/paper/fig4_fractions.gin', 'gin/cpu/paper_tiny.gin']
# Two runs on SVAMP at the tiny size: standard finetuning, then distilling step-by-step.
TINY = ["sweep.grid.axes={'DATASET': ['svamp'], 'RECIPE': ['standard', 'step_by_step'], "
        "'FRACTION': [0.5], 'SEED': [1]}",
        'TASK_FEATURE_LENGTHS={"inputs": 64, "targets": 16, "rationale_inputs": 64, '
        '"rationale_targets": 48}',
        'BATCH_SIZE=8', 'TRAIN_STEPS=60', 'EVAL_EVERY=30', 'train.checkpoint_every=5',
        'train.log_every=1', 'train.eval_limit=8', 'train.eval_batch_size=8',
        'train.max_decode_length=8', 'train.async_checkpoints=False']
NAMES = ['dataset=svamp,recipe=standard,fraction=0.5,seed=1',
         'dataset=svamp,recipe=step_by_step,fraction=0.5,seed=1']


@pytest.fixture(scope='module', autouse=True)
def env(dss_data_dir, tmp_path_factory):
  saved = dict(os.environ)
  os.environ.update(DSSB_DATA_DIR=dss_data_dir, PYTHONUNBUFFERED='1',
                    DSSB_CACHE_DIR=str(tmp_path_factory.mktemp('cache')))
  yield dict(os.environ)
  os.environ.clear()
  os.environ.update(saved)


def _flags(root, *extra):
  return [f'--gin_file={f}' for f in FILES] + [f'--gin.{b}' for b in TINY] + [
      '--root', str(root), *extra]


def test_grid_expands_to_named_runs_with_one_binding_per_axis():
  spec, runs = cli.load_runs(FILES, ['PRETRAINED=None'])
  assert spec.name == 'fig4_fractions' and spec.size() == len(runs) == 4 * 2 * 5 * 4
  run = runs[0]
  assert dict(run.settings) == {'DATASET': 'esnli', 'RECIPE': 'standard', 'FRACTION': 0.125,
                                'SEED': 0}
  assert run.name == 'dataset=esnli,recipe=standard,fraction=0.125,seed=0'
  assert run.train_bindings('/r') == ('PRETRAINED=None', "DATASET='esnli'", "RECIPE='standard'",
                                      'FRACTION=0.125', 'SEED=0', f"MODEL_DIR='/r/{run.name}'")
  assert len({r.name for r in runs}) == len(runs)
  assert run.command('/r') == (
      'python -m dssb.train --gin_file=gin/paper/fig4_fractions.gin '
      '--gin_file=gin/cpu/paper_tiny.gin --gin.PRETRAINED=None '
      '--gin.DATASET="\'esnli\'" --gin.RECIPE="\'standard\'" --gin.FRACTION=0.125 '
      f'--gin.SEED=0 --gin.MODEL_DIR="\'/r/{run.name}\'"')
  cqa = sweep.select(runs, ['dataset=cqa', 'SEED=3'])
  assert len(cqa) == 2 * 5 and all(dict(r.settings)['DATASET'] == 'cqa' for r in cqa)
  with pytest.raises(ValueError, match='MODEL'):
    sweep.select(runs, ['MODEL=11B'])


def test_file_axis_puts_the_size_file_after_the_sweep_file_before_the_others():
  _, runs = cli.load_runs(['gin/paper/fig6_sizes.gin', 'gin/cpu/paper_tiny.gin'],
                          ['PRETRAINED=None'])
  assert len(runs) == 3 * 4 * 2 * 4
  sizes = {dict(r.settings)['MODEL']: r.gin_files for r in runs}
  assert sizes['11B'] == ('gin/paper/fig6_sizes.gin', 'paper/hsieh_t5_xxl.gin',
                          'gin/cpu/paper_tiny.gin')
  assert runs[0].name.startswith('model=220M,dataset=esnli,')
  assert not any(b.startswith('MODEL=') for b in runs[0].bindings)  # a file, not a binding


def test_bad_grid_values_are_refused_with_the_axis_named():
  with pytest.raises(ValueError, match='axis DATASET'):
    sweep.grid('s', {'DATASET': ['a b']})
  with pytest.raises(ValueError, match='axis SEED .* no values'):
    sweep.grid('s', {'SEED': []})


def test_a_file_without_a_grid_is_reported(capsys):
  assert cli.main(['--gin_file=gin/cpu/svamp_standard.gin', '--dry-run']) == 2
  assert 'sweep.grid.name' in capsys.readouterr().err


def test_states_and_dry_run_listing(tmp_path, capsys):
  """new / partial at step N (finished orbax step folders only) / done (results.json)."""
  _, runs = cli.load_runs(FILES, TINY)
  done, partial = (tmp_path / n for n in NAMES)
  (done / 'checkpoints' / '60').mkdir(parents=True)
  (done / 'results.json').write_text('{}')
  (partial / 'checkpoints' / '15').mkdir(parents=True)
  (partial / 'checkpoints' / '20.orbax-checkpoint-tmp-1').mkdir()
  assert [sweep.state(r, tmp_path).describe() for r in runs] == ['done', 'partial at step 15']
  (done / 'results.json').unlink()
  assert sweep.state(runs[0], tmp_path) == sweep.RunState('partial', 60)
  assert sweep.state(runs[0], tmp_path / 'elsewhere') == sweep.RunState('new')
  (done / 'results.json').write_text('{}')
  assert cli.main(_flags(tmp_path, '--dry-run')) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0] == f'sweep fig4_fractions: 2 runs under {tmp_path} (1 done, 1 partial, 0 new)'
  assert out[1].split() == ['done', NAMES[0]]
  assert out[2].split() == ['partial', 'at', 'step', '15', NAMES[1]]
  assert not (done / sweep.SUMMARY).exists()  # a dry run writes nothing


def _read(path):
  with open(path) as f:
    return json.load(f)


def _train_records(run_dir):
  """{step: (loss, grad_norm, learning_rate)}; each step logged once (a resume drops what a
  killed run wrote past its last checkpoint)."""
  records = {}
  with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      if 'split' not in record:
        assert record['step'] not in records, f"step {record['step']} logged twice"
        records[record['step']] = tuple(record[k] for k in ('loss', 'grad_norm', 'learning_rate'))
  return records


def _comparable(results):
  """results.json without wall-clock fields and the process's memory (a resumed run restarts
  with the keep-freed-memory tunables; the sweep in this process did not)."""
  if isinstance(results, dict):
    return {k: _comparable(v) for k, v in results.items()
            if 'second' not in k and k != 'host_memory'}
  return results


@pytest.mark.slow
def test_killed_sweep_skips_finished_resumes_the_other_and_ends_the_same(env, tmp_path):
  # The uninterrupted sweep, in this process.
  straight = tmp_path / 'straight'
  assert cli.main(_flags(straight)) == 0
  # The same sweep in a process SIGKILLed once the second run has saved a checkpoint.
  killed = tmp_path / 'killed'
  proc = subprocess.Popen([sys.executable, '-m', 'dssb.sweep', *_flags(killed)], cwd=REPO,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  second = killed / NAMES[1]
  deadline = time.time() + 400
  while (time.time() < deadline and proc.poll() is None
         and not sweep.runner.latest_checkpoint_step(second)):
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  first_summary = (killed / NAMES[0] / sweep.SUMMARY)
  assert first_summary.exists() and not (second / sweep.SUMMARY).exists()
  step = sweep.runner.latest_checkpoint_step(second)
  assert 0 < step < 60, step
  before = first_summary.read_text()
  # Started again: the first run is skipped (its summary untouched), the second resumes.
  assert cli.main(_flags(killed)) == 0
  assert first_summary.read_text() == before
  resumed = _read(second / sweep.SUMMARY)
  assert resumed['resumed_from_step'] == step
  assert resumed['settings'] == {'DATASET': 'svamp', 'RECIPE': 'step_by_step',
                                 'FRACTION': 0.5, 'SEED': 1}
  assert resumed['command'].startswith('python -m dssb.train --gin_file=gin/paper/fig4')
  for name in NAMES:
    want, got = _read(straight / name / sweep.SUMMARY), _read(killed / name / sweep.SUMMARY)
    assert got['results'] == _read(killed / name / 'results.json')
    assert _comparable(got['results']) == _comparable(want['results'])
    assert _train_records(killed / name) == _train_records(straight / name)  # bitwise
  # Nothing left to do: a third start trains nothing and rewrites no summary.
  assert cli.main(_flags(killed)) == 0
  assert _read(second / sweep.SUMMARY) == resumed
