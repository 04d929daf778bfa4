"""malloc settings for a training process at the paper's settings: step time, resident memory
between steps and minor page faults, per setting, in one fresh process each.

Why (issue 22): dssb keeps freed memory in the process (dssb/host_memory.py: glibc's heap, never
trimmed), which saved a third of a CPU step at the paper's settings, but a kept heap can grow
when small allocations land in the hole a step's large block left: bench_paper_settings.py saw a
bucketed trainer process reach 15.8 GB where its steps need 9.5. A run steps through many bucket
shapes, so this steps through several. Against glibc's kept heap: glibc's default (every large
block mmap'd and returned when freed), glibc with blocks of 32 MiB and more mmap'd on
transparent huge pages (glibc.malloc.hugetlb=1: a 2 MiB fault replaces 512 small ones) and the
rest kept, and jemalloc (Debian's libjemalloc2, preloaded; skipped where it is not installed).

  DSSB_DATA_DIR=/work/shared/dss_data python experiments/bench_malloc_settings.py \\
      --vocab /tmp/cqa_8000.model --shapes 3 --steps 3  # bench_paper_settings.py's vocabulary

Each process: T5 v1.1-small size, CQA step-by-step batches of 64 of --shapes bucketed shapes,
stepped through in turn --steps times (the first pass compiles, from a compilation cache shared
by the processes after the first); settings alternate in rotated order over --rounds rounds.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from dssb import host_memory, input_pipeline

import perf_report

KEEP = host_memory.TUNABLES
LARGE_BLOCKS_MMAPPED_HUGE = host_memory.BOUNDED_TUNABLES  # DSSB_KEEP_FREED_MEMORY=bounded
JEMALLOC = '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2'  # Debian's libjemalloc2
# name -> (GLIBC_TUNABLES, LD_PRELOAD, MALLOC_CONF): glibc's malloc with tunables, or jemalloc
SETTINGS = {'glibc, freed memory kept (dssb now)': (KEEP, '', ''),
            'glibc default': ('', '', ''),
            'glibc, large blocks mmapped, huge pages': (LARGE_BLOCKS_MMAPPED_HUGE, '', ''),
            'jemalloc 5.3 default': ('', JEMALLOC, '')}
# Not here: jemalloc told to keep its freed pages (MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1)
# grew past this 23 GB machine's memory on the three shapes and was killed (exit status -9) in
# the first round of this benchmark's run of 2026-12-05 12:20 UTC.
DEFAULT_OUT = 'results/perf/malloc_settings.json'


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--vocab', required=True, help='SentencePiece model trained on CQA')
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--shapes', type=int, default=1,
                      help='distinct bucketed batch shapes, stepped through in turn')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--compilation_cache', help=argparse.SUPPRESS)
  parser.add_argument('--out', default=DEFAULT_OUT)
  parser.add_argument('--render', action='store_true', help='the .md again from --out (JSON)')
  args = parser.parse_args()
  if args.steps < 2 and not args.render:
    parser.error(f'--steps {args.steps}: at least 2 (the first pass over the shapes compiles and '
                 'is not timed)')
  return args


def batch_cycle(examples, shapes, batch_size, feature_lengths):
  """(indices, padded lengths) of `shapes` batches of distinct bucketed shapes, smallest to
  largest: the first 200 steps' batches by padded slots, evenly spaced picks (one shape: step
  0's batch). A run steps through several shapes, so a step's buffers may not fit the holes
  the previous shape's left."""
  by_shape = {}
  for step in range(200 if shapes > 1 else 1):
    idx = input_pipeline.train_indices(len(examples), step, batch_size, seed=0)
    lengths = input_pipeline.padded_lengths(examples, idx, feature_lengths,
                                            input_pipeline.DEFAULT_LENGTH_BUCKETS)
    by_shape.setdefault(tuple(sorted(lengths.items())), (idx, lengths))
  ordered = sorted(by_shape.values(), key=lambda v: sum(v[1].values()))
  picks = [round(i * (len(ordered) - 1) / max(shapes - 1, 1)) for i in range(shapes)]
  return [ordered[i] for i in picks]


def child(args):
  """--steps passes over the shapes' batches here (the first compiles); one JSON line out."""
  import bench_paper_settings as bench  # pylint: disable=import-outside-toplevel
  import paper_settings_setup as setup  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from dssb import sweep  # pylint: disable=import-outside-toplevel
  from dssb.model import init_params  # pylint: disable=import-outside-toplevel
  sweep.use_compilation_cache(args.compilation_cache)
  _, examples, _ = setup.load_cqa(args.vocab, 8)
  config = setup.model_config()
  trainer = bench.DssbTrainer(config, init_params(config, jax.random.PRNGKey(0)))
  cycle = batch_cycle(examples, args.shapes, setup.BATCH, setup.LENGTHS)
  steps = []
  for step in range(args.steps * len(cycle)):
    idx, lengths = cycle[step % len(cycle)]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    trainer.run(input_pipeline.encdec_batch(examples, idx, lengths), 'bucketed')
    steps.append({'seconds': time.perf_counter() - start, 'rss_mib': host_memory.rss_mib(),
                  'minor_faults': resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
                  'lengths': lengths, 'pass': step // len(cycle)})
  print(json.dumps({'steps': steps, 'peak_rss_mib': host_memory.peak_rss_mib()}), flush=True)


def run_setting(args, setting):
  tunables, preload, malloc_conf = setting
  env = dict(os.environ, DSSB_KEEP_FREED_MEMORY='0', GLIBC_TUNABLES=tunables, LD_PRELOAD=preload,
             MALLOC_CONF=malloc_conf)
  proc = subprocess.run([sys.executable, __file__, '--child', '--vocab', args.vocab, '--steps',
                         str(args.steps), '--shapes', str(args.shapes), '--compilation_cache',
                         args.compilation_cache], env=env, capture_output=True, text=True)
  if proc.returncode:
    raise SystemExit(f'{setting}: exit status {proc.returncode}\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def shape_medians(setting, shapes):
  """Median seconds of each shape's timed steps (passes after the first), over every round."""
  timed = [(i % shapes, st['seconds']) for run in setting['runs']
           for i, st in enumerate(run['steps']) if st['pass']]
  return [statistics.median(t for k, t in timed if k == shape) for shape in range(shapes)]


def summary_lines(result):
  shapes = len(result['shapes'])
  lines = [f"CQA step-by-step bucketed batches of 64, 1024/256, T5 v1.1-small size, {shapes} "
           f"bucket shapes in turn ({', '.join(str(tuple(s.values())) for s in result['shapes'])}"
           f" padded lengths: inputs, targets, rationale inputs, rationale targets); "
           f"{result['steps']} passes per process (the first compiles), {result['rounds']} "
           f"alternating rounds; load {result['load_average'][0]:.1f} -> "
           f"{result['load_average'][1]:.1f}; transparent huge pages: "
           f"{result['transparent_hugepage']}.", '',
           f"{'setting':40} {'s per step, each shape':>23} {'x kept':>7} "
           f"{'RSS GB between steps':>21} {'faults/step':>12} {'peak GB':>8}"]
  names = list(result['settings'])
  kept = sum(shape_medians(result['settings'][names[0]], shapes))
  for name, s in result['settings'].items():
    per_shape = shape_medians(s, shapes)
    lines.append(f"{name:40} {' / '.join(f'{t:.1f}' for t in per_shape):>23} "
                 f"{kept / sum(per_shape):7.2f} {min(s['rss_gb']):>8.1f} - "
                 f"{max(s['rss_gb']):<10.1f} {s['median_faults']:12,.0f} {s['peak_gb']:8.1f}")
  lines += ['', 'x kept: the time of one pass over the shapes (the sum of their medians) with '
            f'{names[0]}, over this one\'s.']
  return lines


def main():
  args = parse_args()
  if args.child:
    child(args)
    return
  if args.render:
    with open(args.out) as f:
      result = json.load(f)
    perf_report.write(args.out, result, summary_lines(result), measured=False)
    return
  names = [n for n, (_, lib, _) in SETTINGS.items() if not lib or os.path.exists(lib)]
  skipped = sorted(set(SETTINGS) - set(names))  # an allocator this machine lacks
  runs = {name: [] for name in names}
  load_start = os.getloadavg()[0]
  with tempfile.TemporaryDirectory() as tmp:
    args.compilation_cache = os.path.join(tmp, 'jax_cache')  # later processes skip compiles
    for r in range(args.rounds):
      for name in names[r % len(names):] + names[:r % len(names)]:
        runs[name].append(run_setting(args, SETTINGS[name]))
        later = [s for s in runs[name][-1]['steps'] if s['pass']]
        print(f"round {r} {name}: " + ', '.join(
            f"{s['seconds']:.1f} s {s['rss_mib'] / 1024:.1f} GB" for s in later), flush=True)
  settings = {}
  for name, rs in runs.items():
    later = [s for run in rs for s in run['steps'] if s['pass']]  # pass 0 compiles
    settings[name] = {'glibc_tunables': SETTINGS[name][0], 'ld_preload': SETTINGS[name][1],
                      'malloc_conf': SETTINGS[name][2], 'runs': rs,
                      'median_step_s': statistics.median(s['seconds'] for s in later),
                      'median_faults': statistics.median(s['minor_faults'] for s in later),
                      'rss_gb': [s['rss_mib'] / 1024 for s in later],
                      'peak_gb': max(run['peak_rss_mib'] for run in rs) / 1024}
  with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
    thp = f.read().strip()
  command = (f"DSSB_DATA_DIR={os.environ.get('DSSB_DATA_DIR', '')} python experiments/"
             f'bench_malloc_settings.py --vocab {args.vocab} --rounds {args.rounds} --steps '
             f'{args.steps} --shapes {args.shapes}'
             + ('' if args.out == DEFAULT_OUT else f' --out {args.out}'))
  result = {'command': command, 'rounds': args.rounds, 'steps': args.steps,
            'shapes': [s['lengths'] for s in runs[names[0]][0]['steps'][:args.shapes]],
            'load_average': [load_start, os.getloadavg()[0]], 'transparent_hugepage': thp,
            'settings': settings, 'skipped': skipped}
  perf_report.write(args.out, result, summary_lines(result))


if __name__ == '__main__':
  main()
