"""Server-side batching: concurrent requests become one decode.

Coroutines submit lists of rows (dssb.inference.Request); one worker thread takes the first
waiting submission and gathers more while they keep coming: until `max_batch` rows are in, or
`max_wait_s` has passed since the first, or (once the batch holds as many rows as the previous
one) no new submission arrives for `wait_s`, a quiet gap. It then decodes all rows that share
the first one's sampling group (temperature, top_k) in one Engine.run call; submissions of
another group wait for the next round.

A lone request waits one gap. A client that keeps k requests in flight gets batches of k: its
answers go back one by one and its next requests trickle in over tens of milliseconds, more
than a gap apart under load, so the batch waits (at most max_wait_s) for as many rows as the
last one had. While a batch decodes (JAX releases the GIL), the event loop keeps accepting
requests, which pile up for the next round.
"""

import asyncio
import collections
import queue
import threading
import time
from typing import Callable, Sequence


class BatchQueue:
  """submit(rows) -> completions, batched across concurrent callers in a worker thread."""

  def __init__(self, run_fn: Callable[[Sequence], list], max_batch: int = 32,
               wait_s: float = 0.015, max_wait_s: float = 0.1):
    self._run_fn = run_fn
    self._max_batch = max_batch
    self._wait_s = wait_s
    self._max_wait_s = max_wait_s
    self._queue = queue.Queue()
    self._expected = 1  # rows of the previous batch
    self.batches = 0
    self.rows = 0
    self._thread = threading.Thread(target=self._loop, name='dssb-batcher', daemon=True)
    self._thread.start()

  async def submit(self, rows: Sequence) -> list:
    """Completions of `rows` (one sampling group), in order; raises what the decode raised."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    self._queue.put((list(rows), loop, future))
    return await future

  def close(self):
    self._queue.put(None)
    self._thread.join(timeout=60)

  def _gather(self, first, deferred):
    """The first submission plus those of its group that arrive within the wait."""
    group = first[0][0].group()
    batch, rows = [first], len(first[0])
    for item in list(deferred):  # earlier arrivals of this group go first
      if rows >= self._max_batch:
        break
      if item[0][0].group() == group:
        deferred.remove(item)
        batch.append(item)
        rows += len(item[0])
    deadline = time.monotonic() + self._max_wait_s
    while rows < self._max_batch:
      left = deadline - time.monotonic()
      timeout = left if rows < self._expected else min(self._wait_s, left)
      try:
        item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
      except queue.Empty:
        break
      if item is None:
        self._queue.put(None)
        break
      if item[0][0].group() == group:
        batch.append(item)
        rows += len(item[0])
      else:
        deferred.append(item)
    return batch

  def _loop(self):
    deferred = collections.deque()
    while True:
      first = deferred.popleft() if deferred else self._queue.get()
      if first is None:
        return
      batch = self._gather(first, deferred)
      flat = [row for rows, _, _ in batch for row in rows]
      try:
        outputs, error = self._run_fn(flat), None
      except Exception as e:  # pylint: disable=broad-except  (handed to every caller)
        outputs, error = None, e
      self.batches += 1
      self.rows += len(flat)
      self._expected = len(flat)
      start = 0
      for rows, loop, future in batch:
        result = None if error else outputs[start:start + len(rows)]
        start += len(rows)
        loop.call_soon_threadsafe(_resolve, future, result, error)


def _resolve(future, result, error):
  if future.done():  # the caller went away (client disconnected)
    return
  if error is not None:
    future.set_exception(error)
  else:
    future.set_result(result)
