"""The one jitted train step: the recipe's loss, its gradient, one optimizer update.

Recipes differ only in the batch: a standard task gives a 'label' sub-batch; a distilling
step-by-step task also gives a 'rationale' sub-batch of the same rows, and the step optimises
alpha * L_label + (1 - alpha) * L_rationale (Hsieh et al. 2023, Sec. 3.2). Mode switches are Python
constants closed over the step, never a second step. Packed sub-batches (dssb/packing.py) carry
segment ids, which keep attention within each example.

Soft targets (losses.SoftTargets): a frozen teacher's distributions replace or join the hard
targets. The teacher's params are an argument of the step, never trained (its logits are under
stop_gradient). Where it reads its distributions:
  - context distillation: the batch holds a 'teacher' sub-batch (the teacher's template and its
    own sampled output) and 'label' holds teacher_positions, the position in that output of each
    student target token (Snell et al. 2022, Sec. 2.4);
  - otherwise (knowledge distillation for distilling step-by-step with a dssb teacher): the
    teacher reads each student sub-batch as it is, and every target token has its distribution.
"""

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import struct

from dssb import losses
from dssb.model import T5

TEACHER_PART = 'teacher'


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any


def _teacher_logits(teacher: T5, teacher_params, batch, name: str):
  """(teacher logits aligned to sub-batch `name`'s targets [B, T, V], has-teacher mask [B, T])."""
  part = batch[name]
  if TEACHER_PART in batch and name == 'label':
    source = batch[TEACHER_PART]
    logits_BxSxV = teacher.apply({'params': teacher_params}, source['encoder_input_tokens'],
                                 source['decoder_input_tokens'], source['decoder_target_tokens'])
    positions_BxT = part['teacher_positions']  # 1-based; 0, or past a cut output: none
    has_teacher_BxT = (positions_BxT > 0) & (positions_BxT <= logits_BxSxV.shape[1])
    index_BxT = jnp.where(has_teacher_BxT, positions_BxT - 1, 0)
    logits_BxTxV = jnp.take_along_axis(logits_BxSxV, index_BxT[..., None], axis=1)
  else:
    logits_BxTxV = teacher.apply({'params': teacher_params}, part['encoder_input_tokens'],
                                 part['decoder_input_tokens'], part['decoder_target_tokens'])
    has_teacher_BxT = part['decoder_loss_weights'] > 0
  return jax.lax.stop_gradient(logits_BxTxV), has_teacher_BxT


def make_loss_fn(model: T5, alpha: float, label_smoothing: float, z_loss: float,
                 soft_targets: Optional[losses.SoftTargets] = None,
                 teacher: Optional[T5] = None):
  """(params, batch, rng, teacher_params=None) -> (loss, metrics)."""
  if soft_targets is not None and teacher is None:
    raise ValueError('make_loss_fn: soft targets need the teacher model')

  def loss_fn(params, batch, rng, enable_dropout=True, teacher_params=None):
    parts, metrics = {}, {}
    student_parts = [name for name in sorted(batch) if name != TEACHER_PART]
    for i, name in enumerate(student_parts):  # 'label', then 'rationale' if present
      b = batch[name]
      logits = model.apply({'params': params}, b['encoder_input_tokens'],
                           b['decoder_input_tokens'], b['decoder_target_tokens'],
                           b.get('encoder_segment_ids'), b.get('decoder_segment_ids'),
                           enable_dropout=enable_dropout,
                           rngs={'dropout': jax.random.fold_in(rng, i)})
      if soft_targets is None:
        parts[name] = losses.cross_entropy(logits, b['decoder_target_tokens'],
                                           b['decoder_loss_weights'], label_smoothing, z_loss)
        continue
      teacher_logits, has_teacher = _teacher_logits(teacher, teacher_params, batch, name)
      parts[name], metrics[f'{name}_kl'] = losses.soft_target_loss(
          logits, teacher_logits, b['decoder_target_tokens'], b['decoder_loss_weights'],
          has_teacher, soft_targets, jax.random.fold_in(rng, 1000 + i), z_loss)
    loss = losses.step_by_step_loss(parts['label'], parts.get('rationale'), alpha)
    metrics.update({f'{name}_loss': part.loss for name, part in parts.items()})
    metrics.update(loss=loss, z_loss=sum(p.z_loss for p in parts.values()),
                   target_tokens=sum(p.num_tokens for p in parts.values()))
    return loss, metrics

  return loss_fn


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, schedule):
  """train_step(state, batch, rng, teacher_params=None) -> (state, metrics); pure, jitted once
  by the caller. Gradients are taken with respect to the student's params only."""

  def train_step(state: TrainState, batch, rng, teacher_params=None):
    step_rng = jax.random.fold_in(rng, state.step)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, step_rng, teacher_params=teacher_params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step))
    return TrainState(state.step + 1, params, opt_state), metrics

  return train_step
