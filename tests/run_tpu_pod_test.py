"""run_tpu.sh's pod-job verbs against a fake gcloud (tests/fake_gcloud.py) whose workers are
folders on this machine: the detached launch, status, stop (SIGTERM, then SIGKILL) and the
watcher through preemptions, a retry bound, a finished run and a second watcher.

What runs on the fake workers is a stand-in trainer (FAKE_TRAINER below: it trains for
FAKE_TRAIN_SECONDS, handles SIGTERM as dssb.train does, and worker 0 writes results.json), so
these tests take seconds; run_tpu_e2e_test.py runs the real trainer."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

import fake_gcloud
from dssb.launch import pod as pod_lib
from dssb.launch import watch as watch_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POD = ['--tpu', 'pod', '--zone', 'us-central2-b']
MODEL_DIR = 'gs://bkt/runs/a'
LAUNCH = [*POD, '--accelerator_type', 'v4-16', '--data', 'gs://bkt/dss_data', '--spot',
          '--poll_seconds', '0.2', '--log_copy_seconds', '1', '--', '--gin_file=x.gin',
          f"--gin.MODEL_DIR='{MODEL_DIR}'"]
FAKE_TRAINER = r"""#!/usr/bin/env bash
for a in "$@"; do case "$a" in --gin.MODEL_DIR=*) d=${a#--gin.MODEL_DIR=}; d=${d//\'/} ;; esac
done
echo "trainer on worker $TPU_WORKER_ID: $*"
if [ "$TPU_WORKER_ID" = "${FAKE_IGNORE_TERM:-}" ]; then trap 'echo ignored TERM' TERM
else trap 'echo got TERM; exit 143' TERM; fi
end=$((SECONDS + ${FAKE_TRAIN_SECONDS:-3}))
while [ $SECONDS -lt $end ]; do sleep 0.1; done
if [ "$TPU_WORKER_ID" = 0 ]; then mkdir -p "$d" && echo '{"last": {}}' > "$d/results.json"; fi
echo trainer done
"""
STAMP = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ watch pod: ')


@pytest.fixture
def cloud(tmp_path):
  """(install(**settings) -> env, root): a fake gcloud whose workers run FAKE_TRAINER; every
  process left on the VM is killed at the end."""
  venv = tmp_path / 'venv'
  (venv / 'bin').mkdir(parents=True)
  (venv / 'bin' / 'python').write_text(FAKE_TRAINER)
  (venv / 'bin' / 'python').chmod(0o755)
  root = tmp_path / 'cloud'

  def install(**settings):
    env = fake_gcloud.install(root, venv=str(venv), **settings)
    env['HOME'] = str(tmp_path / 'home')  # the watcher's lock lives there
    return env

  yield install, root
  fake_gcloud.kill_vm(root)


def _run_tpu(env, *args, timeout=120):
  return subprocess.run(['bash', 'run_tpu.sh', *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _pid(root, worker):
  with open(os.path.join(fake_gcloud.worker_home(root, worker), 'dssb-run', 'pid')) as f:
    return int(f.read())


def _alive(pid):
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except FileNotFoundError:
    return False


def _wait(predicate, timeout=60, what=''):
  deadline = time.time() + timeout
  while not predicate():
    assert time.time() < deadline, f'timed out waiting for {what}'
    time.sleep(0.1)


def _starts(root):
  return [c for c in fake_gcloud.calls(root) if c['args'][3:4] == ['ssh']
          and 'setsid nohup' in c['args'][-1]]


def test_launch_returns_with_the_run_detached_on_every_worker(cloud):
  install, root = cloud
  env = install(workers=2, state='READY')
  env['FAKE_TRAIN_SECONDS'] = '60'
  began = time.time()
  proc = _run_tpu(env, *LAUNCH)
  assert proc.returncode == 0, proc.stderr
  assert time.time() - began < 30  # returned long before the 60 s run ends
  assert 'bash run_tpu.sh logs --tpu pod --zone us-central2-b --follow' in proc.stdout
  for worker in (0, 1):
    pid = _pid(root, worker)
    assert _alive(pid) and os.getsid(pid) == pid  # its own session: no ssh hangs it up
    log = os.path.join(fake_gcloud.worker_home(root, worker), 'dssb-run', 'log')
    _wait(lambda: 'trainer on worker' in open(log).read(), 30, 'the trainer')
    # The log reaches MODEL_DIR while the run goes (every --log_copy_seconds).
    copy = fake_gcloud.gcs(root, f'{MODEL_DIR}/logs/worker-{worker}.log')
    _wait(lambda: os.path.exists(copy) and 'trainer on worker' in open(copy).read(), 30,
          'the log copy')
  assert len(_starts(root)) == 1
  # A second launch while it runs is refused before anything is copied or installed.
  calls_before = len(fake_gcloud.calls(root))
  again = _run_tpu(env, *LAUNCH)
  assert again.returncode != 0 and 'a run is still running on this worker' in again.stderr
  new = [c['args'] for c in fake_gcloud.calls(root)[calls_before:]]
  assert not [c for c in new if c[3:4] == ['scp'] or 'setsid nohup' in c[-1]]


def test_status_says_one_line_per_worker(cloud):
  install, root = cloud
  env = install(workers=4, state='READY', silent_workers=[3])
  env['FAKE_TRAIN_SECONDS'] = '60'
  assert _run_tpu(env, *LAUNCH).returncode == 0
  _wait(lambda: all(os.path.exists(os.path.join(fake_gcloud.worker_home(root, w), 'dssb-run',
                                                'pid')) for w in (0, 1, 2)), 30, 'pids')
  _wait(lambda: 'trainer on' in open(os.path.join(fake_gcloud.worker_home(root, 1),
                                                  'dssb-run', 'log')).read(), 30, 'trainer 1')
  worker_1 = _pid(root, 1)
  os.killpg(worker_1, signal.SIGTERM)  # worker 1's run saves and exits 143
  os.killpg(_pid(root, 2), signal.SIGKILL)  # worker 2: never started
  os.remove(os.path.join(fake_gcloud.worker_home(root, 2), 'dssb-run', 'pid'))
  _wait(lambda: os.path.exists(os.path.join(fake_gcloud.worker_home(root, 1), 'dssb-run',
                                            'exit_code')), 30, 'exit code')
  # worker.sh writes the code, then copies the log once more: until then its group is running.
  _wait(lambda: not _alive(worker_1), 30, "worker 1's last log copy")
  proc = _run_tpu(env, 'status', *POD)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[0] == 'TPU pod (us-central2-b): READY, v4-fake, 4 workers'
  assert [l.split(' | ')[0] for l in lines[1:]] == [
      f'worker 0: running (pid {_pid(root, 0)})', 'worker 1: exited with code 143',
      'worker 2: not started', 'worker 3: no answer']
  assert 'exit code 143' in lines[2]  # the last line of its log
  logs = _run_tpu(env, 'logs', *POD, '--lines', '5').stdout.splitlines()
  shown = {l.split(']')[0] + ']' for l in logs}  # worker 2 may have been killed before a line
  assert {'[worker 0]', '[worker 1]'} <= shown <= {'[worker 0]', '[worker 1]', '[worker 2]'}
  assert '[worker 1] got TERM' in logs
  deleted = _run_tpu(env, 'delete', *POD)
  assert deleted.returncode == 0 and deleted.stdout.strip() == 'deleted pod', deleted.stderr
  assert _run_tpu(env, 'status', *POD).stdout.strip() == 'TPU pod (us-central2-b): does not exist'
  assert not _alive(_pid(root, 0))  # (the fake's delete takes the processes with it)


def test_parse_workers_ignores_other_output_and_names_the_silent():
  text = ('Warning: permanently added host\n'
          'dssb-worker 1 exited - 2 0\tgin: bad setting\n'
          'dssb-worker 0 running 41 - 1\t\n')
  workers = pod_lib.parse_workers(text, 3)
  assert workers == [pod_lib.Worker(0, 'running', 41, None, True, ''),
                     pod_lib.Worker(1, 'exited', None, 2, False, 'gin: bad setting'),
                     pod_lib.Worker(2, 'no-answer')]
  assert workers[0].describe() == 'worker 0: running (pid 41), stopped by run_tpu.sh stop'


def test_stop_sends_sigterm_then_sigkill_to_the_recorded_groups(cloud):
  install, root = cloud
  env = install(workers=2, state='READY')
  env.update(FAKE_TRAIN_SECONDS='60', FAKE_IGNORE_TERM='1')  # worker 1 ignores SIGTERM
  assert _run_tpu(env, *LAUNCH).returncode == 0
  logs = [os.path.join(fake_gcloud.worker_home(root, w), 'dssb-run', 'log') for w in (0, 1)]
  for log in logs:
    _wait(lambda log=log: 'trainer on' in open(log).read(), 30, 'the trainers')
  pids = [_pid(root, 0), _pid(root, 1)]
  began = time.time()
  proc = _run_tpu(env, 'stop', *POD, '--grace_seconds', '2')
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines() == [
      f'dssb-worker 0 stopped: group {pids[0]}, exit code 143',
      f'dssb-worker 1 SIGKILL after 2s: group {pids[1]}']
  assert time.time() - began >= 2  # worker 1 had its grace period
  assert 'got TERM' in open(logs[0]).read() and 'ignored TERM' in open(logs[1]).read()
  assert not any(_alive(p) for p in pids)
  status = _run_tpu(env, 'status', *POD).stdout.splitlines()[1:]
  assert [l.split(' | ')[0] for l in status] == [
      'worker 0: exited with code 143, stopped by run_tpu.sh stop',
      'worker 1: exited with code 137, stopped by run_tpu.sh stop']


def _watcher(env, *args):
  out = open(os.path.join(env['FAKE_GCLOUD_ROOT'], 'watch.log'), 'w')
  return subprocess.Popen(['bash', 'run_tpu.sh', *args], cwd=REPO, env=env, stdout=out,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _watch_log(env):
  with open(os.path.join(env['FAKE_GCLOUD_ROOT'], 'watch.log')) as f:
    return f.read()


def _events(env):
  return [l for l in _watch_log(env).splitlines() if STAMP.match(l)]


def _stop_watcher(proc):
  if proc.poll() is None:
    os.killpg(proc.pid, signal.SIGKILL)
  proc.wait(timeout=30)


def test_watcher_relaunches_once_per_preemption_and_ends_at_results(cloud):
  install, root = cloud
  env = install(workers=2, creating_polls=2)
  env['FAKE_TRAIN_SECONDS'] = '8'  # the window in which the watcher must see the run up
  watcher = _watcher(env, 'launch', *LAUNCH[:-3], '--watch', '--max_relaunches', '3',
                     '--backoff_seconds', '0.1', *LAUNCH[-3:])
  try:
    for preemption in (1, 2):
      # The run is up on both workers (after the first launch, then after a relaunch) ...
      _wait(lambda n=preemption: sum('0: running, 1: running' in l for l in _events(env)) == n,
            90, f'the run, before preemption {preemption}:\n{_watch_log(env)}')
      fake_gcloud.preempt(root)  # ... and the VM is preempted: processes SIGKILLed
    assert watcher.wait(timeout=120) == 0, _watch_log(env)
  finally:
    _stop_watcher(watcher)
  events = _events(env)
  assert all(STAMP.match(l) for l in _watch_log(env).splitlines() if ' watch pod: ' in l)
  relaunches = [l for l in events if ': the VM is PREEMPTED: deleting it' in l]
  assert [l.split('watch pod: ')[1].split(':')[0] for l in relaunches] == [
      'relaunch 1/3', 'relaunch 2/3']
  assert f'{MODEL_DIR}/results.json exists: the run is done' in events[-1]
  # The VM's life, from the calls: one start per launch, a delete and a create per preemption,
  # and each start only after the previous one ended (no two launches in flight).
  calls = fake_gcloud.calls(root)
  life = [c['args'][3] for c in calls if c['args'][3:4] in (['create'], ['delete'])
          or c in _starts(root)]
  assert life == ['create', 'ssh', 'delete', 'create', 'ssh', 'delete', 'create', 'ssh']
  starts = _starts(root)
  assert all(a['end'] < b['start'] for a, b in zip(starts, starts[1:]))
  with open(fake_gcloud.gcs(root, f'{MODEL_DIR}/results.json')) as f:
    assert json.load(f) == {'last': {}}


def test_watcher_gives_up_after_the_retry_bound(cloud):
  install, root = cloud
  env = install(workers=1, create_failures=99)  # no capacity, ever
  proc = _run_tpu(env, 'watch', *LAUNCH[:-3], '--max_relaunches', '2', '--backoff_seconds',
                  '0.2', *LAUNCH[-3:])
  assert proc.returncode == 1
  events = [l for l in proc.stdout.splitlines() if STAMP.match(l)]
  text = '\n'.join(events)
  assert 'launch: the VM is gone' in text  # the first launch is not a relaunch
  assert 'waiting 0.2s before' in text and 'waiting 0.4s before' in text  # doubling backoff
  assert 'relaunch 2/2' in text and 'relaunch 3/' not in text
  assert 'giving up: the VM is gone, and all 2 relaunches (--max_relaunches) are used' in text
  assert 'RESOURCE_EXHAUSTED' in proc.stderr  # gcloud's reason reaches the user
  creates = [c for c in fake_gcloud.calls(root) if c['args'][3:4] == ['create']]
  assert len(creates) == 3 and all(c['rc'] == 1 for c in creates)


def test_watcher_ends_at_an_existing_summary_and_allows_one_watcher_per_tpu(cloud):
  install, root = cloud
  env = install(workers=1, state='CREATING', creating_polls=10 ** 6, describe_errors=2)
  first = _watcher(env, 'watch', *LAUNCH)  # the VM is never READY
  try:
    _wait(lambda: 'VM CREATING: waiting' in _watch_log(env), 60, 'the first watcher')
    assert _watch_log(env).count('UNAVAILABLE: connection reset; polling again') == 2
    second = _run_tpu(env, 'watch', *LAUNCH)
    assert second.returncode == 4
    assert 'another watcher of this TPU is running' in second.stdout
  finally:
    _stop_watcher(first)
  summary = fake_gcloud.gcs(root, f'{MODEL_DIR}/results.json')
  os.makedirs(os.path.dirname(summary))
  with open(summary, 'w') as f:
    f.write('{}')
  calls = len(fake_gcloud.calls(root))
  done = _run_tpu(env, 'watch', *LAUNCH)
  assert done.returncode == 0 and 'exists: the run is done' in done.stdout
  assert [c['args'][:2] for c in fake_gcloud.calls(root)[calls:]] == [['storage', 'ls']]


def test_a_stopped_run_is_not_relaunched(cloud):
  install, root = cloud
  env = install(workers=2, state='READY')
  env['FAKE_TRAIN_SECONDS'] = '60'
  watcher = _watcher(env, 'watch', *LAUNCH)
  try:
    _wait(lambda: '0: running, 1: running' in _watch_log(env), 60, 'the run')
    assert _run_tpu(env, 'stop', *POD, '--grace_seconds', '5').returncode == 0
    assert watcher.wait(timeout=60) == 3
  finally:
    _stop_watcher(watcher)
  assert 'stopped with `run_tpu.sh stop`: not relaunching' in _watch_log(env)
  assert len(_starts(root)) == 1


def test_a_sweep_on_a_queued_resource_is_watched_until_every_worker_exits_0(cloud):
  install, root = cloud
  env = install(workers=2, creating_polls=1)
  env['FAKE_TRAIN_SECONDS'] = '6'
  assert LAUNCH[8] == '--spot' and LAUNCH[13] == '--'
  watcher = _watcher(env, 'launch', *LAUNCH[:8], '--queued', '--sweep', '--watch',
                     *LAUNCH[9:14], '--gin_file=x.gin', '--root', 'gs://bkt/sweep')
  try:
    _wait(lambda: '0: running, 1: running' in _watch_log(env), 90, 'the run')
    fake_gcloud.preempt(root)
    assert watcher.wait(timeout=120) == 0, _watch_log(env)
  finally:
    _stop_watcher(watcher)
  assert 'every worker exited 0: the run is done' in _events(env)[-1]  # a sweep: no results.json
  assert sum('the VM is PREEMPTED: deleting it' in l for l in _events(env)) == 1
  calls = [c['args'] for c in fake_gcloud.calls(root)]
  queued = [c for c in calls if c[:3] == ['compute', 'tpus', 'queued-resources']
            and c[3] != 'describe']
  assert [c[3:5] for c in queued] == [['create', 'pod'], ['delete', 'pod'], ['create', 'pod']]
  assert {'--node-id=pod', '--spot'} <= set(queued[0]) and '--force' in queued[1]
  assert not [c for c in calls if c[2:4] in (['tpu-vm', 'create'], ['tpu-vm', 'delete'])]
  assert all('-m dssb.sweep --multihost' in c['args'][-1] for c in _starts(root))
  assert os.path.exists(fake_gcloud.gcs(root, 'gs://bkt/sweep/logs/worker-1.log'))


def test_a_run_whose_workers_exit_0_one_after_another_is_left_to_end():
  """Workers of a finishing run exit at different moments: a poll between two exits must wait,
  not stop the others and relaunch (a CI run caught a third start that way); a worker that
  failed while others run is a half-dead run."""
  pod = pod_lib.Pod('pod', 'zone')
  ending = [pod_lib.Worker(0, 'running', pid=11), pod_lib.Worker(1, 'exited', exit_code=0)]
  judge = watch_lib._judge  # pylint: disable=protected-access
  assert judge(pod, ending, watch_lib.Settings()) is None
  failed = [pod_lib.Worker(0, 'exited', exit_code=1), pod_lib.Worker(1, 'not-started')]
  assert judge(pod, failed, watch_lib.Settings()).startswith('the run is not running')
