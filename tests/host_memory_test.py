"""dssb.host_memory: a restarted process keeps freed memory (all of it with
DSSB_KEEP_FREED_MEMORY=1; by default, bounded, blocks under 32 MiB); glibc's own default faults a
freed block in again."""

import json
import os
import subprocess
import sys

import pytest

from dssb import host_memory

# Frees and reallocates a 512 MiB buffer (the size of a train step's temporaries) and reports
# the page faults of touching it the second time.
PROBE = """
import json, resource, sys
from dssb import host_memory
host_memory.restart_keeping_freed_memory()
import numpy as np
np.ones(1 << 26).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones(1 << 26).sum()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({'faults': faults, 'kept': host_memory.keeps_freed_memory(), 'argv': sys.argv}))
"""


def _probe(**env):
  proc = subprocess.run([sys.executable, '-c', PROBE, 'an-arg'], env=dict(os.environ, **env),
                        capture_output=True, text=True, timeout=120, check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc tunables: Linux')
def test_restarted_process_reuses_freed_memory_without_page_faults():
  kept = _probe(GLIBC_TUNABLES='', DSSB_KEEP_FREED_MEMORY='1')
  default = _probe(DSSB_KEEP_FREED_MEMORY='0')
  assert kept['kept'] and not default['kept']
  assert kept['argv'] == ['-c', 'an-arg']  # the same arguments after the restart
  # glibc handed the block back and it faults in again: at least one fault per 2 MiB (numpy asks
  # for transparent huge pages), 256 of them for 512 MiB; kept, it is touched without faults.
  assert default['faults'] >= 200, default
  assert kept['faults'] < default['faults'] // 10, (kept, default)


def test_restart_happens_once(monkeypatch):
  monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.check=0:' + host_memory.TUNABLES)
  monkeypatch.setattr(os, 'execve', lambda *a: pytest.fail(f'restarted again: {a}'))
  host_memory.restart_keeping_freed_memory()


def test_peak_rss_counts_a_touched_block():
  """A process that touched 512 MiB reports a peak of at least that; its parent sees it as its
  largest child."""
  code = ('import json, numpy as np; from dssb import host_memory; np.ones(1 << 26).sum(); '
          'print(json.dumps(host_memory.report()))')
  before = host_memory.peak_rss_mib(children=True)
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=120, check=True, env=dict(os.environ, DSSB_KEEP_FREED_MEMORY='0'))
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert 512 <= report['peak_rss_mib'] < 2048, report
  assert report['keeps_freed_memory'] is False and report['tunables'] is None
  assert host_memory.peak_rss_mib(children=True) >= max(before, 512)


RELEASE_PROBE = """
import json, sys
from dssb import host_memory
host_memory.restart_keeping_freed_memory()
import numpy as np
block = np.ones(1 << 26)  # 512 MiB
del block
kept = host_memory.rss_mib()
host_memory.release_freed_memory()
print(json.dumps({'kept': kept, 'released': host_memory.rss_mib(),
                  'keeps': host_memory.keeps_freed_memory()}))
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc: Linux')
def test_release_hands_kept_memory_back():
  proc = subprocess.run([sys.executable, '-c', RELEASE_PROBE],
                        env=dict(os.environ, GLIBC_TUNABLES='', DSSB_KEEP_FREED_MEMORY='1'),
                        capture_output=True, text=True, timeout=120, check=True)
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out['keeps'], out
  assert out['kept'] - out['released'] >= 400, out  # the freed 512 MiB block went back


# A 512 MiB block freed with a small block after it leaves a hole; an 8 MiB block (no other free
# chunk fits it) is cut from the hole, so a second 512 MiB block no longer fits there.
HOLE_PROBE = """
import json
from dssb import host_memory
host_memory.restart_keeping_freed_memory()
import numpy as np
first = np.ones(1 << 26)
after = np.ones(1 << 17)
del first
cut = np.ones(1 << 20)
second = np.ones(1 << 26)
print(json.dumps({'rss': host_memory.rss_mib(), 'report': host_memory.report()}))
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc tunables: Linux')
def test_bounded_mode_does_not_keep_a_missed_hole():
  """The kept heap extends past the hole (two blocks' worth resident): the growth that took a
  trainer process to 18.6 GB (results/perf/malloc_settings.md). bounded hands the block back."""
  def run(setting):
    proc = subprocess.run([sys.executable, '-c', HOLE_PROBE], capture_output=True, text=True,
                          timeout=120, check=True,
                          env=dict(os.environ, DSSB_KEEP_FREED_MEMORY=setting, GLIBC_TUNABLES=''))
    return json.loads(proc.stdout.strip().splitlines()[-1])
  kept, bounded, default = run('1'), run('bounded'), run('')
  assert kept['report']['malloc_mode'] == 'kept', kept
  assert bounded['report']['malloc_mode'] == 'bounded', bounded
  assert default['report']['malloc_mode'] == 'bounded', default  # the default since 2026-12-05
  assert bounded['report']['tunables'] == host_memory.BOUNDED_TUNABLES
  assert kept['rss'] >= 1000, kept  # 512 MiB twice
  assert bounded['rss'] < 800, bounded  # once


def test_an_unknown_setting_is_refused(monkeypatch):
  monkeypatch.setenv('DSSB_KEEP_FREED_MEMORY', 'yes')
  monkeypatch.setenv('GLIBC_TUNABLES', '')
  monkeypatch.setattr(os, 'execve', lambda *a: pytest.fail(f'restarted: {a}'))
  with pytest.raises(ValueError, match='DSSB_KEEP_FREED_MEMORY'):
    host_memory.restart_keeping_freed_memory()
