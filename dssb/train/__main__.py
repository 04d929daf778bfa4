"""Command line of the trainer, t5x's flag habits: --gin_file=F (repeatable), --gin.KEY=VALUE.

  python -m dssb.train --gin_file=gin/cpu/svamp_step_by_step.gin --gin.MODEL_DIR="'/tmp/run'"

Multi-host: on TPU pods pass --multihost (JAX finds its peers); elsewhere pass
--coordinator_address=HOST:PORT --num_processes=N --process_id=I on every host (or the
environment variables DSSB_COORDINATOR, DSSB_NUM_PROCESSES, DSSB_PROCESS_ID).
Exit codes: 0 done, 143 preempted (state saved; rerun the same command to resume), 2 bad flags
or gin settings.
"""

import os
import sys

from dssb import gin_utils


def _env_int(name):
  return int(os.environ[name]) if os.environ.get(name) else None


def parse_args(argv):
  """(argparse namespace, gin bindings) from the command line."""
  parser = gin_utils.flag_parser('python -m dssb.train', __doc__)
  parser.add_argument('--multihost', action='store_true', help='jax.distributed on a TPU pod')
  parser.add_argument('--coordinator_address', default=os.environ.get('DSSB_COORDINATOR'))
  parser.add_argument('--num_processes', type=int, default=_env_int('DSSB_NUM_PROCESSES'))
  parser.add_argument('--process_id', type=int, default=_env_int('DSSB_PROCESS_ID'))
  return gin_utils.parse_flags(parser, argv, 'gin/cpu/svamp_step_by_step.gin')


def main(argv=None) -> int:
  args, bindings = parse_args(sys.argv[1:] if argv is None else argv)
  import dssb  # pylint: disable=g-import-not-at-top
  dssb.import_tensorflow_quietly()  # seqio needs it; load it quietly before gin imports dssb.data
  import jax  # pylint: disable=g-import-not-at-top
  if args.multihost:
    jax.distributed.initialize()
  elif args.coordinator_address:
    jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)

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
  sys.exit(main())
