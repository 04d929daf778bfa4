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

Gradient accumulation (train.grad_accum_steps = k; the official run.py's --grad_steps, t5x's
num_microbatches): the global batch is split into k micro-batches of its rows, each one's
gradient is taken in turn under lax.scan inside the one jitted step, and the optimizer updates
once with their sum. Each sub-batch's loss is normalised by the target tokens of that sub-batch
in the WHOLE step (counted before the split), so the k micro-batch losses add up to the loss of
the one big batch (per task, per target token), and so do their gradients, up to float rounding.
(Hugging Face's accumulation, the official code's, instead averages the micro-batches' means,
which weighs a token by the size of its micro-batch.) Micro-batch j holds rows j, j + k,
j + 2k, ...: with the batch split over 'data', every device keeps its own rows. All k share the
step's padded shape (its length bucket): scan needs one shape.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
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

  def loss_fn(params, batch, rng, enable_dropout=True, teacher_params=None, token_totals=None):
    """token_totals: {sub-batch name: its target tokens in the whole step} when `batch` is one
    micro-batch of it; each sub-batch's mean is then rescaled to sum / that total."""
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
    if token_totals is not None:
      parts = {name: _share_of_step(part, token_totals[name]) for name, part in parts.items()}
    loss = losses.step_by_step_loss(parts['label'], parts.get('rationale'), alpha)
    metrics.update({f'{name}_loss': part.loss for name, part in parts.items()})
    metrics.update(loss=loss, z_loss=sum(p.z_loss for p in parts.values()),
                   target_tokens=sum(p.num_tokens for p in parts.values()))
    return loss, metrics

  return loss_fn


def _share_of_step(part: losses.TokenLoss, step_tokens) -> losses.TokenLoss:
  """A micro-batch's mean token loss -> its token sum over the whole step's token count."""
  share = part.num_tokens / jnp.maximum(step_tokens, 1.0)
  return losses.TokenLoss(part.loss * share, part.z_loss * share, part.num_tokens)


def split_microbatches(x, k: int):
  """[B, ...] -> [k, B / k, ...], micro-batch j holding rows j, j + k, ... (see the module
  docstring); the row axis stays on 'batch' (the mesh's data axis)."""
  if x.shape[0] % k:
    raise ValueError(f'a batch of {x.shape[0]} rows does not split into {k} micro-batches')
  micro = jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)
  return nn.with_logical_constraint(micro, (None, 'batch') + (None,) * (x.ndim - 1))


def _accumulated_grads(loss_fn: Callable, params, batch, step_rng, teacher_params, k: int):
  """(metrics, grads) of the whole batch, summed over k micro-batches under lax.scan."""
  totals = {name: jnp.sum(part['decoder_loss_weights'].astype(jnp.float32))
            for name, part in batch.items() if name != TEACHER_PART}
  micro = jax.tree.map(lambda x: split_microbatches(x, k), batch)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def body(grads_sum, i_and_batch):
    i, micro_batch = i_and_batch
    (_, metrics), grads = grad_fn(params, micro_batch, jax.random.fold_in(step_rng, i),
                                  teacher_params=teacher_params, token_totals=totals)
    return jax.tree.map(jnp.add, grads_sum, grads), metrics

  zeros = jax.tree.map(jnp.zeros_like, params)
  grads, per_micro = jax.lax.scan(body, zeros, (jnp.arange(k), micro))
  # Losses and token counts add up over the micro-batches; the KL metrics are means of theirs.
  metrics = {name: jnp.mean(v, 0) if name.endswith('_kl') else jnp.sum(v, 0)
             for name, v in per_micro.items()}
  return metrics, grads


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, schedule,
                    grad_accum_steps: int = 1):
  """train_step(state, batch, rng, teacher_params=None) -> (state, metrics); pure, jitted once
  by the caller. Gradients are taken with respect to the student's params only, over
  grad_accum_steps micro-batches of the batch (1: the whole batch at once)."""
  if grad_accum_steps < 1:
    raise ValueError(f'grad_accum_steps={grad_accum_steps}: must be >= 1')

  def train_step(state: TrainState, batch, rng, teacher_params=None):
    step_rng = jax.random.fold_in(rng, state.step)
    if grad_accum_steps == 1:
      (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.params, batch, step_rng, teacher_params=teacher_params)
    else:
      metrics, grads = _accumulated_grads(loss_fn, state.params, batch, step_rng,
                                          teacher_params, grad_accum_steps)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step))
    return TrainState(state.step + 1, params, opt_state), metrics

  return train_step
