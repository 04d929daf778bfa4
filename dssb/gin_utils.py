"""Gin parsing with t5x's habits: gin files found in ./ or the repo's gin/, KEY=VALUE bindings,
and REQUIRED settings reported by name before anything runs."""

import inspect
import logging
import os
from typing import Callable, Sequence

import gin

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'gin')


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str] = ()) -> None:
  """Parses gin files (searched in ./ and the repo's gin/) and KEY=VALUE bindings."""
  if GIN_DIR not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
    gin.add_config_file_search_path(GIN_DIR)  # for includes such as 'models/t5_1_1_base.gin'
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
