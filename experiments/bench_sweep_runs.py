"""Runs per minute of a small sweep: what the compilation cache saves, and whether training the
seeds of a tiny model in one program (parameters vmapped over seeds) beats one run at a time.

1. Sweep: N seeds of a tiny run (default: label-only on the synthetic addition task,
   gin/paper/cd_label_only.gin + gin/cpu/cd_addition_mini.gin + gin/cpu/cd_addition_tiny.gin,
   STEPS steps each), run as `python -m dssb.sweep` runs them (dssb.sweep.execute, one after
   another in one process), each mode in a fresh process, modes alternating in order each round:
     none       no persistent compilation cache (every run traces and compiles everything);
     cache_0.5s the persistent cache with a 0.5 s minimum compile time (dssb.sweep before issue
                21: the small compiles of a tiny model are not written), empty at the start;
     cache_0.5s_warm  cache_0.5s again on the cache the cache_0.5s process left (a rerun or a
                second sweep of the same shapes);
     cache_all  the persistent cache as dssb.sweep.use_compilation_cache sets it now (every
                compile written), empty at the start;
     cache_warm cache_all again on the cache the cache_all process left.
   Per mode: wall seconds of the process (imports included) and of the runs, runs per minute,
   XLA compiles and their seconds (jax.monitoring), cache hits, peak RSS; medians over rounds;
   ratios against `none` within each round.
2. Vmapped seeds: the trainer's own train step (dssb.train.step) for one model, called K times
   one seed after another, against the same step vmapped over K seeds' states in one jitted
   call; steps per second of K seeds, alternating, medians. (Using it in sweeps would need a
   second training path through the trainer; it is measured, not built.)

  nice -n 10 .venv/bin/python experiments/bench_sweep_runs.py [--rounds 3] [--seeds 4] \\
      [--steps 40] [--out results/perf/sweep_runs.json]
  # the testbed's run instead (gin/testbed/settings.gin), three modes:
  nice -n 10 .venv/bin/python experiments/bench_sweep_runs.py --gin_file=gin/testbed/settings.gin \\
      --step_macro TRAIN_STEPS --binding "RECIPE='step_by_step'" --modes none cache_all \\
      cache_warm --parts sweep --out results/perf/sweep_runs_testbed.json
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = ('gin/paper/cd_label_only.gin', 'gin/cpu/cd_addition_mini.gin',
       'gin/cpu/cd_addition_tiny.gin')
MODES = ('none', 'cache_0.5s', 'cache_0.5s_warm', 'cache_all', 'cache_warm')
DEFAULT_OUT = os.path.join('results', 'perf', 'sweep_runs.json')


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _compile_listeners() -> dict:
  """Counts of XLA compiles (and their seconds), tracing, lowering and cache hits, from
  jax.monitoring events, filled as the process runs."""
  import jax  # pylint: disable=g-import-not-at-top
  counts = {'backend_compiles': 0, 'backend_compile_s': 0.0, 'traces': 0, 'trace_s': 0.0,
            'lowerings': 0, 'lowering_s': 0.0, 'cache_hits': 0, 'cache_misses': 0}
  names = {'/jax/core/compile/backend_compile_duration': 'backend_compile',
           '/jax/core/compile/jaxpr_trace_duration': 'trace',
           '/jax/core/compile/jaxpr_to_mlir_module_duration': 'lowering'}

  def on_duration(event, duration, **_):
    if event in names:
      counts[names[event] + 's'] += 1
      counts[names[event] + '_s'] += duration

  def on_event(event, **_):
    if event == '/jax/compilation_cache/cache_hits':
      counts['cache_hits'] += 1
    elif event == '/jax/compilation_cache/cache_misses':
      counts['cache_misses'] += 1

  jax.monitoring.register_event_duration_secs_listener(on_duration)
  jax.monitoring.register_event_listener(on_event)
  return counts


def sweep_child(mode: str, root: str, cache: str, seeds: int, steps: int, gin_files,
                bindings) -> dict:
  """One mode's sweep in this (fresh) process; returns its figures."""
  start = time.time()
  import dssb  # pylint: disable=g-import-not-at-top
  dssb.import_tensorflow_quietly()
  import jax  # pylint: disable=g-import-not-at-top
  from dssb import sweep  # pylint: disable=g-import-not-at-top
  counts = _compile_listeners()
  if mode in ('cache_0.5s', 'cache_0.5s_warm'):
    jax.config.update('jax_compilation_cache_dir', cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  elif mode in ('cache_all', 'cache_warm'):
    sweep.use_compilation_cache(cache)
  spec = sweep.grid('bench_sweep_runs', {'SEED': list(range(seeds))})
  runs = sweep.expand(spec, list(gin_files), list(bindings) + [f'EVAL_EVERY={steps}'])
  imported = time.time()
  per_run, per_run_compiles = [], []
  for run in runs:
    before = counts['backend_compiles']
    run_start = time.time()
    sweep.execute(run, root)
    per_run.append(round(time.time() - run_start, 2))
    per_run_compiles.append(counts['backend_compiles'] - before)
  end = time.time()
  return {'mode': mode, 'runs': len(runs), 'process_s': round(end - start, 2),
          'import_s': round(imported - start, 2), 'runs_s': round(end - imported, 2),
          'per_run_s': per_run, 'per_run_backend_compiles': per_run_compiles,
          'runs_per_minute': round(60 * len(runs) / (end - start), 3),
          **{k: round(v, 2) if isinstance(v, float) else v for k, v in counts.items()},
          'peak_rss_mb': round(_peak_rss_mb(), 1)}


def _run_child(args, mode: str, work: str, cache: str) -> dict:
  root = tempfile.mkdtemp(dir=work)
  command = [sys.executable, os.path.abspath(__file__), '--child', mode, '--root', root,
             '--cache', cache, '--seeds', str(args.seeds), '--steps', str(args.steps)]
  command += [f'--gin_file={f}' for f in args.gin_file]
  command += [f'--binding={b}' for b in args.binding] + ['--step_macro', args.step_macro]
  load = os.getloadavg()[0]
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
  if done.returncode:
    raise RuntimeError(f'{mode} child failed:\n{done.stderr[-3000:]}')
  shutil.rmtree(root)
  result = json.loads(done.stdout.strip().splitlines()[-1])
  result['load_1min_before'] = round(load, 2)
  return result


def bench_sweep(args, work: str) -> dict:
  rounds = []
  for r in range(args.rounds):
    order = [m for m in (MODES if r % 2 == 0 else
                         ('cache_all', 'cache_warm', 'none', 'cache_0.5s', 'cache_0.5s_warm'))
             if m in args.modes]
    caches = {m: os.path.join(work, f'cache_{r}_{m}') for m in MODES}
    caches['cache_warm'] = caches['cache_all']  # the cache the cache_all process left
    caches['cache_0.5s_warm'] = caches['cache_0.5s']
    results = {}
    for mode in order:
      results[mode] = _run_child(args, mode, work, caches[mode])
      got = results[mode]
      print(f'round {r}: {mode}: {got["runs_per_minute"]} runs/min, '
            f'{got["backend_compiles"]} compiles, load {got["load_1min_before"]}',
            file=sys.stderr, flush=True)
    rounds.append(results)
  summary = {}
  for mode in args.modes:
    figures = [r[mode] for r in rounds]
    summary[mode] = {
        'runs_per_minute_median': statistics.median(f['runs_per_minute'] for f in figures),
        'ratio_to_none_median': statistics.median(
            f['runs_per_minute'] / r['none']['runs_per_minute'] for f, r in zip(figures, rounds)),
        'runs_s_median': statistics.median(f['runs_s'] for f in figures),
        'first_run_s_median': statistics.median(f['per_run_s'][0] for f in figures),
        'later_run_s_median': statistics.median(s for f in figures for s in f['per_run_s'][1:]),
        'backend_compiles_median': statistics.median(f['backend_compiles'] for f in figures),
        'later_run_backend_compiles': sorted({c for f in figures
                                              for c in f['per_run_backend_compiles'][1:]}),
        'cache_hits_median': statistics.median(f['cache_hits'] for f in figures),
        'cache_misses_median': statistics.median(f['cache_misses'] for f in figures),
        'backend_compile_s_median': statistics.median(f['backend_compile_s'] for f in figures),
        'peak_rss_mb_max': max(f['peak_rss_mb'] for f in figures)}
  return {'rounds': rounds, 'summary': summary}


def vmap_child(seeds: int, steps: int, rounds: int, gin_files) -> dict:
  """Steps per second of K seeds: K calls of the jitted trainer step vs one vmapped call."""
  import dssb  # pylint: disable=g-import-not-at-top
  dssb.import_tensorflow_quietly()
  import gin  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dssb import gin_utils, optimizers  # pylint: disable=g-import-not-at-top
  from dssb.model import T5, T5Config, init_params  # pylint: disable=g-import-not-at-top
  from dssb.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from dssb.train import step as step_lib  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  gin_utils.parse_gin(list(gin_files), ["MODEL_DIR='/nonexistent'"])
  config = gin.get_configurable(T5Config)()
  lengths, batch_size = (gin.query_parameter(f'train.train.{k}').scoped_configurable_fn()
                         for k in ('feature_lengths', 'batch_size'))
  gin.clear_config()
  tx = optimizers.adamw(optimizers.linear_decay_schedule(1e-3, 1000))
  sched = optimizers.linear_decay_schedule(1e-3, 1000)
  loss_fn = step_lib.make_loss_fn(T5(config), 0.5, 0.0, 0.0)
  one_step = step_lib.make_train_step(loss_fn, tx, sched)
  rng = np.random.default_rng(0)

  def batch():
    enc = rng.integers(3, config.vocab_size, (batch_size, lengths['inputs']), dtype=np.int32)
    dec = rng.integers(3, config.vocab_size, (batch_size, lengths['targets']), dtype=np.int32)
    return {'label': {'encoder_input_tokens': enc, 'decoder_target_tokens': dec,
                      'decoder_input_tokens': np.roll(dec, 1, axis=1),
                      'decoder_loss_weights': np.ones_like(dec, dtype=np.float32)}}

  def fresh(key):
    params = init_params(config, key)
    return state_lib.TrainState(jax.numpy.int32(0), params, tx.init(params))

  keys = jax.random.split(jax.random.PRNGKey(0), seeds)
  single = jax.jit(one_step, donate_argnums=0)
  vmapped = jax.jit(jax.vmap(one_step, in_axes=(0, 0, None)), donate_argnums=0)
  states = [jax.jit(fresh)(k) for k in keys]
  stacked = jax.jit(jax.vmap(fresh))(keys)
  batches = [batch() for _ in range(seeds)]
  stacked_batch = jax.tree.map(lambda *xs: np.stack(xs), *batches)
  step_rng = jax.random.PRNGKey(1)
  for i in range(seeds):  # compile both before timing
    states[i], _ = single(states[i], batches[i], step_rng)
  stacked, _ = vmapped(stacked, stacked_batch, step_rng)
  jax.block_until_ready((states, stacked))
  times = {'one_at_a_time': [], 'vmapped': []}
  for r in range(rounds):
    for name in (('one_at_a_time', 'vmapped') if r % 2 == 0 else ('vmapped', 'one_at_a_time')):
      start = time.perf_counter()
      for _ in range(steps):
        if name == 'vmapped':
          stacked, metrics = vmapped(stacked, stacked_batch, step_rng)
        else:
          for i in range(seeds):
            states[i], metrics = single(states[i], batches[i], step_rng)
      jax.block_until_ready(metrics)
      times[name].append(seeds * steps / (time.perf_counter() - start))
  return {'seeds': seeds, 'steps_per_round': steps, 'batch_size': batch_size,
          'feature_lengths': lengths, 'd_model': config.d_model,
          'seed_steps_per_s': {k: [round(v, 2) for v in vs] for k, vs in times.items()},
          'seed_steps_per_s_median': {k: round(statistics.median(vs), 2)
                                      for k, vs in times.items()},
          'ratio_vmapped_median': round(statistics.median(
              v / o for v, o in zip(times['vmapped'], times['one_at_a_time'])), 3),
          'load_1min_after': round(os.getloadavg()[0], 2), 'peak_rss_mb': round(_peak_rss_mb(), 1)}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--seeds', type=int, default=4)
  parser.add_argument('--steps', type=int, default=40)
  parser.add_argument('--vmap_steps', type=int, default=50)
  parser.add_argument('--gin_file', action='append', default=None,
                      help='the run\'s gin files (default: the tiny addition run)')
  parser.add_argument('--parts', nargs='+', default=['sweep', 'vmap'])
  parser.add_argument('--modes', nargs='+', choices=MODES, default=list(MODES),
                      help='sweep modes to measure (keep none: the ratios are against it)')
  parser.add_argument('--step_macro', default='TEACHER_STEPS',
                      help='the gin macro of the run\'s training steps')
  parser.add_argument('--binding', action='append', default=[],
                      help='extra gin binding of every run (repeatable)')
  parser.add_argument('--out', default=DEFAULT_OUT)
  parser.add_argument('--child', choices=MODES + ('vmap',), help=argparse.SUPPRESS)
  parser.add_argument('--root', help=argparse.SUPPRESS)
  parser.add_argument('--cache', help=argparse.SUPPRESS)
  args = parser.parse_args()
  args.gin_file = args.gin_file or list(GIN)
  os.chdir(REPO)
  if args.child == 'vmap':
    print(json.dumps(vmap_child(args.seeds, args.vmap_steps, args.rounds, args.gin_file)))
    return
  if args.child:
    print(json.dumps(sweep_child(args.child, args.root, args.cache, args.seeds, args.steps,
                                 args.gin_file,
                                 args.binding + [f'{args.step_macro}={args.steps}'])))
    return
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import perf_report  # pylint: disable=g-import-not-at-top
  flags = (f'--rounds {args.rounds} --seeds {args.seeds} --steps {args.steps} '
           f'--vmap_steps {args.vmap_steps}')
  if args.gin_file != list(GIN):
    flags += ''.join(f' --gin_file={f}' for f in args.gin_file)
  flags += ''.join(f' --binding "{b}"' for b in args.binding)
  if args.step_macro != 'TEACHER_STEPS':
    flags += f' --step_macro {args.step_macro}'
  if args.modes != list(MODES):
    flags += ' --modes ' + ' '.join(args.modes)
  if args.parts != ['sweep', 'vmap']:
    flags += ' --parts ' + ' '.join(args.parts)
  niceness = os.nice(0)  # the command as it ran: with `nice -n N` only when it was niced
  prefix = f'nice -n {niceness} ' if niceness else ''
  result = {'command': f'{prefix}python experiments/bench_sweep_runs.py {flags}'
                       + ('' if args.out == DEFAULT_OUT else f' --out {args.out}'),
            'gin_files': args.gin_file, 'cpus': os.cpu_count(),
            'load_1min_at_start': round(os.getloadavg()[0], 2)}
  lines = []
  with tempfile.TemporaryDirectory() as work:
    if 'sweep' in args.parts:
      result['sweep'] = bench_sweep(args, work)
      lines.append(f'sweep of {args.seeds} runs x {args.steps} steps '
                   f'({", ".join(args.gin_file)}), {args.rounds} alternating rounds, medians:')
      for mode, s in result['sweep']['summary'].items():
        lines.append(
            f'  {mode:<15} {s["runs_per_minute_median"]:.2f} runs/min '
            f'(x{s["ratio_to_none_median"]:.2f} vs none); first run '
            f'{s["first_run_s_median"]:.1f} s, later runs {s["later_run_s_median"]:.1f} s; '
            f'XLA compiles {s["backend_compiles_median"]:g} (later runs: '
            f'{s["later_run_backend_compiles"]}, {s["backend_compile_s_median"]:.0f} s in all), '
            f'cache hits {s["cache_hits_median"]:g}, misses {s["cache_misses_median"]:g}; '
            f'peak RSS {s["peak_rss_mb_max"]:.0f} MB')
    if 'vmap' in args.parts:
      command = [sys.executable, os.path.abspath(__file__), '--child', 'vmap', '--seeds',
                 str(args.seeds), '--vmap_steps', str(args.vmap_steps), '--rounds',
                 str(args.rounds)] + [f'--gin_file={f}' for f in args.gin_file]
      done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
      if done.returncode:
        raise RuntimeError(f'vmap child failed:\n{done.stderr[-3000:]}')
      v = result['vmap'] = json.loads(done.stdout.strip().splitlines()[-1])
      lines.append(
          f'vmapped seeds: {v["seeds"]} seeds of the trainer step (d_model {v["d_model"]}, batch '
          f'{v["batch_size"]}): one at a time {v["seed_steps_per_s_median"]["one_at_a_time"]} '
          f'seed-steps/s, vmapped {v["seed_steps_per_s_median"]["vmapped"]} '
          f'(x{v["ratio_vmapped_median"]}); peak RSS {v["peak_rss_mb"]:.0f} MB')
  result['load_1min_at_end'] = round(os.getloadavg()[0], 2)
  lines.append(f'load (1 min) at start {result["load_1min_at_start"]}, at end '
               f'{result["load_1min_at_end"]}, on {result["cpus"]} CPUs (shared machine)')
  perf_report.write(args.out, result, lines)


if __name__ == '__main__':
  main()
