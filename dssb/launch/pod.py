"""The launcher half of a pod job: a TPU VM's state, the run on each of its workers, and the
gcloud commands that stop it, show its logs or delete the VM (`run_tpu.sh status|logs|stop|
delete`; the watcher in watch.py is built on them).

A run started by run_tpu.sh lives on every worker in ~/dssb-run (dssb/launch/worker.sh):
  pid        the run's process group (it was started under setsid)
  log        its stdout and stderr (copied to MODEL_DIR/logs/worker-N.log as it goes)
  exit_code  written when it ends (143: SIGTERM, state saved)
  stopped    written by `stop`, so that a watcher leaves a stopped run alone
A worker knows its number from the TPU VM's metadata server (TPU_WORKER_ID where it is set).
Standard library only: this runs on the workstation, where no dssb environment may exist.
"""

import dataclasses
import json
import shlex
import subprocess
from typing import List, Optional, Sequence

RUN_DIR = '~/dssb-run'
WORKER_ID = ('${TPU_WORKER_ID:-$(curl -sf -m 10 -H Metadata-Flavor:Google http://metadata.'
             'google.internal/computeMetadata/v1/instance/attributes/agent-worker-number)}')
# Whether a process group has a live process (zombies, which an init may reap late, do not count).
ALIVE = ('alive() { ps -eo pgid=,stat= | awk -v p="$1" \'$1 == p && $2 !~ /^Z/ {f = 1} '
         'END {exit !f}\'; }')
# One line per worker: `dssb-worker N STATE PID CODE STOPPED<TAB>last line of the log`.
STATUS = f"""{ALIVE}; D={RUN_DIR}; W={WORKER_ID}; P=$(cat $D/pid 2>/dev/null); C=-
if [ -z "$P" ]; then S=not-started
elif alive "$P"; then S=running
elif [ -f $D/exit_code ]; then S=exited; C=$(cat $D/exit_code)
else S=killed; fi
L=$(tail -c 4000 $D/log 2>/dev/null | tr '\\r\\t' '\\n ' | grep -v '^ *$' | tail -n 1 |
   cut -c 1-100)
echo "dssb-worker $W $S ${{P:--}} $C $([ -f $D/stopped ] && echo 1 || echo 0)\t$L\""""
# SIGTERM to the run's group, SIGKILL to what is left after GRACE seconds (counted in polls of
# 0.2 s: bash's $SECONDS is whole seconds, and cut the grace short by up to one); one line per
# worker.
STOP = f"""{ALIVE}; D={RUN_DIR}; W={WORKER_ID}; P=$(cat $D/pid 2>/dev/null)
if [ -z "$P" ] || ! alive "$P"; then echo "dssb-worker $W not running"; exit 0; fi
MARK
kill -TERM -- "-$P"; n=$((GRACE * 5))
while alive "$P" && [ $n -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
if alive "$P"; then kill -KILL -- "-$P"; sleep 0.2
  [ -f $D/exit_code ] || echo 137 > $D/exit_code
  echo "dssb-worker $W SIGKILL after GRACEs: group $P"
else echo "dssb-worker $W stopped: group $P, exit code $(cat $D/exit_code 2>/dev/null)"; fi"""


class GcloudError(RuntimeError):
  """A gcloud command failed for another reason than the VM not existing."""


@dataclasses.dataclass(frozen=True)
class Pod:
  """A TPU VM (or a queued resource of the same name) in a zone."""
  tpu: str
  zone: str
  project: str = ''
  queued: bool = False

  def where(self) -> List[str]:
    return [f'--zone={self.zone}'] + ([f'--project={self.project}'] if self.project else [])

  def ssh(self, worker: str, command: str) -> List[str]:
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', self.tpu, f'--worker={worker}',
            *self.where(), f'--command={command}']


@dataclasses.dataclass(frozen=True)
class Worker:
  """The run on one worker, as STATUS saw it."""
  index: int
  state: str  # running, exited, killed, not-started, no-answer
  pid: Optional[int] = None
  exit_code: Optional[int] = None
  stopped: bool = False
  last_line: str = ''

  def describe(self) -> str:
    what = {'running': f'running (pid {self.pid})', 'killed': 'killed (no exit code)',
            'exited': f'exited with code {self.exit_code}', 'not-started': 'not started',
            'no-answer': 'no answer'}[self.state]
    if self.stopped:
      what += ', stopped by run_tpu.sh stop'
    return f'worker {self.index}: {what}' + (f' | {self.last_line}' if self.last_line else '')


def gcloud(args: Sequence[str], timeout: Optional[float] = None) -> subprocess.CompletedProcess:
  return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                        check=False)


# A queued resource without its VM: still to come (wait), or lost (delete it and queue again).
QUEUED_WAITING = ('ACCEPTED', 'WAITING_FOR_RESOURCES', 'PROVISIONING', 'CREATING', 'ACTIVE')


def describe(pod: Pod) -> Optional[dict]:
  """The VM's description (state, networkEndpoints, ...), or None when it does not exist. For a
  queued resource whose VM does not exist (yet, or any more), its state says what to do: one
  still waiting reads as CREATING, a suspended or failed one as PREEMPTED."""
  vm = _describe(pod, ['tpu-vm'])
  if vm is not None or not pod.queued:
    return vm
  queued = _describe(pod, ['queued-resources'])
  if queued is None:
    return None
  state = (queued.get('state') or {}).get('state', 'UNKNOWN')
  return {'state': 'CREATING' if state in QUEUED_WAITING else 'PREEMPTED',
          'queuedResource': state}


def _describe(pod: Pod, kind: List[str]) -> Optional[dict]:
  proc = gcloud(['gcloud', 'compute', 'tpus', *kind, 'describe', pod.tpu, *pod.where(),
                 '--format=json'], timeout=300)
  if proc.returncode == 0:
    return json.loads(proc.stdout)
  if 'NOT_FOUND' in proc.stderr or 'not found' in proc.stderr.lower():
    return None
  raise GcloudError(f'describe {pod.tpu}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}')


def worker_count(vm: dict) -> int:
  return max(1, len(vm.get('networkEndpoints') or []))


def parse_workers(text: str, count: int) -> List[Worker]:
  """One Worker per index below `count` from STATUS's lines (other output is ignored); a worker
  that printed no line is 'no-answer'."""
  seen = {}
  for line in text.splitlines():
    head, _, last = line.partition('\t')
    fields = head.split()
    if len(fields) != 6 or fields[0] != 'dssb-worker' or not fields[1].isdigit():
      continue
    _, index, state, pid, code, stopped = fields
    seen[int(index)] = Worker(int(index), state, int(pid) if pid.isdigit() else None,
                              int(code) if code.lstrip('-').isdigit() else None,
                              stopped == '1', last.strip())
  return [seen.get(i, Worker(i, 'no-answer')) for i in range(count)]


def workers(pod: Pod, count: int) -> List[Worker]:
  """The run's state on every worker (one ssh to all of them)."""
  proc = gcloud(pod.ssh('all', STATUS), timeout=600)
  return parse_workers(proc.stdout, count)


def status(pod: Pod) -> List[str]:
  """`run_tpu.sh status`: the VM's state, then one line per worker."""
  vm = describe(pod)
  if vm is None:
    return [f'TPU {pod.tpu} ({pod.zone}): does not exist']
  count = worker_count(vm)
  lines = [f"TPU {pod.tpu} ({pod.zone}): {vm.get('state', '?')}, "
           f"{vm.get('acceleratorType', '?')}, {count} worker{'s' * (count > 1)}"]
  if vm.get('state') == 'READY':
    lines += [w.describe() for w in workers(pod, count)]
  return lines


def stop(pod: Pod, grace_seconds: int, mark: bool = True) -> List[str]:
  """SIGTERM to the run on every worker, SIGKILL after grace_seconds; with `mark`, the run is
  recorded as stopped (a watcher then ends instead of relaunching it)."""
  command = STOP.replace('MARK', f'touch {RUN_DIR}/stopped' if mark else ':').replace(
      'GRACE', str(int(grace_seconds)))
  proc = gcloud(pod.ssh('all', command), timeout=grace_seconds + 600)
  lines = sorted(l for l in proc.stdout.splitlines() if l.startswith('dssb-worker '))
  if proc.returncode and not lines:
    raise GcloudError(f'stop: exit {proc.returncode}: {proc.stderr.strip()[-500:]}')
  return lines


def delete(pod: Pod) -> None:
  """Deletes the VM (or its queued resource, VM included); waits until it is gone."""
  if pod.queued:
    args = ['gcloud', 'compute', 'tpus', 'queued-resources', 'delete', pod.tpu, *pod.where(),
            '--force', '--quiet']
  else:
    args = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', pod.tpu, *pod.where(), '--quiet']
  proc = gcloud(args, timeout=1800)
  if proc.returncode and describe(pod) is not None:
    raise GcloudError(f'delete {pod.tpu}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}')


def logs_command(pod: Pod, lines: int, worker: Optional[int], follow: bool) -> List[str]:
  """The ssh command that shows the last `lines` of each worker's log (prefixed with the
  worker), or follows one worker's log."""
  log = f'{RUN_DIR}/log'
  if follow:
    return pod.ssh(str(worker or 0), f'tail -n {int(lines)} -F {log}')
  show = (f'W={WORKER_ID}; tail -n {int(lines)} {log} 2>/dev/null | tr "\\r" "\\n" | '
          f'sed "s/^/[worker $W] /" || echo "[worker $W] no log"')
  return pod.ssh('all' if worker is None else str(worker), show)


def quoted(args: Sequence[str]) -> str:
  return ' '.join(shlex.quote(a) for a in args)
