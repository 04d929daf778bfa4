"""Optimisers chosen in gin: AdamW with the official code's HF defaults, or t5x's Adafactor.

Official distilling step-by-step run (HF Seq2SeqTrainer defaults): AdamW, lr 5e-5, betas
(0.9, 0.999), eps 1e-8, weight decay 0, linear decay to 0 at the last step, no warmup, gradient
norm clipped to 1.0.

Weight decay, when a run sets one, goes where Hugging Face's Trainer puts it (the official code
as soon as a user passes --weight_decay): `Trainer.get_decay_parameter_names` (transformers
5.24) exempts every parameter whose dotted name matches one of HF_NO_DECAY_PATTERNS (and those
inside torch.nn.LayerNorm modules, which T5 has none of). On T5 that exempts the layer-norm scales
('layer_norm', 'final_layer_norm') and the relative attention bias ('relative_attention_bias',
an embedding table whose name holds 'bias'); embeddings, kernels and lm_head decay. The same
patterns on dssb's parameter paths ('encoder/layers_0/pre_mlp_layer_norm/scale' read as
'encoder.layers_0.pre_mlp_layer_norm.scale') pick the same arrays (tests/optimizers_test.py
checks it array by array on a real transformers T5). WEIGHT_DECAY_RULES['all'] decays every
array (optax's and PyTorch AdamW's own habit).
"""

import re
from typing import Any, Dict

import gin
import jax
import optax

# transformers 5.24 Trainer.get_decay_parameter_names: names matching these (lower-cased) get no
# weight decay.
HF_NO_DECAY_PATTERNS = (r'bias', r'layernorm', r'rmsnorm', r'(?:^|\.)norm(?:$|\.)',
                        r'_norm(?:$|\.)')
WEIGHT_DECAY_RULES = ('hugging_face', 'all')


def decays(path: str, rule: str = 'hugging_face') -> bool:
  """Whether the param at `path` ('encoder/encoder_norm/scale', '/' or '.' separated) decays."""
  if rule not in WEIGHT_DECAY_RULES:
    raise ValueError(f'weight_decay_rule={rule!r}: expected one of {WEIGHT_DECAY_RULES}')
  if rule == 'all':
    return True
  dotted = path.replace('/', '.').lower()
  return not any(re.search(pattern, dotted) for pattern in HF_NO_DECAY_PATTERNS)


def path_name(key_path) -> str:
  """'encoder/layers_0/mlp/wo/kernel' of a jax tree key path."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
                  for k in key_path)


def decay_mask(params, rule: str = 'hugging_face'):
  """A pytree of bools shaped like `params`: True where weight decay applies under `rule`."""
  return jax.tree_util.tree_map_with_path(lambda kp, _: decays(path_name(kp), rule), params)


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
          weight_decay: float = 0.0, grad_clip_norm: float = 1.0,
          weight_decay_rule: str = 'hugging_face'):
  """AdamW after global-norm clipping (the official code's optimiser).

  Args:
    schedule: learning rate schedule.
    b1: first moment decay.
    b2: second moment decay.
    eps: denominator epsilon.
    weight_decay: decoupled weight decay (lr * weight_decay * param, as PyTorch's AdamW).
    grad_clip_norm: clip the global gradient norm to this (0 disables).
    weight_decay_rule: which arrays decay: 'hugging_face' (Trainer's rule: not the layer-norm
      scales, biases or relative attention bias; see the module docstring) or 'all'.

  Returns:
    An optax GradientTransformation.
  """
  decays('', weight_decay_rule)  # a bad rule fails here
  # Without weight decay no mask: the optimizer state keeps the structure it always had, so
  # checkpoints of earlier runs still restore.
  mask = None
  if weight_decay and weight_decay_rule != 'all':
    mask = lambda params: decay_mask(params, weight_decay_rule)
  parts = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm else []
  parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                           mask=mask))
  return optax.chain(*parts)


def decay_settings(optimizer) -> Dict[str, Any]:
  """The optimizer's name and, for AdamW, its weight decay and rule as gin sets them (for the
  fidelity settings of results.json)."""
  name = getattr(optimizer, '__name__', repr(optimizer))
  if name == 'adafactor':
    return {'optimizer': name, 'weight_decay': 0.0}
  settings = {'weight_decay': 0.0, 'weight_decay_rule': 'hugging_face'}
  settings.update({k: v for k, v in gin.get_bindings(adamw).items() if k in settings})
  return {'optimizer': name, **settings}


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
