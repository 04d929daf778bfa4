"""A run's metrics: MODEL_DIR/metrics.jsonl (one JSON record per line) and TensorBoard events.

Train metrics are fetched from the device one step late, so that fetching never waits for the
step just dispatched; `flush` fetches the last one before an eval, a checkpoint or the end. Each
fetched step is checked for a non-finite loss or gradient. On resume the records a killed run
wrote past the checkpoint it resumes from are dropped, so every step is logged once.
"""

import json
import time
from typing import Optional

import jax
import numpy as np

from dssb import paths


class MetricsLog:
  """Writes on process 0 only; every process runs the same fetches and checks."""

  def __init__(self, model_dir, start_step: int, log_every: int, num_steps: int):
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    self.path = paths.path(model_dir) / 'metrics.jsonl'
    self.is_chief = jax.process_index() == 0
    self.log_every, self.num_steps = log_every, num_steps
    self.last_train_record: Optional[dict] = None
    self._pending = None  # (step, device metrics) not fetched yet
    self._tick, self._tick_tokens = time.time(), 0.0
    self._writer = None
    if self.is_chief:
      self._truncate(start_step)
      self._writer = metric_writers.SummaryWriter(str(paths.path(model_dir) / 'tb'))

  def _truncate(self, start_step: int) -> None:
    if self.path.exists():
      kept = [line for line in self.path.read_text().splitlines(keepends=True)
              if line.strip() and json.loads(line)['step'] <= start_step]
      self.path.write_text(''.join(kept))

  def train_step(self, step: int, device_metrics: dict) -> None:
    """Records `step`'s metrics; fetches (and writes) the previous step's."""
    previous, self._pending = self._pending, (step, device_metrics)
    if previous is not None:
      self._fetch(*previous)

  def flush(self) -> None:
    """Fetches and writes the pending train step now."""
    if self._pending is not None:
      previous, self._pending = self._pending, None
      self._fetch(*previous)

  def _fetch(self, step: int, device_metrics: dict) -> None:
    metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    if not (np.isfinite(metrics['loss']) and np.isfinite(metrics['grad_norm'])):
      raise FloatingPointError(f'loss or gradient became {metrics["loss"]} / '
                               f'{metrics["grad_norm"]} at step {step}')
    self._tick_tokens += metrics.pop('target_tokens')
    if step % self.log_every == 0 or step == self.num_steps:
      now = time.time()
      metrics.update(step=step,
                     target_tokens_per_second=self._tick_tokens / max(now - self._tick, 1e-9))
      self._tick, self._tick_tokens = now, 0.0
      self.write(metrics)
      self.last_train_record = metrics

  def write(self, record: dict) -> None:
    """One record (train, or an eval with 'split') to metrics.jsonl and TensorBoard."""
    if not self.is_chief:
      return
    paths.append_line(self.path, json.dumps(record))
    scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != 'step'}
    prefix = record.get('split', 'train')
    self._writer.write_scalars(record['step'], {f'{prefix}/{k}': v for k, v in scalars.items()})

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()
