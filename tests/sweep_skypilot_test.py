"""SkyPilot task files of a sweep, loaded with SkyPilot's own parser (sky.Task.from_yaml), and
what each one runs on a TPU pod slice and on several GPU nodes. Nothing is launched.

SkyPilot lives in its own environment (requirements-launch.txt: its pins conflict with the
training set); the parser runs there: $DSSB_LAUNCH_PYTHON, or .venv-launch/bin/python, which
experiments/setup.sh creates.
"""

import json
import os
import shlex
import subprocess

import pytest
import yaml

from dssb.sweep import __main__ as cli
from dssb.sweep import skypilot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = ['--gin_file=gin/paper/fig6_sizes.gin', "--gin.PRETRAINED='gs://t5-data/x'",
         '--only', 'DATASET=cqa', '--only', 'SEED=0']
PARSE = """
import json, sys
import sky
tasks = [sky.Task.from_yaml(path) for path in sys.argv[1:]]
print(json.dumps([{'name': t.name, 'num_nodes': t.num_nodes, 'run': t.run, 'setup': t.setup,
                   'envs': t.envs, 'resources': [str(r) for r in t.resources],
                   'job_recovery': [r.job_recovery for r in t.resources]} for t in tasks]))
"""


def _launch_python():
  path = os.environ.get('DSSB_LAUNCH_PYTHON') or os.path.join(REPO, '.venv-launch', 'bin',
                                                              'python')
  if not os.path.exists(path):
    pytest.skip(f'no SkyPilot environment at {path} (bash experiments/setup.sh creates it)')
  return path


def _sky_parse(files):
  """SkyPilot's view of the files (in its environment, from another folder, offline)."""
  proc = subprocess.run([_launch_python(), '-c', PARSE, *files], capture_output=True, text=True,
                        timeout=300, cwd='/')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.splitlines()[-1])


def _emit(tmp_path, *flags):
  out = tmp_path / 'sky'
  assert cli.main(SWEEP + ['--root', 'gs://bkt/fig6', '--emit-skypilot', str(out),
                           '--data_dir', 'gs://bkt/dss_data', *flags]) == 0
  files = sorted(str(p) for p in out.glob('*.yaml'))
  return out, files


def test_tpu_pod_tasks_parse_and_run_each_run_on_all_hosts(tmp_path):
  out, files = _emit(tmp_path, '--accelerators', 'tpu-v4-32')
  assert len(files) == 3 * 2  # sizes x recipes (cqa, seed 0)
  tasks = _sky_parse(files)
  _, runs = cli.load_runs(['gin/paper/fig6_sizes.gin'], ["PRETRAINED='gs://t5-data/x'"])
  runs = [r for r in runs if dict(r.settings)['DATASET'] == 'cqa' and
          dict(r.settings)['SEED'] == 0]
  for task, run, path in zip(tasks, runs, files):
    assert 'tpu-v4-32' in task['resources'][0] and 'Spot' in task['resources'][0]
    assert task['envs']['DSSB_DATA_DIR'] == 'gs://bkt/dss_data'
    assert task['setup'].strip() == 'bash experiments/setup_accelerator.sh tpu'
    command = shlex.split(task['run'].splitlines()[-1])
    assert command[:3] == ['.venv/bin/python', '-m', 'dssb.sweep']
    assert command[command.index('--run') + 1] == run.name and '--multihost' in command
    assert "--gin.PRETRAINED='gs://t5-data/x'" in command
    # The same flags list and run the same run here (the header names its dssb.train command).
    assert cli.parse_args(command[3:])[0].run == run.name
    with open(path) as f:
      text = f.read()
    assert run.command('gs://bkt/fig6') in text
    spec = yaml.safe_load(text)
    assert spec['workdir'] == REPO
    # What a managed job's recovery needs, as SkyPilot read it: exit 143 (SIGTERM, state saved)
    # recovers, other failures a few times; the run's MODEL_DIR is on the bucket, and the
    # command that resumes it is the task's run.
    assert task['job_recovery'] == [{'max_restarts_on_errors': 3, 'recover_on_exit_codes': [143],
                                     'strategy': None}]  # None: SkyPilot's default strategy
    assert command[command.index('--root') + 1] == 'gs://bkt/fig6'
    assert f'MODEL_DIR = gs://bkt/fig6/{run.name}' in text
    assert f"sky jobs logs -n {task['name']}" in text
    assert f"sky jobs cancel -n {task['name']}" in text
  launch = (out / 'launch.sh').read_text().splitlines()
  assert [line.split()[-1] for line in launch if line.startswith('sky jobs launch')] == [
      os.path.basename(f) for f in files]
  assert len({t['name'] for t in tasks}) == len(tasks)


@pytest.mark.parametrize('infra', ['k8s', 'slurm', None])
def test_gpu_nodes_get_the_coordinator_from_skypilot(tmp_path, infra):
  flags = ['--accelerators', 'H100:8', '--num_nodes', '2', '--on_demand']
  _, files = _emit(tmp_path, *flags, *(['--infra', infra] if infra else []))
  task = _sky_parse(files[:1])[0]
  assert task['num_nodes'] == 2 and 'H100' in task['resources'][0]
  assert 'Spot' not in task['resources'][0]
  assert task['setup'].strip() == 'bash experiments/setup_accelerator.sh cuda'
  assert 'DSSB_COORDINATOR="$(echo "$SKYPILOT_NODE_IPS" | head -n1):' in task['run']
  assert 'DSSB_PROCESS_ID="$SKYPILOT_NODE_RANK"' in task['run']
  assert '--multihost' not in task['run']


def test_local_root_or_data_are_refused(tmp_path, capsys):
  base = SWEEP + ['--emit-skypilot', str(tmp_path / 'sky')]
  assert cli.main(base + ['--root', str(tmp_path), '--data_dir', 'gs://b/d']) == 2
  assert 'bucket' in capsys.readouterr().err
  assert cli.main(base + ['--root', 'gs://b/r']) == 2
  assert '--data_dir' in capsys.readouterr().err
  assert not (tmp_path / 'sky').exists()


def test_job_names_are_valid_and_distinct():
  _, runs = cli.load_runs(['gin/paper/fig8_sizes_fractions.gin'], ['PRETRAINED=None'])
  names = [skypilot.job_name(r, i) for i, r in enumerate(runs)]
  assert len(set(names)) == len(runs)
  assert all(len(n) <= 63 and n.replace('-', '').isalnum() and n == n.lower() for n in names)
