"""The student's losses against hand computations in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dssb import losses


def _numpy_ce(logits, targets, weights):
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  token = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  return (token * weights).sum() / weights.sum()


@pytest.fixture
def batch():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 11)).astype(np.float32) * 3
  targets = rng.integers(1, 11, size=(3, 5))
  weights = np.ones((3, 5), np.float32)
  weights[0, 3:] = 0
  weights[2, 1:] = 0
  return logits, targets, weights


def test_cross_entropy_is_mean_over_target_tokens(batch):
  logits, targets, weights = batch
  got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
  np.testing.assert_allclose(got.loss, _numpy_ce(logits, targets, weights), rtol=1e-5)
  assert float(got.num_tokens) == weights.sum()


def test_one_hot_distribution_equals_hard_targets(batch):
  logits, targets, weights = batch
  hard = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
  soft = losses.cross_entropy(jnp.asarray(logits), jax.nn.one_hot(targets, 11),
                              jnp.asarray(weights))
  np.testing.assert_allclose(hard.loss, soft.loss, rtol=1e-6)


def test_soft_targets_give_kl_plus_entropy(batch):
  logits, _, weights = batch
  teacher = jax.nn.softmax(jnp.asarray(logits[::-1].copy()))
  got = losses.cross_entropy(jnp.asarray(logits), teacher, jnp.asarray(weights))
  logp = jax.nn.log_softmax(jnp.asarray(logits))
  token = -(teacher * logp).sum(-1)
  np.testing.assert_allclose(got.loss, (token * weights).sum() / weights.sum(), rtol=1e-5)


def test_label_smoothing_and_z_loss(batch):
  logits, targets, weights = batch
  eps, v = 0.1, 11
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  q = np.full(logits.shape, eps / v)
  np.put_along_axis(q, targets[..., None], 1 - eps + eps / v, -1)
  want = ((-(q * logp).sum(-1)) * weights).sum() / weights.sum()
  log_z = np.log(np.exp(logits).sum(-1))
  want_z = 1e-4 * ((log_z ** 2) * weights).sum() / weights.sum()
  got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights),
                             label_smoothing=eps, z_loss=1e-4)
  np.testing.assert_allclose(got.loss, want + want_z, rtol=1e-5)
  np.testing.assert_allclose(got.z_loss, want_z, rtol=1e-5)


def test_step_by_step_is_weighted_sum_of_separately_normalised_terms(batch):
  logits, targets, weights = batch
  rationale_weights = np.ones_like(weights)  # a different token count than the label part
  label = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
  rationale = losses.cross_entropy(jnp.asarray(logits[::-1].copy()), jnp.asarray(targets),
                                   jnp.asarray(rationale_weights))
  want = (0.3 * _numpy_ce(logits, targets, weights)
          + 0.7 * _numpy_ce(logits[::-1], targets, rationale_weights))
  np.testing.assert_allclose(losses.step_by_step_loss(label, rationale, 0.3), want, rtol=1e-5)
  assert float(losses.step_by_step_loss(label, rationale, 1.0)) == float(label.loss)
  assert float(losses.step_by_step_loss(label, None, 0.5)) == float(label.loss)
