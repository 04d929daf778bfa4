"""Command line of the trainer, t5x's flag habits: --gin_file=F (repeatable), --gin.KEY=VALUE.

  python -m dssb.train --gin_file=gin/cpu/svamp_step_by_step.gin --gin.MODEL_DIR="'/tmp/run'"

Multi-host: on TPU pods pass --multihost (JAX finds its peers); elsewhere pass
--coordinator_address=HOST:PORT --num_processes=N --process_id=I on every host (or the
environment variables DSSB_COORDINATOR, DSSB_NUM_PROCESSES, DSSB_PROCESS_ID).
Exit codes: 0 done, 143 preempted (state saved; rerun the same command to resume), 2 bad flags
or gin settings.
"""

import sys

from dssb import gin_utils, host_memory


def parse_args(argv):
  """(argparse namespace, gin bindings) from the command line."""
  parser = gin_utils.flag_parser('python -m dssb.train', __doc__)
  gin_utils.add_host_flags(parser)
  return gin_utils.parse_flags(parser, argv, 'gin/cpu/svamp_step_by_step.gin')


def main(argv=None) -> int:
  args, bindings = parse_args(sys.argv[1:] if argv is None else argv)
  import dssb  # pylint: disable=g-import-not-at-top
  dssb.import_tensorflow_quietly()  # seqio needs it; load it quietly before gin imports dssb.data
  gin_utils.init_hosts(args)
  from dssb import train  # pylint: disable=g-import-not-at-top
  try:
    gin_utils.parse_gin(args.gin_file, bindings)
  except (ValueError, SyntaxError) as e:  # gin names the file, line and setting
    print(f'gin: {e}', file=sys.stderr)
    return 2
  try:
    gin_utils.check_required()
    gin_utils.call_configured(train.train, 'train')
  except gin_utils.MissingSettings as e:
    print(e, file=sys.stderr)
    return 2
  except train.Preempted as e:
    print(e, file=sys.stderr)
    return 143
  return 0


if __name__ == '__main__':
  host_memory.restart_keeping_freed_memory()  # page faults were a third of a CPU step
  sys.exit(main())
