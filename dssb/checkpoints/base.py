"""What both checkpoint formats share: the error type, file access, and the params check.

Paths are local or remote (gs://...), all through dssb.paths (etils.epath): local paths go
through `os` and never import TensorFlow; remote ones go through `tf.io.gfile`.
"""

import collections.abc
import dataclasses
import functools
import os
from typing import Optional

import jax
import numpy as np

from dssb import paths
from dssb.model.network import T5Config, init_params


class CheckpointError(ValueError):
  """A checkpoint that cannot be read or does not fit the network; the message names the path."""


# ---------------------------------------------------------------------------------------------
# Files


is_remote = paths.is_remote


def join(path: str, *names: str) -> str:
  path = str(path)
  if is_remote(path):
    return '/'.join([path.rstrip('/')] + [n.strip('/') for n in names])
  return os.path.join(path, *names)


def exists(path: str) -> bool:
  return paths.path(path).exists()


def isdir(path: str) -> bool:
  return paths.path(path).is_dir()


def listdir(path: str) -> list:
  return sorted(p.name for p in paths.path(path).iterdir())


def read_bytes(path: str) -> bytes:
  """The whole file; a missing file is a CheckpointError naming it."""
  if not exists(path):
    raise CheckpointError(f'{path}: file not found')
  return paths.path(path).read_bytes()


def write_bytes(path: str, data: bytes) -> None:
  paths.path(path).write_bytes(data)


def makedirs(path: str) -> None:
  paths.path(path).mkdir(parents=True, exist_ok=True)


def rename(src: str, dst: str) -> None:
  paths.path(src).rename(paths.path(dst))


# ---------------------------------------------------------------------------------------------
# Params trees: flat {'encoder/layers_0/attention/key/kernel': array} <-> nested dicts


def flatten(tree, prefix: str = '', is_leaf=None) -> dict:
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}/{key}' if prefix else str(key)
    if isinstance(value, collections.abc.Mapping) and not (is_leaf and is_leaf(value)):
      flat.update(flatten(value, name, is_leaf))
    else:
      flat[name] = value
  return flat


def unflatten(flat: dict) -> dict:
  tree = {}
  for name, value in flat.items():
    *parents, leaf = name.split('/')
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


@functools.lru_cache(maxsize=16)
def expected_shapes(config: T5Config) -> dict:
  """{param name: shape} of `init_params(config)`, computed abstractly (no memory)."""
  abstract = jax.eval_shape(functools.partial(init_params, config))
  return {name: tuple(x.shape) for name, x in flatten(abstract).items()}


def param_count(params) -> int:
  return int(sum(np.prod(np.shape(x)) for x in flatten(params).values()))


def listing(names, limit=8) -> str:
  names = sorted(names)
  more = f' and {len(names) - limit} more' if len(names) > limit else ''
  return ', '.join(names[:limit]) + more


def check_params(config: T5Config, flat: dict, path: str) -> None:
  """Raises CheckpointError unless `flat` has exactly the arrays and shapes of init_params."""
  expected = expected_shapes(config)
  missing = set(expected) - set(flat)
  extra = set(flat) - set(expected)
  problems = []
  if missing:
    problems.append(f'missing parameter arrays: {listing(missing)}')
  if extra:
    problems.append(f'unexpected parameter arrays: {listing(extra)}')
  wrong = [f'{name} has shape {tuple(np.shape(flat[name]))}, expected {expected[name]}'
           for name in sorted(set(expected) & set(flat))
           if tuple(np.shape(flat[name])) != expected[name]]
  if wrong:
    problems.append('wrong shapes: ' + '; '.join(wrong[:8]) +
                    (f' and {len(wrong) - 8} more' if len(wrong) > 8 else ''))
  if problems:
    raise CheckpointError(f'{path}: does not match the T5 network {config}: ' +
                          ' | '.join(problems))


def reconcile(inferred: T5Config, given: Optional[T5Config], path: str,
              whole_architecture: bool = False) -> T5Config:
  """Returns `given` (or `inferred`), after checking `given` agrees with the checkpoint.

  A T5X checkpoint's arrays determine only the parameter shapes; a Hugging Face config.json
  also names the activation and the other architecture fields (`whole_architecture`).
  """
  if given is None:
    return inferred
  diff = (inferred.architecture_diff(given, layout=False) if whole_architecture
          else inferred.param_shape_diff(given))
  if diff:
    raise CheckpointError(f'{path}: the given config does not match the checkpoint: ' + '; '.join(
        f'{field}: checkpoint {ours!r}, config {theirs!r}'
        for field, (ours, theirs) in diff.items()))
  return given


def unscanned(config: T5Config) -> T5Config:
  """The config with per-layer params (layers_0, layers_1, ...): the layout of the files."""
  return dataclasses.replace(config, scan_layers=False)


def _stacks(config: T5Config):
  return (('encoder', config.num_encoder_layers), ('decoder', config.num_decoder_layers))


def stack_layers(config: T5Config, params: dict) -> dict:
  """Per-layer params (as files hold them) -> the params tree of `config`: under scan_layers,
  each stack's layers_0 .. layers_{N-1} become one `layers` subtree of arrays stacked [N, ...]."""
  if not config.scan_layers:
    return params
  params = dict(params)
  for stack, num_layers in _stacks(config):
    tree = dict(params[stack])
    per_layer = [tree.pop(f'layers_{i}') for i in range(num_layers)]
    tree['layers'] = jax.tree.map(lambda *xs: np.stack(xs), *per_layer)
    params[stack] = tree
  return params


def unstack_layers(config: T5Config, params: dict, path: str) -> dict:
  """The inverse of stack_layers: params of `config` -> per-layer numpy params."""
  if not config.scan_layers:
    return params
  params = dict(params)
  for stack, num_layers in _stacks(config):
    tree = dict(params.get(stack, {}))
    if 'layers' not in tree:
      raise CheckpointError(f'{path}: the config has scan_layers=True but the params have no '
                            f'{stack}/layers (found {listing(tree)}); pass the config the '
                            'params were made with')
    stacked = jax.tree.map(np.asarray, tree.pop('layers'))
    for i in range(num_layers):
      tree[f'layers_{i}'] = jax.tree.map(lambda x, i=i: x[i], stacked)
    params[stack] = tree
  return params


def as_float32(x) -> np.ndarray:
  """A writable float32 numpy copy (or the array itself when already so)."""
  a = np.asarray(x)
  if a.dtype != np.float32:
    if not (np.issubdtype(a.dtype, np.floating) or a.dtype.name == 'bfloat16'):
      raise TypeError(f'expected a floating-point array, got {a.dtype}')
    a = a.astype(np.float32)
  elif not a.flags.writeable:
    a = a.copy()
  return a
