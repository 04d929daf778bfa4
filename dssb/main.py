"""Command line of the trainer, t5x's flag habits: --gin_file=F (repeatable), --gin.KEY=VALUE.

Multi-host: on TPU pods pass --multihost (JAX finds its peers); elsewhere pass
--coordinator_address=HOST:PORT --num_processes=N --process_id=I on every host (or the
environment variables DSSB_COORDINATOR, DSSB_NUM_PROCESSES, DSSB_PROCESS_ID).
"""

import argparse
import inspect
import logging
import os
import sys

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'gin')


def parse_gin(gin_files, bindings):
  """Parses gin files (searched in ./ and the repo's gin/) and KEY=VALUE bindings."""
  import gin  # pylint: disable=g-import-not-at-top
  gin.add_config_file_search_path(GIN_DIR)  # for includes such as 'models/t5_1_1_base.gin'
  gin_files = [os.path.abspath(f) if os.path.exists(f) else f for f in gin_files]
  logging.disable(logging.ERROR)  # gin logs each search path it tries and misses
  try:
    gin.parse_config_files_and_bindings(gin_files, bindings, finalize_config=False)
  finally:
    logging.disable(logging.NOTSET)


def run(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(prog='python -m dssb.train', description=__doc__)
  parser.add_argument('--gin_file', action='append', default=[], help='gin file (repeatable)')
  parser.add_argument('--multihost', action='store_true', help='jax.distributed on a TPU pod')
  parser.add_argument('--coordinator_address', default=os.environ.get('DSSB_COORDINATOR'))
  parser.add_argument('--num_processes', type=int,
                      default=os.environ.get('DSSB_NUM_PROCESSES') and
                      int(os.environ['DSSB_NUM_PROCESSES']))
  parser.add_argument('--process_id', type=int,
                      default=os.environ.get('DSSB_PROCESS_ID') and
                      int(os.environ['DSSB_PROCESS_ID']))
  args, rest = parser.parse_known_args(argv)
  bindings = []
  for arg in rest:
    if not arg.startswith('--gin.') or '=' not in arg:
      parser.error(f'unknown argument {arg!r}; gin settings are written --gin.KEY=VALUE')
    bindings.append(arg[len('--gin.'):])
  if not args.gin_file:
    parser.error('give at least one --gin_file (e.g. --gin_file=gin/cpu/svamp_step_by_step.gin)')

  import dssb  # pylint: disable=g-import-not-at-top
  dssb.import_tensorflow_quietly()  # seqio needs it; load it before gin imports dssb.data
  import jax  # pylint: disable=g-import-not-at-top
  if args.multihost:
    jax.distributed.initialize()
  elif args.coordinator_address:
    jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)

  import gin  # pylint: disable=g-import-not-at-top
  from dssb import train as train_lib  # pylint: disable=g-import-not-at-top
  parse_gin(args.gin_file, bindings)
  unset = [line.split(' = ')[0] for line in gin.config_str().splitlines()
           if line.endswith(' = %gin.REQUIRED')]
  if unset:  # a REQUIRED macro would otherwise arrive as a bare sentinel object
    raise SystemExit('gin: required setting(s) not given: ' + ', '.join(unset) + '. Set them '
                     'in a gin file or on the command line, e.g. --gin.MODEL_DIR="\'/tmp/run\'"')
  configured = gin.get_configurable(train_lib.train)
  missing = [name for name, p in inspect.signature(train_lib.train).parameters.items()
             if p.default is inspect.Parameter.empty]
  try:
    return configured()
  except TypeError as e:
    unset = [m for m in missing if f"'{m}'" in str(e)]
    if 'required' not in str(e) or not unset:
      raise
    raise SystemExit('gin: required setting(s) not given: '
                     + ', '.join(f'train.{m}' for m in unset)
                     + '. Set them in a gin file or with --gin.train.NAME=VALUE') from e


if __name__ == '__main__':
  run()
