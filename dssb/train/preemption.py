"""Preemption: SIGTERM (a TPU/GPU preemption notice, `scancel`, `kill`) becomes a save-and-stop.

The handler only sets a flag, which the loop reads between steps (on every host, so all hosts
stop at the same step); the loop saves and raises `Preempted`, which the command line turns into
exit code 143 (128 + SIGTERM), what schedulers expect. The previous handler is restored on the
way out, so a library caller's own handling is left as it was.
"""

import contextlib
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preempted(Exception):
  """The run saved its state after a SIGTERM and stopped; the same command resumes it."""


class SigtermFlag:
  """Set by SIGTERM; `any_host()` agrees on it across hosts."""

  def __init__(self):
    self.requested = False

  def set(self, signum=None, frame=None):  # pylint: disable=unused-argument
    self.requested = True

  def any_host(self) -> bool:
    if jax.process_count() == 1:
      return self.requested
    return bool(multihost_utils.process_allgather(np.array(self.requested)).any())


@contextlib.contextmanager
def sigterm_flag():
  """Yields a SigtermFlag set by SIGTERM while the block runs (main thread only: signal handlers
  cannot be set elsewhere, and there the flag just stays unset)."""
  flag = SigtermFlag()
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return
  previous = signal.signal(signal.SIGTERM, flag.set)
  try:
    yield flag
  finally:
    signal.signal(signal.SIGTERM, previous)
