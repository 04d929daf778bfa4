"""The one jitted train step: the recipe's loss, its gradient, one optimizer update.

Recipes differ only in the batch: a standard task gives a 'label' sub-batch; a distilling
step-by-step task also gives a 'rationale' sub-batch of the same rows, and the step optimises
alpha * L_label + (1 - alpha) * L_rationale (Hsieh et al. 2023, Sec. 3.2). Mode switches are Python
constants closed over the step, never a second step. Packed sub-batches (dssb/packing.py) carry
segment ids, which keep attention within each example.
"""

from typing import Any, Callable

import jax
import optax
from flax import struct

from dssb import losses
from dssb.model import T5


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any


def make_loss_fn(model: T5, alpha: float, label_smoothing: float, z_loss: float):
  """(params, batch, rng) -> (loss, metrics)."""

  def loss_fn(params, batch, rng, enable_dropout=True):
    parts = {}
    for i, name in enumerate(sorted(batch)):  # 'label', then 'rationale' if present
      b = batch[name]
      logits = model.apply({'params': params}, b['encoder_input_tokens'],
                           b['decoder_input_tokens'], b['decoder_target_tokens'],
                           b.get('encoder_segment_ids'), b.get('decoder_segment_ids'),
                           enable_dropout=enable_dropout,
                           rngs={'dropout': jax.random.fold_in(rng, i)})
      parts[name] = losses.cross_entropy(logits, b['decoder_target_tokens'],
                                         b['decoder_loss_weights'], label_smoothing, z_loss)
    loss = losses.step_by_step_loss(parts['label'], parts.get('rationale'), alpha)
    metrics = {f'{name}_loss': part.loss for name, part in parts.items()}
    metrics.update(loss=loss, z_loss=sum(p.z_loss for p in parts.values()),
                   target_tokens=sum(p.num_tokens for p in parts.values()))
    return loss, metrics

  return loss_fn


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, schedule):
  """train_step(state, batch, rng) -> (state, metrics); pure, jitted once by the caller."""

  def train_step(state: TrainState, batch, rng):
    step_rng = jax.random.fold_in(rng, state.step)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, step_rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step))
    return TrainState(state.step + 1, params, opt_state), metrics

  return train_step
