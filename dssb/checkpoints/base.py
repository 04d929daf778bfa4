"""What both checkpoint formats share: the error type, file access, and the params check.

Paths are local or remote (gs://...). Local paths go through `os` and never import TensorFlow;
remote ones go through `tf.io.gfile`, imported on first use.
"""

import collections.abc
import dataclasses
import functools
import os
from typing import Optional

import jax
import numpy as np

from dssb.model.network import T5Config, init_params


class CheckpointError(ValueError):
  """A checkpoint that cannot be read or does not fit the network; the message names the path."""


# ---------------------------------------------------------------------------------------------
# Files


def is_remote(path: str) -> bool:
  return '://' in str(path)


def _gfile():
  import dssb  # pylint: disable=g-import-not-at-top
  return dssb.import_tensorflow_quietly().io.gfile


def join(path: str, *names: str) -> str:
  path = str(path)
  if is_remote(path):
    return '/'.join([path.rstrip('/')] + [n.strip('/') for n in names])
  return os.path.join(path, *names)


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> list:
  if is_remote(path):
    return sorted(name.rstrip('/') for name in _gfile().listdir(path))
  return sorted(os.listdir(path))


def read_bytes(path: str) -> bytes:
  """The whole file; a missing file is a CheckpointError naming it."""
  if not exists(path):
    raise CheckpointError(f'{path}: file not found')
  with open_file(path, 'rb') as f:
    return f.read()


def open_file(path: str, mode: str = 'rb'):
  return _gfile().GFile(path, mode) if is_remote(path) else open(path, mode)


def write_bytes(path: str, data: bytes) -> None:
  with open_file(path, 'wb') as f:
    f.write(data)


def makedirs(path: str) -> None:
  if is_remote(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def rename(src: str, dst: str) -> None:
  if is_remote(src):
    _gfile().rename(src, dst, overwrite=False)
  else:
    os.rename(src, dst)


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


# Fields a checkpoint's arrays (or an HF config.json) determine; a `config=` given to load must
# agree on them. The others (dropout, dtype, the activation kind...) come from the given config.
ARCHITECTURE_FIELDS = ('vocab_size', 'd_model', 'num_heads', 'head_dim', 'd_ff',
                       'num_encoder_layers', 'num_decoder_layers', 'tie_embeddings',
                       'relative_attention_num_buckets')


def reconcile(inferred: T5Config, given: Optional[T5Config], path: str,
              fields=ARCHITECTURE_FIELDS) -> T5Config:
  """Returns `given` (or `inferred`), after checking `given` agrees with the checkpoint."""
  if given is None:
    return inferred
  diffs = [f'{f}: checkpoint {getattr(inferred, f)!r}, config {getattr(given, f)!r}'
           for f in fields if getattr(inferred, f) != getattr(given, f)]
  if len(inferred.mlp_activations) != len(given.mlp_activations):
    diffs.append(f'mlp_activations: checkpoint has {len(inferred.mlp_activations)} input '
                 f'kernel(s) ({inferred.mlp_activations}), config {given.mlp_activations}')
  if diffs:
    raise CheckpointError(f'{path}: the given config does not match the checkpoint: ' +
                          '; '.join(diffs))
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
