"""run_tpu.sh launch: --dry-run prints the sequence (create or reuse the TPU VM, refuse a VM where
a run is alive, copy the checkout, set up every worker, data to GCS, start detached with
--multihost) and runs nothing; without it, the same gcloud commands run against a fake gcloud
(tests/fake_gcloud.py: Google Cloud cannot be reached here) and an existing VM is reused."""

import os
import shlex
import subprocess

import pytest

import fake_gcloud

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ['--tpu', 'dssb-v4', '--zone', 'us-central2-b', '--accelerator_type', 'v4-32',
        '--data', 'gs://bkt/dss_data']
FLAGS = ['--gin_file=gin/paper/table1_2.gin', "--gin.MODEL_DIR='gs://bkt/runs/a b'",
         "--gin.PRETRAINED='gs://t5-data/pretrained_models/t5x/t5_1_1_base/checkpoint_1000000'"]
VM = ['gcloud', 'compute', 'tpus', 'tpu-vm']


@pytest.fixture
def gcloud(tmp_path):
  """A fake `gcloud` first on PATH that records its calls; the VM does not exist yet."""
  root = tmp_path / 'cloud'
  env = fake_gcloud.install(root, workers=2, creating_polls=0)
  yield env, root
  fake_gcloud.kill_vm(root)


def _run_tpu(env, *args):
  return subprocess.run(['bash', 'run_tpu.sh', *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=120)


def _start_command(line):
  """The run's words in the detached start command: after `worker.sh LOGS SECONDS env`."""
  words = shlex.split(line[-1].removeprefix('--command='))
  return words, words[words.index('dssb/launch/worker.sh') + 1:words.index('>>')]


def test_dry_run_prints_the_sequence_and_runs_nothing(gcloud):
  env, root = gcloud
  proc = _run_tpu(env, '--dry-run', *ARGS, '--local_data', '../shared/dss_data', '--spot',
                  '--', *FLAGS)
  assert proc.returncode == 0, proc.stderr
  assert not fake_gcloud.calls(root) and not (root / 'dssb-dssb-v4.tar.gz').exists()
  lines = [shlex.split(l) for l in proc.stdout.splitlines() if not l.startswith('#')]
  assert [l[:5] for l in lines] == [
      VM + ['describe'], VM + ['create'], VM + ['ssh'], ['bash', '-c', lines[3][2]],
      VM + ['scp'], VM + ['ssh'], VM + ['ssh'],
      ['gcloud', 'storage', 'rsync', '--recursive', '../shared/dss_data'], VM + ['ssh']]
  assert {'--accelerator-type=v4-32', '--spot', '--zone=us-central2-b'} <= set(lines[1])
  assert all('--worker=all' in l for l in lines[4:7] + lines[8:])
  assert 'a run is still running' in lines[2][-1]  # a reused VM's live run is refused
  assert 'setup_accelerator.sh tpu' in lines[6][-1]
  assert lines[7][-1] == 'gs://bkt/dss_data'
  words, run = _start_command(lines[8])
  assert 'setsid' in words and 'nohup' in words and '>>' in words and '&' in words
  assert words[words.index('>>') + 1] == '~/dssb-run/log'  # shlex keeps the ~ for the worker
  assert run[:2] == ['gs://bkt/runs/a b/logs', '60']  # logs copied to MODEL_DIR, every 60 s
  assert run[2:8] == ['env', 'DSSB_DATA_DIR=gs://bkt/dss_data', '.venv/bin/python', '-m',
                      'dssb.train', '--multihost']
  assert run[8:] == FLAGS  # the run's own flags, intact through two levels of quoting


@pytest.mark.parametrize('verb', [['launch', '--watch'], ['watch']])
def test_a_watched_dry_run_runs_nothing_either(gcloud, verb):
  env, root = gcloud
  proc = _run_tpu(env, verb[0], '--dry-run', *ARGS, *verb[1:], '--', *FLAGS)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines()[-1].startswith('# then: bash run_tpu.sh watch')
  assert not fake_gcloud.calls(root)


def test_sweep_mode_launches_dssb_sweep(gcloud):
  env, _ = gcloud
  proc = _run_tpu(env, '--dry-run', *ARGS, '--sweep', '--', '--gin_file=gin/paper/fig4.gin',
                  '--root', 'gs://bkt/fig4')
  last = [l for l in proc.stdout.splitlines() if not l.startswith('#')][-1]
  _, run = _start_command(shlex.split(last))
  assert run[0] == 'gs://bkt/fig4/logs'  # a sweep's logs go to its root
  assert run[6:] == ['dssb.sweep', '--multihost', '--gin_file=gin/paper/fig4.gin', '--root',
                     'gs://bkt/fig4']


def test_queued_resources_are_created_where_asked(gcloud):
  env, _ = gcloud
  proc = _run_tpu(env, '--dry-run', *ARGS, '--queued', '--', *FLAGS)
  create = shlex.split(proc.stdout.splitlines()[2])
  assert create[:6] == ['gcloud', 'compute', 'tpus', 'queued-resources', 'create', 'dssb-v4']
  assert {'--node-id=dssb-v4', '--spot', '--runtime-version=tpu-ubuntu2204-base'} <= set(create)
  assert _run_tpu(env, '--dry-run', *ARGS, '--queued', '--spot', '--', *FLAGS).returncode == 2


def test_without_dry_run_the_same_commands_run_and_a_vm_is_reused(gcloud, tmp_path):
  env, root = gcloud
  printed = _run_tpu(env, '--dry-run', *ARGS, '--', *FLAGS).stdout
  printed = [shlex.split(l)[1:] for l in printed.splitlines() if l.startswith('gcloud')]
  refuse = printed[2]
  printed = [c for c in printed if c[3] != 'describe']  # run for real, describe also waits
  proc = _run_tpu(env, *ARGS, '--', *FLAGS)  # the VM does not exist: created
  assert proc.returncode == 0, proc.stderr
  assert os.path.getsize(os.path.join(env['TMPDIR'], 'dssb-dssb-v4.tar.gz')) > 0  # packed
  ran = [c['args'] for c in fake_gcloud.calls(root) if 'describe' not in c['args']
         and c['args'][0] != 'storage']  # (the workers copy their logs with gcloud storage)
  assert ran == [c for c in printed if c != refuse]  # created: nothing to refuse
  for worker in (0, 1):  # the checkout is unpacked on every worker
    assert os.path.exists(os.path.join(fake_gcloud.worker_home(root, worker), 'dssb',
                                       'run_tpu.sh'))
  (root / 'calls.jsonl').unlink()
  # The run failed at once (no .venv on the fake workers) but its worker.sh may still be copying
  # its log: launching now is refused ('a run is still running'), as it should be. Wait it out.
  assert fake_gcloud.wait_idle(root, timeout=60)
  assert _run_tpu(env, *ARGS, '--', *FLAGS).returncode == 0  # the VM exists: reused
  ran = [c['args'] for c in fake_gcloud.calls(root) if 'describe' not in c['args']
         and c['args'][0] != 'storage']
  assert ran == [c for c in printed if c[3] != 'create']


@pytest.mark.parametrize('drop', ['--tpu', '--zone', '--accelerator_type', '--data'])
def test_missing_settings_are_named(gcloud, drop):
  env, root = gcloud
  i = ARGS.index(drop)
  proc = _run_tpu(env, '--dry-run', *(ARGS[:i] + ARGS[i + 2:]), '--', *FLAGS)
  assert proc.returncode == 2 and f'{drop} is required' in proc.stderr
  assert not fake_gcloud.calls(root)


@pytest.mark.parametrize('verb', ['launch', 'status', 'logs', 'stop', 'delete', 'watch'])
def test_every_verb_has_help(gcloud, verb):
  env, root = gcloud
  proc = _run_tpu(env, verb, '--help')
  assert proc.returncode == 0 and f'run_tpu.sh {verb}' in proc.stdout, proc.stderr
  assert not fake_gcloud.calls(root)
