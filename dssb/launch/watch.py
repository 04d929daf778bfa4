"""The preemption watcher of a pod job (`run_tpu.sh watch`, or `run_tpu.sh launch --watch`).

A spot TPU VM that is preempted stays PREEMPTED (its workers gone) until someone deletes it;
nothing brings the run back. This loop is that someone, as a SkyPilot managed job's controller
is for its jobs: it polls the VM and, after a preemption (or a VM that vanished, or a run that
died on a READY VM), deletes the VM, runs the same `run_tpu.sh launch` command again (create,
set up, start detached), and the run resumes from its checkpoints in MODEL_DIR. One relaunch
at a time (the relaunch runs to its end before the next poll; a lock keeps a second watcher of
the same TPU out), at most `max_relaunches`, with a doubling wait after a failed one. It ends
when the run's summary (MODEL_DIR/results.json) exists, or for a sweep (no single summary)
when every worker exited 0. Every event is one line with a UTC time.

Exit codes: 0 done, 1 gave up (relaunches used up, or exit 0 without a summary), 2 the run
refused its flags (exit 2 on a worker: relaunching cannot help), 3 stopped with `run_tpu.sh
stop`, 4 another watcher holds the TPU's lock.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import os
import subprocess
import time
from typing import Callable, List, Optional, Sequence

from dssb.launch import pod as pod_lib

# A preempted spot VM stays PREEMPTED until deleted; TERMINATED/STOPPED ones keep no run either.
RECREATE = ('PREEMPTED', 'TERMINATED', 'STOPPED')


@dataclasses.dataclass(frozen=True)
class Settings:
  """How the watcher polls and retries (run_tpu.sh watch --help)."""
  done_file: Optional[str] = None  # MODEL_DIR/results.json; None (a sweep): every worker exit 0
  poll_seconds: float = 60.0
  max_relaunches: int = 10
  backoff_seconds: float = 60.0
  max_backoff_seconds: float = 3600.0
  grace_seconds: int = 120  # to stop what is left of a half-dead run before relaunching it
  delete_when_done: bool = False


def log(pod: pod_lib.Pod, message: str) -> None:
  now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
  print(f'{now} watch {pod.tpu}: {message}', flush=True)


def is_done(done_file: Optional[str]) -> bool:
  """Whether the run's summary exists (gs:// through `gcloud storage ls`)."""
  if done_file is None:
    return False
  if '://' not in done_file:
    return os.path.exists(done_file)
  try:
    return pod_lib.gcloud(['gcloud', 'storage', 'ls', done_file], timeout=300).returncode == 0
  except subprocess.TimeoutExpired:
    return False


@contextlib.contextmanager
def watcher_lock(pod: pod_lib.Pod):
  """Yields True while this process is the only watcher of the TPU (False: another one is)."""
  folder = os.path.join(os.path.expanduser('~'), '.cache', 'dssb')
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f'watch-{pod.project or "default"}-{pod.zone}-{pod.tpu}.lock')
  with open(path, 'a+') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      log(pod, f'another watcher of this TPU is running (pid {f.read().strip() or "?"}, lock '
          f'{path}); not starting a second one')
      yield False
      return
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    yield True


def watch(pod: pod_lib.Pod, relaunch: Sequence[str], settings: Settings,
          launch_first: bool = False, sleep: Callable[[float], None] = time.sleep) -> int:
  """Watches the run until it is done; returns the exit code (module docstring)."""
  with watcher_lock(pod) as alone:
    if not alone:
      return 4
    return _watch(pod, list(relaunch), settings, launch_first, sleep)


def _watch(pod, relaunch: List[str], settings: Settings, launch_first: bool, sleep) -> int:
  done_text = settings.done_file or 'every worker exited 0'
  log(pod, f'watching every {settings.poll_seconds:g}s until {done_text}; at most '
      f'{settings.max_relaunches} relaunches; relaunch command: {pod_lib.quoted(relaunch)}')
  relaunches, attempts, failed_in_a_row, seen = 0, 0, 0, None
  while True:
    if is_done(settings.done_file):
      return _finish(pod, settings, f'{settings.done_file} exists: the run is done')
    try:
      vm = pod_lib.describe(pod)
      state = vm.get('state', 'UNKNOWN') if vm else 'absent'
      if state == 'READY':
        workers = pod_lib.workers(pod, pod_lib.worker_count(vm))
        now = 'READY; ' + ', '.join(f'{w.index}: {w.state}' + (
            f' {w.exit_code}' if w.exit_code is not None else '') for w in workers)
        if now != seen:
          log(pod, f'VM {now}')
          seen = now
        verdict = _judge(pod, workers, settings)
    except (pod_lib.GcloudError, subprocess.TimeoutExpired) as e:  # the network, gcloud itself
      log(pod, f'{e}; polling again')
      sleep(settings.poll_seconds)
      continue
    delete_first = state in RECREATE
    if state == 'READY':
      if isinstance(verdict, int):
        return verdict
      if verdict is None:
        sleep(settings.poll_seconds)
        continue
      reason = verdict
    elif state == 'absent' or delete_first:
      if state != seen:
        log(pod, f'VM {state}')
        seen = state
      reason = 'the VM is gone' if state == 'absent' else f'the VM is {state}'
    else:  # CREATING, STARTING, REPAIRING, ...: wait
      if state != seen:
        log(pod, f'VM {state}: waiting')
        seen = state
      sleep(settings.poll_seconds)
      continue

    first = launch_first and attempts == 0  # the watch's own first launch is no relaunch
    if not first and relaunches >= settings.max_relaunches:
      log(pod, f'giving up: {reason}, and all {settings.max_relaunches} relaunches '
          '(--max_relaunches) are used. The checkpoints stay in MODEL_DIR: the same `run_tpu.sh '
          'watch` command resumes the run.')
      return 1
    if failed_in_a_row:
      wait = min(settings.backoff_seconds * 2 ** (failed_in_a_row - 1),
                 settings.max_backoff_seconds)
      log(pod, f'waiting {wait:g}s before the next relaunch (backoff)')
      sleep(wait)
    attempts += 1
    if not first:
      relaunches += 1
    what = 'launch' if first else f'relaunch {relaunches}/{settings.max_relaunches}'
    if delete_first:
      log(pod, f'{what}: {reason}: deleting it')
      try:
        pod_lib.delete(pod)
      except (pod_lib.GcloudError, subprocess.TimeoutExpired) as e:
        log(pod, f'{what} failed: {e}')
        failed_in_a_row += 1
        continue
    log(pod, f'{what}: {reason}: running {pod_lib.quoted(relaunch[:3])} ...')
    code = subprocess.run(relaunch, check=False).returncode
    seen = None
    if code:
      failed_in_a_row += 1
      log(pod, f'{what} failed (exit {code})')
      continue
    failed_in_a_row = 0
    log(pod, f'{what} done: the run is started on every worker (it resumes from MODEL_DIR)')
    sleep(settings.poll_seconds)


def _judge(pod, workers: List[pod_lib.Worker], settings: Settings):
  """On a READY VM: None (all is well, or unknown: poll again), an exit code (the watch ends), or
  the reason to relaunch."""
  states = {w.state for w in workers}
  if 'no-answer' in states:
    return None  # ssh failed (a preemption under way?); the next poll tells
  if states == {'running'}:
    return None
  if any(w.stopped for w in workers):
    log(pod, 'the run was stopped with `run_tpu.sh stop`: not relaunching it')
    return 3
  codes = {w.exit_code for w in workers if w.state == 'exited'}
  if states == {'exited'} and codes == {0}:
    if settings.done_file is None:
      return _finish(pod, settings, 'every worker exited 0: the run is done')
    if is_done(settings.done_file):
      return _finish(pod, settings, f'{settings.done_file} exists: the run is done')
    log(pod, f'every worker exited 0 but {settings.done_file} is missing: see `run_tpu.sh logs`')
    return 1
  if 2 in codes:
    log(pod, 'the run exited with code 2 (bad flags or gin settings) on a worker; relaunching '
        'cannot help: see `run_tpu.sh logs`')
    return 2
  if states == {'not-started'}:
    return 'no run on the workers'
  if states == {'running', 'exited'} and codes == {0}:
    return None  # a run that is ending: the workers exit one after another
  if 'running' in states:
    log(pod, 'the run ended on some workers only: stopping it on the others')
    for line in pod_lib.stop(pod, settings.grace_seconds, mark=False):
      log(pod, line)
  return 'the run is not running: ' + ', '.join(
      w.describe() for w in workers if w.state != 'running')


def _finish(pod, settings: Settings, message: str) -> int:
  log(pod, message)
  if settings.delete_when_done:
    log(pod, 'deleting the VM (--delete_when_done)')
    pod_lib.delete(pod)
  return 0


def main(pod: pod_lib.Pod, relaunch: Sequence[str], settings: Settings,
         launch_first: bool) -> int:
  try:
    return watch(pod, relaunch, settings, launch_first)
  except KeyboardInterrupt:
    log(pod, 'interrupted; the run goes on (watch again to keep it alive)')
    return 130
