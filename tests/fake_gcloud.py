"""A `gcloud` for tests: one TPU VM whose workers are folders on this machine (test support).

Google Cloud cannot be reached here, so this plays it, first on PATH (`install`):
- Every call is recorded (calls.jsonl: its arguments, start and end time, exit code).
- The VM has a life: `create` makes it CREATING for `creating_polls` describes, then READY, with
  fresh (empty) worker disks; `preempt` (the test says when) kills every process on the VM with
  SIGKILL, as losing the machine does, and leaves it PREEMPTED (or gone); `delete` removes it.
  So a watched run lives READY -> PREEMPTED -> absent -> CREATING -> READY. `create_failures`
  failed creates come first (no spot capacity), and `describe_errors` failed describes.
- `ssh --worker=all|N --command=C` runs C with bash in each worker's folder (its HOME), all at
  once; TPU_WORKER_ID is the worker's number (the metadata server's answer on a TPU VM), and
  FAKE_TPU_VM marks every process started there (so a preemption finds them all). `scp` copies
  to every worker. Where a real worker differs, the command is changed, and only there: the
  set-up step (setup_accelerator.sh: pip installs) links the worker's .venv to $FAKE_VENV; gs://
  paths are the local folder that stands in for the bucket; `--multihost` (JAX asks the TPU
  metadata for its peers) becomes explicit coordinator flags, or goes for one worker.
- `storage ls|cp|rsync|cat` work on that folder (gs://BUCKET/x is ROOT/gcs/BUCKET/x).
Used as a program (the `gcloud` that `install` writes runs this file) and as a module (tests
preempt the VM, read the calls, kill what is left).
"""

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

VM_PREFIX = ['compute', 'tpus', 'tpu-vm']
QR_PREFIX = ['compute', 'tpus', 'queued-resources']


def install(root, workers=1, state='absent', creating_polls=1, create_failures=0, venv='',
            silent_workers=(), describe_errors=0):
  """Writes ROOT/bin/gcloud and the VM's state; returns the environment that uses them."""
  root = str(root)
  os.makedirs(os.path.join(root, 'bin'), exist_ok=True)
  os.makedirs(os.path.join(root, 'gcs'), exist_ok=True)
  gcloud = os.path.join(root, 'bin', 'gcloud')
  with open(gcloud, 'w') as f:
    f.write(f'#!/bin/sh\nexec {sys.executable} {os.path.abspath(__file__)} "$@"\n')
  os.chmod(gcloud, 0o755)
  vm = {'state': None if state == 'absent' else state, 'workers': workers,
        'creating_polls': creating_polls, 'creating_left': creating_polls,
        'create_failures': create_failures, 'silent_workers': list(silent_workers),
        'describe_errors': describe_errors}
  if vm['state']:
    _fresh_disks(root, vm)
  _write(root, vm)
  return dict(os.environ, PATH=f'{root}/bin:{os.environ["PATH"]}', FAKE_GCLOUD_ROOT=root,
              FAKE_VENV=venv, TMPDIR=root)


def gcs(root, path=''):
  """The local folder that stands in for gs://PATH."""
  return os.path.join(str(root), 'gcs', path.removeprefix('gs://'))


def worker_home(root, index):
  return os.path.join(str(root), 'workers', str(index))


def calls(root):
  """Every recorded call: {'args', 'start', 'end', 'rc'}, in the order they ended."""
  path = os.path.join(str(root), 'calls.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


def preempt(root, vanish=False):
  """The VM is preempted now: every process on it is killed; it is PREEMPTED (or gone)."""
  with _state(root) as vm:
    kill_vm(root)
    vm['state'] = None if vanish else 'PREEMPTED'


def _vm_processes(root):
  """Process ids started on the VM: their environment names it (a zombie's has none)."""
  marker = f'FAKE_TPU_VM={os.path.abspath(str(root))}'.encode()
  for pid in os.listdir('/proc'):
    if not pid.isdigit() or int(pid) == os.getpid():
      continue
    try:
      with open(f'/proc/{pid}/environ', 'rb') as f:
        if marker in f.read().split(b'\0'):
          yield int(pid)
    except OSError:
      pass


def wait_idle(root, timeout=60):
  """Waits until nothing runs on the VM any more (a run that failed at once still copies its
  log on the way out); False if something still runs after timeout seconds."""
  deadline = time.time() + timeout
  while any(True for _ in _vm_processes(root)):
    if time.time() > deadline:
      return False
    time.sleep(0.1)
  return True


def kill_vm(root):
  """SIGKILL to every process started on the VM (tests call it in `finally` too)."""
  for pid in _vm_processes(root):
    try:
      os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass


def _write(root, vm):
  with open(os.path.join(root, 'vm.json.tmp'), 'w') as f:
    json.dump(vm, f)
  os.replace(os.path.join(root, 'vm.json.tmp'), os.path.join(root, 'vm.json'))


@contextlib.contextmanager
def _state(root):
  """The VM's state, read and written under a lock (the watcher and the test race)."""
  root = str(root)
  with open(os.path.join(root, 'vm.lock'), 'a') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    with open(os.path.join(root, 'vm.json')) as f:
      vm = json.load(f)
    yield vm
    _write(root, vm)


def _fresh_disks(root, vm):
  kill_vm(root)
  shutil.rmtree(os.path.join(root, 'workers'), ignore_errors=True)
  for i in range(vm['workers']):
    os.makedirs(worker_home(root, i))


def _option(args, name, default=None):
  for arg in args:
    if arg.startswith(f'--{name}='):
      return arg.split('=', 1)[1]
  return default


def _describe(root, args):
  with _state(root) as vm:
    if vm['describe_errors'] > 0:  # the network, or Google's API, fails now and then
      vm['describe_errors'] -= 1
      print('ERROR: (gcloud.compute.tpus.tpu-vm.describe) UNAVAILABLE: connection reset',
            file=sys.stderr)
      return 1
    if vm['state'] == 'CREATING':
      if vm['creating_left'] <= 0:
        vm['state'] = 'READY'
      vm['creating_left'] -= 1
    state, count = vm['state'], vm['workers']
  if state is None:
    print(f'ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: {args[3]} not found',
          file=sys.stderr)
    return 1
  if _option(args, 'format') == 'value(state)':
    print(state)
  else:
    print(json.dumps({'name': args[3], 'state': state, 'acceleratorType': 'v4-fake',
                      'networkEndpoints': [{'ipAddress': f'10.0.0.{i}'}
                                           for i in range(count)]}))
  return 0


def _describe_queued(root, args):
  """A queued resource lives as long as its VM here (ACTIVE); a preempted one is SUSPENDED."""
  with _state(root) as vm:
    state = vm['state']
  if state is None:
    print(f'ERROR: NOT_FOUND: queued resource {args[4]}', file=sys.stderr)
    return 1
  state = 'SUSPENDED' if state == 'PREEMPTED' else 'ACTIVE'
  print(state if _option(args, 'format') == 'value(state.state)' else
        json.dumps({'name': args[4], 'state': {'state': state}}))
  return 0


def _create(root, name):
  with _state(root) as vm:
    if vm['state'] is not None:
      print(f'ERROR: ALREADY_EXISTS: {name}', file=sys.stderr)
      return 1
    if vm['create_failures'] > 0:
      vm['create_failures'] -= 1
      print('ERROR: RESOURCE_EXHAUSTED: no spot capacity in the zone', file=sys.stderr)
      return 1
    _fresh_disks(root, vm)
    vm['state'] = 'CREATING' if vm['creating_polls'] else 'READY'
    vm['creating_left'] = vm['creating_polls']
  return 0


def _delete(root, name):
  with _state(root) as vm:
    if vm['state'] is None:
      print(f'ERROR: NOT_FOUND: {name}', file=sys.stderr)
      return 1
    kill_vm(root)
    vm['state'] = None
  return 0


def _on_workers(root, args):
  """The workers a command reaches, or an exit code when it cannot run (VM not READY)."""
  with _state(root) as vm:
    state, count, silent = vm['state'], vm['workers'], vm['silent_workers']
  if state != 'READY':
    print(f'ERROR: (gcloud.compute.tpus.tpu-vm.ssh) the TPU is {state or "not found"}',
          file=sys.stderr)
    return 255
  worker = _option(args, 'worker', '0')
  chosen = range(count) if worker == 'all' else [int(worker)]
  return [i for i in chosen if i not in silent]


def _worker_command(root, command, index, count, port):
  if 'setup_accelerator.sh' in command:  # pip installs: the test's environment stands in
    venv = os.environ.get('FAKE_VENV', '')
    return f'cd dssb && ln -sfn {venv} .venv' if venv else 'true'
  command = command.replace('gs://', gcs(root))
  hosts = ('' if count == 1 else f' --coordinator_address=127.0.0.1:{port} '
           f'--num_processes={count} --process_id={index}')
  return command.replace(' --multihost', hosts)


def _ssh(root, args):
  workers = _on_workers(root, args)
  if isinstance(workers, int):
    return workers
  with _state(root) as vm:
    count = vm['workers']
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  command = _option(args, 'command')
  procs = []
  for i in workers:
    home = worker_home(root, i)
    env = dict(os.environ, HOME=home, TPU_WORKER_ID=str(i),
               FAKE_TPU_VM=os.path.abspath(root))
    worker_command = _worker_command(root, command, i, count, port)
    procs.append(subprocess.Popen(['bash', '-c', worker_command], cwd=home, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  codes = []
  for proc in procs:
    out, err = proc.communicate()
    sys.stdout.write(out)
    sys.stderr.write(err)
    codes.append(proc.returncode)
  return max(codes, default=0)


def _scp(root, args):
  workers = _on_workers(root, args)
  if isinstance(workers, int):
    return workers
  source, target = args[4], args[5]  # scp SOURCE TPU:TARGET
  for i in workers:
    shutil.copy(source, os.path.join(worker_home(root, i), target.split(':', 1)[1]))
  return 0


def _local(root, path):
  return gcs(root, path) if path.startswith('gs://') else path


def _storage(root, args):
  verb, paths = args[1], [a for a in args[2:] if not a.startswith('-')]
  if verb == 'ls':
    if not os.path.exists(_local(root, paths[0])):
      print('ERROR: One or more URLs matched no objects.', file=sys.stderr)
      return 1
    print(paths[0])
  elif verb == 'cat':
    with open(_local(root, paths[0])) as f:
      sys.stdout.write(f.read())
  elif verb == 'cp':
    target = _local(root, paths[1])
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy(_local(root, paths[0]), target)
  elif verb == 'rsync':
    shutil.copytree(_local(root, paths[0]), _local(root, paths[1]), dirs_exist_ok=True,
                    symlinks=True)
  else:
    print(f'fake gcloud: storage {verb} is not played', file=sys.stderr)
    return 2
  return 0


def main(args):
  root = os.environ['FAKE_GCLOUD_ROOT']
  start = time.time()
  if args[:3] == VM_PREFIX and len(args) > 3:
    verb = args[3]
    name = args[4] if len(args) > 4 else ''
    rest = [args[0], args[1], args[2], name, *args[5:]]
    rc = {'describe': lambda: _describe(root, rest),
          'create': lambda: _create(root, name),
          'delete': lambda: _delete(root, name),
          'ssh': lambda: _ssh(root, rest),
          'scp': lambda: _scp(root, args)}.get(verb, lambda: 2)()
  elif args[:3] == QR_PREFIX and len(args) > 4:
    rc = {'describe': lambda: _describe_queued(root, args),
          'create': lambda: _create(root, args[4]),
          'delete': lambda: _delete(root, args[4])}.get(args[3], lambda: 2)()
  elif args[:1] == ['storage'] and len(args) > 2:
    rc = _storage(root, args)
  else:
    print(f'fake gcloud: {args} is not played', file=sys.stderr)
    rc = 2
  sys.stdout.flush()
  with open(os.path.join(root, 'calls.jsonl'), 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.write(json.dumps({'args': args, 'start': start, 'end': time.time(), 'rc': rc}) + '\n')
  return rc


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
