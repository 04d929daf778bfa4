"""Evaluation by greedy decoding of the label task, scored with the seqio task's metric functions.

Predictions are decoded text post-processed by the task (e.g. the label extracted from a
rationale-then-label output); targets are the gold labels. Every host decodes its rows of each
global batch; the tokens are gathered so every host computes the same metrics. Examples are
decoded longest input first in length-bucketed batches (few padded positions, few compiled
shapes), and the metric sees them back in their order.
"""

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from dssb import input_pipeline


def predict(decode_fn: Callable, params, examples: input_pipeline.Examples, task,
            feature_lengths, batch_size: int, make_global: Callable, limit=None,
            length_buckets: Optional[Sequence[int]] = input_pipeline.DEFAULT_LENGTH_BUCKETS
            ) -> Tuple[List[str], List[str], List[int]]:
  """(predictions, targets, decoded lengths), in the examples' order.

  Predictions and targets are post-processed by the task; a decoded length counts the tokens
  decoded up to and including EOS (an answer's inference cost).

  With length_buckets the examples are decoded longest input first, in batches padded to their
  bucket (input_pipeline.eval_batches), and put back in order here; None decodes them in order,
  padded to feature_lengths.
  """
  vocab = task.output_features['targets'].vocabulary
  n = len(examples) if limit is None else min(limit, len(examples))
  predictions: List[Optional[str]] = [None] * n
  decoded = [0] * n
  for idx, batch in input_pipeline.eval_batches(examples, feature_lengths, batch_size,
                                                jax.process_index(), jax.process_count(), limit,
                                                length_buckets):
    tokens = decode_fn(params, make_global(batch['label']['encoder_input_tokens']))
    tokens = np.asarray(multihost_utils.process_allgather(tokens, tiled=True))
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
             length_buckets: Optional[Sequence[int]] = input_pipeline.DEFAULT_LENGTH_BUCKETS
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

  Returns:
    {metric name: value, 'num_examples': n, 'decoded_tokens': mean tokens decoded per example
    (EOS included: the inference cost of an answer), 'eval_seconds': t}.
  """
  start = time.time()
  predictions, targets, decoded = predict(decode_fn, params, examples, task, feature_lengths,
                                          batch_size, make_global, limit, length_buckets)
  metrics = {}
  for metric_fn in task.predict_metric_fns:
    metrics.update({k: float(getattr(v, 'value', v)) for k, v in
                    metric_fn(targets, predictions).items()})
  metrics['num_examples'] = len(predictions)
  metrics['decoded_tokens'] = float(np.mean(decoded)) if decoded else float('nan')
  metrics['eval_seconds'] = time.time() - start
  return metrics
