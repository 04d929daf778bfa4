"""A sweep's runs, one after another in this process: finished ones skipped, the rest resumed.

Each run is exactly its command line (`python -m dssb.train ...`, stored in its summary), called
in process: gin cleared, the run's files and bindings parsed, the configured `train()` called.
One process for all runs keeps one persistent XLA compilation cache (the same shapes compile
once) and pays the imports once. The trainer resumes a MODEL_DIR from its latest checkpoint, so
an interrupted sweep rerun with the same command continues where it stopped.

A finished run leaves ROOT/<run name>/sweep_run.json (written by process 0 after the trainer's
results.json), the one file a report reads:
  {"sweep": name, "run": run name, "settings": {AXIS: value}, "command": its dssb.train command,
   "results": <results.json>, "seconds": wall seconds of the invocation that finished it (null if
   an earlier one did), "resumed_from_step": the step it resumed from (0: a fresh start; null
   if an earlier invocation finished it)}
"""

import dataclasses
import json
import sys
import time
from typing import Callable, Optional, Sequence

import gin

from dssb import gin_utils, paths
from dssb.sweep.spec import Run

SUMMARY = 'sweep_run.json'
RESULTS = 'results.json'


def log(message: str) -> None:
  print(time.strftime('%H:%M:%S'), message, file=sys.stderr, flush=True)


def use_compilation_cache(path: str) -> None:
  """One persistent XLA cache for every run of the experiment (the same shapes compile once).

  Each run jits its own train step and state init (closures over the run's model and
  optimizer), so a second run of the same shapes misses JAX's in-memory cache for those two and
  reads them from here instead of compiling them (the evaluation's functions are reused in
  memory). Every executable is written, however quick its compile: with a 0.5 s floor a tiny
  model's six small ones were not, and a later process on the same cache compiled them again (a
  few seconds at most; results/perf/sweep_runs.md: a 3-run sweep's later runs 33 s -> 12 s
  with the cache, a second sweep on a warm cache 2.3x the runs per minute of no cache)."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)


def call_in_process(fn: Callable, name: str, gin_files: Sequence[str],
                    bindings: Sequence[str]):
  """What `python -m ... --gin_file=F --gin.B` does for the gin-configured `fn`, in process."""
  gin.clear_config()
  try:
    gin_utils.parse_gin(gin_files, bindings)
    gin_utils.check_required()
    return gin_utils.call_configured(fn, name)
  finally:
    gin.clear_config()


@dataclasses.dataclass(frozen=True)
class RunState:
  kind: str                   # 'done', 'partial' or 'new'
  step: Optional[int] = None  # the latest checkpoint's step of a partial run

  def describe(self) -> str:
    return f'partial at step {self.step}' if self.kind == 'partial' else self.kind


def state(run: Run, root: str) -> RunState:
  """Done (results.json present), partial (a checkpoint at some step) or new."""
  run_dir = paths.path(run.model_dir(root))
  if (run_dir / RESULTS).exists():
    return RunState('done')
  step = latest_checkpoint_step(run_dir)
  return RunState('new') if step is None else RunState('partial', step)


def latest_checkpoint_step(run_dir) -> Optional[int]:
  """The newest finished orbax step folder under run_dir/checkpoints (unfinished saves carry a
  temporary suffix, so only all-digit names count)."""
  folder = paths.path(run_dir) / 'checkpoints'
  if not folder.exists():
    return None
  steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
  return max(steps) if steps else None


def read_summary(run: Run, root: str) -> Optional[dict]:
  path = paths.path(run.model_dir(root)) / SUMMARY
  return json.loads(path.read_text()) if path.exists() else None


def execute(run: Run, root: str) -> dict:
  """Trains `run` unless it is done (resuming a partial one); returns and writes its summary."""
  summary = read_summary(run, root)
  if summary is not None:
    return summary
  before = state(run, root)
  start = time.time()
  seconds = None
  if before.kind == 'done':
    results = json.loads((paths.path(run.model_dir(root)) / RESULTS).read_text())
  else:
    from dssb import train  # pylint: disable=g-import-not-at-top
    log(f'{run.sweep} {run.name} ({before.describe()}): {run.command(root)}')
    results = call_in_process(train.train, 'train', run.gin_files, run.train_bindings(root))
    seconds = round(time.time() - start, 1)
    log(f'{run.sweep} {run.name}: done in {seconds:.0f} s')
  summary = {'sweep': run.sweep, 'run': run.name, 'settings': dict(run.settings),
             'command': run.command(root), 'results': results, 'seconds': seconds,
             'resumed_from_step': None if before.kind == 'done' else before.step or 0}
  _write_summary(run, root, summary)
  return summary


def _write_summary(run: Run, root: str, summary: dict) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:
    return
  path = paths.path(run.model_dir(root)) / SUMMARY
  tmp = path.parent / (SUMMARY + '.tmp')
  tmp.write_text(json.dumps(summary, indent=1))
  tmp.rename(path)
