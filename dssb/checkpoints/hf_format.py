"""Hugging Face T5 folders (config.json + model.safetensors), as google/t5-v1_1-* and
google/flan-t5-* ship them: reading into the t5x parameter tree, and writing (export_hf).

Mapping: HF kernels are (out, in), t5x ones (in, out); HF keeps the relative position bias in
block 0 of each stack only, as (buckets, heads); t5x has one (heads, buckets) table per stack.
Logits: HF scales the decoder output by d_model**-0.5 when `scale_decoder_outputs` (by default
`tie_word_embeddings`) is true, whether or not lm_head is tied to `shared`. dssb's tied config
(v1.0) always scales and its untied one (v1.1) never does, so the two other HF combinations load
as untied with the scale folded into decoder/logits_dense.

safetensors is read and written here directly (an 8-byte header size, a JSON header, raw data)
so that it needs no package beyond numpy.
"""

import json
from typing import Optional

import ml_dtypes
import numpy as np

from dssb import paths
from dssb.checkpoints import base
from dssb.checkpoints.base import CheckpointError
from dssb.model.network import T5Config

CONFIG_FILE = 'config.json'
SAFETENSORS_FILE = 'model.safetensors'
SAFETENSORS_INDEX = 'model.safetensors.index.json'
TORCH_FILE = 'pytorch_model.bin'
TORCH_INDEX = 'pytorch_model.bin.index.json'

# transformers T5Config defaults, for keys a config.json leaves out.
_HF_DEFAULTS = {'vocab_size': 32128, 'd_model': 512, 'd_kv': 64, 'd_ff': 2048, 'num_layers': 6,
                'num_heads': 8, 'relative_attention_num_buckets': 32,
                'relative_attention_max_distance': 128, 'dropout_rate': 0.1,
                'layer_norm_epsilon': 1e-6, 'feed_forward_proj': 'relu'}
# HF arrays that transformers ties to others or ignores: dropped on load when consistent.
_TIED_EMBEDDINGS = ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight')
_IGNORED = ('decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight',)

_ST_DTYPES = {'F64': np.dtype(np.float64), 'F32': np.dtype(np.float32),
              'F16': np.dtype(np.float16), 'BF16': np.dtype(ml_dtypes.bfloat16)}


def is_hf(path: str) -> bool:
  return base.isdir(path) and base.exists(base.join(path, CONFIG_FILE))


# ---------------------------------------------------------------------------------------------
# safetensors


def read_safetensors(path: str) -> dict:
  """{name: numpy array} of a safetensors file (floating-point tensors only)."""
  if not base.exists(path):
    raise CheckpointError(f'{path}: file not found')
  if base.is_remote(path):
    buf = np.frombuffer(base.read_bytes(path), np.uint8)
  else:
    buf = np.memmap(path, np.uint8, mode='r')
  if buf.size < 8:
    raise CheckpointError(f'{path}: corrupt safetensors file ({buf.size} bytes)')
  n = int.from_bytes(buf[:8].tobytes(), 'little')
  try:
    if 8 + n > buf.size:
      raise ValueError(f'header of {n} bytes in a file of {buf.size}')
    header = json.loads(buf[8:8 + n].tobytes())
    header.pop('__metadata__', None)
    data = buf[8 + n:]
    tensors = {}
    for name, info in header.items():
      if info['dtype'] not in _ST_DTYPES:
        raise ValueError(f'tensor {name} has unsupported dtype {info["dtype"]}')
      dtype = _ST_DTYPES[info['dtype']]
      start, end = info['data_offsets']
      shape = tuple(info['shape'])
      if end > data.size or end - start != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f'tensor {name}: data offsets {start}..{end} do not fit shape {shape}')
      tensors[name] = data[start:end].view(dtype).reshape(shape)
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f'{path}: corrupt safetensors file: {e}') from e
  return tensors


def write_safetensors(path: str, tensors: dict, metadata: Optional[dict] = None) -> None:
  """Writes float32 tensors (sorted by name) in the safetensors format."""
  header, offset = {}, 0
  arrays = {name: np.ascontiguousarray(tensors[name], np.float32) for name in sorted(tensors)}
  for name, arr in arrays.items():
    header[name] = {'dtype': 'F32', 'shape': list(arr.shape),
                    'data_offsets': [offset, offset + arr.nbytes]}
    offset += arr.nbytes
  header['__metadata__'] = metadata or {'format': 'pt'}
  encoded = json.dumps(header, separators=(',', ':')).encode()
  encoded += b' ' * (-len(encoded) % 8)
  with paths.path(path).open('wb') as f:
    f.write(len(encoded).to_bytes(8, 'little'))
    f.write(encoded)
    for arr in arrays.values():
      f.write(arr.tobytes())


def _read_torch(path: str) -> dict:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise CheckpointError(f'{path}: PyTorch weights need torch installed; or convert the folder '
                          'to model.safetensors') from e
  import io  # pylint: disable=g-import-not-at-top
  try:
    state = torch.load(io.BytesIO(base.read_bytes(path)), map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f'{path}: cannot read the PyTorch weights: {e}') from e
  return {name: t.detach().float().numpy() for name, t in state.items()}


def _read_weights(path: str) -> dict:
  """All HF tensors of a folder: single or sharded safetensors, else pytorch_model.bin."""
  for index, reader in ((SAFETENSORS_INDEX, read_safetensors), (TORCH_INDEX, _read_torch)):
    index_path = base.join(path, index)
    if base.exists(index_path):
      try:
        shards = sorted(set(json.loads(base.read_bytes(index_path))['weight_map'].values()))
      except (ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f'{index_path}: corrupt index: {e}') from e
      tensors = {}
      for shard in shards:
        tensors.update(reader(base.join(path, shard)))
      return tensors
  if base.exists(base.join(path, SAFETENSORS_FILE)):
    return read_safetensors(base.join(path, SAFETENSORS_FILE))
  if base.exists(base.join(path, TORCH_FILE)):
    return _read_torch(base.join(path, TORCH_FILE))
  raise CheckpointError(f'{path}: no weights ({SAFETENSORS_FILE}, {SAFETENSORS_INDEX} or '
                        f'{TORCH_FILE}) next to {CONFIG_FILE}')


# ---------------------------------------------------------------------------------------------
# Names and configs


def name_map(config: T5Config):
  """(HF name, t5x name, transpose) for each array of init_params(config)."""
  mlp_in = ['wi'] if len(config.mlp_activations) == 1 else [
      f'wi_{i}' for i in range(len(config.mlp_activations))]
  entries = [('shared.weight', 'token_embedder/embedding', False)]

  def attention(hf, t5x):
    for a, b in (('q', 'query'), ('k', 'key'), ('v', 'value'), ('o', 'out')):
      entries.append((f'{hf}.{a}.weight', f'{t5x}/{b}/kernel', True))

  def mlp(hf, t5x):
    for w in mlp_in + ['wo']:
      entries.append((f'{hf}.DenseReluDense.{w}.weight', f'{t5x}/mlp/{w}/kernel', True))
    entries.append((f'{hf}.layer_norm.weight', f'{t5x}/pre_mlp_layer_norm/scale', False))

  for i in range(config.num_encoder_layers):
    hf, t5x = f'encoder.block.{i}.layer', f'encoder/layers_{i}'
    attention(f'{hf}.0.SelfAttention', f'{t5x}/attention')
    entries.append((f'{hf}.0.layer_norm.weight', f'{t5x}/pre_attention_layer_norm/scale', False))
    mlp(f'{hf}.1', t5x)
  for i in range(config.num_decoder_layers):
    hf, t5x = f'decoder.block.{i}.layer', f'decoder/layers_{i}'
    attention(f'{hf}.0.SelfAttention', f'{t5x}/self_attention')
    entries.append((f'{hf}.0.layer_norm.weight', f'{t5x}/pre_self_attention_layer_norm/scale',
                    False))
    attention(f'{hf}.1.EncDecAttention', f'{t5x}/encoder_decoder_attention')
    entries.append((f'{hf}.1.layer_norm.weight', f'{t5x}/pre_cross_attention_layer_norm/scale',
                    False))
    mlp(f'{hf}.2', t5x)
  for stack in ('encoder', 'decoder'):
    entries.append((f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight',
                    f'{stack}/relpos_bias/rel_embedding', True))
  entries.append(('encoder.final_layer_norm.weight', 'encoder/encoder_norm/scale', False))
  entries.append(('decoder.final_layer_norm.weight', 'decoder/decoder_norm/scale', False))
  if not config.tie_embeddings:
    entries.append(('lm_head.weight', 'decoder/logits_dense/kernel', True))
  return entries


_TO_HF_ACT = {'relu': 'relu', 'gelu': 'gelu_new', 'silu': 'silu'}
_FROM_HF_ACT = {'relu': 'relu', 'gelu_new': 'gelu', 'gelu_pytorch_tanh': 'gelu', 'silu': 'silu',
                'swish': 'silu'}


def feed_forward_proj(activations, where='') -> str:
  acts = tuple(activations)
  if len(acts) == 1 and acts[0] in _TO_HF_ACT:
    return _TO_HF_ACT[acts[0]]
  if len(acts) == 2 and acts[1] == 'linear' and acts[0] in _TO_HF_ACT:
    return 'gated-gelu' if acts[0] == 'gelu' else f'gated-{_TO_HF_ACT[acts[0]]}'
  raise CheckpointError(f'{where}: mlp_activations {acts} have no Hugging Face T5 equivalent')


def mlp_activations(proj: str, where='') -> tuple:
  if proj == 'gated-gelu':  # transformers maps it to the tanh gelu ('gelu_new')
    return ('gelu', 'linear')
  parts = proj.split('-')
  gated = len(parts) == 2 and parts[0] == 'gated'
  if not (len(parts) == 1 or gated) or parts[-1] not in _FROM_HF_ACT:
    raise CheckpointError(f'{where}: unsupported feed_forward_proj {proj!r} (supported: relu, '
                          'gated-gelu, gated-silu, gated-relu, silu, gelu_new; plain "gelu" is '
                          'the exact erf gelu, which dssb does not implement)')
  act = _FROM_HF_ACT[parts[-1]]
  return (act, 'linear') if gated else (act,)


def hf_config_dict(config: T5Config, where: str = '<config>') -> dict:
  """config.json content for a T5ForConditionalGeneration with this architecture."""
  return {
      'architectures': ['T5ForConditionalGeneration'],
      'model_type': 't5',
      'vocab_size': config.vocab_size,
      'd_model': config.d_model,
      'd_kv': config.head_dim,
      'd_ff': config.d_ff,
      'num_layers': config.num_encoder_layers,
      'num_decoder_layers': config.num_decoder_layers,
      'num_heads': config.num_heads,
      'relative_attention_num_buckets': config.relative_attention_num_buckets,
      'relative_attention_max_distance': config.relative_attention_max_distance,
      'dropout_rate': config.dropout_rate,
      'layer_norm_epsilon': config.layer_norm_epsilon,
      'initializer_factor': 1.0,
      'feed_forward_proj': feed_forward_proj(config.mlp_activations, where),
      # transformers 5 ties lm_head unless the file holds a different one, and scales the
      # decoder output by d_model**-0.5 exactly when scale_decoder_outputs (default: tied).
      'tie_word_embeddings': config.tie_embeddings,
      'scale_decoder_outputs': config.tie_embeddings,
      'is_encoder_decoder': True,
      'use_cache': True,
      'pad_token_id': 0,
      'eos_token_id': 1,
      'decoder_start_token_id': 0,
  }


def _t5config(cfg: dict, tie_embeddings: bool, where: str) -> T5Config:
  if cfg.get('model_type', 't5') not in ('t5', 'mt5'):
    raise CheckpointError(f'{where}: model_type {cfg.get("model_type")!r} is not a T5')
  get = lambda key: cfg[key] if cfg.get(key) is not None else _HF_DEFAULTS[key]
  try:
    return T5Config(
        vocab_size=int(get('vocab_size')), d_model=int(get('d_model')),
        num_heads=int(get('num_heads')), head_dim=int(get('d_kv')), d_ff=int(get('d_ff')),
        num_encoder_layers=int(get('num_layers')),
        num_decoder_layers=int(cfg.get('num_decoder_layers') or get('num_layers')),
        mlp_activations=mlp_activations(str(get('feed_forward_proj')), where),
        tie_embeddings=tie_embeddings, dropout_rate=float(get('dropout_rate')),
        relative_attention_num_buckets=int(get('relative_attention_num_buckets')),
        relative_attention_max_distance=int(get('relative_attention_max_distance')),
        layer_norm_epsilon=float(get('layer_norm_epsilon')))
  except CheckpointError:
    raise
  except (TypeError, ValueError) as e:
    raise CheckpointError(f'{where}: bad T5 config: {e}') from e


# ---------------------------------------------------------------------------------------------
# Loading and export


def load_hf(path: str, config: Optional[T5Config] = None):
  """Loads a Hugging Face T5 folder: (T5Config, nested dict of float32 numpy arrays).

  Args:
    path: a folder with config.json and model.safetensors (or a sharded
      model.safetensors.index.json, or pytorch_model.bin when torch is installed).
    config: optional; checked against config.json and the arrays, then returned.

  Returns:
    (config, params) with params exactly shaped like `dssb.model.init_params(config)`.
  """
  config_path = base.join(path, CONFIG_FILE)
  try:
    cfg = json.loads(base.read_bytes(config_path))
  except json.JSONDecodeError as e:
    raise CheckpointError(f'{config_path}: not valid JSON: {e}') from e
  if not isinstance(cfg, dict):
    raise CheckpointError(f'{config_path}: not a config dict')
  tensors = dict(_read_weights(path))
  where = str(path)

  if 'shared.weight' not in tensors:
    raise CheckpointError(f'{where}: missing parameter arrays: shared.weight')
  shared = tensors['shared.weight']
  for name in _TIED_EMBEDDINGS:
    if name in tensors:
      if not np.array_equal(tensors.pop(name), shared):
        raise CheckpointError(f'{where}: {name} differs from shared.weight; T5 shares one '
                              'embedding table')
  for name in _IGNORED:
    tensors.pop(name, None)
  scale = cfg.get('scale_decoder_outputs')
  if scale is None:
    scale = cfg.get('tie_word_embeddings', True) is not False
  lm_head = tensors.pop('lm_head.weight', None)
  if lm_head is not None and np.array_equal(lm_head, shared):
    lm_head = None  # stored although tied
  tied = lm_head is None and scale
  if lm_head is None and not tied:
    lm_head = shared  # tied weights without the output scale
  if lm_head is not None:
    factor = np.float32(cfg.get('d_model', _HF_DEFAULTS['d_model']) ** -0.5) if scale else None
    tensors['lm_head.weight'] = lm_head if factor is None else base.as_float32(lm_head) * factor

  inferred = _t5config(cfg, tied, config_path)
  config = base.reconcile(inferred, config, where, whole_architecture=True)
  entries = name_map(config)
  expected = base.expected_shapes(base.unscanned(config))
  missing = [hf for hf, _, _ in entries if hf not in tensors]
  extra = set(tensors) - {hf for hf, _, _ in entries}
  problems = []
  if missing:
    problems.append(f'missing parameter arrays: {base.listing(missing)}')
  if extra:
    problems.append(f'unexpected parameter arrays: {base.listing(extra)}')
  flat = {}
  for hf, t5x, transpose in entries:
    if hf not in tensors:
      continue
    arr = base.as_float32(tensors[hf])
    arr = arr.T if transpose else arr
    if arr.shape != expected[t5x]:
      want = expected[t5x][::-1] if transpose else expected[t5x]
      problems.append(f'{hf} has shape {tuple(np.shape(tensors[hf]))}, expected {want}')
    flat[t5x] = np.ascontiguousarray(arr)
  if problems:
    raise CheckpointError(f'{where}: does not match the T5 network of {CONFIG_FILE} ({config}): '
                          + ' | '.join(problems))
  base.check_params(base.unscanned(config), flat, where)
  return config, base.stack_layers(config, base.unflatten(flat))


def export_hf(config: T5Config, params, out_dir: str) -> str:
  """Writes config.json, generation_config.json and model.safetensors for transformers.

  `transformers.T5ForConditionalGeneration.from_pretrained(out_dir)` then computes the same
  logits as dssb's T5 with these params. Untied (v1.1) configs get tie_word_embeddings=False
  and their own lm_head.weight; tied (v1.0) ones store only shared.weight.

  Args:
    config: the architecture; params are checked against it.
    params: the params tree.
    out_dir: the folder to write (created; local or gs://).

  Returns:
    out_dir.
  """
  flat = base.flatten(base.unstack_layers(config, params, str(out_dir)))
  base.check_params(base.unscanned(config), flat, str(out_dir))
  hf_config = hf_config_dict(config, str(out_dir))
  tensors = {}
  for hf, t5x, transpose in name_map(config):
    arr = base.as_float32(flat[t5x])
    tensors[hf] = arr.T if transpose else arr
  base.makedirs(out_dir)
  write_safetensors(base.join(out_dir, SAFETENSORS_FILE), tensors)
  base.write_bytes(base.join(out_dir, CONFIG_FILE),
                   json.dumps(hf_config, indent=2).encode())
  generation = {'decoder_start_token_id': 0, 'eos_token_id': 1, 'pad_token_id': 0}
  base.write_bytes(base.join(out_dir, 'generation_config.json'),
                   json.dumps(generation, indent=2).encode())
  return str(out_dir)
