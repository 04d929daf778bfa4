"""Tests for dssb.model: cached decoding, sampling, scoring, padding and packing."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax
import numpy as np
import pytest

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
