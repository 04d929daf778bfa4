"""glibc malloc settings for a training process at the paper's settings: step time, resident
memory between steps and minor page faults, per setting, in one fresh process each.

Why (issue 22): dssb keeps freed memory in the process (dssb/host_memory.py), which saved a third
of a CPU step at the paper's settings, but a kept heap can grow by one step's XLA temporaries
when small allocations land in the hole the previous step's block left: bench_paper_settings.py
saw a bucketed trainer process reach 15.8 GB where its steps need 9.5. This measures the
alternative: glibc's own mmap for large blocks (returned to the kernel when freed, so the heap
cannot grow by them) with transparent huge pages (glibc.malloc.hugetlb=1: each 2 MiB fault
replaces 512 small ones), the rest of the heap kept as now.

  DSSB_DATA_DIR=/work/shared/dss_data python experiments/bench_malloc_settings.py \\
      --vocab /tmp/cqa_8000.model   # the vocabulary of bench_paper_settings.py

Each process: T5 v1.1-small size, one CQA step-by-step batch of 64 padded to its length bucket,
--steps steps (the first compiles); settings alternate in rotated order over --rounds rounds.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from dssb import host_memory

import perf_report

KEEP = host_memory.TUNABLES
LARGE_BLOCKS_MMAPPED_HUGE = ':'.join((
    'glibc.malloc.mmap_threshold=268435456',  # blocks of 256 MiB and more: mmap'd, returned
    'glibc.malloc.trim_threshold=1099511627776', 'glibc.malloc.top_pad=1073741824',
    'glibc.malloc.arena_max=1', 'glibc.malloc.hugetlb=1'))  # madvise(MADV_HUGEPAGE)
SETTINGS = {'keep freed memory (dssb now)': KEEP, 'glibc default': '',
            'large blocks mmapped, huge pages': LARGE_BLOCKS_MMAPPED_HUGE}
DEFAULT_OUT = 'results/perf/malloc_settings.json'


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--vocab', required=True, help='SentencePiece model trained on CQA')
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--out', default=DEFAULT_OUT)
  return parser.parse_args()


def child(args):
  """--steps train steps here; prints one JSON line of per-step figures."""
  import bench_paper_settings as bench  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from dssb import input_pipeline  # pylint: disable=import-outside-toplevel
  from dssb.model import init_params  # pylint: disable=import-outside-toplevel
  _, examples, _ = bench.load_cqa(args.vocab, 8)
  config = bench.model_config()
  trainer = bench.DssbTrainer(config, init_params(config, jax.random.PRNGKey(0)))
  idx = input_pipeline.train_indices(len(examples), 0, bench.BATCH, seed=0)
  lengths = input_pipeline.padded_lengths(examples, idx, bench.LENGTHS,
                                          input_pipeline.DEFAULT_LENGTH_BUCKETS)
  steps = []
  for _ in range(args.steps):
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    trainer.run(input_pipeline.encdec_batch(examples, idx, lengths), 'bucketed')
    steps.append({'seconds': time.perf_counter() - start, 'rss_mib': host_memory.rss_mib(),
                  'minor_faults': resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults})
  print(json.dumps({'steps': steps, 'peak_rss_mib': host_memory.peak_rss_mib()}), flush=True)


def run_setting(args, tunables):
  env = dict(os.environ, DSSB_KEEP_FREED_MEMORY='0', GLIBC_TUNABLES=tunables)
  proc = subprocess.run([sys.executable, __file__, '--child', '--vocab', args.vocab, '--steps',
                         str(args.steps)], env=env, capture_output=True, text=True, check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def summary_lines(result):
  lines = [f"CQA step-by-step bucketed batch of 64, 1024/256, T5 v1.1-small size; "
           f"{result['steps']} steps per process (the first compiles), {result['rounds']} "
           f"alternating rounds; load {result['load_average'][0]:.1f} -> "
           f"{result['load_average'][1]:.1f}; transparent huge pages: "
           f"{result['transparent_hugepage']}.", '',
           f"{'setting':34} {'step s (median, later steps)':>29} {'x keep':>7} "
           f"{'RSS GB between steps':>22} {'faults/step':>12} {'peak GB':>8}"]
  keep = result['settings']['keep freed memory (dssb now)']['median_step_s']
  for name, s in result['settings'].items():
    lines.append(f"{name:34} {s['median_step_s']:29.1f} {keep / s['median_step_s']:7.2f} "
                 f"{min(s['rss_gb']):>9.1f} - {max(s['rss_gb']):<10.1f} "
                 f"{s['median_faults']:12,.0f} {s['peak_gb']:8.1f}")
  return lines


def main():
  args = parse_args()
  if args.child:
    child(args)
    return
  names = list(SETTINGS)
  runs = {name: [] for name in names}
  load_start = os.getloadavg()[0]
  for r in range(args.rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      runs[name].append(run_setting(args, SETTINGS[name]))
      later = runs[name][-1]['steps'][1:]
      print(f"round {r} {name}: " + ', '.join(
          f"{s['seconds']:.1f} s {s['rss_mib'] / 1024:.1f} GB" for s in later), flush=True)
  settings = {}
  for name, rs in runs.items():
    later = [s for run in rs for s in run['steps'][1:]]
    settings[name] = {'tunables': SETTINGS[name], 'runs': rs,
                      'median_step_s': statistics.median(s['seconds'] for s in later),
                      'median_faults': statistics.median(s['minor_faults'] for s in later),
                      'rss_gb': [s['rss_mib'] / 1024 for s in later],
                      'peak_gb': max(run['peak_rss_mib'] for run in rs) / 1024}
  with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
    thp = f.read().strip()
  command = (f"DSSB_DATA_DIR={os.environ.get('DSSB_DATA_DIR', '')} python experiments/"
             f'bench_malloc_settings.py --vocab {args.vocab} --rounds {args.rounds} --steps '
             f'{args.steps}' + ('' if args.out == DEFAULT_OUT else f' --out {args.out}'))
  result = {'command': command, 'rounds': args.rounds, 'steps': args.steps,
            'load_average': [load_start, os.getloadavg()[0]], 'transparent_hugepage': thp,
            'settings': settings}
  perf_report.write(args.out, result, summary_lines(result))


if __name__ == '__main__':
  main()
