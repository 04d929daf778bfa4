"""Evaluation by greedy decoding of the label task, scored with the seqio task's metric functions.

Predictions are decoded text post-processed by the task (e.g. the label extracted from a
rationale-then-label output); targets are the gold labels. Every host decodes its rows of each
global batch; the tokens are gathered so every host computes the same metrics.
"""

import time
from typing import Callable, Dict

import jax
import numpy as np
from jax.experimental import multihost_utils

from dssb import input_pipeline


def evaluate(decode_fn: Callable, params, examples: input_pipeline.Examples, task,
             feature_lengths, batch_size: int, make_global: Callable,
             limit=None) -> Dict[str, float]:
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

  Returns:
    {metric name: value, 'num_examples': n, 'decoded_tokens': mean tokens decoded per example
    (EOS included: the inference cost of an answer), 'eval_seconds': t}.
  """
  start = time.time()
  vocab = task.output_features['targets'].vocabulary
  process_index, process_count = jax.process_index(), jax.process_count()
  predictions, targets, decoded = [], [], []
  for idx, batch in input_pipeline.eval_batches(examples, feature_lengths, batch_size,
                                                process_index, process_count, limit):
    tokens = decode_fn(params, make_global(batch['label']['encoder_input_tokens']))
    tokens = np.asarray(multihost_utils.process_allgather(tokens, tiled=True))
    for row, i in enumerate(idx):
      if i < 0:
        continue
      ids = tokens[row].tolist()
      ids = ids[:ids.index(1)] if 1 in ids else ids
      decoded.append(min(len(ids) + 1, tokens.shape[1]))
      predictions.append(task.postprocess_fn(vocab.decode(ids), example=None, is_target=False))
      gold = examples.texts['targets'][i]
      if gold is None:
        gold = vocab.decode([t for t in examples.tokens['targets'][i].tolist() if t > 1])
      targets.append(task.postprocess_fn(gold, example=None, is_target=True))
  metrics = {}
  for metric_fn in task.predict_metric_fns:
    metrics.update({k: float(getattr(v, 'value', v)) for k, v in
                    metric_fn(targets, predictions).items()})
  metrics['num_examples'] = len(predictions)
  metrics['decoded_tokens'] = float(np.mean(decoded)) if decoded else float('nan')
  metrics['eval_seconds'] = time.time() - start
  return metrics
