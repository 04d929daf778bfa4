"""The batching queue with the real inference engine (a tiny random T5): concurrent submissions
share decodes, mixed sampling groups are kept apart, a row's completion does not depend on its
batch, and a decode failure reaches its callers."""

import asyncio
import time

import pytest

from dssb import inference
from dssb.batching import BatchQueue


@pytest.fixture(scope='module')
def engine(tiny_checkpoint, svamp_vocab):
  return inference.Engine(inference.load_model(tiny_checkpoint, svamp_vocab), max_batch=16,
                          max_tokens_limit=16)


def _request(i, temperature=1.0):
  return inference.Request(prompt=f'Tom has {i} apples.', max_tokens=6,
                           temperature=temperature, seed=i)


def test_concurrent_submissions_share_decodes(engine):
  calls = []

  def run(rows):
    calls.append([r.group() for r in rows])
    return engine.run(rows)

  async def main():
    queue = BatchQueue(run, max_batch=16, wait_s=0.02, max_wait_s=0.2)
    mixed = [_request(i, 0.0 if i % 3 == 0 else 1.0) for i in range(12)]
    together = await asyncio.gather(*[queue.submit([r]) for r in mixed])
    engine.run([mixed[4]])  # compile the one-row shape before timing
    started = time.monotonic()
    alone = await queue.submit([mixed[4]])  # waits for as many rows as the last batch: bounded
    waited = time.monotonic() - started
    started = time.monotonic()
    engine.run([mixed[4]])
    decode = time.monotonic() - started
    queue.close()
    return mixed, together, alone, waited, decode

  mixed, together, alone, waited, decode = asyncio.run(main())
  assert all(len(set(groups)) == 1 for groups in calls)  # one sampling group per decode
  assert len(calls) <= 5, calls  # 12 submissions, two groups
  # the same completion alone or batched (log-probabilities up to float32 round-off)
  assert together[4][0].text == alone[0].text and together[4][0].tokens == alone[0].tokens
  assert together[4][0].token_logprobs == pytest.approx(alone[0].token_logprobs, abs=1e-4)
  assert [c[0].text for c in together] == [engine.run([r])[0].text for r in mixed]
  assert waited < decode + 0.2 + 1.0  # max_wait_s 0.2, plus slack for a loaded machine


def test_a_failed_decode_reaches_its_callers(engine):
  def run(rows):
    raise RuntimeError('device lost')

  async def main():
    queue = BatchQueue(run, max_batch=4)
    results = await asyncio.gather(queue.submit([_request(1)]), queue.submit([_request(2)]),
                                   return_exceptions=True)
    queue.close()
    return results

  results = asyncio.run(main())
  assert all(isinstance(r, RuntimeError) and 'device lost' in str(r) for r in results)
