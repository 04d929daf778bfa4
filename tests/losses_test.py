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


# ---------------------------------------------------------------------------------------------
# Soft targets (context distillation, knowledge distillation): hand computations on V = 5.


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


_token_kl = jax.jit(losses.token_kl, static_argnums=2)


def _hand_kl(p_log, q_log):
  return (np.exp(p_log) * (p_log - q_log)).sum(-1)


def _hand_top_k(logp, index):
  """The k tokens' log-probabilities and one bucket with the rest, by explicit loops."""
  out = np.zeros(index.shape[:-1] + (index.shape[-1] + 1,))
  for pos in np.ndindex(index.shape[:-1]):
    chosen = list(index[pos])
    out[pos][:-1] = logp[pos][chosen]
    out[pos][-1] = np.log(sum(np.exp(logp[pos][v]) for v in range(logp.shape[-1])
                              if v not in chosen))
  return out


@pytest.fixture
def pair():
  rng = np.random.default_rng(1)
  student = rng.normal(size=(2, 3, 5)).astype(np.float32) * 2
  teacher = rng.normal(size=(2, 3, 5)).astype(np.float32) * 2
  return student, teacher


@pytest.mark.parametrize('direction', ['forward', 'reverse'])
def test_full_kl_equals_hand_computation(pair, direction):
  student, teacher = pair
  got = _token_kl(jnp.asarray(student), jnp.asarray(teacher),
                  losses.SoftTargets('full', direction))
  s, t = _log_softmax(student.astype(np.float64)), _log_softmax(teacher.astype(np.float64))
  want = _hand_kl(t, s) if direction == 'forward' else _hand_kl(s, t)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('direction', ['forward', 'reverse'])
def test_top_k_kl_equals_hand_computation(pair, direction):
  student, teacher = pair
  got = _token_kl(jnp.asarray(student), jnp.asarray(teacher),
                  losses.SoftTargets('top_k', direction, top_k=2))
  s, t = _log_softmax(student.astype(np.float64)), _log_softmax(teacher.astype(np.float64))
  index = np.argsort(-t, axis=-1)[..., :2]  # the teacher's two most likely tokens
  s_k, t_k = _hand_top_k(s, index), _hand_top_k(t, index)
  want = _hand_kl(t_k, s_k) if direction == 'forward' else _hand_kl(s_k, t_k)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  full = _hand_kl(t, s) if direction == 'forward' else _hand_kl(s, t)
  assert np.all(np.asarray(got) <= full + 1e-6)  # a coarsening never adds divergence
  whole = _token_kl(jnp.asarray(student), jnp.asarray(teacher),
                    losses.SoftTargets('top_k', direction, top_k=5))
  np.testing.assert_allclose(whole, full, rtol=1e-5, atol=1e-6)  # k = V: the full KL


def test_sampled_kl_equals_hand_computation_and_estimates_the_full_one(pair):
  student, teacher = pair
  ids = np.random.default_rng(2).integers(0, 5, size=(2, 3, 7))
  got = losses.token_kl(jnp.asarray(student), jnp.asarray(teacher),
                        losses.SoftTargets('sampled'), jnp.asarray(ids))
  s, t = _log_softmax(student.astype(np.float64)), _log_softmax(teacher.astype(np.float64))
  want = (np.take_along_axis(t, ids, -1) - np.take_along_axis(s, ids, -1)).mean(-1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Drawn from the teacher (as the loss draws them), the estimate converges to the full KL.
  draws = losses.sample_teacher_tokens(jax.random.PRNGKey(0), jnp.asarray(teacher), 20000)
  freq = np.stack([(np.asarray(draws) == v).mean(-1) for v in range(5)], -1)
  np.testing.assert_allclose(freq, np.exp(t), atol=0.015)
  estimate = losses.token_kl(jnp.asarray(student), jnp.asarray(teacher),
                             losses.SoftTargets('sampled'), draws)
  np.testing.assert_allclose(estimate, _hand_kl(t, s), atol=0.05)


@pytest.mark.parametrize('form, direction', [('full', 'forward'), ('full', 'reverse'),
                                             ('top_k', 'forward'), ('top_k', 'reverse'),
                                             ('sampled', 'forward')])
def test_kl_is_zero_for_the_same_distribution_and_trains_only_the_student(pair, form, direction):
  student, teacher = pair
  soft = losses.SoftTargets(form, direction, top_k=2, num_samples=50)
  targets = np.zeros((2, 3), np.int32)
  weights = np.ones((2, 3), np.float32)
  has_teacher = np.ones((2, 3), bool)

  def loss(s, t):
    return losses.soft_target_loss(s, t, targets, weights, has_teacher, soft,
                                   jax.random.PRNGKey(3))[0].loss

  same = jnp.asarray(student)
  assert abs(float(jax.jit(loss)(same, same))) < 1e-6
  grad_s, grad_t = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(student),
                                                           jnp.asarray(teacher))
  assert float(jnp.abs(grad_s).sum()) > 1e-3
  assert float(jnp.abs(grad_t).sum()) == 0.0


def test_soft_target_loss_mixes_kl_and_hard_targets_by_position(pair):
  """KL where the teacher has a distribution (weighted against the hard cross-entropy), plain
  cross-entropy where it has none (e.g. the student's EOS), padding ignored."""
  student, teacher = pair
  targets = np.array([[1, 2, 3], [4, 0, 1]], np.int32)
  weights = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
  has_teacher = np.array([[True, True, False], [True, False, True]])
  soft = losses.SoftTargets('full', weight=0.75)
  got, kl_mean = losses.soft_target_loss(jnp.asarray(student), jnp.asarray(teacher), targets,
                                         weights, has_teacher, soft)
  s, t = _log_softmax(student.astype(np.float64)), _log_softmax(teacher.astype(np.float64))
  kl = _hand_kl(t, s)
  ce = -np.take_along_axis(s, targets[..., None], -1)[..., 0]
  token = np.where(has_teacher, 0.75 * kl + 0.25 * ce, ce)
  np.testing.assert_allclose(got.loss, (token * weights).sum() / weights.sum(), rtol=1e-5)
  used = has_teacher & (weights > 0)
  np.testing.assert_allclose(kl_mean, kl[used].mean(), rtol=1e-5)


def test_soft_targets_refuse_bad_settings():
  for kwargs, match in [({'form': 'topk'}, 'form'), ({'direction': 'both'}, 'direction'),
                        ({'form': 'sampled', 'direction': 'reverse'}, 'forward KL'),
                        ({'top_k': 0}, 'top_k'), ({'weight': 1.5}, 'weight')]:
    with pytest.raises(ValueError, match=match):
      losses.SoftTargets(**kwargs)
