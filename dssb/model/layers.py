"""T5's building blocks in Flax linen: dense, embedding, RMS norm, relative position biases,
attention and MLP, each parameter with t5x's name, shape and logical axis names.

The layers and stacks that assemble them are in `dssb.model.network`, which also has the shape
legend (B batch, L/T/S lengths, E embed, H heads, D head_dim, F mlp, V vocab, K buckets).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# A large negative number for masked attention logits; finite so softmax of a fully masked row
# stays finite (such rows only occur at padding positions).
MASK_VALUE = -1e10

# How dropout draws its mask (T5Config.dropout_mode), as nn.Dropout broadcast_dims: 'shared' is
# t5x's, one mask per row shared by every position of the sequence (for attention weights
# [B, H, T, S], by every query position); 'per_element' is Hugging Face T5's, which the official
# distilling step-by-step code trains, an independent draw for each element.
DROPOUT_MODES = {'shared': (-2,), 'per_element': ()}


def dropout(rate: float, mode: str) -> nn.Dropout:
  """T5's dropout at `rate`, its mask drawn as `mode` (a key of DROPOUT_MODES) says."""
  return nn.Dropout(rate, broadcast_dims=DROPOUT_MODES[mode])


def _param(module, name, init_fn, shape, axes):
  """A float32 parameter annotated with logical axis names."""
  return module.param(name, nn.with_logical_partitioning(init_fn, axes), shape, jnp.float32)


def constrain(x, axes):
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
  dropout_mode: str = 'shared'

  def setup(self):
    inner = self.num_heads * self.head_dim
    fan_in = nn.initializers.variance_scaling(1.0, 'fan_in', 'normal')
    query_init = lambda *a: fan_in(*a) / np.sqrt(self.head_dim)
    self.query = Dense(inner, ('embed', 'joined_kv'), self.dtype, query_init)
    self.key = Dense(inner, ('embed', 'joined_kv'), self.dtype, fan_in)
    self.value = Dense(inner, ('embed', 'joined_kv'), self.dtype, fan_in)
    self.out = Dense(self.out_features, ('joined_kv', 'embed'), self.dtype, fan_in)
    self.dropout = dropout(self.dropout_rate, self.dropout_mode)

  def _split_heads(self, x_BxLxHD):
    """[B, L, H*D] -> [B, H, L, D]: heads-major, so attention and the decoding cache read
    contiguous [L, D] blocks (3-4x faster per decoding step on CPU than [B, L, H, D])."""
    b, l, _ = x_BxLxHD.shape
    x_BxHxLxD = x_BxLxHD.reshape(b, l, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
    return constrain(x_BxHxLxD, ('batch', 'heads', 'length', 'kv'))

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
  dropout_mode: str = 'shared'

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
    h_BxTxF = constrain(functools.reduce(jnp.multiply, hidden), ('batch', 'length', 'mlp'))
    h_BxTxF = dropout(self.dropout_rate, self.dropout_mode)(
        h_BxTxF, deterministic=not enable_dropout)
    return Dense(x_BxTxE.shape[-1], ('mlp', 'embed'), self.dtype, name='wo')(h_BxTxF)


def attention_bias(query_mask, key_mask, causal=False):
  """Boolean masks [B, Q], [B, S] -> additive bias [B, 1, Q, S] (0 keep, -1e10 drop)."""
  mask = query_mask[:, None, :, None] & key_mask[:, None, None, :]
  if causal:
    q, s = query_mask.shape[1], key_mask.shape[1]
    mask = mask & (np.arange(q)[:, None] >= np.arange(s)[None, :])
  return jnp.where(mask, 0.0, MASK_VALUE).astype(jnp.float32)
