"""Where a run starts: its latest checkpoint (resume), an init checkpoint, or a fresh init.

A resume must continue the run it belongs to. The step is also the position in the data (see
input_pipeline), so a checkpoint is refused when the model config or the data-order settings
(data_seed, batch_size, packing) differ from the run's, with a message naming the fields.
"""

from typing import Mapping, Optional, Tuple

import jax
import jax.numpy as jnp

from dssb import run_checkpoints, sharding
from dssb.model import T5Config, init_params
from dssb.run_checkpoints import RunCheckpoints
from dssb.train.step import TrainState

DATA_ORDER_KEYS = ('data_seed', 'batch_size', 'packing')  # what maps a step to its examples


def state_shardings(config: T5Config, tx, mesh, rules) -> Tuple[TrainState, TrainState]:
  """(abstract TrainState, TrainState of NamedShardings); nothing is allocated."""
  (params, opt_state), (param_sharding, opt_sharding) = (
      sharding.params_and_optimizer_shardings(config, tx, mesh, rules))
  abstract = TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, opt_state)
  return abstract, TrainState(sharding.replicated(mesh), param_sharding, opt_sharding)


def restore_target(abstract: TrainState, shardings: TrainState) -> TrainState:
  """What orbax restores into: shapes, dtypes and each leaf's sharding."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def check_data_order(meta: Mapping, run_settings: Mapping, where: str) -> None:
  """Refuses a checkpoint whose step would map to other examples under this run's settings."""
  changed = {k: (meta.get(k), run_settings[k]) for k in DATA_ORDER_KEYS
             if meta.get(k, run_settings[k]) != run_settings[k]}
  if changed:
    raise ValueError(f'{where} was trained with other data-order settings (setting: (in '
                     f'checkpoint, in gin)): {changed}; resuming would not see the examples the '
                     'run would have seen. Set them back or use a fresh model_dir.')


def initial_state(ckpt: RunCheckpoints, config: T5Config, tx, abstract: TrainState,
                  shardings: TrainState, run_settings: Mapping, rng: jax.Array,
                  init_checkpoint: Optional[str] = None) -> Tuple[TrainState, int]:
  """(state, start_step): resumed if the run has a checkpoint, else from init_checkpoint's
  weights (a T5X or Hugging Face checkpoint, or another run's), else a fresh init from rng."""
  if ckpt.latest_step() is not None:
    check_data_order(ckpt.meta(), run_settings, str(ckpt.directory))
    state, _ = ckpt.restore(restore_target(abstract, shardings), config)
    return state, int(state.step)
  if init_checkpoint:
    params = load_params(init_checkpoint, shardings.params, config)
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    return TrainState(jax.device_put(jnp.int32(0), shardings.step), params, opt_state), 0

  def fresh(key):
    params = init_params(config, key)
    return TrainState(jnp.int32(0), params, tx.init(params))

  return jax.jit(fresh, out_shardings=shardings)(jax.random.fold_in(rng, 1)), 0


def _restore_target(shardings_tree):
  return lambda config: jax.tree.map(
      lambda s, a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shardings_tree,
      jax.eval_shape(lambda: init_params(config)))


def load_params(path: str, param_shardings, config: T5Config):
  """Params of a checkpoint placed by `param_shardings`: another run's MODEL_DIR (or its
  checkpoints/ or best/ folder), a T5X or a Hugging Face checkpoint. The checkpoint must hold
  `config`'s architecture; a mismatch names the path and the fields."""
  if run_checkpoints.run_folder(path) is not None:
    def target(found: T5Config):
      diff = found.architecture_diff(config)
      if diff:
        raise ValueError(f'{path} holds a checkpoint of another model config (field: (in '
                         f'checkpoint, in gin)): {diff}')
      return _restore_target(param_shardings)(config)
    return run_checkpoints.load_params(path, target)[1]
  from dssb import checkpoints  # pylint: disable=g-import-not-at-top
  _, params = checkpoints.load(path, config=config)
  return jax.device_put(params, param_shardings)
