"""Host memory: keep freed memory in the process instead of handing it back to the OS.

Why: XLA:CPU and PyTorch allocate a step's buffers with malloc and free them at its end. glibc
serves large blocks with mmap (threads' arenas, too) and returns them to the kernel when they
are freed, so every step faults its gigabytes in again, page by page. Measured on a CQA
step-by-step batch of 64 at the paper's settings (experiments/profile_train_step.py,
results/perf/train_step_profile_default_malloc.md): 1.56 million minor page faults and 14.3 s
of kernel CPU time (both threads) in an 18.7 s dssb step; with every freed byte kept, none, and a
12.0 s step (train_step_profile.md at commit 056b46a); bounded, the default, 3,374 faults on huge
pages, 2.0 s of kernel time and a 12.2 s step (results/perf/train_step_profile.md).

glibc reads these settings (tunables) when a process starts. mallopt could set them later, but
it takes an int, which caps the trim threshold at 2 GiB, below one step's buffers (measured: a
sixth of the faults gone). So the command line starts itself again, once, with the tunables in
its environment: the same process id, arguments and environment otherwise.

DSSB_KEEP_FREED_MEMORY picks the setting:
- bounded (the default): blocks under 32 MiB kept; larger ones mmap'd and handed back when
  freed, on transparent huge pages (one 2 MiB fault for 512 small ones).
- 1: every freed byte kept (the heap never shrinks). The fastest CPU step, but a kept heap only
  grows, and it fragments: a small block placed in the hole a step's large buffer left makes
  the next step's buffer of that size miss the hole and extend the heap.
- 0: glibc's default.
Measured stepping through three bucket shapes at the paper's settings
(results/perf/malloc_settings.md): the kept heap held 12.9 GB in one run and 18.6 GB in
another; bounded peaked at 13.5 GB at 0.87x the kept heap's step speed (glibc's default 13.7 GB,
0.72x). The paper-settings benchmark under bounded (results/perf/paper_settings_bounded.md):
dssb's bucketed trainer peaked at 9.8 GB (15.8 GB kept), still 1.28x the official trainer's
examples/s. Bounded is the default because a run that swaps loses far more than an eighth.

The bound: a kept heap only grows. One process that runs parts with different buffers (the
trainer's steps and its evaluation's decoding; a benchmark's contenders, dssb's and PyTorch's)
would keep the high-water mark of every part, plus the holes between them. So at each change
of part, release_freed_memory hands every kept free page back (glibc's malloc_trim(0), which
also frees whole pages inside the heap); the next part faults its buffers in once, then keeps
them. The trainer does it after each evaluation (one step in eval_every pays the faults).
"""

import ctypes
import os
import sys

TUNABLES = ':'.join((
    'glibc.malloc.mmap_max=0',  # no mmap'd blocks: those go back to the OS when freed
    'glibc.malloc.trim_threshold=1099511627776',  # never trim the heap's top (1 TiB)
    'glibc.malloc.top_pad=1073741824',  # grow the heap 1 GiB at a time
    'glibc.malloc.arena_max=1'))  # one arena: no thread's arena falls back to mmap
# DSSB_KEEP_FREED_MEMORY=bounded: blocks of 32 MiB and more mmap'd (glibc's largest mmap
# threshold; a larger value is ignored) and returned when freed; no top_pad, whose slack would
# serve them before mmap is tried; the rest kept; transparent huge pages (madvise).
BOUNDED_TUNABLES = ':'.join((
    'glibc.malloc.mmap_threshold=33554432', 'glibc.malloc.trim_threshold=1099511627776',
    'glibc.malloc.arena_max=1', 'glibc.malloc.hugetlb=1'))
MODES = {'bounded': BOUNDED_TUNABLES, '1': TUNABLES}  # DSSB_KEEP_FREED_MEMORY -> tunables
DEFAULT = 'bounded'


def mode() -> str:
  """The setting this process runs under: 'kept', 'bounded' or 'off' (glibc's default)."""
  tunables = os.environ.get('GLIBC_TUNABLES', '')
  if TUNABLES in tunables:
    return 'kept'
  return 'bounded' if BOUNDED_TUNABLES in tunables else 'off'


def keeps_freed_memory() -> bool:
  return mode() != 'off'


def restart_keeping_freed_memory() -> None:
  """Replaces this process by itself with the tunables of DSSB_KEEP_FREED_MEMORY (default
  'bounded': BOUNDED_TUNABLES; '1': TUNABLES; '0': none) (Linux; once)."""
  wanted = os.environ.get('DSSB_KEEP_FREED_MEMORY') or DEFAULT
  if wanted not in MODES and wanted != '0':
    raise ValueError(f'DSSB_KEEP_FREED_MEMORY={wanted!r}: expected bounded, 1 or 0')
  if not sys.platform.startswith('linux') or keeps_freed_memory() or wanted == '0':
    return
  env = dict(os.environ)
  env['GLIBC_TUNABLES'] = ':'.join(filter(None, (env.get('GLIBC_TUNABLES'), MODES[wanted])))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)


def release_freed_memory() -> bool:
  """Returns the free memory glibc keeps to the OS (malloc_trim(0)); False without glibc."""
  try:
    libc = ctypes.CDLL('libc.so.6')
  except OSError:
    return False
  libc.malloc_trim(0)
  return True


def rss_mib() -> float:
  """Resident memory of this process now, in MiB (Linux; 0 elsewhere)."""
  try:
    with open('/proc/self/statm') as f:
      return round(int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20, 1)
  except OSError:
    return 0.0


def peak_rss_mib(children: bool = False) -> float:
  """Peak resident memory in MiB of this process, or with children=True of its largest finished
  child process.

  This process: its memory's high-water mark (VmHWM in /proc/self/status where there is one).
  Not getrusage's ru_maxrss: Linux carries the high-water mark of the memory a process replaced
  at exec into it, and a child that Python starts with vfork replaces its PARENT's memory, so a
  small child of a 4 GB process reported 4 GB (tests/host_memory_test.py). The children's figure
  has only getrusage, with that flaw: read it as at least the parent's peak when it was spawned.
  """
  import resource  # pylint: disable=g-import-not-at-top  (Unix only)
  if not children:
    try:
      with open('/proc/self/status') as f:
        for line in f:
          if line.startswith('VmHWM:'):
            return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
      pass
  who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
  kib = resource.getrusage(who).ru_maxrss  # KiB on Linux
  return round(kib / 1024, 1)


def report() -> dict:
  """What a benchmark or a run's summary records about host memory."""
  kind = mode()
  return {'peak_rss_mib': peak_rss_mib(), 'keeps_freed_memory': kind != 'off',
          'malloc_mode': kind,
          'tunables': {'kept': TUNABLES, 'bounded': BOUNDED_TUNABLES}.get(kind)}
