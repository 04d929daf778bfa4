"""run_tpu.sh: --dry-run prints the sequence (create or reuse the TPU VM, copy the checkout, set
up every worker, data to GCS, launch with --multihost) and runs nothing; without it, the same
gcloud commands run (a recording `gcloud` on PATH stands in for Google Cloud, which cannot be
reached here) and an existing VM is reused."""

import os
import shlex
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ['--tpu', 'dssb-v4', '--zone', 'us-central2-b', '--accelerator_type', 'v4-32',
        '--data', 'gs://bkt/dss_data']
FLAGS = ['--gin_file=gin/paper/table1_2.gin', "--gin.MODEL_DIR='gs://bkt/runs/a b'",
         "--gin.PRETRAINED='gs://t5-data/pretrained_models/t5x/t5_1_1_base/checkpoint_1000000'"]
FAKE_GCLOUD = """#!/usr/bin/env bash
printf '%s\\n' "$(printf '%q ' "$@")" >> "$GCLOUD_LOG"
if [ "$4" = describe ]; then exit "${DESCRIBE_EXIT:-1}"; fi
"""


@pytest.fixture
def gcloud(tmp_path):
  """A `gcloud` first on PATH that records its arguments (one line per call)."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'gcloud').write_text(FAKE_GCLOUD)
  (bin_dir / 'gcloud').chmod(0o755)
  log = tmp_path / 'gcloud.log'
  env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', GCLOUD_LOG=str(log),
             TMPDIR=str(tmp_path))
  return env, log


def _run_tpu(env, *args):
  return subprocess.run(['bash', 'run_tpu.sh', *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=120)


def _calls(log):
  return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_dry_run_prints_the_sequence_and_runs_nothing(gcloud, tmp_path):
  env, log = gcloud
  proc = _run_tpu(env, '--dry-run', *ARGS, '--local_data', '../shared/dss_data', '--spot',
                  '--', *FLAGS)
  assert proc.returncode == 0, proc.stderr
  assert not log.exists() and not (tmp_path / 'dssb-dssb-v4.tar.gz').exists()
  lines = [shlex.split(l) for l in proc.stdout.splitlines() if not l.startswith('#')]
  vm = ['gcloud', 'compute', 'tpus', 'tpu-vm']
  assert [l[:5] for l in lines] == [
      vm + ['describe'], vm + ['create'], ['bash', '-c', lines[2][2]], vm + ['scp'],
      vm + ['ssh'], vm + ['ssh'], ['gcloud', 'storage', 'rsync', '--recursive',
                                   '../shared/dss_data'], vm + ['ssh']]
  assert {'--accelerator-type=v4-32', '--spot', '--zone=us-central2-b'} <= set(lines[1])
  assert all('--worker=all' in l for l in lines[3:6] + lines[7:])
  assert 'setup_accelerator.sh tpu' in lines[5][-1]
  assert lines[6][-1] == 'gs://bkt/dss_data'
  command = shlex.split(lines[7][-1].removeprefix('--command='))
  assert command[:3] == ['cd', 'dssb', '&&']
  assert command[3:8] == ['DSSB_DATA_DIR=gs://bkt/dss_data', '.venv/bin/python', '-m',
                          'dssb.train', '--multihost']
  assert command[8:] == FLAGS  # the run's own flags, intact through two levels of quoting


def test_sweep_mode_launches_dssb_sweep(gcloud):
  env, _ = gcloud
  proc = _run_tpu(env, '--dry-run', *ARGS, '--sweep', '--', '--gin_file=gin/paper/fig4.gin')
  launch = shlex.split(shlex.split(proc.stdout.splitlines()[-1])[-1].removeprefix('--command='))
  assert launch[6:9] == ['dssb.sweep', '--multihost', '--gin_file=gin/paper/fig4.gin']


def test_without_dry_run_the_same_commands_run_and_a_vm_is_reused(gcloud):
  env, log = gcloud
  printed = _run_tpu(env, '--dry-run', *ARGS, '--', *FLAGS).stdout
  printed_gcloud = [shlex.split(l) for l in printed.splitlines() if l.startswith('gcloud')]
  proc = _run_tpu(dict(env, DESCRIBE_EXIT='0'), *ARGS, '--', *FLAGS)
  assert proc.returncode == 0, proc.stderr
  assert os.path.getsize(os.path.join(env['TMPDIR'], 'dssb-dssb-v4.tar.gz')) > 0  # packed
  calls = _calls(log)
  assert calls == [c[1:] for c in printed_gcloud if c[4] != 'create']  # reused: no create
  log.unlink()
  assert _run_tpu(dict(env, DESCRIBE_EXIT='1'), *ARGS, '--', *FLAGS).returncode == 0
  assert [c[1:] for c in printed_gcloud] == _calls(log)  # created when describe fails


@pytest.mark.parametrize('drop', ['--tpu', '--zone', '--accelerator_type', '--data'])
def test_missing_settings_are_named(gcloud, drop):
  env, log = gcloud
  i = ARGS.index(drop)
  proc = _run_tpu(env, '--dry-run', *(ARGS[:i] + ARGS[i + 2:]), '--', *FLAGS)
  assert proc.returncode == 2 and f'{drop} is required' in proc.stderr
  assert not log.exists()
