"""A run's evaluations: validation during training (which picks the best checkpoint), and the
final summary of test accuracy.

The reported number (a fidelity setting, train.reported_number / gin REPORTED_NUMBER). The
official distilling step-by-step code decodes the TEST split every 250 steps, saves no model and
selects nothing; the paper does not say which of those logged numbers it prints. The summary
(results.json) therefore holds three test numbers, each labelled (REPORTED_NUMBERS):
  last                the params at the final step: the official code's last test eval (its runs
                      end on an eval step), the number its logs end with. dssb's default.
  best_on_validation  the params best on validation: model selection the official code lacks.
  max_over_evals      the highest test score over the evals (with test_at_every_eval): what
                      reading the best of the official logs gives; selection on test, optimistic.
The paper's numbers are the official code's `last` or its `max_over_evals`; never
`best_on_validation`. `reported` repeats the one the run was asked to report.
"""

import contextlib
import json
import sys
from typing import Callable, ContextManager, Dict, List, Mapping, Optional

import jax
import numpy as np

from dssb import evaluate as evaluate_lib
from dssb import input_pipeline, paths, sharding
from dssb.model import T5Config, generate

REPORTED_NUMBERS = {
    'last': 'test score of the params at the final step (the official code\'s last test eval)',
    'best_on_validation': 'test score of the params best on validation (selection on '
                          'validation, which the official code does not do)',
    'max_over_evals': 'highest test score over the evals (selection on test, optimistic: the '
                      'best of the official code\'s per-eval test logs)',
}


def check_reported_number(reported_number: str, test_at_every_eval: bool) -> None:
  if reported_number not in REPORTED_NUMBERS:
    raise ValueError(f'train.reported_number={reported_number!r} (gin REPORTED_NUMBER): '
                     f'expected one of {sorted(REPORTED_NUMBERS)}')
  if reported_number == 'max_over_evals' and not test_at_every_eval:
    raise ValueError("train.reported_number='max_over_evals' needs the test split decoded at "
                     'every eval: set train.test_at_every_eval = True (gin TEST_AT_EVERY_EVAL)')


class Evaluator:
  """Decodes whole splits greedily and keeps the best validation score of the run."""

  def __init__(self, model_config: T5Config, seqio_task,
               splits: Mapping[str, input_pipeline.Examples], feature_lengths,
               batch_size: int, max_decode_length: int, mesh,
               limit: Optional[int] = None, selection_metric: Optional[str] = None,
               test_at_every_eval: bool = False, best: Optional[dict] = None,
               length_buckets=input_pipeline.DEFAULT_LENGTH_BUCKETS,
               test_history: Optional[List[dict]] = None,
               context: Callable[[], ContextManager] = contextlib.nullcontext,
               batches_in_flight: Optional[int] = None):
    self.model_config, self.task, self.splits = model_config, seqio_task, splits
    self.length_buckets = length_buckets
    self.feature_lengths, self.batch_size, self.limit = feature_lengths, batch_size, limit
    self.max_decode_length, self.mesh = max_decode_length, mesh
    # Decoding threads enter `context` (the run's mesh, axis rules, precision); see
    # dssb.evaluate.predict.
    self.context, self.batches_in_flight = context, batches_in_flight
    self.selection_metric, self.test_at_every_eval = selection_metric, test_at_every_eval
    self.best: Dict = dict(best or {})  # {'score', 'metric', 'step'} of the best validation
    # Test records {metric: value, 'step'} of each eval (test_at_every_eval); a resumed run gets
    # those of its checkpoint's meta, so max_over_evals spans the whole run.
    self.test_history: List[dict] = list(test_history or [])

  def __call__(self, params, split: str) -> Dict[str, float]:
    decode = lambda p, enc: generate(self.model_config, p, enc, self.max_decode_length)
    return evaluate_lib.evaluate(decode, params, self.splits[split], self.task,
                                 self.feature_lengths, self.batch_size,
                                 lambda x: sharding.host_to_global(x, self.mesh), self.limit,
                                 self.length_buckets, self.batches_in_flight, self.context)

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

  def summary(self, last_params, last_step: int, best_params=None,
              reported_number: str = 'last') -> dict:
    """Test metrics of the last and the best-on-validation params, the max over evals (with
    test_at_every_eval), their labels, and `reported`: the one named by reported_number."""
    summary = {'last': {'step': last_step, 'test': self._test(last_params, last_step)}}
    if best_params is not None:
      summary['best_on_validation'] = dict(
          self.best, test=self._test(best_params, self.best.get('step')))
    if self.test_history:
      metric = self.best.get('metric') or next(iter(self.test_history[0]))
      top = max(self.test_history, key=lambda r: r[metric])
      summary['max_over_evals'] = {'step': top['step'], 'metric': metric,
                                   'test': {k: v for k, v in top.items() if k != 'step'},
                                   'over_steps': [r['step'] for r in self.test_history]}
    summary['labels'] = {k: v for k, v in REPORTED_NUMBERS.items() if k in summary}
    if reported_number in summary:
      summary['reported'] = dict(summary[reported_number], kind=reported_number)
    return summary

  def _test(self, params, step) -> Dict[str, float]:
    """Test metrics of params at `step`, reusing that step's eval when test_at_every_eval
    already decoded it (greedy decoding of the same params gives the same answers)."""
    for record in self.test_history:
      if record['step'] == step:
        return {k: v for k, v in record.items() if k != 'step'}
    return self(params, 'test')


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
