"""Tests for dssb.model: cached decoding, sampling, scoring, padding and packing."""

import dataclasses
import functools
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax
import numpy as np
import pytest

from dssb import losses
from dssb.checkpoints import base
from dssb.model import EOS_ID, T5, T5Config, generate, init_params, score

try:
  import torch
  torch.set_flush_denormal(True)
except ImportError:
  pass

CONFIG = T5Config(vocab_size=64, d_model=16, num_heads=2, head_dim=8, d_ff=32,
                  num_encoder_layers=2, num_decoder_layers=3, mlp_activations=('gelu', 'linear'),
                  tie_embeddings=False, relative_attention_num_buckets=8,
                  relative_attention_max_distance=16)
TIED = T5Config(vocab_size=64, d_model=16, num_heads=2, head_dim=6, d_ff=32,
                num_encoder_layers=2, num_decoder_layers=2, mlp_activations=('relu',),
                tie_embeddings=True, relative_attention_num_buckets=8,
                relative_attention_max_distance=16)
MAX_LENGTH = 12
# float32 results of differently shaped computations (logits up to ~10 in magnitude).
TOL = dict(rtol=1e-5, atol=5e-5)


def _params(config, seed):
  """Random params large enough that decodes vary (init_params gives near-uniform outputs).

  The padding id 0 gets logit 0 while the others spread widely, so sampling practically never
  picks it (score() would read a sampled 0 as padding; the tests assert it did not happen).
  """
  rng = np.random.RandomState(seed)

  def draw(path, x):
    name = '/'.join(str(getattr(k, 'key', k)) for k in path)
    std = (0.5 if name.endswith('embedding') else 1.0 if 'logits_dense' in name else
           3.0 if 'rel_embedding' in name else 0.2 if '/mlp/' in name else 0.3)
    if name.endswith('scale'):
      return (1.0 + 0.2 * rng.randn(*x.shape)).astype(np.float32)
    return (std * rng.randn(*x.shape)).astype(np.float32)

  params = jax.tree_util.tree_map_with_path(draw, init_params(config))
  if config.tie_embeddings:
    # Tied logits favour repeating the input token; stronger decoder layers counter that.
    params['token_embedder']['embedding'] *= 4.0
    for i in range(config.num_decoder_layers):
      layer = params['decoder'][f'layers_{i}']
      for kernel in (layer['mlp']['wo'], layer['self_attention']['out'],
                     layer['encoder_decoder_attention']['out']):
        kernel['kernel'] *= 4.0
    params['token_embedder']['embedding'][0] = 0.0
  else:
    params['decoder']['logits_dense']['kernel'][:, 0] = 0.0
  return params


def _inputs():
  rng = np.random.RandomState(0)
  enc = rng.randint(2, 64, size=(4, 10))
  enc[1, 6:] = 0
  enc[3, 3:] = 0
  return enc


@pytest.fixture(scope='module', params=['untied', 'tied'])
def model(request):
  if request.param == 'untied':
    return CONFIG, _params(CONFIG, seed=2)
  return TIED, _params(TIED, seed=0)


def _no_padding_before_eos(tokens):
  for row in np.asarray(tokens):
    body = row[:list(row).index(EOS_ID)] if EOS_ID in row else row
    if (body == 0).any():
      return False
  return True


def test_sampling_is_reproducible(model):
  config, params = model
  enc = _inputs()
  a = generate(config, params, enc, MAX_LENGTH, method='sample', seed=7)
  b = generate(config, params, enc, MAX_LENGTH, method='sample', seed=7)
  c = generate(config, params, enc, MAX_LENGTH, method='sample', seed=8)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  # top_k=1 sampling is greedy decoding.
  greedy = generate(config, params, enc, MAX_LENGTH)
  top1 = generate(config, params, enc, MAX_LENGTH, method='sample', top_k=1, seed=7)
  np.testing.assert_array_equal(top1, greedy)


def test_per_row_seeds_make_a_row_independent_of_its_batch(model):
  """With one seed per row, a row samples the same tokens alone or batched with other rows
  (what a server that batches unrelated requests needs for a request's `seed`)."""
  config, params = model
  enc = _inputs()
  seeds = [11, 12, 13, 14]
  batched = np.asarray(generate(config, params, enc, MAX_LENGTH, method='sample', seed=seeds))
  for i in (0, 2):
    alone = generate(config, params, enc[i:i + 1], MAX_LENGTH, method='sample', seed=[seeds[i]])
    np.testing.assert_array_equal(np.asarray(alone)[0], batched[i])
  same_seed = np.asarray(generate(config, params, enc[[0, 0]], MAX_LENGTH, method='sample',
                                  seed=[5, 5]))
  other_seed = np.asarray(generate(config, params, enc[[0, 0]], MAX_LENGTH, method='sample',
                                   seed=[5, 6]))
  np.testing.assert_array_equal(same_seed[0], same_seed[1])
  assert not np.array_equal(other_seed[0], other_seed[1])


def test_inverse_cdf_sampling_draws_from_the_softmax():
  """The sampler (one uniform per row) draws tokens at their softmax probabilities and never a
  token of probability 0 (masked by top_k), whatever the uniform number, 0 and ~1 included."""
  from dssb.model.decoding import _sample_inverse_cdf  # pylint: disable=g-import-not-at-top
  probs = np.array([0.0, 0.5, 0.0, 0.3, 0.2, 0.0], np.float32)
  logits = np.log(np.maximum(probs, 1e-30)).astype(np.float32)
  logits[probs == 0] = -np.inf
  n = 40000
  uniform = np.array(jax.random.uniform(jax.random.PRNGKey(0), (n,)))
  uniform[:2] = [0.0, np.nextafter(np.float32(1), np.float32(0))]
  tokens = np.asarray(_sample_inverse_cdf(np.tile(logits, (n, 1)), uniform))
  freq = np.bincount(tokens, minlength=6) / n
  np.testing.assert_allclose(freq, probs, atol=0.01)
  assert tokens[0] == 1 and tokens[1] == 4 and set(tokens) == {1, 3, 4}


def test_cached_greedy_equals_full_recompute(model):
  """Greedy decoding with the cache == argmax of T5.apply over the whole prefix each step."""
  config, params = model
  enc = _inputs()
  decoded = np.asarray(generate(config, params, enc, MAX_LENGTH))
  apply = jax.jit(lambda dec_in: T5(config).apply({'params': params}, enc, dec_in))
  prefix = np.zeros((enc.shape[0], MAX_LENGTH), np.int32)  # later positions: masked causally
  reference = np.zeros_like(prefix)
  for step in range(MAX_LENGTH):
    token = np.argmax(np.asarray(apply(prefix))[:, step], axis=-1)
    reference[:, step] = token
    if step + 1 < MAX_LENGTH:
      prefix[:, step + 1] = token
  for row, row_ref in zip(decoded, reference):
    end = list(row_ref).index(EOS_ID) + 1 if EOS_ID in row_ref else MAX_LENGTH
    np.testing.assert_array_equal(row[:end], row_ref[:end])
    assert (row[end:] == 0).all()  # padding after EOS
  assert len(set(reference.ravel().tolist())) > 3


def test_greedy_argmax_equals_jnp_argmax_with_ties_and_nans():
  """The two-reduction argmax of greedy decoding picks what jnp.argmax picks: the first of
  tied maxima, and the first NaN of a row that has one."""
  from dssb.model.decoding import _argmax  # pylint: disable=g-import-not-at-top
  x = np.random.RandomState(0).randint(-3, 4, size=(64, 50)).astype(np.float32)  # many ties
  x[5, 7] = x[6, 0] = x[6, 9] = np.nan
  x[7, :] = -np.inf
  np.testing.assert_array_equal(np.asarray(_argmax(x)), np.asarray(jax.numpy.argmax(x, axis=-1)))
  assert np.asarray(_argmax(x))[5] == 7 and np.asarray(_argmax(x))[6] == 0


@pytest.mark.parametrize('method,temperature', [('greedy', 1.0), ('sample', 0.7)])
def test_score_matches_generate_log_probs(model, method, temperature):
  """generate's log-probs are those of the model (not the temperature-scaled sampler)."""
  config, params = model
  enc = _inputs()
  tokens, log_probs = generate(config, params, enc, MAX_LENGTH, method=method,
                               temperature=temperature, seed=3, return_log_probs=True)
  assert _no_padding_before_eos(tokens)  # else score() would read a sampled 0 as padding
  scored = score(config, params, enc, tokens)
  assert scored.shape == log_probs.shape == tokens.shape
  np.testing.assert_allclose(scored, log_probs, **TOL)
  assert (np.asarray(log_probs)[np.asarray(tokens) == 0] == 0).all()
  assert (np.asarray(log_probs)[np.asarray(tokens) > 0] < 0).all()


def test_encoder_padding_does_not_change_a_row(model):
  config, params = model
  enc = _inputs()
  target = np.random.RandomState(1).randint(2, 64, size=(4, 6))
  dec_in = np.pad(target[:, :-1], ((0, 0), (1, 0)))
  t5 = T5(config)
  encoded = t5.apply({'params': params}, enc, method=T5.encode)
  logits = t5.apply({'params': params}, enc, dec_in, target)
  decoded = generate(config, params, enc, MAX_LENGTH)
  for row in (1, 3):
    n = int((enc[row] > 0).sum())
    alone = enc[row:row + 1, :n]
    np.testing.assert_allclose(encoded[row, :n],
                               t5.apply({'params': params}, alone, method=T5.encode)[0],
                               **TOL)
    np.testing.assert_allclose(logits[row], t5.apply({'params': params}, alone,
                                                     dec_in[row:row + 1],
                                                     target[row:row + 1])[0], **TOL)
  n = int((enc[1] > 0).sum())  # one row through generate (each new shape compiles it anew)
  np.testing.assert_array_equal(decoded[1], generate(config, params, enc[1:2, :n], MAX_LENGTH)[0])


def test_packed_batch_equals_separate_examples(model):
  config, params = model
  rng = np.random.RandomState(2)
  inputs = [rng.randint(2, 64, size=n) for n in (5, 7)]
  targets = [rng.randint(2, 64, size=n) for n in (4, 6)]
  enc_len, dec_len = 14, 12
  enc = np.zeros((1, enc_len), np.int32)
  enc_seg = np.zeros_like(enc)
  target = np.zeros((1, dec_len), np.int32)
  dec_in = np.zeros_like(target)
  dec_seg = np.zeros_like(target)
  e = d = 0
  for seg, (x, y) in enumerate(zip(inputs, targets), start=1):
    enc[0, e:e + len(x)] = x
    enc_seg[0, e:e + len(x)] = seg
    target[0, d:d + len(y)] = y
    dec_in[0, d + 1:d + len(y)] = y[:-1]  # shifted right within its own segment
    dec_seg[0, d:d + len(y)] = seg
    e, d = e + len(x), d + len(y)
  t5 = T5(config)
  packed = t5.apply({'params': params}, enc, dec_in, target, enc_seg, dec_seg)
  d = 0
  for x, y in zip(inputs, targets):
    alone = t5.apply({'params': params}, x[None], np.pad(y[:-1], (1, 0))[None], y[None])
    np.testing.assert_allclose(packed[0, d:d + len(y)], alone[0], **TOL)
    d += len(y)
  # The packed encoder alone gives each segment its separate encoding too.
  encoded = t5.apply({'params': params}, enc, enc_seg, method=T5.encode)
  np.testing.assert_allclose(encoded[0, 5:12],
                             t5.apply({'params': params}, inputs[1][None], method=T5.encode)[0],
                             **TOL)


def test_targets_packed_against_one_input_equal_each_scored_alone(model):
  """Rank classification's decoder rows: several targets of ONE input packed end to end (decoder
  segment ids only), so every segment reads the whole input through cross-attention keys/values
  projected once per row, and each segment's logits are its own teacher-forced logits."""
  config, params = model
  rng = np.random.RandomState(4)
  enc = _inputs()[1:3]  # row 0 has padding
  targets = [[rng.randint(2, 64, size=n) for n in (3, 1, 5)], [rng.randint(2, 64, size=n)
                                                                for n in (2, 4)]]
  dec_len = 11
  target = np.zeros((2, dec_len), np.int32)
  dec_in, dec_seg = np.zeros_like(target), np.zeros_like(target)
  for row, ys in enumerate(targets):
    d = 0
    for seg, y in enumerate(ys, start=1):
      target[row, d:d + len(y)] = y
      dec_in[row, d + 1:d + len(y)] = y[:-1]
      dec_seg[row, d:d + len(y)] = seg
      d += len(y)
  t5 = T5(config)
  encoded = t5.apply({'params': params}, enc, method=T5.encode)
  packed = t5.apply({'params': params}, encoded, enc, dec_in, target,
                    decoder_segment_ids=dec_seg, method=T5.decode)
  unmasked = t5.apply({'params': params}, encoded, enc, dec_in, target, method=T5.decode)
  for row, ys in enumerate(targets):
    d, n = 0, int((enc[row] > 0).sum())
    for y in ys:
      alone = t5.apply({'params': params}, enc[row:row + 1, :n], np.pad(y[:-1], (1, 0))[None],
                       y[None])
      np.testing.assert_allclose(packed[row, d:d + len(y)], alone[0], **TOL)
      d += len(y)
  # Without the segment ids later candidates would read earlier ones: the mask is what works.
  assert not np.allclose(unmasked[0, 3:9], packed[0, 3:9], **TOL)


# ---------------------------------------------------------------------------------------------
# Settings for large models: scan_layers, remat_policy, bfloat16 activations. None may change
# what the model computes (beyond float rounding).


def _variant(config, **changes):
  return dataclasses.replace(config, **changes)


def _loss_and_grads(config, params):
  """Teacher-forced mean token cross-entropy and its gradients, dropout off."""
  enc = _inputs()
  target = np.random.RandomState(3).randint(2, 64, size=(4, 7))
  target[2, 4:] = 0
  dec_in = np.pad(target[:, :-1], ((0, 0), (1, 0)))

  def loss_fn(p):
    logits = T5(config).apply({'params': p}, enc, dec_in, target)
    return losses.cross_entropy(logits, target, target > 0).loss, logits

  (loss, logits), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  return loss, logits, grads


def _assert_grads_close(actual, expected):
  """Per array: within 1e-5 of its largest entry (float32 sums in another order)."""
  def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))
  jax.tree.map(close, actual, expected)


def _scanned(config, params):
  scanned = _variant(config, scan_layers=True)
  return scanned, base.stack_layers(scanned, params)


def test_scanned_layers_give_the_same_logits_gradients_and_decodes(model):
  config, params = model
  loss, logits, grads = _loss_and_grads(config, params)
  scanned, stacked = _scanned(config, params)
  assert set(stacked['decoder']) >= {'layers', 'relpos_bias'}
  loss_s, logits_s, grads_s = _loss_and_grads(scanned, stacked)
  np.testing.assert_allclose(logits_s, logits, **TOL)
  np.testing.assert_allclose(loss_s, loss, rtol=1e-6)
  grads_s = base.unstack_layers(scanned, grads_s, '<grads>')
  _assert_grads_close(grads_s, grads)

  enc = _inputs()
  tokens, logp = generate(config, params, enc, MAX_LENGTH, return_log_probs=True)
  tokens_s, logp_s = generate(scanned, stacked, enc, MAX_LENGTH, return_log_probs=True)
  np.testing.assert_array_equal(tokens_s, tokens)
  np.testing.assert_allclose(logp_s, logp, **TOL)
  np.testing.assert_array_equal(
      generate(scanned, stacked, enc, MAX_LENGTH, method='sample', seed=5),
      generate(config, params, enc, MAX_LENGTH, method='sample', seed=5))


def _eqns(jaxpr):
  """Every equation of a jaxpr, those inside scan / remat / custom_jvp / pjit bodies too."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else [value]:
        sub = getattr(sub, 'jaxpr', sub)
        if hasattr(sub, 'eqns'):
          yield from _eqns(sub)


@functools.lru_cache(maxsize=2)
def _without_remat(scan):
  """(config, params, loss/logits/grads) of CONFIG, scanned or not: the remat tests' reference."""
  params = _params(CONFIG, seed=2)
  config = CONFIG
  if scan:
    config, params = _scanned(CONFIG, params)
  return config, params, _loss_and_grads(config, params)


@pytest.mark.parametrize('policy,scan', [('full', False), ('full', True), ('minimal', True),
                                         ('dots_saveable', False)])
def test_remat_gives_the_same_loss_and_gradients(policy, scan):
  config, params, (loss, _, grads) = _without_remat(scan)
  remat = _variant(config, remat_policy=policy)
  loss_r, _, grads_r = _loss_and_grads(remat, params)
  np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
  _assert_grads_close(grads_r, grads)

  # ... and remat is really there: one checkpoint per layer (one per stack under scan).
  def count(cfg):
    jaxpr = jax.make_jaxpr(lambda p: T5(cfg).apply({'params': p}, _inputs(), _inputs()))(params)
    return sum(e.primitive.name in ('checkpoint', 'remat2') for e in _eqns(jaxpr.jaxpr))
  layers = 2 if scan else CONFIG.num_encoder_layers + CONFIG.num_decoder_layers
  assert count(config) == 0
  assert count(remat) == layers


def test_bfloat16_activations_with_float32_params_norms_and_losses():
  params = _params(CONFIG, seed=2)
  config = _variant(CONFIG, dtype='bfloat16')
  loss32, logits32, _ = _loss_and_grads(CONFIG, params)
  loss, logits, grads = _loss_and_grads(config, params)
  assert logits.dtype == jax.numpy.bfloat16 and loss.dtype == np.float32
  assert all(g.dtype == np.float32 for g in jax.tree.leaves(grads))
  np.testing.assert_allclose(loss, loss32, rtol=2e-2)
  assert float(np.abs(np.asarray(logits, np.float32) - logits32).max()) < 0.1 * float(
      np.abs(logits32).max())

  # Every matmul of the forward pass multiplies bfloat16; normalisers (rsqrt of the RMS norms),
  # the softmax's and the loss's exponentials run in float32.
  enc, target = _inputs(), _inputs()[:, :6]
  jaxpr = jax.make_jaxpr(lambda p: losses.cross_entropy(
      T5(config).apply({'params': p}, enc, target, target), target, target > 0).loss)(params)
  eqns = list(_eqns(jaxpr.jaxpr))
  dots = [e for e in eqns if e.primitive.name == 'dot_general']
  assert len(dots) >= 9 * CONFIG.num_encoder_layers
  assert all(v.aval.dtype == jax.numpy.bfloat16 for e in dots for v in e.invars)
  for name in ('rsqrt', 'exp'):
    found = [e for e in eqns if e.primitive.name == name]
    assert found and all(e.invars[0].aval.dtype == np.float32 for e in found), name
  tokens = generate(config, params, _inputs(), MAX_LENGTH)  # decoding runs in bfloat16 too
  assert np.asarray(tokens).shape == (4, MAX_LENGTH)


def test_run_time_settings_are_not_architecture():
  """A checkpoint written with one dtype / remat policy loads with another; scan_layers changes
  the params tree, so a trainer refuses to resume across it (RunCheckpoints.restore)."""
  other = _variant(CONFIG, dtype='bfloat16', remat_policy='full', dropout_rate=0.0)
  assert CONFIG.architecture_diff(other) == {}
  assert CONFIG.architecture_diff(_variant(CONFIG, scan_layers=True)) == {
      'scan_layers': (False, True)}
  with pytest.raises(ValueError, match='remat_policy'):
    _variant(CONFIG, remat_policy='everything')
