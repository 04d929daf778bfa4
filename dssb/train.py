"""The train/eval loop behind every table: one jitted step, periodic greedy-decoding evals, orbax.

Recipes differ only in the batch: a standard task gives a 'label' sub-batch; a distilling
step-by-step task also gives a 'rationale' sub-batch of the same rows, and the step optimises
alpha * L_label + (1 - alpha) * L_rationale (Hsieh et al. 2023, Sec. 3.2). The global batch size
is a setting of the run, never of the device count. Run with `python -m dssb.train --gin_file=...`.
"""

import json
import os
import signal
import sys
import time
from typing import Any, Callable, Dict, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.experimental import multihost_utils

from dssb import evaluate as evaluate_lib
from dssb import input_pipeline, losses, optimizers, sharding
from dssb.model import T5, T5Config, generate
from dssb.run_checkpoints import RunCheckpoints, meta_for


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any


def make_loss_fn(model: T5, alpha: float, label_smoothing: float, z_loss: float):
  """(params, batch, rng) -> (loss, metrics). Mode switches are Python constants closed over."""

  def loss_fn(params, batch, rng, enable_dropout=True):
    parts = {}
    for i, name in enumerate(sorted(batch)):  # 'label', then 'rationale' if present
      b = batch[name]
      logits = model.apply({'params': params}, b['encoder_input_tokens'],
                           b['decoder_input_tokens'], b['decoder_target_tokens'],
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


def make_train_step(loss_fn: Callable, tx, schedule):
  """train_step(state, batch, rng) -> (state, metrics); pure, jitted once by the caller."""

  def train_step(state: TrainState, batch, rng):
    step_rng = jax.random.fold_in(rng, state.step)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, step_rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(grad_norm=optax.global_norm(grads), learning_rate=schedule(state.step))
    return TrainState(state.step + 1, params, opt_state), metrics

  return train_step


def state_shardings(config: T5Config, tx, mesh, rules):
  """Abstract TrainState and its NamedShardings, from the params' logical axis names."""
  dummy = jnp.ones((1, 4), jnp.int32)
  boxed = jax.eval_shape(lambda: T5(config).init(jax.random.PRNGKey(0), dummy, dummy)['params'])
  param_sharding = sharding.logical_sharding(boxed, mesh, rules)
  abstract_params = jax.tree.map(lambda b: b.unbox(apply_constraint=False), boxed,
                                 is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  rep = sharding.replicated(mesh)
  # Optimizer leaves shaped like their param share its sharding (Adam moments); the rest
  # (Adafactor's factored rows/columns, counts) are small and replicated.
  opt_sharding = optax.tree_map_params(
      tx, lambda leaf, p, s: s if leaf.shape == p.shape else rep, abstract_opt, abstract_params,
      param_sharding, transform_non_params=lambda _: rep)
  abstract = TrainState(jax.ShapeDtypeStruct((), jnp.int32), abstract_params, abstract_opt)
  return abstract, TrainState(rep, param_sharding, opt_sharding)


def _check_vocab(task, config: T5Config):
  vocab = task.output_features['targets'].vocabulary
  if vocab.vocab_size > config.vocab_size:
    raise ValueError(f'task {task.name!r} has a vocabulary of {vocab.vocab_size} ids but the '
                     f'model config has vocab_size={config.vocab_size}; set '
                     'model.T5Config.vocab_size in gin to at least the vocabulary size')


class _Preemption:
  """Turns SIGTERM (a preemption notice) into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = False
    signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def any_host(self) -> bool:
    if jax.process_count() == 1:
      return self.requested
    return bool(multihost_utils.process_allgather(np.array(self.requested)).any())


def train(*, model_dir: str, model_config: T5Config, task: str,
          feature_lengths: Mapping[str, int], batch_size: int, num_steps: int,
          learning_rate: float = 5e-5, schedule: Callable = optimizers.linear_decay_schedule,
          optimizer: Callable = optimizers.adamw, alpha: float = 0.5,
          label_smoothing: float = 0.0, z_loss: float = 0.0, seed: int = 0,
          data_seed: int = 0, init_checkpoint: Optional[str] = None, log_every: int = 10,
          eval_every: int = 250, eval_batch_size: int = 64, max_decode_length: int = 64,
          eval_limit: Optional[int] = None, test_at_every_eval: bool = False,
          selection_metric: Optional[str] = None, checkpoint_every: int = 250,
          keep_checkpoints: int = 3, async_checkpoints: bool = True,
          mesh_fn: Callable = sharding.make_mesh,
          axis_rules_fn: Callable = sharding.logical_axis_rules) -> Dict[str, Any]:
  """Trains a T5 student on a seqio task, evaluating and checkpointing along the way.

  Args:
    model_dir: where config, metrics.jsonl, TensorBoard events and checkpoints go; a model_dir
      that holds checkpoints is resumed from the latest one.
    model_config: the student's architecture (gin: %MODEL_CONFIG).
    task: a seqio task name, e.g. from dssb.data.tasks.get_task_name.
    feature_lengths: max tokens per feature ('inputs', 'targets', and for distilling
      step-by-step 'rationale_inputs', 'rationale_targets'); longer examples are cut (counted).
    batch_size: GLOBAL batch size, whatever the device and host count.
    num_steps: training steps (the linear schedule reaches 0 here).
    learning_rate: peak learning rate.
    schedule: (learning_rate, num_steps) -> optax schedule.
    optimizer: schedule -> optax transformation (optimizers.adamw or optimizers.adafactor).
    alpha: weight of the label loss; 1 - alpha weighs the rationale loss.
    label_smoothing: label smoothing of the token cross-entropy.
    z_loss: t5x's z-loss coefficient (0 = the official code's plain cross-entropy).
    seed: parameter init and dropout seed.
    data_seed: training order seed.
    init_checkpoint: a T5X or Hugging Face checkpoint to start from (dssb.checkpoints.load);
      random init when None.
    log_every: write train metrics every this many steps.
    eval_every: evaluate on validation every this many steps (and at the end).
    eval_batch_size: global batch size of evaluation decoding.
    max_decode_length: decoded tokens per evaluation example (official: 64).
    eval_limit: evaluate only the first this many examples of each split (smoke runs).
    test_at_every_eval: also decode the test split at each eval (the official code's habit;
      reported as 'test_max_over_evals', for comparison only).
    selection_metric: validation metric for the best checkpoint (default: the first one).
    checkpoint_every: save every this many steps (and at the end, and on SIGTERM).
    keep_checkpoints: how many recent checkpoints to keep (the best is kept besides).
    async_checkpoints: save in the background.
    mesh_fn: () -> jax.sharding.Mesh.
    axis_rules_fn: () -> logical axis rules.

  Returns:
    The summary also written to MODEL_DIR/results.json.
  """
  import gin  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  is_chief = jax.process_index() == 0
  os.makedirs(model_dir, exist_ok=True)
  if is_chief:
    with open(os.path.join(model_dir, 'config.gin'), 'w') as f:
      f.write(gin.config_str())
  seqio_task = seqio.get_mixture_or_task(task)
  _check_vocab(seqio_task, model_config)
  mesh, rules = mesh_fn(), axis_rules_fn()
  if batch_size % mesh.shape['data'] or eval_batch_size % mesh.shape['data']:
    raise ValueError(f'batch_size {batch_size} and eval_batch_size {eval_batch_size} must be '
                     f'multiples of the data axis ({mesh.shape["data"]})')
  # Tracing happens inside these contexts, so activations get their logical constraints.
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    sched = schedule(learning_rate, num_steps)
    tx = optimizer(sched)
    model = T5(model_config)
    abstract_state, state_sharding = state_shardings(model_config, tx, mesh, rules)
    batch_sharding = sharding.batch_sharding(mesh)
    rep = sharding.replicated(mesh)

    def make_global(x):
      global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
      return jax.make_array_from_process_local_data(batch_sharding, x, global_shape)

    loss_fn = make_loss_fn(model, alpha, label_smoothing, z_loss)
    train_step = jax.jit(make_train_step(loss_fn, tx, sched),
                         in_shardings=(state_sharding, batch_sharding, rep),
                         out_shardings=(state_sharding, rep), donate_argnums=0)

    ckpt = RunCheckpoints(model_dir, keep_checkpoints, async_checkpoints)
    restore_target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                  abstract_state, state_sharding)
    data_order = {'data_seed': data_seed, 'batch_size': batch_size}  # step -> examples
    vocabulary = seqio_task.output_features['targets'].vocabulary
    run_meta = dict(data_order, vocab_path=getattr(vocabulary, 'sentencepiece_model_file', None))
    rng = jax.random.PRNGKey(seed)
    if ckpt.latest_step() is not None:
      state, meta = ckpt.restore(restore_target, model_config)
      changed = {k: (meta.get(k), v) for k, v in data_order.items() if meta.get(k, v) != v}
      if changed:  # the step is the data position only under the same order
        raise ValueError(f'{model_dir} was trained with other data-order settings '
                         f'(setting: (in checkpoint, in gin)): {changed}; resuming would not '
                         'see the examples the run would have seen. Set them back or use a '
                         'fresh model_dir.')
      _log(f'resumed from {model_dir} at step {int(state.step)}')
    elif init_checkpoint:
      from dssb import checkpoints  # pylint: disable=g-import-not-at-top
      # Checked against the gin config: a mismatch names the path and the fields.
      _, params = checkpoints.load(init_checkpoint, config=model_config)
      params = jax.device_put(params, state_sharding.params)
      opt_state = jax.jit(tx.init, out_shardings=state_sharding.opt_state)(params)
      state = TrainState(jax.device_put(jnp.int32(0), rep), params, opt_state)
    else:
      def init_fn(key):
        dummy = jnp.ones((1, 4), jnp.int32)
        params = nn.unbox(model.init(key, dummy, dummy)['params'])
        return TrainState(jnp.int32(0), params, tx.init(params))
      state = jax.jit(init_fn, out_shardings=state_sharding)(jax.random.fold_in(rng, 1))
    start_step = int(state.step)
    best = (ckpt.best_meta() or {}).get('best', {})

    splits = {'train': input_pipeline.load_examples(task, 'train', feature_lengths)}
    for split in ('validation', 'test'):
      splits[split] = input_pipeline.load_examples(task, split, feature_lengths)
    _log(f'task {task}: ' + ', '.join(f'{k} {v.describe()}' for k, v in splits.items())
         + f'; global batch {batch_size} on mesh {dict(mesh.shape)}')

    def decode_fn(params, enc):
      return generate(model_config, params, enc, max_decode_length)

    def run_eval(params, split):
      return evaluate_lib.evaluate(decode_fn, params, splits[split], seqio_task, feature_lengths,
                                   eval_batch_size, make_global, eval_limit)

    metrics_path = os.path.join(model_dir, 'metrics.jsonl')
    if is_chief and os.path.exists(metrics_path):  # drop what a killed run logged past the
      with open(metrics_path) as f:                 # checkpoint it resumes from
        kept = [l for l in f if json.loads(l)['step'] <= start_step]
      with open(metrics_path, 'w') as f:
        f.writelines(kept)
    writer = metric_writers.SummaryWriter(os.path.join(model_dir, 'tb')) if is_chief else None

    def write(record):
      if not is_chief:
        return
      with open(metrics_path, 'a') as f:
        f.write(json.dumps(record) + '\n')
      scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != 'step'}
      prefix = record.get('split', 'train')
      writer.write_scalars(record['step'], {f'{prefix}/{k}': v for k, v in scalars.items()})

    preemption = _Preemption()
    batches = input_pipeline.train_batches(splits['train'], feature_lengths, batch_size, data_seed,
                                           start_step, jax.process_index(), jax.process_count())
    progress = tqdm(total=num_steps, initial=start_step, disable=not is_chief, unit='step',
                    dynamic_ncols=True, mininterval=2.0, file=sys.stderr)
    last_saved = start_step
    pending = None  # the previous step's metrics, fetched one step late to keep dispatch async
    tick, tick_tokens = time.time(), 0
    test_history = []

    def flush(pending):
      nonlocal tick, tick_tokens
      step, metrics = pending
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not (np.isfinite(metrics['loss']) and np.isfinite(metrics['grad_norm'])):
        ckpt.wait()
        raise FloatingPointError(
            f'loss or gradient became {metrics["loss"]} / {metrics["grad_norm"]} at step {step}; '
            f'stopped. The last good checkpoint (step {ckpt.latest_step()}) is kept in '
            f'{model_dir}/checkpoints. Lower the learning rate or check the data, then restart.')
      tick_tokens += metrics.pop('target_tokens')
      if step % log_every == 0 or step == num_steps:
        now = time.time()
        metrics.update(step=step, target_tokens_per_second=tick_tokens / max(now - tick, 1e-9))
        tick, tick_tokens = now, 0
        write(metrics)
        progress.set_postfix(loss=f'{metrics["loss"]:.4f}', refresh=False)

    def save(step, **kw):
      ckpt.save(step, state, meta_for(model_config, step, **run_meta), **kw)

    for step, local_batch in batches:
      if step >= num_steps:
        break
      batch = jax.tree.map(make_global, local_batch)
      state, metrics = train_step(state, batch, rng)
      if pending is not None:
        flush(pending)
      pending = (step + 1, metrics)
      progress.update(1)
      done = step + 1
      if done % eval_every == 0 or done == num_steps:
        flush(pending)
        pending = None
        record = run_eval(state.params, 'validation')
        write(dict(record, step=done, split='validation'))
        metric = selection_metric or next(iter(record))
        _log(f'step {done} validation: ' + _fmt(record))
        if test_at_every_eval:
          test = run_eval(state.params, 'test')
          write(dict(test, step=done, split='test'))
          test_history.append(dict(test, step=done))
        if record[metric] > best.get('score', -np.inf):
          best = {'score': record[metric], 'metric': metric, 'step': done}
          ckpt.save(done, state, meta_for(model_config, done, best=best, **run_meta),
                    best=True)
      preempted = preemption.any_host()
      if done % checkpoint_every == 0 or done == num_steps or preempted:
        if pending is not None:
          flush(pending)
          pending = None
        save(done, force=True)
        last_saved = done
        if preempted and done < num_steps:
          ckpt.wait()
          _log(f'SIGTERM: saved step {done} to {model_dir}; restart the same command to resume')
          ckpt.close()
          sys.exit(143)
    if pending is not None:
      flush(pending)
    progress.close()
    ckpt.wait()

    summary = {'last': {'step': int(state.step), 'test': run_eval(state.params, 'test')}}
    if best:
      best_state, _ = ckpt.restore(restore_target, model_config, which='best')
      summary['best_on_validation'] = dict(best, test=run_eval(best_state.params, 'test'))
    if test_history:
      m = best.get('metric') or next(iter(test_history[0]))
      summary['test_max_over_evals'] = max(test_history, key=lambda r: r[m])
    summary['last_checkpoint_step'] = last_saved
    if is_chief:
      with open(os.path.join(model_dir, 'results.json'), 'w') as f:
        json.dump(summary, f, indent=1)
      with open(os.path.join(model_dir, 'operative_config.gin'), 'w') as f:
        f.write(gin.operative_config_str())
      for name in ('last', 'best_on_validation'):
        if name in summary:
          _log(f'test ({name}, step {summary[name]["step"]}): ' + _fmt(summary[name]['test']))
      writer.flush()
    ckpt.close()
    return summary


def _fmt(record):
  return ' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                  for k, v in record.items())


def _log(message):
  """One line on process 0, printed above the progress bar."""
  if jax.process_index() == 0:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    tqdm.write(message, file=sys.stderr)


if __name__ == '__main__':
  from dssb import main  # pylint: disable=g-import-not-at-top
  main.run()
