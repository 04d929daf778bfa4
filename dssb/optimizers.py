"""Optimisers chosen in gin: AdamW with the official code's HF defaults, or t5x's Adafactor.

Official distilling step-by-step run (HF Seq2SeqTrainer defaults): AdamW, lr 5e-5, betas
(0.9, 0.999), eps 1e-8, weight decay 0, linear decay to 0 at the last step, no warmup, gradient
norm clipped to 1.0.
"""

import gin
import optax


@gin.configurable
def linear_decay_schedule(learning_rate: float, num_steps: int, warmup_steps: int = 0):
  """HF get_linear_schedule_with_warmup: up over warmup_steps, then linearly to 0 at num_steps.

  Args:
    learning_rate: the peak learning rate.
    num_steps: total training steps (the rate reaches 0 there).
    warmup_steps: linear warm-up steps from 0.

  Returns:
    An optax schedule: step -> learning rate.
  """
  decay = optax.linear_schedule(learning_rate, 0.0, max(1, num_steps - warmup_steps))
  if warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


@gin.configurable
def adamw(schedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 0.0, grad_clip_norm: float = 1.0):
  """AdamW after global-norm clipping (the official code's optimiser).

  Args:
    schedule: learning rate schedule.
    b1: first moment decay.
    b2: second moment decay.
    eps: denominator epsilon.
    weight_decay: decoupled weight decay.
    grad_clip_norm: clip the global gradient norm to this (0 disables).

  Returns:
    An optax GradientTransformation.
  """
  parts = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm else []
  parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
  return optax.chain(*parts)


@gin.configurable
def adafactor(schedule, decay_rate: float = 0.8, clipping_threshold: float = 1.0,
              multiply_by_parameter_scale: bool = True):
  """t5x's fine-tuning Adafactor: factored second moments, no momentum.

  Args:
    schedule: learning rate schedule (t5x fine-tuning uses a constant 1e-3).
    decay_rate: second-moment decay exponent.
    clipping_threshold: update clipping (Adafactor's, not the gradient norm).
    multiply_by_parameter_scale: scale updates by the parameter RMS.

  Returns:
    An optax GradientTransformation.
  """
  return optax.adafactor(schedule, decay_rate=decay_rate, clipping_threshold=clipping_threshold,
                         multiply_by_parameter_scale=multiply_by_parameter_scale)


@gin.configurable
def constant_schedule(learning_rate: float, num_steps: int):  # pylint: disable=unused-argument
  """A constant learning rate (t5x fine-tuning with Adafactor).

  Args:
    learning_rate: the rate.
    num_steps: unused; the signature of every schedule factory.

  Returns:
    An optax schedule.
  """
  return optax.constant_schedule(learning_rate)
