"""Gin parsing with t5x's habits: gin files found in ./ or the repo's gin/, KEY=VALUE bindings,
and REQUIRED settings reported by name before anything runs."""

import argparse
import inspect
import logging
import os
from typing import Callable, List, Sequence, Tuple

import gin

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'gin')


def flag_parser(prog: str, doc: str) -> argparse.ArgumentParser:
  """An argparse parser with t5x's --gin_file (repeatable); add a command's own flags to it."""
  parser = argparse.ArgumentParser(prog=prog, description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--gin_file', action='append', default=[], help='gin file (repeatable)')
  return parser


def _env_int(name):
  return int(os.environ[name]) if os.environ.get(name) else None


def add_host_flags(parser: argparse.ArgumentParser) -> None:
  """Several hosts: --multihost on a TPU pod (JAX finds its peers); elsewhere the coordinator,
  process count and index on every host (or DSSB_COORDINATOR, DSSB_NUM_PROCESSES,
  DSSB_PROCESS_ID)."""
  hosts = parser.add_argument_group('several hosts')
  hosts.add_argument('--multihost', action='store_true', help='jax.distributed on a TPU pod')
  hosts.add_argument('--coordinator_address', default=os.environ.get('DSSB_COORDINATOR'))
  hosts.add_argument('--num_processes', type=int, default=_env_int('DSSB_NUM_PROCESSES'))
  hosts.add_argument('--process_id', type=int, default=_env_int('DSSB_PROCESS_ID'))


def init_hosts(args: argparse.Namespace) -> None:
  """jax.distributed as the host flags say (call before anything else touches JAX)."""
  import jax  # pylint: disable=g-import-not-at-top
  if args.multihost:
    jax.distributed.initialize()
  elif args.coordinator_address:
    jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)


def parse_flags(parser: argparse.ArgumentParser, argv: Sequence[str],
                example: str) -> Tuple[argparse.Namespace, List[str]]:
  """(flags, gin bindings): every argument the parser does not know must be --gin.KEY=VALUE, and
  at least one --gin_file is needed (`example` shows one in the error)."""
  args, rest = parser.parse_known_args(argv)
  bindings = []
  for arg in rest:
    if not arg.startswith('--gin.') or '=' not in arg:
      parser.error(f'unknown argument {arg!r}; gin settings are written --gin.KEY=VALUE')
    bindings.append(arg[len('--gin.'):])
  if not args.gin_file:
    parser.error(f'give at least one --gin_file (e.g. --gin_file={example})')
  return args, bindings


def _drop_package_resource_reader() -> None:
  """gin's package-resource reader reads an include 'runs/train.gin' as package 'runs' and
  crashes (TypeError) when the working directory holds a folder of that name (a namespace
  package), e.g. a sweep's default root runs/NAME. dssb names gin files by path and search
  prefix only, so that reader goes."""
  from gin import resource_reader  # pylint: disable=g-import-not-at-top
  readers = gin.config._FILE_READERS  # pylint: disable=protected-access
  readers[:] = [r for r in readers if r[1] is not resource_reader.system_path_file_exists]


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str] = ()) -> None:
  """Parses gin files (searched in ./ and the repo's gin/) and KEY=VALUE bindings."""
  if GIN_DIR not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
    gin.add_config_file_search_path(GIN_DIR)  # for includes such as 'models/t5_1_1_base.gin'
  _drop_package_resource_reader()
  gin_files = [os.path.abspath(f) if os.path.exists(f) else f for f in gin_files]
  logging.disable(logging.ERROR)  # gin logs each search path it tries and misses
  try:
    gin.parse_config_files_and_bindings(gin_files, bindings, finalize_config=False)
  finally:
    logging.disable(logging.NOTSET)


class MissingSettings(ValueError):
  """A REQUIRED gin setting was not given; the message names it and how to set it."""


def check_required() -> None:
  """Raises MissingSettings naming every %gin.REQUIRED macro still unset."""
  unset = [line.split(' = ')[0] for line in gin.config_str().splitlines()
           if line.endswith(' = %gin.REQUIRED')]
  if unset:  # a REQUIRED macro would otherwise arrive as a bare sentinel object
    raise MissingSettings('gin: required setting(s) not given: ' + ', '.join(unset) + '. Set '
                          'them in a gin file or on the command line, e.g. '
                          '--gin.MODEL_DIR="\'/tmp/run\'"')


def call_configured(fn: Callable, name: str):
  """Calls gin's configured `fn`; an argument gin did not bind is reported as `name.ARG`."""
  configured = gin.get_configurable(fn)
  missing = [arg for arg, p in inspect.signature(fn).parameters.items()
             if p.default is inspect.Parameter.empty]
  try:
    return configured()
  except TypeError as e:
    unset = [m for m in missing if f"'{m}'" in str(e)]
    if 'required' not in str(e) or not unset:
      raise
    raise MissingSettings('gin: required setting(s) not given: '
                          + ', '.join(f'{name}.{m}' for m in unset)
                          + f'. Set them in a gin file or with --gin.{name}.NAME=VALUE') from e
