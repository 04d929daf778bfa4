"""The train/eval loop behind every table: one jitted step, periodic greedy-decoding evals, orbax.

The parts it is made of each live in their own module: where the state starts (state.py), the
step (step.py), the metrics (metrics_log.py), evaluations and the summary (evals.py), SIGTERM
(preemption.py), the run's checkpoints (dssb/run_checkpoints.py), shardings (dssb/sharding.py).
The global batch size is a setting of the run, never of the device count.
"""

import contextlib
import functools
import itertools
import math
import sys
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import flax.linen as nn
import jax

from dssb import (host_memory, input_pipeline, losses, optimizers, packing as packing_lib, paths,
                  sharding)
from dssb.model import T5, T5Config
from dssb.run_checkpoints import RunCheckpoints, load_frozen, meta_for
from dssb.train import state as state_lib
from dssb.train.evals import Evaluator, check_reported_number, log, write_summary
from dssb.train.metrics_log import MetricsLog
from dssb.train.preemption import Preempted, sigterm_flag
from dssb.train.step import make_loss_fn, make_train_step


def train(*, model_dir: str, model_config: T5Config, task: str,
          feature_lengths: Mapping[str, int], batch_size: int, num_steps: int,
          learning_rate: float = 5e-5, schedule: Callable = optimizers.linear_decay_schedule,
          optimizer: Callable = optimizers.adamw, alpha: float = 0.5,
          label_smoothing: float = 0.0, z_loss: float = 0.0, seed: int = 0,
          data_seed: int = 0, init_checkpoint: Optional[str] = None, log_every: int = 10,
          eval_every: int = 250, eval_batch_size: int = 64, max_decode_length: int = 64,
          eval_limit: Optional[int] = None, eval_batches_in_flight: Optional[int] = None,
          test_at_every_eval: bool = False,
          selection_metric: Optional[str] = None, reported_number: str = 'last',
          matmul_precision: Optional[str] = None,
          length_buckets: Optional[Sequence[int]] = input_pipeline.DEFAULT_LENGTH_BUCKETS,
          packing: int = 0, grad_accum_steps: int = 1, checkpoint_every: int = 250,
          keep_checkpoints: int = 3, async_checkpoints: bool = True,
          soft_targets: Optional[losses.SoftTargets] = None,
          teacher_checkpoint: Optional[str] = None,
          mesh_fn: Callable = sharding.make_mesh,
          axis_rules_fn: Callable = sharding.logical_axis_rules) -> Dict[str, Any]:
  """Trains a T5 student on a seqio task, evaluating and checkpointing along the way.

  Args:
    model_dir: where config, metrics.jsonl, TensorBoard events and checkpoints go (local or
      gs://); a model_dir that holds checkpoints is resumed from the latest one.
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
    eval_batches_in_flight: evaluation batches decoding at once, each on a thread; None: 2 on
      a one-device CPU host, 1 elsewhere (dssb.evaluate.default_batches_in_flight).
    test_at_every_eval: also decode the test split at each eval (the official code's habit);
      gives 'max_over_evals' in the summary.
    selection_metric: validation metric for the best checkpoint (default: the first one).
    reported_number: which test number the summary's 'reported' repeats: 'last' (the official
      code's last test eval), 'best_on_validation' or 'max_over_evals' (needs
      test_at_every_eval); all of them are in the summary, labelled (see evals.py).
    matmul_precision: jax.default_matmul_precision for every step, eval and decode of the run:
      None or 'default' (JAX's: reduced-precision float32 matmuls on TPU and on GPUs with
      TF32), 'float32' (full float32, the official PyTorch runs'), 'bfloat16', 'tensorfloat32',
      ... (the values jax.default_matmul_precision takes).
    length_buckets: pad each batch, per sub-batch and side, to the smallest of these lengths that
      holds its longest row (feature_lengths caps them); evaluation decodes sorted by input
      length. None: pad every batch to feature_lengths. The examples and the loss are the same.
    packing: 0, one example per row; k >= 2, pack about k examples per row (dssb/packing.py):
      each step then holds a varying number of examples, at least batch_size on average.
    grad_accum_steps: split each step's global batch into this many micro-batches, one after
      the other in the one jitted step, and update once with their summed gradient, normalised
      as the whole batch (dssb/train/step.py): the same update in less memory. The batch (or
      packed row count) must split evenly over micro-batches times the data axis.
    checkpoint_every: save every this many steps (and at the end, and on SIGTERM).
    keep_checkpoints: how many recent checkpoints to keep (the best is kept besides).
    async_checkpoints: save in the background.
    soft_targets: train on a frozen teacher's token distributions (losses.SoftTargets: KL form
      and direction); None trains on the hard targets only.
    teacher_checkpoint: the teacher for soft_targets: a trainer MODEL_DIR (or its best/ folder),
      a T5X or a Hugging Face checkpoint, with the student's vocabulary. Context-distillation
      tasks give it its own input (its template) and output; other tasks, the student's.
    mesh_fn: () -> jax.sharding.Mesh.
    axis_rules_fn: () -> logical axis rules.

  Returns:
    The summary also written to MODEL_DIR/results.json: test metrics 'last',
    'best_on_validation', 'max_over_evals' (with test_at_every_eval), their 'labels',
    'reported' and 'fidelity' (dropout mode, matmul precision, reported number, optimizer,
    weight decay and its rule, grad_accum_steps) and 'host_memory' (this host's peak resident
    memory).

  Raises:
    Preempted: after SIGTERM, once the state is saved (the command line exits with 143).
    FloatingPointError: a non-finite loss or gradient; the last good checkpoint is kept.
  """
  import gin  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top

  run_dir = paths.absolute(model_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    (run_dir / 'config.gin').write_text(gin.config_str())
  seqio_task = seqio.get_mixture_or_task(task)
  _check_vocab(seqio_task, model_config)
  mesh, rules = mesh_fn(), axis_rules_fn()
  _check_batch_sizes(mesh, batch_size, eval_batch_size, grad_accum_steps, packing)
  check_reported_number(reported_number, test_at_every_eval)
  _matmul_precision(matmul_precision)  # a bad name fails here, before any work
  tracing_context = functools.partial(_tracing_context, mesh, rules, matmul_precision)
  if packing and packing < 2:
    raise ValueError(f'packing={packing}: use 0 (off) or the examples per row to aim for (>= 2)')
  if packing and soft_targets is not None:
    raise ValueError('packing with soft_targets is not supported: the teacher reads unpacked '
                     'rows (set train.packing = 0)')
  splits = {s: input_pipeline.load_examples(task, s, feature_lengths)
            for s in ('train', 'validation', 'test')}
  log(f'task {task}: ' + ', '.join(f'{k} {v.describe()}' for k, v in splits.items())
      + f'; global batch {batch_size} on mesh {dict(mesh.shape)}')
  vocabulary = seqio_task.output_features['targets'].vocabulary
  run_settings = {'data_seed': data_seed, 'batch_size': batch_size, 'packing': packing,
                  'grad_accum_steps': grad_accum_steps,
                  'vocab_path': getattr(vocabulary, 'sentencepiece_model_file', None)}

  # Tracing happens inside these contexts, so activations get their logical constraints.
  with tracing_context(), sigterm_flag() as sigterm:
    sched = schedule(learning_rate, num_steps)
    tx = optimizer(sched)
    abstract, shardings = state_lib.state_shardings(model_config, tx, mesh, rules)
    rep = sharding.replicated(mesh)
    teacher_model, teacher_args, teacher_shardings = None, (), ()
    if soft_targets is not None:
      teacher_config, teacher_params = _load_teacher(teacher_checkpoint, model_config, mesh, rules)
      teacher_model, teacher_args = T5(teacher_config), (teacher_params,)
      teacher_shardings = (jax.tree.map(lambda x: x.sharding, teacher_params),)
    loss_fn = make_loss_fn(T5(model_config), alpha, label_smoothing, z_loss, soft_targets,
                           teacher_model)
    train_step = jax.jit(
        make_train_step(loss_fn, tx, sched, grad_accum_steps),
        in_shardings=(shardings, sharding.batch_sharding(mesh), rep, *teacher_shardings),
        out_shardings=(shardings, rep), donate_argnums=0)
    rng = jax.random.PRNGKey(seed)
    ckpt = RunCheckpoints(run_dir, keep_checkpoints, async_checkpoints)
    metrics_log = None
    try:
      state, start_step = state_lib.initial_state(ckpt, model_config, tx, abstract, shardings,
                                                  run_settings, rng, init_checkpoint)
      if start_step:
        log(f'resumed from {model_dir} at step {start_step}')
      evaluator = Evaluator(model_config, seqio_task, splits, feature_lengths, eval_batch_size,
                            max_decode_length, mesh, eval_limit, selection_metric,
                            test_at_every_eval, best=(ckpt.meta('best') or {}).get('best'),
                            length_buckets=length_buckets,
                            test_history=(ckpt.meta() or {}).get('test_history'),
                            context=tracing_context, batches_in_flight=eval_batches_in_flight)
      metrics_log = MetricsLog(run_dir, start_step, log_every, num_steps)
      batches = _train_batches(splits['train'], feature_lengths, batch_size, data_seed,
                               start_step, length_buckets, packing, mesh, grad_accum_steps)
      progress = _progress_bar(num_steps, start_step)
      for step, local_batch in itertools.islice(batches, max(0, num_steps - start_step)):
        state, metrics = train_step(state, sharding.host_to_global(local_batch, mesh), rng,
                                    *teacher_args)
        done = step + 1
        metrics_log.train_step(done, metrics)
        progress.update(1)
        if done % eval_every == 0 or done == num_steps:
          metrics_log.flush()
          if evaluator.validate(done, state.params, metrics_log.write):
            ckpt.save(done, state, meta_for(model_config, done, best=evaluator.best,
                                            **run_settings), best=True)
          # Decoding's buffers differ from the step's: give back what the eval freed, so the
          # kept heap holds one part's high-water mark, not both (dssb/host_memory.py).
          if host_memory.keeps_freed_memory():
            host_memory.release_freed_memory()
        preempted = sigterm.any_host()
        if done % checkpoint_every == 0 or done == num_steps or preempted:
          metrics_log.flush()
          ckpt.save(done, state, meta_for(model_config, done, **run_settings,
                                          test_history=evaluator.test_history), force=True)
          if preempted and done < num_steps:
            ckpt.wait()
            raise Preempted(f'SIGTERM: saved step {done} to {model_dir}; restart the same '
                            'command to resume')
        if metrics_log.last_train_record and done % log_every == 0:
          progress.set_postfix(loss=f'{metrics_log.last_train_record["loss"]:.4f}', refresh=False)
      metrics_log.flush()
      progress.close()
      ckpt.wait()
      best_params = None
      if evaluator.best:
        best_params = ckpt.restore(state_lib.restore_target(abstract, shardings), model_config,
                                   which='best')[0].params
      summary = evaluator.summary(state.params, int(state.step), best_params, reported_number)
      summary['fidelity'] = {'dropout_mode': model_config.dropout_mode,
                             'dropout_rate': model_config.dropout_rate,
                             'matmul_precision': matmul_precision or 'default',
                             'reported_number': reported_number,
                             'test_at_every_eval': test_at_every_eval,
                             'grad_accum_steps': grad_accum_steps,
                             **optimizers.decay_settings(optimizer)}
      summary['last_checkpoint_step'] = ckpt.latest_step()
      summary['host_memory'] = host_memory.report()  # this host's peak RSS, at the end
      write_summary(run_dir, summary, gin.operative_config_str())
      return summary
    except FloatingPointError as e:
      ckpt.wait()
      raise FloatingPointError(
          f'{e}; stopped. The last good checkpoint (step {ckpt.latest_step()}) is kept in '
          f'{model_dir}/checkpoints. Lower the learning rate or check the data, then restart.'
      ) from None
    finally:
      ckpt.close()
      if metrics_log is not None:
        metrics_log.close()


def _train_batches(examples, feature_lengths, batch_size, data_seed, start_step,
                   length_buckets, packing, mesh, grad_accum_steps=1):
  """(step, host-local batch) from start_step on: bucketed (or fixed) rows, or packed ones."""
  hosts = (jax.process_index(), jax.process_count())
  if not packing:
    return input_pipeline.train_batches(examples, feature_lengths, batch_size, data_seed,
                                        start_step, *hosts, length_buckets=length_buckets)
  shape = packing_lib.packed_shape(examples, feature_lengths, batch_size, packing, data_seed,
                                   math.lcm(mesh.shape['data'] * grad_accum_steps, hosts[1]),
                                   length_buckets)
  log(f'packing: {shape.rows} rows per sub-batch, row lengths {dict(shape.lengths)}')
  return packing_lib.packed_batches(examples, shape, data_seed, start_step, *hosts)


def _progress_bar(num_steps: int, start_step: int):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=num_steps, initial=start_step, disable=jax.process_index() != 0,
              unit='step', dynamic_ncols=True, mininterval=2.0, file=sys.stderr)


def _load_teacher(checkpoint: Optional[str], student: T5Config, mesh, rules):
  if not checkpoint:
    raise ValueError('soft_targets need a teacher: set train.teacher_checkpoint (gin: '
                     'TEACHER_CHECKPOINT) to a trainer MODEL_DIR or a T5X / Hugging Face '
                     'checkpoint')
  config, params, _ = load_frozen(checkpoint, mesh, rules)
  if config.vocab_size != student.vocab_size:
    raise ValueError(f'teacher {checkpoint} has vocab_size {config.vocab_size} but the student '
                     f'has {student.vocab_size}; soft targets need one vocabulary')
  log(f'teacher for soft targets: {checkpoint}')
  return config, params


def _matmul_precision(name: Optional[str]):
  """The jax.default_matmul_precision context of the run; a bad name is refused up front."""
  try:
    return jax.default_matmul_precision(name)
  except ValueError as e:
    raise ValueError(f'train.matmul_precision={name!r} (gin MATMUL_PRECISION): {e}') from None


@contextlib.contextmanager
def _tracing_context(mesh, rules, matmul_precision: Optional[str]):
  """The run's mesh, logical axis rules and matmul precision. JAX and Flax keep them per thread,
  so evaluation's decoding threads enter this too (dssb.evaluate.predict)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules), _matmul_precision(matmul_precision):
    yield


def _check_vocab(task, config: T5Config):
  vocab = task.output_features['targets'].vocabulary
  if vocab.vocab_size > config.vocab_size:
    raise ValueError(f'task {task.name!r} has a vocabulary of {vocab.vocab_size} ids but the '
                     f'model config has vocab_size={config.vocab_size}; set '
                     'model.T5Config.vocab_size in gin to at least the vocabulary size')


def _check_batch_sizes(mesh, batch_size: int, eval_batch_size: int, grad_accum_steps: int = 1,
                      packing: int = 0):
  if batch_size % mesh.shape['data'] or eval_batch_size % mesh.shape['data']:
    raise ValueError(f'batch_size {batch_size} and eval_batch_size {eval_batch_size} must be '
                     f'multiples of the data axis ({mesh.shape["data"]})')
  if grad_accum_steps < 1:
    raise ValueError(f'train.grad_accum_steps={grad_accum_steps}: must be >= 1')
  # Packed rows are counted as a multiple of both (see _train_batches).
  if not packing and batch_size % (mesh.shape['data'] * grad_accum_steps):
    raise ValueError(f'batch_size {batch_size} does not split into train.grad_accum_steps='
                     f'{grad_accum_steps} micro-batches of a multiple of the data axis '
                     f'({mesh.shape["data"]}) rows each')
