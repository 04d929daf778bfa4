"""SkyPilot task files for a sweep: one per run, for TPU pod slices, GPU nodes, Kubernetes, SLURM.

dssb writes no scheduler: `sky jobs launch FILE` (a managed job) provisions the machines,
restarts the job after a preemption or a failure (exit 143 is dssb's "preempted, state saved"),
and the run resumes exactly from its checkpoints in MODEL_DIR on the bucket. What recovery needs
is in each file: MODEL_DIR under a bucket --root (a local one is refused: a new cluster would
not see it), a run command that resumes (rerun, it skips a finished run and resumes a partial
one), `job_recovery` (exit 143 recovers; other failures up to max_restarts_on_errors times).
The same recovery without SkyPilot, for one TPU VM: `run_tpu.sh launch --watch`. Each file runs
`python -m dssb.sweep ... --run NAME`: the run's `python -m dssb.train` command in process (in
the file's header), then its summary (sweep_run.json), so a report reads cluster runs and local
ones alike. SkyPilot is needed only where jobs are launched (requirements-launch.txt); these
files are plain YAML written here without it.

Several hosts: a TPU pod slice runs the command on every worker (SkyPilot does), with
--multihost (JAX finds its peers); GPU nodes (num_nodes > 1) get jax.distributed's coordinator
from SkyPilot's environment (the first node's IP, the node count and rank).
"""

import dataclasses
import os
import re
import shlex
from typing import Optional, Sequence

import yaml

from dssb import paths
from dssb.sweep.spec import Run

COORDINATOR_PORT = 8476
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETUP = 'experiments/setup_accelerator.sh'


@dataclasses.dataclass(frozen=True)
class Cluster:
  """Where the runs go. accelerators: SkyPilot's name, e.g. 'tpu-v4-8', 'tpu-v5litepod-16',
  'H100:8', 'A100-80GB:8'; infra: e.g. 'gcp', 'aws/us-east-1', 'k8s', 'slurm' (None: any)."""
  accelerators: str = 'tpu-v4-8'
  num_nodes: int = 1
  infra: Optional[str] = None
  use_spot: bool = True
  data_dir: str = ''
  max_restarts_on_errors: int = 3

  @property
  def tpu(self) -> bool:
    return self.accelerators.lower().startswith('tpu-')


def task(run: Run, name: str, root: str, cluster: Cluster, sweep_flags: Sequence[str]) -> dict:
  """The SkyPilot task of one run (a dict, written as YAML); `workdir` is this
  checkout, which SkyPilot copies to every node."""
  resources = {'accelerators': cluster.accelerators, 'use_spot': cluster.use_spot,
               'job_recovery': {'max_restarts_on_errors': cluster.max_restarts_on_errors,
                                'recover_on_exit_codes': [143]}}
  if cluster.infra:
    resources['infra'] = cluster.infra
  if cluster.tpu:
    resources['accelerator_args'] = {'runtime_version': 'tpu-ubuntu2204-base'}
  spec = {'name': name, 'resources': resources, 'workdir': REPO,
          'envs': {'DSSB_DATA_DIR': cluster.data_dir}}
  if cluster.num_nodes > 1:
    spec['num_nodes'] = cluster.num_nodes
  spec['setup'] = f'bash {SETUP} {"tpu" if cluster.tpu else "cuda"}\n'
  spec['run'] = _run_script(run, root, cluster, sweep_flags)
  return spec


def _run_script(run: Run, root: str, cluster: Cluster, sweep_flags: Sequence[str]) -> str:
  lines = ['set -e']
  command = ['.venv/bin/python', '-m', 'dssb.sweep', *sweep_flags, '--root', root,
             '--run', run.name]
  if cluster.tpu:
    command.append('--multihost')
  elif cluster.num_nodes > 1:
    lines += ['export DSSB_COORDINATOR="$(echo "$SKYPILOT_NODE_IPS" | head -n1):'
              f'{COORDINATOR_PORT}"',
              'export DSSB_NUM_PROCESSES="$SKYPILOT_NUM_NODES"',
              'export DSSB_PROCESS_ID="$SKYPILOT_NODE_RANK"']
  lines.append(' '.join(_shell_word(c) for c in command))
  return '\n'.join(lines) + '\n'


def _shell_word(word: str) -> str:
  """A --gin.KEY='string' flag as the README writes it (--gin.KEY="'string'"), else quoted."""
  key, _, value = word.partition('=')
  if key.startswith('--gin.') and "'" in value and not re.search(r'["$`\\!]', value):
    return f'{key}="{value}"'
  return shlex.quote(word)


class _Dumper(yaml.SafeDumper):
  """Safe YAML with multi-line strings (setup, run) as literal blocks, as people write them."""


def _string(dumper, text):
  return dumper.represent_scalar('tag:yaml.org,2002:str', text, style='|' if '\n' in text else None)


_Dumper.add_representer(str, _string)


def job_name(run: Run, index: int) -> str:
  """A name SkyPilot accepts ([a-z0-9-], at most 63 characters): sweep, index, settings."""
  text = '-'.join([run.sweep, f'{index:03d}'] + [str(v) for _, v in run.settings])
  return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-')[:63].strip('-')


def emit(runs: Sequence[Run], root: str, cluster: Cluster, sweep_flags: Sequence[str],
         out: str) -> list:
  """Writes OUT/<job name>.yaml per run and OUT/launch.sh; returns the task files."""
  if not paths.is_remote(cluster.data_dir):
    raise ValueError(f'--data_dir {cluster.data_dir!r}: give the data (the datasets/ tree) on a '
                     'bucket every node reads, e.g. --data_dir gs://BUCKET/dss_data')
  if not paths.is_remote(root):
    raise ValueError(f'--root {root!r}: cluster runs need MODEL_DIRs that every host and every '
                     'restart sees: a bucket, e.g. --root gs://BUCKET/sweeps/NAME')
  folder = paths.path(out)
  folder.mkdir(parents=True, exist_ok=True)
  written, launch = [], ['#!/usr/bin/env bash',
                         '# Launches every run as a SkyPilot managed job (restarted after '
                         'preemption; runs resume).', 'set -euo pipefail',
                         'cd "$(dirname "$0")"']
  for i, run in enumerate(runs):
    job = job_name(run, i)
    name = f'{job}.yaml'
    header = (f'# dssb sweep {run.sweep}, run {run.name}\n'
              f'# The training it runs (then its summary): {run.command(root)}\n'
              f'# Launch: sky jobs launch {name}   (follow: sky jobs logs -n {job}; stop: sky '
              f'jobs cancel -n {job})\n'
              f'# Recovery: after a preemption (or exit 143, SIGTERM with its state saved) '
              f'SkyPilot provisions again and reruns setup and run; the run resumes from its '
              f'checkpoints in MODEL_DIR = {run.model_dir(root)}\n')
    (folder / name).write_text(header + yaml.dump(
        task(run, job, root, cluster, sweep_flags), Dumper=_Dumper, sort_keys=False, width=1000))
    launch.append(f'sky jobs launch -y {name}')
    written.append(str(folder / name))
  (folder / 'launch.sh').write_text('\n'.join(launch) + '\n')
  return written
