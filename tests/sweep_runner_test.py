"""The sweep runner's compilation cache: the second run of a sweep, same shapes, compiles nothing
with XLA (every executable it needs is in memory or in the persistent cache), and neither does
a later process on the same cache (with the 0.5 s floor the runner had before, six small
executables were never written and a later process compiled them again). Runs in fresh
processes: JAX's cache settings are global."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = r'''
import json, sys
import dssb
dssb.import_tensorflow_quietly()
import jax
from dssb import sweep
counts = {'misses': 0, 'hits': 0, 'compiles': 0}  # compiles: XLA compiles and cache reads
def on_event(event, **_):
  if event == '/jax/compilation_cache/cache_misses':
    counts['misses'] += 1
  elif event == '/jax/compilation_cache/cache_hits':
    counts['hits'] += 1
def on_duration(event, duration, **_):
  if event == '/jax/core/compile/backend_compile_duration':
    counts['compiles'] += 1
jax.monitoring.register_event_listener(on_event)
jax.monitoring.register_event_duration_secs_listener(on_duration)
root, cache = sys.argv[1], sys.argv[2]
sweep.use_compilation_cache(cache)
spec = sweep.grid('runner_test', {'SEED': [0, 1]})
runs = sweep.expand(spec, ['gin/paper/cd_label_only.gin', 'gin/cpu/cd_addition_mini.gin',
                           'gin/cpu/cd_addition_tiny.gin'],
                    ['TEACHER_STEPS=2', 'EVAL_EVERY=2', 'NUM_TEST=4', 'NUM_VALIDATION=4'])
per_run = []
for run in runs:
  before = dict(counts)
  sweep.execute(run, root)
  per_run.append({k: counts[k] - before[k] for k in counts})
print(json.dumps(per_run))
'''


def _sweep(root, cache, env):
  done = subprocess.run([sys.executable, '-c', CHILD, str(root), str(cache)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_later_runs_and_processes_compile_nothing(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_')}  # conftest's cache
  env['DSSB_CACHE_DIR'] = str(tmp_path / 'data_cache')
  cold = _sweep(tmp_path / 'first', tmp_path / 'xla', env)
  assert cold[0]['misses'] > 0 and cold[0]['compiles'] > cold[0]['hits']  # an empty cache
  # The second run: only the step and state init are new closures, and both are cache reads.
  assert cold[1]['misses'] == 0 and cold[1]['compiles'] == cold[1]['hits'] > 0, cold
  warm = _sweep(tmp_path / 'second', tmp_path / 'xla', env)
  assert warm[0]['compiles'] == cold[0]['compiles'], (cold, warm)  # the same executables...
  for run in warm:  # ...each read from the cache, none compiled by XLA
    assert run['misses'] == 0 and run['compiles'] == run['hits'] > 0, warm
