"""The T5 encoder-decoder (Raffel et al. 2020) in Flax linen, with t5x's parameter tree.

Parameter names and shapes follow t5x `examples/t5/network.py` (token_embedder/embedding,
encoder/layers_0/attention/query/kernel, decoder/logits_dense/kernel, ...), so a T5X checkpoint
loads as it is. Every parameter and main activation carries logical axis names; `dssb.sharding`
maps them to mesh axes.

Shape legend used in names:
  B batch, L encoder length, T decoder length, S cached decoder length (max decode length),
  E d_model (embed), H heads, D head_dim, F d_ff (mlp), V vocab, K relative position buckets.
"""

import dataclasses
import functools
from typing import ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PAD_ID = 0
EOS_ID = 1
# A large negative number for masked attention logits; finite so softmax of a fully masked row
# stays finite (such rows only occur at padding positions).
_MASK_VALUE = -1e10


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Architecture of one T5. Frozen (hashable) so it can be a static argument of jax.jit.

  v1.0: mlp_activations=('relu',), tie_embeddings=True (logits through the shared embedding,
  scaled by d_model**-0.5). v1.1 and FLAN-T5: ('gelu', 'linear'), tie_embeddings=False.
  """
  vocab_size: int = 32128
  d_model: int = 512
  num_heads: int = 6
  head_dim: int = 64
  d_ff: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  mlp_activations: tuple = ('gelu', 'linear')
  tie_embeddings: bool = False
  dropout_rate: float = 0.1
  dtype: str = 'float32'  # activations; params are always float32
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6

  def __post_init__(self):
    # gin passes lists and numpy dtypes; keep the dataclass hashable and comparable.
    object.__setattr__(self, 'mlp_activations', tuple(self.mlp_activations))
    object.__setattr__(self, 'dtype', jnp.dtype(self.dtype).name)
    if self.num_decoder_layers is None:
      object.__setattr__(self, 'num_decoder_layers', self.num_encoder_layers)

  # Fields that set parameter shapes (as does the number of MLP input kernels): a checkpoint's
  # arrays determine them, so a loaded checkpoint must agree on these.
  PARAM_SHAPE_FIELDS: ClassVar[tuple] = (
      'vocab_size', 'd_model', 'num_heads', 'head_dim', 'd_ff', 'num_encoder_layers',
      'num_decoder_layers', 'tie_embeddings', 'relative_attention_num_buckets')
  # Fields of how a run computes, not of what the weights mean: they may differ between a
  # checkpoint and the run that loads or resumes it.
  RUNTIME_FIELDS: ClassVar[tuple] = ('dropout_rate', 'dtype')

  def param_shape_diff(self, other: 'T5Config') -> dict:
    """{field: (self's, other's)} where the two configs give parameters of other shapes."""
    diff = {f: (getattr(self, f), getattr(other, f)) for f in self.PARAM_SHAPE_FIELDS
            if getattr(self, f) != getattr(other, f)}
    if len(self.mlp_activations) != len(other.mlp_activations):
      diff['mlp_activations'] = (self.mlp_activations, other.mlp_activations)
    return diff

  def architecture_diff(self, other: 'T5Config') -> dict:
    """{field: (self's, other's)} for every field but the run-time ones: the same weights mean
    another function under a changed activation, norm epsilon or position bucketing."""
    return {f: (getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__
            if f not in self.RUNTIME_FIELDS and getattr(self, f) != getattr(other, f)}

  @property
  def activation_dtype(self):
    return jnp.dtype(self.dtype)


def _param(module, name, init_fn, shape, axes):
  """A float32 parameter annotated with logical axis names."""
  return module.param(name, nn.with_logical_partitioning(init_fn, axes), shape, jnp.float32)


def _constrain(x, axes):
  return nn.with_logical_constraint(x, axes)


def _matmul(x_NxI, kernel_IxO, dtype):
  """x @ kernel with x's leading axes flattened into one: a plain 2-D matmul, whose backward
  (x^T dy) XLA:CPU runs as one library GEMM; with [B, L, E] it transposed dy in a loop fusion
  first, which made the train step's backward 30% slower (experiments/bench_model.py). On
  accelerators the reshape is free."""
  y = jnp.dot(x_NxI.reshape(-1, x_NxI.shape[-1]).astype(dtype), kernel_IxO.astype(dtype))
  return y.reshape(*x_NxI.shape[:-1], kernel_IxO.shape[-1])


class Dense(nn.Module):
  """x @ kernel with a 2-D (in, out) kernel, as t5x stores it."""
  features: int
  axes: tuple
  dtype: str
  kernel_init: nn.initializers.Initializer = nn.initializers.variance_scaling(
      1.0, 'fan_in', 'truncated_normal')

  @nn.compact
  def __call__(self, x):
    kernel = _param(self, 'kernel', self.kernel_init, (x.shape[-1], self.features), self.axes)
    return _matmul(x, kernel, self.dtype)


class Embed(nn.Module):
  """Token embedding; `attend` gives logits through the same table (tied v1.0 head)."""
  vocab_size: int
  features: int
  dtype: str

  def setup(self):
    self.embedding = _param(self, 'embedding', nn.initializers.normal(stddev=1.0),
                            (self.vocab_size, self.features), ('vocab', 'embed'))

  def __call__(self, tokens):
    return jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)

  def attend(self, x):
    return _matmul(x, self.embedding.T, self.dtype)


class RMSNorm(nn.Module):
  """T5's layer norm: scale only, no mean subtraction, computed in float32."""
  epsilon: float
  dtype: str

  @nn.compact
  def __call__(self, x):
    scale = _param(self, 'scale', nn.initializers.ones, (x.shape[-1],), ('embed',))
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
    return (x * scale).astype(self.dtype)


def relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance):
  """Maps key_pos - query_pos to a bucket: exact for small distances, log-spaced beyond."""
  bucket = 0
  n = -relative_position
  if bidirectional:
    num_buckets //= 2
    bucket += (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  val_if_large = max_exact + (
      jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact) / np.log(max_distance / max_exact)
      * (num_buckets - max_exact)).astype(jnp.int32)
  val_if_large = jnp.minimum(val_if_large, num_buckets - 1)
  return bucket + jnp.where(is_small, n, val_if_large)


class RelativePositionBiases(nn.Module):
  """One bias table per stack, shared by all its layers; added to attention logits."""
  num_buckets: int
  max_distance: int
  num_heads: int
  bidirectional: bool
  dtype: str

  @nn.compact
  def __call__(self, query_positions, key_positions):
    """query_positions [Q] (may be traced), key_positions [S] -> bias [1, H, Q, S]."""
    rel_embedding_HxK = _param(
        self, 'rel_embedding', nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform'),
        (self.num_heads, self.num_buckets), ('heads', 'relpos_buckets'))
    relative = key_positions[None, :] - query_positions[:, None]
    buckets_QxS = relative_position_bucket(
        relative, self.bidirectional, self.num_buckets, self.max_distance)
    bias_HxQxS = jnp.take(rel_embedding_HxK, buckets_QxS, axis=1)
    return bias_HxQxS[None].astype(self.dtype)


class MultiHeadAttention(nn.Module):
  """Attention with no 1/sqrt(D) at run time: t5x folds it into the query initialisation."""
  num_heads: int
  head_dim: int
  out_features: int
  dropout_rate: float
  dtype: str

  def setup(self):
    inner = self.num_heads * self.head_dim
    fan_in = nn.initializers.variance_scaling(1.0, 'fan_in', 'normal')
    query_init = lambda *a: fan_in(*a) / np.sqrt(self.head_dim)
    self.query = Dense(inner, ('embed', 'joined_kv'), self.dtype, query_init)
    self.key = Dense(inner, ('embed', 'joined_kv'), self.dtype, fan_in)
    self.value = Dense(inner, ('embed', 'joined_kv'), self.dtype, fan_in)
    self.out = Dense(self.out_features, ('joined_kv', 'embed'), self.dtype, fan_in)
    self.dropout = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))

  def _split_heads(self, x_BxLxHD):
    """[B, L, H*D] -> [B, H, L, D]: heads-major, so attention and the decoding cache read
    contiguous [L, D] blocks (3-4x faster per decoding step on CPU than [B, L, H, D])."""
    b, l, _ = x_BxLxHD.shape
    x_BxHxLxD = x_BxLxHD.reshape(b, l, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
    return _constrain(x_BxHxLxD, ('batch', 'heads', 'length', 'kv'))

  def project_kv(self, x_BxSxE):
    return self._split_heads(self.key(x_BxSxE)), self._split_heads(self.value(x_BxSxE))

  def attend(self, x_BxTxE, k_BxHxSxD, v_BxHxSxD, bias_BxHxTxS, enable_dropout):
    q_BxHxTxD = self._split_heads(self.query(x_BxTxE))
    logits_BxHxTxS = jnp.einsum('bhtd,bhsd->bhts', q_BxHxTxD, k_BxHxSxD,
                                preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits_BxHxTxS + bias_BxHxTxS.astype(jnp.float32)).astype(self.dtype)
    weights = self.dropout(weights, deterministic=not enable_dropout)
    out_BxHxTxD = jnp.einsum('bhts,bhsd->bhtd', weights, v_BxHxSxD)
    b, _, t, _ = out_BxHxTxD.shape
    return self.out(out_BxHxTxD.transpose(0, 2, 1, 3).reshape(b, t, -1))

  def __call__(self, x_BxTxE, kv_BxSxE, bias_BxHxTxS, enable_dropout=False):
    k, v = self.project_kv(kv_BxSxE)
    return self.attend(x_BxTxE, k, v, bias_BxHxTxS, enable_dropout)


class MlpBlock(nn.Module):
  """Position-wise MLP: relu (v1.0) or gated gelu (v1.1: gelu(x wi_0) * (x wi_1))."""
  d_ff: int
  activations: tuple
  dropout_rate: float
  dtype: str

  @nn.compact
  def __call__(self, x_BxTxE, enable_dropout=False):
    hidden = []
    for i, act in enumerate(self.activations):
      name = 'wi' if len(self.activations) == 1 else f'wi_{i}'
      h = Dense(self.d_ff, ('embed', 'mlp'), self.dtype, name=name)(x_BxTxE)
      if act != 'linear':
        h = {'relu': jax.nn.relu, 'gelu': lambda y: jax.nn.gelu(y, approximate=True),
             'silu': jax.nn.silu}[act](h)
      hidden.append(h)
    h_BxTxF = _constrain(functools.reduce(jnp.multiply, hidden), ('batch', 'length', 'mlp'))
    h_BxTxF = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
        h_BxTxF, deterministic=not enable_dropout)
    return Dense(x_BxTxE.shape[-1], ('mlp', 'embed'), self.dtype, name='wo')(h_BxTxF)


def _attention_bias(query_mask, key_mask, causal=False):
  """Boolean masks [B, Q], [B, S] -> additive bias [B, 1, Q, S] (0 keep, -1e10 drop)."""
  mask = query_mask[:, None, :, None] & key_mask[:, None, None, :]
  if causal:
    q, s = query_mask.shape[1], key_mask.shape[1]
    mask = mask & (np.arange(q)[:, None] >= np.arange(s)[None, :])
  return jnp.where(mask, 0.0, _MASK_VALUE).astype(jnp.float32)


class EncoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x_BxLxE, bias_BxHxLxL, enable_dropout):
    c = self.config
    drop = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))
    h = RMSNorm(c.layer_norm_epsilon, c.dtype, name='pre_attention_layer_norm')(x_BxLxE)
    h = MultiHeadAttention(c.num_heads, c.head_dim, c.d_model, c.dropout_rate, c.dtype,
                           name='attention')(
        h, h, bias_BxHxLxL, enable_dropout)
    x_BxLxE = x_BxLxE + drop(h, deterministic=not enable_dropout)
    h = RMSNorm(c.layer_norm_epsilon, c.dtype, name='pre_mlp_layer_norm')(x_BxLxE)
    h = MlpBlock(c.d_ff, c.mlp_activations, c.dropout_rate, c.dtype, name='mlp')(h, enable_dropout)
    x_BxLxE = x_BxLxE + drop(h, deterministic=not enable_dropout)
    return _constrain(x_BxLxE, ('batch', 'length', 'embed'))


class DecoderLayer(nn.Module):
  """Self-attention, cross-attention, MLP. With `cache`, runs one decoding step."""
  config: T5Config

  def setup(self):
    c = self.config
    norm = lambda: RMSNorm(c.layer_norm_epsilon, c.dtype)
    attention = lambda: MultiHeadAttention(c.num_heads, c.head_dim, c.d_model, c.dropout_rate,
                                           c.dtype)
    self.pre_self_attention_layer_norm = norm()
    self.self_attention = attention()
    self.pre_cross_attention_layer_norm = norm()
    self.encoder_decoder_attention = attention()
    self.pre_mlp_layer_norm = norm()
    self.mlp = MlpBlock(c.d_ff, c.mlp_activations, c.dropout_rate, c.dtype)
    self.drop = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))

  def __call__(self, y_BxTxE, encoded_BxLxE, self_bias, cross_bias, enable_dropout,
               cache=None, cache_index=None):
    """Full-sequence pass when cache is None; else one step writing k/v at cache_index."""
    h = self.pre_self_attention_layer_norm(y_BxTxE)
    k, v = self.self_attention.project_kv(h)
    if cache is not None:
      k = jax.lax.dynamic_update_slice_in_dim(cache['self_k'], k, cache_index, axis=2)
      v = jax.lax.dynamic_update_slice_in_dim(cache['self_v'], v, cache_index, axis=2)
      cache = dict(cache, self_k=k, self_v=v)
    h = self.self_attention.attend(h, k, v, self_bias, enable_dropout)
    y_BxTxE = y_BxTxE + self.drop(h, deterministic=not enable_dropout)

    h = self.pre_cross_attention_layer_norm(y_BxTxE)
    if cache is not None:
      k, v = cache['cross_k'], cache['cross_v']
    else:
      k, v = self.encoder_decoder_attention.project_kv(encoded_BxLxE)
    h = self.encoder_decoder_attention.attend(h, k, v, cross_bias, enable_dropout)
    y_BxTxE = y_BxTxE + self.drop(h, deterministic=not enable_dropout)

    h = self.mlp(self.pre_mlp_layer_norm(y_BxTxE), enable_dropout)
    y_BxTxE = y_BxTxE + self.drop(h, deterministic=not enable_dropout)
    return _constrain(y_BxTxE, ('batch', 'length', 'embed')), cache

  def cross_kv(self, encoded_BxLxE):
    return self.encoder_decoder_attention.project_kv(encoded_BxLxE)


class Encoder(nn.Module):
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, tokens_BxL, segment_ids_BxL=None, enable_dropout=False):
    c = self.config
    drop = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))
    valid_BxL = tokens_BxL > 0
    if segment_ids_BxL is None:
      bias = _attention_bias(valid_BxL, valid_BxL)
    else:  # packed rows: attend only within one's own segment
      bias = jnp.where(segment_ids_BxL[:, None, :, None] == segment_ids_BxL[:, None, None, :],
                       _attention_bias(valid_BxL, valid_BxL), _MASK_VALUE)
    positions = jnp.arange(tokens_BxL.shape[1])
    bias = bias + RelativePositionBiases(
        c.relative_attention_num_buckets, c.relative_attention_max_distance, c.num_heads,
        bidirectional=True, dtype=c.dtype, name='relpos_bias')(positions, positions)
    x_BxLxE = drop(self.shared_embedding(tokens_BxL), deterministic=not enable_dropout)
    x_BxLxE = _constrain(x_BxLxE, ('batch', 'length', 'embed'))
    for i in range(c.num_encoder_layers):
      x_BxLxE = EncoderLayer(c, name=f'layers_{i}')(x_BxLxE, bias, enable_dropout)
    x_BxLxE = RMSNorm(c.layer_norm_epsilon, c.dtype, name='encoder_norm')(x_BxLxE)
    return drop(x_BxLxE, deterministic=not enable_dropout)


class Decoder(nn.Module):
  config: T5Config
  shared_embedding: nn.Module

  def setup(self):
    c = self.config
    self.relpos_bias = RelativePositionBiases(
        c.relative_attention_num_buckets, c.relative_attention_max_distance, c.num_heads,
        bidirectional=False, dtype=c.dtype)
    self.layers = [DecoderLayer(c) for _ in range(c.num_decoder_layers)]  # layers_0, ...
    self.decoder_norm = RMSNorm(c.layer_norm_epsilon, c.dtype)
    self.drop = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))
    if not c.tie_embeddings:
      self.logits_dense = Dense(c.vocab_size, ('embed', 'vocab'), c.dtype)

  def _logits(self, y_BxTxE, enable_dropout):
    y_BxTxE = self.drop(self.decoder_norm(y_BxTxE), deterministic=not enable_dropout)
    if self.config.tie_embeddings:
      logits = self.shared_embedding.attend(y_BxTxE) / np.sqrt(y_BxTxE.shape[-1]).astype(
          self.config.dtype)
    else:
      logits = self.logits_dense(y_BxTxE)
    return _constrain(logits, ('batch', 'length', 'vocab'))

  def __call__(self, encoded_BxLxE, encoder_tokens_BxL, decoder_input_tokens_BxT,
               decoder_target_tokens_BxT=None, encoder_segment_ids=None,
               decoder_segment_ids=None, enable_dropout=False):
    t = decoder_input_tokens_BxT.shape[1]
    # Padding is read from the targets (t5x): the first decoder input is 0 (BOS = pad id).
    query_valid = (decoder_target_tokens_BxT > 0 if decoder_target_tokens_BxT is not None
                   else jnp.ones_like(decoder_input_tokens_BxT, bool))
    self_bias = _attention_bias(query_valid, query_valid, causal=True)
    cross_bias = _attention_bias(query_valid, encoder_tokens_BxL > 0)
    if decoder_segment_ids is not None:
      same = decoder_segment_ids[:, None, :, None] == decoder_segment_ids[:, None, None, :]
      self_bias = jnp.where(same, self_bias, _MASK_VALUE)
      same = decoder_segment_ids[:, None, :, None] == encoder_segment_ids[:, None, None, :]
      cross_bias = jnp.where(same, cross_bias, _MASK_VALUE)
    positions = jnp.arange(t)
    self_bias = self_bias + self.relpos_bias(positions, positions)
    y_BxTxE = self.drop(self.shared_embedding(decoder_input_tokens_BxT),
                        deterministic=not enable_dropout)
    for layer in self.layers:
      y_BxTxE, _ = layer(y_BxTxE, encoded_BxLxE, self_bias, cross_bias, enable_dropout)
    return self._logits(y_BxTxE, enable_dropout)

  def init_cache(self, encoded_BxLxE, max_decode_length):
    """Per layer: cross-attention k/v computed once, and empty self-attention k/v."""
    c = self.config
    b = encoded_BxLxE.shape[0]
    empty = jnp.zeros((b, c.num_heads, max_decode_length, c.head_dim), c.dtype)
    cache = []
    for layer in self.layers:
      k, v = layer.cross_kv(encoded_BxLxE)
      cache.append({'self_k': empty, 'self_v': empty, 'cross_k': k, 'cross_v': v})
    return cache

  def step(self, token_B, encoder_tokens_BxL, cache, index):
    """One decoding step at position `index`: logits [B, V] and the updated cache."""
    s = cache[0]['self_k'].shape[2]
    b = token_B.shape[0]
    key_positions = jnp.arange(s)
    self_mask = jnp.broadcast_to(key_positions <= index, (b, s))
    self_bias = _attention_bias(jnp.ones((b, 1), bool), self_mask)
    self_bias = self_bias + self.relpos_bias(jnp.reshape(index, (1,)), key_positions)
    cross_bias = _attention_bias(jnp.ones((b, 1), bool), encoder_tokens_BxL > 0)
    y_Bx1xE = self.shared_embedding(token_B[:, None])
    new_cache = []
    for layer, layer_cache in zip(self.layers, cache):
      y_Bx1xE, layer_cache = layer(y_Bx1xE, None, self_bias, cross_bias, False,
                                   cache=layer_cache, cache_index=index)
      new_cache.append(layer_cache)
    return self._logits(y_Bx1xE, False)[:, 0], new_cache


class T5(nn.Module):
  """T5 encoder-decoder. `__call__` gives teacher-forced logits [B, T, V]."""
  config: T5Config

  def setup(self):
    c = self.config
    self.token_embedder = Embed(c.vocab_size, c.d_model, c.dtype)
    self.encoder = Encoder(c, self.token_embedder)
    self.decoder = Decoder(c, self.token_embedder)

  def encode(self, encoder_input_tokens, encoder_segment_ids=None, enable_dropout=False):
    return self.encoder(encoder_input_tokens, encoder_segment_ids, enable_dropout)

  def decode(self, encoded, encoder_input_tokens, decoder_input_tokens,
             decoder_target_tokens=None, encoder_segment_ids=None, decoder_segment_ids=None,
             enable_dropout=False):
    return self.decoder(encoded, encoder_input_tokens, decoder_input_tokens,
                        decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
                        enable_dropout)

  def init_cache(self, encoded, max_decode_length):
    return self.decoder.init_cache(encoded, max_decode_length)

  def decode_step(self, token, encoder_input_tokens, cache, index):
    return self.decoder.step(token, encoder_input_tokens, cache, index)

  def __call__(self, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens=None,
               encoder_segment_ids=None, decoder_segment_ids=None, enable_dropout=False):
    encoded = self.encode(encoder_input_tokens, encoder_segment_ids, enable_dropout)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                       decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
                       enable_dropout)


def init_params(config: T5Config, rng: Optional[jax.Array] = None, boxed: bool = False):
  """Random float32 params; `boxed=True` keeps the logical-axis annotations (for sharding)."""
  rng = jax.random.PRNGKey(0) if rng is None else rng
  tokens = jnp.ones((1, 4), jnp.int32)
  variables = T5(config).init(rng, tokens, tokens)
  return variables['params'] if boxed else nn.unbox(variables['params'])
