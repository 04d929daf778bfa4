"""Evaluation by greedy decoding of the label task, scored with the seqio task's metric functions.

Predictions are decoded text post-processed by the task (e.g. the label extracted from a
rationale-then-label output); targets are the gold labels. Every host decodes its rows of each
global batch; the tokens are gathered so every host computes the same metrics. Examples are
decoded longest input first in length-bucketed batches (few padded positions, few compiled
shapes), and the metric sees them back in their order.

On a one-device CPU host two batches decode at once, each from its own thread: XLA:CPU runs much
of a decoding step (the attention's batched dots, the argmax, the small fusions) on one core, so
a second batch fills the idle one (a whole CQA validation pass at the paper's settings: 1.26x,
the same predictions; results/perf/paper_settings.md). Accelerators, and hosts of a
multi-device or multi-host mesh, decode one batch at a time.
"""

import collections
import concurrent.futures
import contextlib
import time
from typing import Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from dssb import input_pipeline


def default_batches_in_flight() -> int:
  """2 on a host whose only device is its CPU, else 1 (see the module docstring)."""
  one_cpu = (jax.default_backend() == 'cpu' and jax.process_count() == 1
             and jax.device_count() == 1)
  return 2 if one_cpu else 1


def _decoded_batches(decode_fn: Callable, params, batches, make_global: Callable,
                     batches_in_flight: int, context: Callable[[], ContextManager]
                     ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
  """(global indices, decoded tokens [B, S] of the whole global batch), batch after batch.

  With batches_in_flight > 1, that many batches decode at once on worker threads, results still
  in order. JAX and Flax keep the mesh, the logical axis rules and the matmul precision per
  thread, so each worker enters `context()`: the caller's, for the same trace and cache entry.
  """
  def decode(item):
    idx, batch = item
    with context():  # blocks until decoded, so that the thread's time is the decoding's
      tokens = decode_fn(params, make_global(batch['label']['encoder_input_tokens']))
      return idx, jax.block_until_ready(tokens)

  def gathered(idx, tokens):  # a collective: called from this thread, in batch order
    return idx, np.asarray(multihost_utils.process_allgather(tokens, tiled=True))

  if batches_in_flight <= 1:
    for item in batches:
      yield gathered(*decode(item))
    return
  with concurrent.futures.ThreadPoolExecutor(batches_in_flight) as pool:
    pending = collections.deque()
    for item in batches:
      pending.append(pool.submit(decode, item))
      if len(pending) == batches_in_flight:
        yield gathered(*pending.popleft().result())
    while pending:
      yield gathered(*pending.popleft().result())


def predict(decode_fn: Callable, params, examples: input_pipeline.Examples, task,
            feature_lengths, batch_size: int, make_global: Callable, limit=None,
            length_buckets: Optional[Sequence[int]] = input_pipeline.DEFAULT_LENGTH_BUCKETS,
            batches_in_flight: Optional[int] = None,
            context: Callable[[], ContextManager] = contextlib.nullcontext
            ) -> Tuple[List[str], List[str], List[int]]:
  """(predictions, targets, decoded lengths), in the examples' order.

  Predictions and targets are post-processed by the task; a decoded length counts the tokens
  decoded up to and including EOS (an answer's inference cost).

  With length_buckets the examples are decoded longest input first, in batches padded to their
  bucket (input_pipeline.eval_batches), and put back in order here; None decodes them in order,
  padded to feature_lengths.

  batches_in_flight: batches decoding at once (None: default_batches_in_flight()); context:
  what each decoding thread enters (the caller's mesh, axis rules and precision).
  """
  vocab = task.output_features['targets'].vocabulary
  n = len(examples) if limit is None else min(limit, len(examples))
  predictions: List[Optional[str]] = [None] * n
  decoded = [0] * n
  batches = input_pipeline.eval_batches(examples, feature_lengths, batch_size,
                                       jax.process_index(), jax.process_count(), limit,
                                       length_buckets)
  in_flight = default_batches_in_flight() if batches_in_flight is None else batches_in_flight
  if in_flight > 1 and jax.process_count() > 1:
    raise ValueError(f'eval batches_in_flight={in_flight} (train.eval_batches_in_flight): a '
                     'multi-host run decodes one batch at a time, so that every host runs its '
                     'collectives in the same order; set it to 1 or leave it unset')
  for idx, tokens in _decoded_batches(decode_fn, params, batches, make_global, in_flight,
                                      context):
    for row, i in enumerate(idx):
      if i >= 0:
        ids = tokens[row].tolist()
        ids = ids[:ids.index(1)] if 1 in ids else ids
        decoded[i] = min(len(ids) + 1, tokens.shape[1])
        predictions[i] = task.postprocess_fn(vocab.decode(ids), example=None, is_target=False)
  targets = []
  for i in range(n):
    gold = examples.texts['targets'][i]
    if gold is None:
      gold = vocab.decode([t for t in examples.tokens['targets'][i].tolist() if t > 1])
    targets.append(task.postprocess_fn(gold, example=None, is_target=True))
  return predictions, targets, decoded


def evaluate(decode_fn: Callable, params, examples: input_pipeline.Examples, task,
             feature_lengths, batch_size: int, make_global: Callable, limit=None,
             length_buckets: Optional[Sequence[int]] = input_pipeline.DEFAULT_LENGTH_BUCKETS,
             batches_in_flight: Optional[int] = None,
             context: Callable[[], ContextManager] = contextlib.nullcontext
             ) -> Dict[str, float]:
  """Decodes every example of `examples` and returns the task's metrics (plus timing).

  Args:
    decode_fn: jitted (params, encoder_input_tokens) -> tokens [B, S].
    params: model params.
    examples: the split, loaded by input_pipeline.load_examples.
    task: the seqio Task (vocabulary, postprocess_fn, predict_metric_fns).
    feature_lengths: sequence lengths per feature.
    batch_size: global eval batch size.
    make_global: host-local array -> global jax.Array sharded over 'data'.
    limit: evaluate only the first `limit` examples.
    length_buckets: decode sorted by input length in bucketed batches (see `predict`); None:
      in order, padded to feature_lengths.
    batches_in_flight: batches decoding at once (None: default_batches_in_flight()).
    context: what each decoding thread enters (see `predict`).

  Returns:
    {metric name: value, 'num_examples': n, 'decoded_tokens': mean tokens decoded per example
    (EOS included: the inference cost of an answer), 'eval_seconds': t}.
  """
  start = time.time()
  predictions, targets, decoded = predict(decode_fn, params, examples, task, feature_lengths,
                                          batch_size, make_global, limit, length_buckets,
                                          batches_in_flight, context)
  metrics = {}
  for metric_fn in task.predict_metric_fns:
    metrics.update({k: float(getattr(v, 'value', v)) for k, v in
                    metric_fn(targets, predictions).items()})
  metrics['num_examples'] = len(predictions)
  metrics['decoded_tokens'] = float(np.mean(decoded)) if decoded else float('nan')
  metrics['eval_seconds'] = time.time() - start
  return metrics
