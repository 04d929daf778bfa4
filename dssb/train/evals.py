"""A run's evaluations: validation during training (which picks the best checkpoint), and the
final summary of test accuracy.

The official distilling step-by-step code decodes the TEST split every 250 steps and never
selects on validation; the paper does not say which number it reports. So the summary reports,
labelled: the last step, the best step on validation, and (with test_at_every_eval) the maximum
over the test evals, the official habit, for comparison only.
"""

import json
import sys
from typing import Callable, Dict, List, Mapping, Optional

import jax
import numpy as np

from dssb import evaluate as evaluate_lib
from dssb import input_pipeline, paths, sharding
from dssb.model import T5Config, generate


class Evaluator:
  """Decodes whole splits greedily and keeps the best validation score of the run."""

  def __init__(self, model_config: T5Config, seqio_task,
               splits: Mapping[str, input_pipeline.Examples], feature_lengths,
               batch_size: int, max_decode_length: int, mesh,
               limit: Optional[int] = None, selection_metric: Optional[str] = None,
               test_at_every_eval: bool = False, best: Optional[dict] = None,
               length_buckets=input_pipeline.DEFAULT_LENGTH_BUCKETS):
    self.model_config, self.task, self.splits = model_config, seqio_task, splits
    self.length_buckets = length_buckets
    self.feature_lengths, self.batch_size, self.limit = feature_lengths, batch_size, limit
    self.max_decode_length, self.mesh = max_decode_length, mesh
    self.selection_metric, self.test_at_every_eval = selection_metric, test_at_every_eval
    self.best: Dict = dict(best or {})  # {'score', 'metric', 'step'} of the best validation
    self.test_history: List[dict] = []

  def __call__(self, params, split: str) -> Dict[str, float]:
    decode = lambda p, enc: generate(self.model_config, p, enc, self.max_decode_length)
    return evaluate_lib.evaluate(decode, params, self.splits[split], self.task,
                                 self.feature_lengths, self.batch_size,
                                 lambda x: sharding.host_to_global(x, self.mesh), self.limit,
                                 self.length_buckets)

  def validate(self, step: int, params, write: Callable[[dict], None]) -> bool:
    """Evaluates validation (and test, if asked) at `step`; True when it is the new best."""
    record = self(params, 'validation')
    write(dict(record, step=step, split='validation'))
    log(f'step {step} validation: ' + fmt(record))
    if self.test_at_every_eval:
      self.test_history.append(dict(self(params, 'test'), step=step))
      write(dict(self.test_history[-1], split='test'))
    metric = self.selection_metric or next(iter(record))
    if record[metric] > self.best.get('score', -np.inf):
      self.best = {'score': record[metric], 'metric': metric, 'step': step}
      return True
    return False

  def summary(self, last_params, last_step: int, best_params=None) -> dict:
    """Test metrics of the last and the best-on-validation params, and the max over evals."""
    summary = {'last': {'step': last_step, 'test': self(last_params, 'test')}}
    if best_params is not None:
      summary['best_on_validation'] = dict(self.best, test=self(best_params, 'test'))
    if self.test_history:
      metric = self.best.get('metric') or next(iter(self.test_history[0]))
      summary['test_max_over_evals'] = max(self.test_history, key=lambda r: r[metric])
    return summary


def write_summary(model_dir, summary: dict, operative_config: str) -> None:
  """results.json and operative_config.gin (process 0), and the test lines on the console."""
  if jax.process_index() != 0:
    return
  run_dir = paths.path(model_dir)
  (run_dir / 'results.json').write_text(json.dumps(summary, indent=1))
  (run_dir / 'operative_config.gin').write_text(operative_config)
  for name in ('last', 'best_on_validation'):
    if name in summary:
      log(f'test ({name}, step {summary[name]["step"]}): ' + fmt(summary[name]['test']))


def fmt(record: Mapping) -> str:
  return ' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                  for k, v in record.items())


def log(message: str) -> None:
  """One line on process 0, printed above the progress bar."""
  if jax.process_index() == 0:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    tqdm.write(message, file=sys.stderr)
