"""Two jax.distributed processes on this machine, as the multi-host tests start them: each with
its output in a file (a full pipe cannot stall a host in a collective) and PYTHONFAULTHANDLER on,
so a host that aborts, or that `run` aborts, shows every thread's stack in its log."""

import os
import signal
import socket
import subprocess
import time


def run(command_of_host, log_paths, env=None, cwd=None, timeout: float = 600,
        linger: float = 120):
  """Starts one process per log path, `command_of_host(process_id, coordinator_port)`, and
  returns their exit codes. A host still running `linger` seconds after another one ended is
  aborted (SIGABRT), as is every host still running at `timeout`."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(os.environ if env is None else env, PYTHONFAULTHANDLER='1')
  procs = []
  for i, log_path in enumerate(log_paths):
    with open(log_path, 'w') as log:
      procs.append(subprocess.Popen(command_of_host(i, port), cwd=cwd, env=env, stdout=log,
                                    stderr=subprocess.STDOUT))
  start, first_end = time.time(), None
  while any(p.poll() is None for p in procs):
    now = time.time()
    if first_end is None and any(p.poll() is not None for p in procs):
      first_end = now
    if now - start > timeout or (first_end is not None and now - first_end > linger):
      for p in procs:
        if p.poll() is None:
          p.send_signal(signal.SIGABRT)
      for p in procs:
        p.wait(timeout=60)
      break
    time.sleep(0.2)
  return [p.returncode for p in procs]
