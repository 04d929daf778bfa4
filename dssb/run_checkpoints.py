"""Orbax checkpoints of a training run: the last N for resume, and the best on validation.

MODEL_DIR/checkpoints/<step>/ holds {'state': TrainState, 'meta': json}; MODEL_DIR/best/<step>/
holds the same for the step with the best validation score. 'meta' records the model config,
the data seed and the validation score, so a resume can refuse a MODEL_DIR that belongs to a
different model, and the pipeline position (the step) comes back with the weights.

`load_params` reads only the params of a run's checkpoint (its optimizer state is left on disk):
a run's weights start another run (init_checkpoint). `load_frozen` is the one loader of a model
used without training, from a run or a T5X / Hugging Face checkpoint: a teacher for soft targets,
context distillation's sampler and evaluator, dssb.serve and the open teacher.
"""

import dataclasses
from typing import Callable, Optional

import jax
import orbax.checkpoint as ocp

from dssb import paths


class RunCheckpoints:
  """Two orbax CheckpointManagers (latest, best) behind save / restore calls."""

  def __init__(self, model_dir: str, keep: int, async_save: bool = True):
    # Each manager names its multi-host barriers with its own prefix. Without one, both name
    # theirs after the step folder ('async_write_complete.30'), and when best and latest save
    # the same step their background threads enter one barrier twice per host: the
    # coordination service refuses the second ("already ongoing") or waits out its timeout
    # (tests/run_checkpoints_test.py, two processes).
    options = lambda n, name: ocp.CheckpointManagerOptions(
        max_to_keep=n, create=True, enable_async_checkpointing=async_save,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name))
    self.directory = paths.absolute(model_dir)
    self.latest = ocp.CheckpointManager(self.directory / 'checkpoints',
                                        options=options(keep, 'latest'))
    self.best = ocp.CheckpointManager(self.directory / 'best', options=options(1, 'best'))

  @staticmethod
  def _args(state, meta):
    return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))

  def save(self, step: int, state, meta: dict, best: bool = False, force: bool = False):
    manager = self.best if best else self.latest
    if manager.latest_step() == step:
      return
    manager.save(step, args=self._args(state, meta), force=force)

  def latest_step(self) -> Optional[int]:
    return self.latest.latest_step()

  def meta(self, which: str = 'latest') -> Optional[dict]:
    """The json meta of the latest (or best) step, None if there is none; arrays are not read."""
    manager = self.best if which == 'best' else self.latest
    step = manager.latest_step()
    if step is None:
      return None
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, abstract_state, config, which: str = 'latest'):
    """(state, meta) of the latest (or best) step; refuses a checkpoint of another model."""
    manager = self.best if which == 'best' else self.latest
    step = manager.latest_step()
    meta = self.meta(which)
    diff = type(config)(**meta['model_config']).architecture_diff(config)
    if diff:
      raise ValueError(
          f'{manager.directory}/{step} holds a checkpoint of a different model config '
          f'(field: (in checkpoint, in gin)): {diff}. Use a fresh model_dir, or set the gin '
          'model config to match the checkpoint.')
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored['state'], restored['meta']

  def wait(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.latest.close()
    self.best.close()


def meta_for(config, step: int, **extra) -> dict:
  return dict(model_config=dataclasses.asdict(config), step=int(step),
              jax_processes=jax.process_count(), **extra)


def run_folder(path) -> Optional[object]:
  """The orbax folder of a trainer checkpoint path, None if `path` is not one: MODEL_DIR (its
  latest checkpoint), MODEL_DIR/checkpoints (the same) or MODEL_DIR/best (the best one)."""
  folder = paths.absolute(path)
  if (folder / 'checkpoints').is_dir():
    return folder / 'checkpoints'
  if folder.name in ('checkpoints', 'best') and folder.is_dir():
    return folder
  return None


def load_params(path, target_fn: Callable):
  """(T5Config, params, meta) of the latest step in a trainer checkpoint folder (see run_folder).

  Args:
    path: MODEL_DIR, MODEL_DIR/checkpoints or MODEL_DIR/best.
    target_fn: T5Config -> the params' restore target (ShapeDtypeStructs with shardings).
  """
  from dssb.model import T5Config  # pylint: disable=g-import-not-at-top
  folder = run_folder(path)
  if folder is None:
    raise ValueError(f'{path} is not a trainer checkpoint (no checkpoints/ folder in it)')
  manager = ocp.CheckpointManager(folder)
  try:
    step = manager.latest_step()
    if step is None:
      raise ValueError(f'{folder} holds no finished checkpoint')
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    config = T5Config(**meta['model_config'])
    item = {'params': target_fn(config)}
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True)))
  finally:
    manager.close()
  return config, restored['state']['params'], meta


def load_frozen(path: str, mesh, rules):
  """(config, params, meta) of a model used frozen: its architecture read from the checkpoint,
  dropout off, params placed on the mesh by the logical axis rules.

  Args:
    path: a trainer MODEL_DIR (its latest step), MODEL_DIR/best, or a T5X / Hugging Face
      checkpoint (dssb.checkpoints.load).
    mesh: the device mesh.
    rules: the logical axis rules.

  Returns:
    meta is the run's checkpoint meta (step, vocab_path, ...), {} for a T5X or HF checkpoint.
  """
  from dssb import sharding  # pylint: disable=g-import-not-at-top
  if run_folder(path) is not None:
    config, params, meta = load_params(
        path, lambda c: sharding.sharded_abstract_params(c, mesh, rules))
  else:
    from dssb import checkpoints  # pylint: disable=g-import-not-at-top
    config, params = checkpoints.load(path)
    abstract = sharding.sharded_abstract_params(config, mesh, rules)
    params, meta = jax.device_put(params, jax.tree.map(lambda a: a.sharding, abstract)), {}
  return dataclasses.replace(config, dropout_rate=0.0), params, meta
