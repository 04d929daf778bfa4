"""Token losses for the student: hard labels, teacher distributions, and the step-by-step sum.

Distilling step-by-step (Hsieh et al. 2023, Sec. 3.2; official run.py): on the same examples in
one step, L = alpha * L_label + (1 - alpha) * L_rationale, each term the mean cross-entropy over
its own target tokens. Context distillation (Snell et al. 2022, Sec. 2.4) trains on the teacher's
token distribution: `cross_entropy` takes either target ids or target probabilities.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp


class TokenLoss(NamedTuple):
  loss: jax.Array         # mean over weighted target tokens (what is optimised)
  z_loss: jax.Array       # the z-loss part of `loss`
  num_tokens: jax.Array   # sum of weights


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
  logits = logits_BxTxV.astype(jnp.float32)
  log_z_BxT = jax.nn.logsumexp(logits, axis=-1)
  if targets.ndim == logits.ndim:  # a distribution per position
    probs = targets.astype(jnp.float32)
    token_ce_BxT = log_z_BxT * jnp.sum(probs, axis=-1) - jnp.sum(probs * logits, axis=-1)
  else:
    # -log p(target) = log Z - logit[target]. Label smoothing as PyTorch / HF: (1 - eps) on the
    # target plus eps spread uniformly over the vocabulary.
    target_logit_BxT = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    token_ce_BxT = (1.0 - label_smoothing) * (log_z_BxT - target_logit_BxT)
    if label_smoothing:
      token_ce_BxT += label_smoothing * (log_z_BxT - jnp.mean(logits, axis=-1))
  token_z_BxT = z_loss * jnp.square(log_z_BxT)
  weights = weights_BxT.astype(jnp.float32)
  num_tokens = jnp.sum(weights)
  denom = jnp.maximum(num_tokens, 1.0)
  z_mean = jnp.sum(token_z_BxT * weights) / denom
  return TokenLoss(jnp.sum(token_ce_BxT * weights) / denom + z_mean, z_mean, num_tokens)


def step_by_step_loss(label: TokenLoss, rationale: Optional[TokenLoss], alpha: float):
  """alpha * L_label + (1 - alpha) * L_rationale; the label loss alone without rationales."""
  if rationale is None:
    return label.loss
  return alpha * label.loss + (1.0 - alpha) * rationale.loss
