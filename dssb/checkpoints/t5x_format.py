"""T5X checkpoints in the legacy format of the public gs://t5-data/pretrained_models/t5x/ ones.

Layout of one checkpoint (written by t5x `checkpoints.Checkpointer`):

  checkpoint_<step>/checkpoint    msgpack (flax serialization) of
      {'version': 3, 'optimizer': {'target': PARAMS, 'state': {'step', 'param_states'}}}
  checkpoint_<step>/target.encoder.layers_0.attention.key.kernel/   zarr v2 arrays (gzip)

Each PARAMS leaf is either an array inline in the msgpack (flax ext type 1) or a TensorStore
spec dict whose kvstore path is relative to the checkpoint folder. Only `target` is read: the
optimizer state (Adafactor v_row / v_col ...) is skipped. The architecture is inferred from the
arrays; a given config (e.g. from a gin model file) is checked against them.
"""

import copy
import math
import os
import re
import time
from typing import Optional

import numpy as np
import tensorstore as ts
from flax import serialization

from dssb.checkpoints import base
from dssb.checkpoints.base import CheckpointError
from dssb.model.network import T5Config

VERSION = 3
CHECKPOINT_FILE = 'checkpoint'
_STEP_DIR = re.compile(r'checkpoint_(\d+)')
_GCS = re.compile(r'gs://([^/]+)/?(.*)', re.DOTALL)


def is_t5x(path: str) -> bool:
  """True when `path` is a T5X msgpack file, a checkpoint_N folder, or a folder holding them."""
  if not base.exists(path):
    return False
  if not base.isdir(path):
    return os.path.basename(str(path).rstrip('/')) == CHECKPOINT_FILE
  names = base.listdir(path)
  return CHECKPOINT_FILE in names or any(_STEP_DIR.fullmatch(n) for n in names)


def checkpoint_file(path: str) -> str:
  """The msgpack file of `path`: itself, path/checkpoint, or that of the latest checkpoint_N."""
  if not base.exists(path):
    raise CheckpointError(f'{path}: no such file or folder')
  if not base.isdir(path):
    return str(path)
  candidate = base.join(path, CHECKPOINT_FILE)
  if base.exists(candidate) and not base.isdir(candidate):
    return candidate
  steps = []
  for name in base.listdir(path):
    match = _STEP_DIR.fullmatch(name)
    if match and base.exists(base.join(path, name, CHECKPOINT_FILE)):
      steps.append((int(match.group(1)), name))
  if not steps:
    raise CheckpointError(f'{path}: no T5X checkpoint here (neither a `checkpoint` file nor '
                          'checkpoint_<step>/checkpoint folders)')
  return base.join(path, max(steps)[1], CHECKPOINT_FILE)


# ---------------------------------------------------------------------------------------------
# Reading


def _is_ts_spec(x) -> bool:
  return isinstance(x, dict) and 'driver' in x and 'kvstore' in x


def _absolute_spec(spec: dict, ckpt_dir: str, name: str, file: str) -> dict:
  """A spec opening the zarr array of `spec` (path relative to the checkpoint) in ckpt_dir."""
  kvstore = spec['kvstore']
  if isinstance(kvstore, dict):
    relative = kvstore.get('path', spec.get('path'))  # tensorstore < 0.1.14 kept it outside
  else:
    relative = spec.get('path')
  if not relative:
    raise CheckpointError(f'{file}: the TensorStore spec of {name} has no path: {spec}')
  relative = str(relative)
  gcs = _GCS.fullmatch(ckpt_dir)
  if gcs:
    prefix = gcs.group(2).rstrip('/')
    kv = {'driver': 'gcs', 'bucket': gcs.group(1),
          'path': f'{prefix}/{relative}' if prefix else relative}
  elif base.is_remote(ckpt_dir):
    raise CheckpointError(f'{ckpt_dir}: zarr arrays can be read from local or gs:// folders only')
  else:
    kv = {'driver': 'file', 'path': os.path.join(ckpt_dir, relative)}
  return {'driver': spec.get('driver', 'zarr'), 'kvstore': kv}


def _read_target(contents, file: str) -> dict:
  """The flat params of a decoded msgpack checkpoint, zarr arrays read in."""
  if not isinstance(contents, dict):
    raise CheckpointError(f'{file}: not a T5X checkpoint (the msgpack holds a '
                          f'{type(contents).__name__}, not a dict)')
  version = contents.get('version', 0)
  optimizer = contents.get('optimizer') if version else contents
  if not isinstance(version, (int, np.integer)) or not 0 <= version <= VERSION:
    raise CheckpointError(f'{file}: unknown T5X checkpoint version {version!r}')
  target = optimizer.get('target') if isinstance(optimizer, dict) else None
  if not isinstance(target, dict) or not target:
    keys = sorted(optimizer) if isinstance(optimizer, dict) else type(optimizer).__name__
    raise CheckpointError(f'{file}: unknown layout, no params under optimizer/target '
                          f'(found {keys})')
  ckpt_dir = os.path.dirname(file) if not base.is_remote(file) else file.rsplit('/', 1)[0]

  flat = base.flatten(target, is_leaf=_is_ts_spec)
  pending = {}
  arrays = {}
  for name, leaf in flat.items():
    if _is_ts_spec(leaf):
      spec = _absolute_spec(leaf, ckpt_dir, name, file)
      pending[name] = (spec, ts.open(spec, read=True), leaf)
    elif isinstance(leaf, (np.ndarray, np.generic)):
      arrays[name] = leaf
    else:
      raise CheckpointError(f'{file}: parameter {name} is neither an array nor a TensorStore '
                            f'spec: {leaf!r:.200}')
  reads = {}
  for name, (spec, opening, leaf) in pending.items():
    try:
      store = opening.result()
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f'{file}: cannot open the zarr array of {name} at '
                            f'{spec["kvstore"]}: {e}') from e
    stated = leaf.get('metadata', {}).get('shape')
    if stated is not None and tuple(stated) != tuple(store.shape):
      raise CheckpointError(f'{file}: the zarr array of {name} has shape {tuple(store.shape)}, '
                            f'its spec says {tuple(stated)}')
    reads[name] = (spec, store.read())
  for name, (spec, reading) in reads.items():
    try:
      arrays[name] = reading.result()
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f'{file}: cannot read the zarr array of {name} at '
                            f'{spec["kvstore"]}: {e}') from e
  out = {}
  for name, arr in arrays.items():
    if np.asarray(arr).dtype == np.uint16:
      raise CheckpointError(f'{file}: {name} is uint16 (bfloat16 of checkpoint version 2); '
                            'only bfloat16 as such (version 3) is supported')
    try:
      out[name] = base.as_float32(arr)
    except TypeError as e:
      raise CheckpointError(f'{file}: parameter {name}: {e}') from e
  return out


def infer_config(flat: dict, path: str = '<params>') -> T5Config:
  """The architecture that the t5x param arrays imply (v1.1 gated-gelu when wi_0/wi_1)."""
  def shape(name):
    if name not in flat:
      raise CheckpointError(f'{path}: unknown layout, cannot infer the architecture: no {name} '
                            f'(arrays: {base.listing(flat)})')
    if np.ndim(flat[name]) != 2:
      raise CheckpointError(f'{path}: unknown layout: {name} has shape {np.shape(flat[name])}, '
                            'expected a 2-D array')
    return np.shape(flat[name])

  vocab, d_model = shape('token_embedder/embedding')
  heads, buckets = shape('encoder/relpos_bias/rel_embedding')
  inner = shape('encoder/layers_0/attention/query/kernel')[1]
  if inner % heads:
    raise CheckpointError(f'{path}: attention width {inner} is not a multiple of the {heads} '
                          'heads of encoder/relpos_bias/rel_embedding')
  d_ff = shape('encoder/layers_0/mlp/wo/kernel')[0]

  def count(stack):
    found = {int(m.group(1)) for name in flat
             for m in [re.match(rf'{stack}/layers_(\d+)/', name)] if m}
    if found != set(range(len(found))):
      raise CheckpointError(f'{path}: {stack} layers are not numbered 0..n-1: {sorted(found)}')
    return len(found)

  if 'encoder/layers_0/mlp/wi_0/kernel' in flat:
    activations = ('gelu', 'linear')
  elif 'encoder/layers_0/mlp/wi/kernel' in flat:
    activations = ('relu',)
  else:
    raise CheckpointError(f'{path}: unknown MLP layout: neither encoder/layers_0/mlp/wi_0 nor '
                          'encoder/layers_0/mlp/wi')
  return T5Config(vocab_size=vocab, d_model=d_model, num_heads=heads, head_dim=inner // heads,
                  d_ff=d_ff, num_encoder_layers=count('encoder'),
                  num_decoder_layers=count('decoder'), mlp_activations=activations,
                  tie_embeddings='decoder/logits_dense/kernel' not in flat,
                  relative_attention_num_buckets=buckets)


def load_t5x(path: str, config: Optional[T5Config] = None):
  """Loads the params of a T5X checkpoint: (T5Config, nested dict of float32 numpy arrays).

  Args:
    path: the `checkpoint` msgpack file, its checkpoint_<step> folder, or the folder holding
      checkpoint_* folders (the latest step is taken). Local or gs://.
    config: the architecture (e.g. from a gin model file); checked against the arrays. Without
      it the architecture is inferred (gated MLPs are taken as gated-gelu, v1.1).

  Returns:
    (config, params) with params exactly shaped like `dssb.model.init_params(config)`.
  """
  file = checkpoint_file(path)
  raw = base.read_bytes(file)
  try:
    contents = serialization.msgpack_restore(raw)
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'{file}: corrupt msgpack, cannot decode the T5X checkpoint '
                          f'({type(e).__name__}: {e})') from e
  flat = _read_target(contents, file)
  config = base.reconcile(infer_config(flat, file), config, file)
  base.check_params(base.unscanned(config), flat, file)
  return config, base.stack_layers(config, base.unflatten(flat))


# ---------------------------------------------------------------------------------------------
# Writing


def _chunks(shape, itemsize, chunk_bytes):
  """Halves the largest chunk dimension until a chunk holds at most chunk_bytes."""
  chunks = [max(int(d), 1) for d in shape]
  while math.prod(chunks) * itemsize > chunk_bytes and max(chunks) > 1:
    i = int(np.argmax(chunks))
    chunks[i] = -(-chunks[i] // 2)
  return chunks


def _write_tree(tree, prefix, ckpt_dir, inline_max_elements, chunk_bytes, writes):
  """Replaces big arrays by relative TensorStore specs, starting their zarr writes."""
  out = {}
  for key, value in tree.items():
    name = f'{prefix}.{key}'
    if isinstance(value, dict):
      out[key] = _write_tree(value, name, ckpt_dir, inline_max_elements, chunk_bytes, writes)
      continue
    if value is None:
      out[key] = None
      continue
    arr = np.asarray(value)
    if arr.size <= inline_max_elements:
      out[key] = arr
      continue
    spec = {'driver': 'zarr', 'dtype': arr.dtype.name,
            'kvstore': {'driver': 'file', 'path': name},
            'metadata': {'compressor': {'id': 'gzip'}, 'shape': list(arr.shape),
                         'chunks': _chunks(arr.shape, arr.dtype.itemsize, chunk_bytes)}}
    out[key] = ts.Spec(spec).to_json()
    target = copy.deepcopy(spec)
    gcs = _GCS.fullmatch(ckpt_dir)
    if gcs:
      out[key]['kvstore'] = {'driver': 'gcs', 'bucket': 't5x-dummy-bucket', 'path': name}
      prefix_path = gcs.group(2).rstrip('/')
      target['kvstore'] = {'driver': 'gcs', 'bucket': gcs.group(1),
                           'path': f'{prefix_path}/{name}' if prefix_path else name}
    elif base.is_remote(ckpt_dir):
      raise CheckpointError(f'{ckpt_dir}: zarr arrays can be written to local or gs:// folders '
                            f'only ({name} has {arr.size} elements > inline_max_elements)')
    else:
      target['kvstore']['path'] = os.path.join(ckpt_dir, name)
    store = ts.open(target, create=True, delete_existing=True).result()
    writes.append(store.write(arr))
  return out


def save_t5x(config: T5Config, params, directory: str, step: int = 0, param_states=None,
             inline_max_elements: int = 0, chunk_bytes: int = 64 * 2**20) -> str:
  """Writes params as a legacy T5X checkpoint `directory/checkpoint_<step>/` (weights only).

  Args:
    config: the architecture; params are checked against it.
    params: the params tree (what init_params and load return).
    directory: the folder that gets checkpoint_<step>/ (local or gs://).
    step: the training step recorded in the checkpoint and its folder name.
    param_states: optimizer state to store under optimizer/state/param_states ({} if None).
    inline_max_elements: arrays of at most this many elements go inline into the msgpack; the
      others into gzip zarr folders (t5x writes every partitioned parameter to zarr).
    chunk_bytes: the largest zarr chunk.

  Returns:
    The checkpoint folder.
  """
  params = base.unstack_layers(config, params, str(directory))
  flat = {name: np.asarray(x) for name, x in base.flatten(params).items()}
  base.check_params(base.unscanned(config), flat, str(directory))
  final_dir = base.join(directory, f'checkpoint_{int(step)}')
  if base.exists(final_dir):
    raise CheckpointError(f'{final_dir}: already exists')
  work_dir = final_dir if base.is_remote(final_dir) else f'{final_dir}.tmp-{int(time.time())}'
  base.makedirs(work_dir)
  writes = []
  state = {'step': np.asarray(step, np.int32),
           'param_states': _write_tree(param_states or {}, 'state.param_states', work_dir,
                                       inline_max_elements, chunk_bytes, writes)}
  target = _write_tree(base.unflatten(flat), 'target', work_dir, inline_max_elements,
                       chunk_bytes, writes)
  for write in writes:
    write.result()
  contents = {'version': VERSION, 'optimizer': {'target': target, 'state': state}}
  base.write_bytes(base.join(work_dir, CHECKPOINT_FILE), serialization.msgpack_serialize(contents))
  if work_dir != final_dir:
    base.rename(work_dir, final_dir)
  return final_dir
