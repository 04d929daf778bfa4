"""The T5 encoder-decoder (Raffel et al. 2020) in Flax linen, with t5x's parameter tree.

Parameter names and shapes follow t5x `examples/t5/network.py` (token_embedder/embedding,
encoder/layers_0/attention/query/kernel, decoder/logits_dense/kernel, ...), so a T5X checkpoint
loads as it is. Every parameter and main activation carries logical axis names; `dssb.sharding`
maps them to mesh axes. The building blocks are in `dssb.model.layers`.

Two settings are for large models and change no result: `remat_policy` (which activations a
layer keeps for the backward pass; the rest is recomputed) and `scan_layers` (each stack's
layers run as one nn.scan loop, so compile time does not grow with depth). Under scan_layers
the params tree has `encoder/layers/...` with a leading stacked axis of size num_layers (logical
axis 'layers') instead of `layers_0`, `layers_1`, ...; `dssb.checkpoints` converts between the
two at load and export.

Shape legend used in names:
  B batch, L encoder length, T decoder length, S cached decoder length (max decode length),
  E d_model (embed), H heads, D head_dim, F d_ff (mlp), V vocab, K relative position buckets,
  N layers of a stack (scan_layers).
"""

import dataclasses
from typing import ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dssb.model import layers
from dssb.model.layers import Dense, Embed, MlpBlock, MultiHeadAttention, RMSNorm
from dssb.model.layers import RelativePositionBiases

PAD_ID = 0
EOS_ID = 1

# What a layer keeps for the backward pass (jax.checkpoint policies). 'full' keeps only each
# layer's input; 'minimal' keeps the projections' outputs (matmuls without batch dimensions)
# but recomputes attention scores; 'dots_saveable' keeps every matmul output, scores included.
REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'minimal': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    'dots_saveable': jax.checkpoint_policies.dots_saveable,
}


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Architecture of one T5. Frozen (hashable) so it can be a static argument of jax.jit.

  v1.0: mlp_activations=('relu',), tie_embeddings=True (logits through the shared embedding,
  scaled by d_model**-0.5). v1.1 and FLAN-T5: ('gelu', 'linear'), tie_embeddings=False.
  dtype is the activations' (params, layer norms, softmax and losses stay float32);
  remat_policy is a key of REMAT_POLICIES; scan_layers stacks each stack's layer params.
  dropout_mode (a key of layers.DROPOUT_MODES): 'shared', t5x's mask shared across positions, or
  'per_element', Hugging Face T5's (the official distilling step-by-step code's).
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
  dtype: str = 'float32'
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  remat_policy: str = 'none'
  scan_layers: bool = False
  dropout_mode: str = 'shared'

  def __post_init__(self):
    # gin passes lists and numpy dtypes; keep the dataclass hashable and comparable.
    object.__setattr__(self, 'mlp_activations', tuple(self.mlp_activations))
    object.__setattr__(self, 'dtype', jnp.dtype(self.dtype).name)
    object.__setattr__(self, 'scan_layers', bool(self.scan_layers))
    if self.num_decoder_layers is None:
      object.__setattr__(self, 'num_decoder_layers', self.num_encoder_layers)
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f'T5Config.remat_policy={self.remat_policy!r}: expected one of '
                       f'{sorted(REMAT_POLICIES)}')
    if self.dropout_mode not in layers.DROPOUT_MODES:
      raise ValueError(f'T5Config.dropout_mode={self.dropout_mode!r}: expected one of '
                       f'{sorted(layers.DROPOUT_MODES)}')

  # Fields that set parameter shapes (as does the number of MLP input kernels): a checkpoint's
  # arrays determine them, so a loaded checkpoint must agree on these.
  PARAM_SHAPE_FIELDS: ClassVar[tuple] = (
      'vocab_size', 'd_model', 'num_heads', 'head_dim', 'd_ff', 'num_encoder_layers',
      'num_decoder_layers', 'tie_embeddings', 'relative_attention_num_buckets')
  # Fields of how a run computes, not of what the weights mean: they may differ between a
  # checkpoint and the run that loads or resumes it.
  RUNTIME_FIELDS: ClassVar[tuple] = ('dropout_rate', 'dropout_mode', 'dtype', 'remat_policy')
  # How the parameters are laid out (layers stacked under nn.scan), not what they are.
  LAYOUT_FIELDS: ClassVar[tuple] = ('scan_layers',)

  def param_shape_diff(self, other: 'T5Config') -> dict:
    """{field: (self's, other's)} where the two configs give parameters of other shapes."""
    diff = {f: (getattr(self, f), getattr(other, f)) for f in self.PARAM_SHAPE_FIELDS
            if getattr(self, f) != getattr(other, f)}
    if len(self.mlp_activations) != len(other.mlp_activations):
      diff['mlp_activations'] = (self.mlp_activations, other.mlp_activations)
    return diff

  def architecture_diff(self, other: 'T5Config', layout: bool = True) -> dict:
    """{field: (self's, other's)} for every field but the run-time ones: the same weights mean
    another function under a changed activation, norm epsilon or position bucketing, and a
    resumed train state has another tree under another layer layout. Without `layout`, the
    layout fields are left out too (checkpoint loaders convert between layouts)."""
    skip = self.RUNTIME_FIELDS + (() if layout else self.LAYOUT_FIELDS)
    return {f: (getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__
            if f not in skip and getattr(self, f) != getattr(other, f)}

  @property
  def activation_dtype(self):
    return jnp.dtype(self.dtype)


def _remat(layer_cls, config: T5Config, enable_dropout_argnum: int):
  """layer_cls, with its __call__ rematerialised under the config's policy."""
  if config.remat_policy == 'none':
    return layer_cls
  # Inside a scan the loop already keeps XLA from merging the recomputation with the forward.
  return nn.remat(layer_cls, policy=REMAT_POLICIES[config.remat_policy],
                  prevent_cse=not config.scan_layers, static_argnums=(enable_dropout_argnum,))


def _scan(body, num_layers: int, in_axes):
  """nn.scan of body(layer, carry, *xs) -> (carry, ys) over a stack: params stacked on a
  leading 'layers' axis, a different init and dropout rng per layer."""
  return nn.scan(body, variable_axes={'params': 0}, split_rngs={'params': True, 'dropout': True},
                 in_axes=in_axes, length=num_layers,
                 metadata_params={nn.PARTITION_NAME: 'layers'})


class EncoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x_BxLxE, bias_BxHxLxL, enable_dropout):
    c = self.config
    drop = layers.dropout(c.dropout_rate, c.dropout_mode)
    h = RMSNorm(c.layer_norm_epsilon, c.dtype, name='pre_attention_layer_norm')(x_BxLxE)
    h = MultiHeadAttention(c.num_heads, c.head_dim, c.d_model, c.dropout_rate, c.dtype,
                           c.dropout_mode, name='attention')(
        h, h, bias_BxHxLxL, enable_dropout)
    x_BxLxE = x_BxLxE + drop(h, deterministic=not enable_dropout)
    h = RMSNorm(c.layer_norm_epsilon, c.dtype, name='pre_mlp_layer_norm')(x_BxLxE)
    h = MlpBlock(c.d_ff, c.mlp_activations, c.dropout_rate, c.dtype, c.dropout_mode, name='mlp')(
        h, enable_dropout)
    x_BxLxE = x_BxLxE + drop(h, deterministic=not enable_dropout)
    return layers.constrain(x_BxLxE, ('batch', 'length', 'embed'))


class DecoderLayer(nn.Module):
  """Self-attention, cross-attention, MLP: `__call__` over a whole sequence, `step` for one
  decoding position with a key/value cache."""
  config: T5Config

  def setup(self):
    c = self.config
    norm = lambda: RMSNorm(c.layer_norm_epsilon, c.dtype)
    attention = lambda: MultiHeadAttention(c.num_heads, c.head_dim, c.d_model, c.dropout_rate,
                                           c.dtype, c.dropout_mode)
    self.pre_self_attention_layer_norm = norm()
    self.self_attention = attention()
    self.pre_cross_attention_layer_norm = norm()
    self.encoder_decoder_attention = attention()
    self.pre_mlp_layer_norm = norm()
    self.mlp = MlpBlock(c.d_ff, c.mlp_activations, c.dropout_rate, c.dtype, c.dropout_mode)
    self.drop = layers.dropout(c.dropout_rate, c.dropout_mode)

  def __call__(self, y_BxTxE, encoded_BxLxE, self_bias, cross_bias, enable_dropout):
    h = self.pre_self_attention_layer_norm(y_BxTxE)
    self_kv = self.self_attention.project_kv(h)
    return self._attend(y_BxTxE, h, self_kv, self.cross_kv(encoded_BxLxE), self_bias,
                        cross_bias, enable_dropout)

  def step(self, y_Bx1xE, self_bias, cross_bias, cache, index):
    """One decoding step: writes this position's k/v into the cache at `index`."""
    h = self.pre_self_attention_layer_norm(y_Bx1xE)
    k, v = self.self_attention.project_kv(h)
    k = jax.lax.dynamic_update_slice_in_dim(cache['self_k'], k, index, axis=2)
    v = jax.lax.dynamic_update_slice_in_dim(cache['self_v'], v, index, axis=2)
    cache = dict(cache, self_k=k, self_v=v)
    y_Bx1xE = self._attend(y_Bx1xE, h, (k, v), (cache['cross_k'], cache['cross_v']), self_bias,
                           cross_bias, False)
    return y_Bx1xE, cache

  def _attend(self, y_BxTxE, h_BxTxE, self_kv, cross_kv, self_bias, cross_bias, enable_dropout):
    """The three residual blocks, given the normed input h and both attentions' keys/values."""
    h = self.self_attention.attend(h_BxTxE, *self_kv, self_bias, enable_dropout)
    y_BxTxE = y_BxTxE + self.drop(h, deterministic=not enable_dropout)
    h = self.pre_cross_attention_layer_norm(y_BxTxE)
    h = self.encoder_decoder_attention.attend(h, *cross_kv, cross_bias, enable_dropout)
    y_BxTxE = y_BxTxE + self.drop(h, deterministic=not enable_dropout)
    h = self.mlp(self.pre_mlp_layer_norm(y_BxTxE), enable_dropout)
    y_BxTxE = y_BxTxE + self.drop(h, deterministic=not enable_dropout)
    return layers.constrain(y_BxTxE, ('batch', 'length', 'embed'))

  def cross_kv(self, encoded_BxLxE):
    return self.encoder_decoder_attention.project_kv(encoded_BxLxE)


class Encoder(nn.Module):
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, tokens_BxL, segment_ids_BxL=None, enable_dropout=False):
    c = self.config
    drop = layers.dropout(c.dropout_rate, c.dropout_mode)
    valid_BxL = tokens_BxL > 0
    if segment_ids_BxL is None:
      bias = layers.attention_bias(valid_BxL, valid_BxL)
    else:  # packed rows: attend only within one's own segment
      bias = jnp.where(segment_ids_BxL[:, None, :, None] == segment_ids_BxL[:, None, None, :],
                       layers.attention_bias(valid_BxL, valid_BxL), layers.MASK_VALUE)
    positions = jnp.arange(tokens_BxL.shape[1])
    bias = bias + RelativePositionBiases(
        c.relative_attention_num_buckets, c.relative_attention_max_distance, c.num_heads,
        bidirectional=True, dtype=c.dtype, name='relpos_bias')(positions, positions)
    x_BxLxE = drop(self.shared_embedding(tokens_BxL), deterministic=not enable_dropout)
    x_BxLxE = layers.constrain(x_BxLxE, ('batch', 'length', 'embed'))
    layer_cls = _remat(EncoderLayer, c, enable_dropout_argnum=3)
    if c.scan_layers:
      body = lambda layer, x, bias: (layer(x, bias, enable_dropout), None)
      x_BxLxE, _ = _scan(body, c.num_encoder_layers, nn.broadcast)(
          layer_cls(c, name='layers'), x_BxLxE, bias)
    else:
      for i in range(c.num_encoder_layers):
        x_BxLxE = layer_cls(c, name=f'layers_{i}')(x_BxLxE, bias, enable_dropout)
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
    layer_cls = _remat(DecoderLayer, c, enable_dropout_argnum=5)
    if c.scan_layers:
      self.layers = layer_cls(c)  # one module, params stacked [N, ...]
    else:
      self.layers = [layer_cls(c) for _ in range(c.num_decoder_layers)]  # layers_0, ...
    self.decoder_norm = RMSNorm(c.layer_norm_epsilon, c.dtype)
    self.drop = layers.dropout(c.dropout_rate, c.dropout_mode)
    if not c.tie_embeddings:
      self.logits_dense = Dense(c.vocab_size, ('embed', 'vocab'), c.dtype)

  def _logits(self, y_BxTxE, enable_dropout):
    y_BxTxE = self.drop(self.decoder_norm(y_BxTxE), deterministic=not enable_dropout)
    if self.config.tie_embeddings:
      logits = self.shared_embedding.attend(y_BxTxE) / np.sqrt(y_BxTxE.shape[-1]).astype(
          self.config.dtype)
    else:
      logits = self.logits_dense(y_BxTxE)
    return layers.constrain(logits, ('batch', 'length', 'vocab'))

  def __call__(self, encoded_BxLxE, encoder_tokens_BxL, decoder_input_tokens_BxT,
               decoder_target_tokens_BxT=None, encoder_segment_ids=None,
               decoder_segment_ids=None, enable_dropout=False):
    """Teacher-forced logits [B, T, V]. Packed rows (decoder_segment_ids: 1, 2, ... per target
    sequence, inputs shifted right within each) attend only within their own segment; with
    encoder_segment_ids too, each segment reads only its own input (packed training rows),
    without, every segment reads the row's whole input: several targets scored against one
    input, its cross-attention keys/values projected once (rank classification)."""
    t = decoder_input_tokens_BxT.shape[1]
    # Padding is read from the targets (t5x): the first decoder input is 0 (BOS = pad id).
    query_valid = (decoder_target_tokens_BxT > 0 if decoder_target_tokens_BxT is not None
                   else jnp.ones_like(decoder_input_tokens_BxT, bool))
    self_bias = layers.attention_bias(query_valid, query_valid, causal=True)
    cross_bias = layers.attention_bias(query_valid, encoder_tokens_BxL > 0)
    if decoder_segment_ids is not None:
      same = decoder_segment_ids[:, None, :, None] == decoder_segment_ids[:, None, None, :]
      self_bias = jnp.where(same, self_bias, layers.MASK_VALUE)
    if encoder_segment_ids is not None and decoder_segment_ids is not None:
      same = decoder_segment_ids[:, None, :, None] == encoder_segment_ids[:, None, None, :]
      cross_bias = jnp.where(same, cross_bias, layers.MASK_VALUE)
    positions = jnp.arange(t)
    self_bias = self_bias + self.relpos_bias(positions, positions)
    y_BxTxE = self.drop(self.shared_embedding(decoder_input_tokens_BxT),
                        deterministic=not enable_dropout)
    if self.config.scan_layers:
      body = lambda layer, y, *xs: (layer(y, *xs, enable_dropout), None)
      y_BxTxE, _ = _scan(body, self.config.num_decoder_layers, (nn.broadcast,) * 3)(
          self.layers, y_BxTxE, encoded_BxLxE, self_bias, cross_bias)
    else:
      for layer in self.layers:
        y_BxTxE = layer(y_BxTxE, encoded_BxLxE, self_bias, cross_bias, enable_dropout)
    return self._logits(y_BxTxE, enable_dropout)

  def init_cache(self, encoded_BxLxE, max_decode_length):
    """Per layer: cross-attention k/v computed once, and empty self-attention k/v. A list of
    per-layer dicts; under scan_layers one dict of arrays stacked [N, B, H, S, D]."""
    c = self.config
    b = encoded_BxLxE.shape[0]
    empty = jnp.zeros((b, c.num_heads, max_decode_length, c.head_dim), c.dtype)
    if c.scan_layers:
      body = lambda layer, carry, enc: (carry, layer.cross_kv(enc))
      _, (k, v) = _scan(body, c.num_decoder_layers, nn.broadcast)(
          self.layers, None, encoded_BxLxE)
      empty = jnp.broadcast_to(empty, (c.num_decoder_layers,) + empty.shape)
      return {'self_k': empty, 'self_v': empty, 'cross_k': k, 'cross_v': v}
    cache = []
    for layer in self.layers:
      k, v = layer.cross_kv(encoded_BxLxE)
      cache.append({'self_k': empty, 'self_v': empty, 'cross_k': k, 'cross_v': v})
    return cache

  def step(self, token_B, encoder_tokens_BxL, cache, index):
    """One decoding step at position `index`: logits [B, V] and the updated cache."""
    c = self.config
    s = (cache if c.scan_layers else cache[0])['self_k'].shape[-2]
    b = token_B.shape[0]
    key_positions = jnp.arange(s)
    self_mask = jnp.broadcast_to(key_positions <= index, (b, s))
    self_bias = layers.attention_bias(jnp.ones((b, 1), bool), self_mask)
    self_bias = self_bias + self.relpos_bias(jnp.reshape(index, (1,)), key_positions)
    cross_bias = layers.attention_bias(jnp.ones((b, 1), bool), encoder_tokens_BxL > 0)
    y_Bx1xE = self.shared_embedding(token_B[:, None])
    if c.scan_layers:
      def body(layer, y, layer_cache, self_bias, cross_bias, index):
        return layer.step(y, self_bias, cross_bias, layer_cache, index)
      y_Bx1xE, cache = _scan(body, c.num_decoder_layers, (0,) + (nn.broadcast,) * 3)(
          self.layers, y_Bx1xE, cache, self_bias, cross_bias, index)
    else:
      new_cache = []
      for layer, layer_cache in zip(self.layers, cache):
        y_Bx1xE, layer_cache = layer.step(y_Bx1xE, self_bias, cross_bias, layer_cache, index)
        new_cache.append(layer_cache)
      cache = new_cache
    return self._logits(y_Bx1xE, False)[:, 0], cache


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
