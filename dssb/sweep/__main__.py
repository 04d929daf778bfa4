"""Command line of sweeps: the grid a gin file declares, run here one after another (resumable),
listed, or written out as SkyPilot task files.

  python -m dssb.sweep --gin_file=gin/paper/fig4_fractions.gin [--gin_file=gin/cpu/...] \\
      [--gin.KEY=VALUE ...] [--root DIR] [--only DATASET=cqa ...] [--dry-run]
  python -m dssb.sweep --gin_file=gin/paper/fig4_fractions.gin --root gs://BUCKET/fig4 \\
      --emit-skypilot sky/fig4 --accelerators tpu-v4-8 --data_dir gs://BUCKET/dss_data

Each run is `python -m dssb.train` with the sweep's gin files, one binding per axis and its own
MODEL_DIR = ROOT/<run name>. Rerunning the same command skips finished runs and resumes the
others. Exit codes: 0 done, 143 preempted (state saved; rerun to resume), 2 bad flags or gin.
"""

import os
import sys

from dssb import gin_utils, host_memory


def parse_args(argv):
  """(argparse namespace, gin bindings) from the command line."""
  parser = gin_utils.flag_parser('python -m dssb.sweep', __doc__)
  parser.add_argument('--root', help='folder of the runs (local or gs://); default runs/NAME')
  parser.add_argument('--only', action='append', default=[], metavar='AXIS=VALUE',
                      help='only the runs with this setting (repeatable)')
  parser.add_argument('--run', help='only the run of this name')
  parser.add_argument('--dry-run', '--dry_run', dest='dry_run', action='store_true',
                      help='list the runs and their state; run nothing')
  parser.add_argument('--commands', action='store_true', help='with --dry-run: each command')
  parser.add_argument('--compilation_cache', help='persistent XLA cache; default ROOT/.jax_cache '
                      'for a local ROOT')
  gin_utils.add_host_flags(parser)
  sky = parser.add_argument_group('SkyPilot task files (nothing runs)')
  sky.add_argument('--emit-skypilot', '--emit_skypilot', dest='emit_skypilot', metavar='DIR')
  sky.add_argument('--accelerators', default='tpu-v4-8', help="e.g. tpu-v4-32, 'H100:8'")
  sky.add_argument('--num_nodes', type=int, default=1, help='GPU nodes per run')
  sky.add_argument('--infra', help="e.g. gcp, aws/us-east-1, k8s, slurm (default: any)")
  sky.add_argument('--on_demand', action='store_true', help='no spot/preemptible machines')
  sky.add_argument('--data_dir', default='',
                   help='DSSB_DATA_DIR on the cluster: the datasets/ tree on a bucket')
  return gin_utils.parse_flags(parser, argv, 'gin/paper/fig4_fractions.gin')


def load_runs(gin_files, bindings):
  """The sweep's Grid and runs, from the gin files and bindings."""
  import gin  # pylint: disable=g-import-not-at-top
  from dssb import sweep  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    gin_utils.parse_gin(gin_files, bindings)
    spec = gin_utils.call_configured(sweep.grid, 'sweep.grid')
  finally:
    gin.clear_config()
  return spec, sweep.expand(spec, gin_files, bindings)


def _sweep_flags(args, bindings):
  """The flags that name the sweep's runs again on another machine."""
  return ([f'--gin_file={f}' for f in args.gin_file] + [f'--gin.{b}' for b in bindings])


def _dry_run(spec, runs, root, show_commands):
  from dssb import sweep  # pylint: disable=g-import-not-at-top
  states = [sweep.state(run, root) for run in runs]
  counts = {k: sum(s.kind == k for s in states) for k in ('done', 'partial', 'new')}
  print(f'sweep {spec.name}: {len(runs)} runs under {root} ('
        + ', '.join(f'{v} {k}' for k, v in counts.items()) + ')')
  for run, run_state in zip(runs, states):
    print(f'{run_state.describe():<22} {run.name}')
    if show_commands:
      print(f'  {run.command(root)}')


def _execute_all(runs, root):
  from dssb import sweep  # pylint: disable=g-import-not-at-top
  for i, run in enumerate(runs):
    sweep.runner.log(f'run {i + 1}/{len(runs)}: {run.name}')
    sweep.execute(run, root)


def main(argv=None) -> int:
  args, bindings = parse_args(sys.argv[1:] if argv is None else argv)
  import dssb  # pylint: disable=g-import-not-at-top
  dssb.import_tensorflow_quietly()
  if not (args.dry_run or args.emit_skypilot):  # before anything else touches JAX
    gin_utils.init_hosts(args)
  from dssb import paths, sweep, train  # pylint: disable=g-import-not-at-top
  from dssb.sweep import skypilot  # pylint: disable=g-import-not-at-top
  try:
    spec, runs = load_runs(args.gin_file, bindings)
    runs = sweep.select(runs, args.only)
  except (ValueError, SyntaxError) as e:  # gin names the file, line and setting
    print(f'gin: {e}', file=sys.stderr)
    return 2
  if args.run:
    runs = [r for r in runs if r.name == args.run]
    if not runs:
      print(f'--run {args.run!r} is not a run of sweep {spec.name} (see --dry-run)',
            file=sys.stderr)
      return 2
  root = args.root or os.path.join('runs', spec.name)
  if args.emit_skypilot:
    cluster = skypilot.Cluster(args.accelerators, args.num_nodes, args.infra,
                               not args.on_demand, args.data_dir)
    try:
      files = skypilot.emit(runs, root, cluster, _sweep_flags(args, bindings), args.emit_skypilot)
    except ValueError as e:
      print(e, file=sys.stderr)
      return 2
    print(f'{len(files)} SkyPilot task files in {args.emit_skypilot} (launch.sh launches all)')
    return 0
  if args.dry_run:
    _dry_run(spec, runs, root, args.commands)
    return 0
  cache = args.compilation_cache or (None if paths.is_remote(root)
                                     else os.path.join(root, '.jax_cache'))
  if cache:
    sweep.use_compilation_cache(cache)
  try:
    _execute_all(runs, root)
  except gin_utils.MissingSettings as e:
    print(e, file=sys.stderr)
    return 2
  except train.Preempted as e:
    print(e, file=sys.stderr)
    return 143
  return 0


if __name__ == '__main__':
  host_memory.restart_keeping_freed_memory()  # its runs train in this process (dssb.train's reason)
  sys.exit(main())
