"""Token losses for the student: hard labels, teacher distributions, and the step-by-step sum.

Distilling step-by-step (Hsieh et al. 2023, Sec. 3.2; official run.py): on the same examples in
one step, L = alpha * L_label + (1 - alpha) * L_rationale, each term the mean cross-entropy over
its own target tokens. `cross_entropy` takes either target ids or target probabilities.

Context distillation (Snell et al. 2022, Sec. 2.4) trains on the teacher's token distribution:
`soft_target_loss` is the token-level KL between the teacher (given its context, frozen) and the
student (given the bare input), on the teacher's sampled output. Three forms (`SoftTargets.form`):

  full     the whole vocabulary.
  top_k    the teacher's k most likely tokens plus ONE bucket holding the rest of the vocabulary,
           for teacher and student alike: the KL between the two distributions coarsened to k+1
           outcomes. Both sides stay normalised, so it is exactly 0 when they agree and never
           above the full KL (a coarsening cannot add divergence). Renormalising the teacher over
           its top k alone would instead ask the student to put zero mass outside them.
  sampled  the paper's approximation: n tokens drawn from the teacher per position (n = 100 in
           the paper), KL ~ mean_i [log p_t(y_i) - log p_s(y_i)]: unbiased for the forward KL,
           its gradient unbiased for the full one, and 0 when teacher and student agree.

Directions: 'forward' KL(teacher || student), the paper's (mass-covering); 'reverse'
KL(student || teacher), MiniLLM's mode-seeking choice (Gu et al. 2024; here token-level, for
'full' and 'top_k': a sampled estimate of it would need samples from the student).
The teacher's logits are under stop_gradient: only the student is trained.
"""

import dataclasses
from typing import NamedTuple, Optional

import gin
import jax
import jax.numpy as jnp

SOFT_FORMS = ('full', 'top_k', 'sampled')
DIRECTIONS = ('forward', 'reverse')
# Log-probability given to an empty bucket: finite, so that gradients stay finite, and so
# negative that its probability is exactly 0 in float32.
_EMPTY = -1e30


class TokenLoss(NamedTuple):
  loss: jax.Array         # mean over weighted target tokens (what is optimised)
  z_loss: jax.Array       # the z-loss part of `loss`
  num_tokens: jax.Array   # sum of weights


def _token_cross_entropy(logits, targets, label_smoothing):
  """(token cross-entropy [B, T], log Z [B, T]) in float32, hard ids or a distribution."""
  logits = logits.astype(jnp.float32)
  log_z_BxT = jax.nn.logsumexp(logits, axis=-1)
  if targets.ndim == logits.ndim:  # a distribution per position
    probs = targets.astype(jnp.float32)
    return log_z_BxT * jnp.sum(probs, axis=-1) - jnp.sum(probs * logits, axis=-1), log_z_BxT
  # -log p(target) = log Z - logit[target]. Label smoothing as PyTorch / HF: (1 - eps) on the
  # target plus eps spread uniformly over the vocabulary.
  target_logit_BxT = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  token_ce_BxT = (1.0 - label_smoothing) * (log_z_BxT - target_logit_BxT)
  if label_smoothing:
    token_ce_BxT += label_smoothing * (log_z_BxT - jnp.mean(logits, axis=-1))
  return token_ce_BxT, log_z_BxT


def _mean(token_BxT, log_z_BxT, weights_BxT, z_loss) -> TokenLoss:
  token_z_BxT = z_loss * jnp.square(log_z_BxT)
  weights = weights_BxT.astype(jnp.float32)
  num_tokens = jnp.sum(weights)
  denom = jnp.maximum(num_tokens, 1.0)
  z_mean = jnp.sum(token_z_BxT * weights) / denom
  return TokenLoss(jnp.sum(token_BxT * weights) / denom + z_mean, z_mean, num_tokens)


def cross_entropy(logits_BxTxV, targets, weights_BxT, label_smoothing: float = 0.0,
                  z_loss: float = 0.0) -> TokenLoss:
  """Mean token cross-entropy, optionally with label smoothing and t5x's z-loss.

  Args:
    logits_BxTxV: student logits (any float dtype; computed in float32).
    targets: int ids [B, T], or target probabilities [B, T, V] (e.g. a teacher's distribution).
    weights_BxT: 1 for target tokens, 0 for padding.
    label_smoothing: mass moved uniformly over the vocabulary (hard targets only).
    z_loss: coefficient of log(Z)^2, which keeps the softmax normaliser near 1 (t5x: 1e-4).

  Returns:
    TokenLoss with the mean over weighted tokens.
  """
  token_ce_BxT, log_z_BxT = _token_cross_entropy(logits_BxTxV, targets, label_smoothing)
  return _mean(token_ce_BxT, log_z_BxT, weights_BxT, z_loss)


def step_by_step_loss(label: TokenLoss, rationale: Optional[TokenLoss], alpha: float):
  """alpha * L_label + (1 - alpha) * L_rationale; the label loss alone without rationales."""
  if rationale is None:
    return label.loss
  return alpha * label.loss + (1.0 - alpha) * rationale.loss


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SoftTargets:
  """How the student learns from a teacher's token distributions (gin: train.soft_targets).

  Attributes:
    form: 'full', 'top_k' or 'sampled' (see the module docstring).
    direction: 'forward' KL(teacher || student) or 'reverse' KL(student || teacher).
    top_k: k of the 'top_k' form.
    num_samples: teacher tokens drawn per position by the 'sampled' form (the paper: 100).
    weight: at a target token that has a teacher distribution, the loss is
      weight * KL + (1 - weight) * cross-entropy on the hard target; tokens without one (e.g.
      the student's EOS after an answer extracted from a scratchpad) use the cross-entropy.
  """
  form: str = 'full'
  direction: str = 'forward'
  top_k: int = 20
  num_samples: int = 100
  weight: float = 1.0

  def __post_init__(self):
    if self.form not in SOFT_FORMS:
      raise ValueError(f'SoftTargets.form must be one of {SOFT_FORMS}, got {self.form!r}')
    if self.direction not in DIRECTIONS:
      raise ValueError(f'SoftTargets.direction must be one of {DIRECTIONS}, got '
                       f'{self.direction!r}')
    if self.form == 'sampled' and self.direction == 'reverse':
      raise ValueError("SoftTargets: the 'sampled' form estimates the forward KL (samples come "
                       "from the teacher); use form 'full' or 'top_k' for the reverse KL")
    if self.top_k < 1 or self.num_samples < 1:
      raise ValueError(f'SoftTargets: top_k ({self.top_k}) and num_samples '
                       f'({self.num_samples}) must be >= 1')
    if not 0.0 <= self.weight <= 1.0:
      raise ValueError(f'SoftTargets.weight must be in [0, 1], got {self.weight}')


def _kl(logp_BxTxK, logq_BxTxK):
  """sum_k p (log p - log q) over the last axis; outcomes with p = 0 add nothing."""
  p = jnp.exp(logp_BxTxK)
  return jnp.sum(jnp.where(p > 0, p * (logp_BxTxK - logq_BxTxK), 0.0), axis=-1)


def _top_k_buckets(logp_BxTxV, index_BxTxK):
  """Log-probabilities of the k given tokens and of one bucket with all other tokens [B,T,k+1]."""
  top_BxTxK = jnp.take_along_axis(logp_BxTxV, index_BxTxK, axis=-1)
  chosen_BxTxV = jax.vmap(jax.vmap(lambda m, i: m.at[i].set(True)))(
      jnp.zeros(logp_BxTxV.shape, bool), index_BxTxK)
  rest_BxT = jax.nn.logsumexp(jnp.where(chosen_BxTxV, _EMPTY, logp_BxTxV), axis=-1)
  rest_BxT = jnp.where(jnp.all(chosen_BxTxV, axis=-1), _EMPTY, rest_BxT)  # k = V: no rest
  return jnp.concatenate([top_BxTxK, rest_BxT[..., None]], axis=-1)


def sample_teacher_tokens(rng, teacher_logits_BxTxV, num_samples: int):
  """num_samples token ids per position drawn from softmax(teacher logits) [B, T, n], by
  inverse CDF (a binary search per draw, not a random number per vocabulary entry)."""
  probs_BxTxV = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits_BxTxV).astype(jnp.float32))
  cdf_BxTxV = jnp.cumsum(probs_BxTxV, axis=-1)
  shape = teacher_logits_BxTxV.shape[:-1] + (num_samples,)
  uniform_BxTxN = jax.random.uniform(rng, shape) * cdf_BxTxV[..., -1:]
  search = jax.vmap(jax.vmap(lambda cdf, u: jnp.searchsorted(cdf, u, side='right')))
  return jnp.minimum(search(cdf_BxTxV, uniform_BxTxN), teacher_logits_BxTxV.shape[-1] - 1)


def token_kl(student_logits_BxTxV, teacher_logits_BxTxV, soft: SoftTargets,
             sample_ids_BxTxN=None):
  """Per-position KL [B, T] of the chosen form and direction; teacher under stop_gradient.

  Args:
    student_logits_BxTxV: the student's logits.
    teacher_logits_BxTxV: the teacher's logits at the same target positions.
    soft: form and direction.
    sample_ids_BxTxN: the teacher's sampled tokens (form 'sampled'; see sample_teacher_tokens).
  """
  logp_s = jax.nn.log_softmax(student_logits_BxTxV.astype(jnp.float32))
  logp_t = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits_BxTxV).astype(jnp.float32))
  if soft.form == 'sampled':
    if sample_ids_BxTxN is None:
      raise ValueError("token_kl: form 'sampled' needs the teacher's sample ids")
    take = lambda logp: jnp.take_along_axis(logp, sample_ids_BxTxN, axis=-1)
    return jnp.mean(take(logp_t) - take(logp_s), axis=-1)
  if soft.form == 'top_k':
    k = min(soft.top_k, logp_t.shape[-1])
    index_BxTxK = jax.lax.top_k(logp_t, k)[1]
    logp_s, logp_t = _top_k_buckets(logp_s, index_BxTxK), _top_k_buckets(logp_t, index_BxTxK)
  if soft.direction == 'forward':
    return _kl(logp_t, logp_s)
  return _kl(logp_s, logp_t)


def soft_target_loss(student_logits_BxTxV, teacher_logits_BxTxV, targets_BxT, weights_BxT,
                     has_teacher_BxT, soft: SoftTargets, rng=None, z_loss: float = 0.0):
  """The student's loss against a teacher's distributions (see SoftTargets.weight).

  Args:
    student_logits_BxTxV: student logits at its target positions.
    teacher_logits_BxTxV: teacher logits aligned to the same positions (anything where
      has_teacher is False).
    targets_BxT: the hard target ids (the teacher's sampled tokens for context distillation).
    weights_BxT: 1 for target tokens, 0 for padding.
    has_teacher_BxT: True where the teacher's distribution is the target.
    soft: the SoftTargets settings.
    rng: key for the 'sampled' form.
    z_loss: t5x's z-loss coefficient.

  Returns:
    (TokenLoss, mean KL over the target tokens that have a teacher distribution).
  """
  token_ce_BxT, log_z_BxT = _token_cross_entropy(student_logits_BxTxV, targets_BxT, 0.0)
  sample_ids = None
  if soft.form == 'sampled':
    sample_ids = sample_teacher_tokens(rng, teacher_logits_BxTxV, soft.num_samples)
  kl_BxT = token_kl(student_logits_BxTxV, teacher_logits_BxTxV, soft, sample_ids)
  has_teacher = has_teacher_BxT & (weights_BxT > 0)
  token_BxT = jnp.where(has_teacher, soft.weight * kl_BxT + (1.0 - soft.weight) * token_ce_BxT,
                        token_ce_BxT)
  kl_mean = jnp.sum(jnp.where(has_teacher, kl_BxT, 0.0)) / jnp.maximum(jnp.sum(has_teacher), 1)
  return _mean(token_BxT, log_z_BxT, weights_BxT, z_loss), kl_mean
