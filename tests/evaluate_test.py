"""Evaluation decoded sorted by input length in bucketed batches gives the predictions of the
unsorted, fixed-padded decoding, in the examples' order; so do batches decoded at once on
threads, which enter the caller's mesh and axis rules."""

import contextlib
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp

import dssb

dssb.import_tensorflow_quietly()

# pylint: disable=g-import-not-at-top,wrong-import-position
import seqio

from dssb import evaluate, input_pipeline, sharding
from dssb.data import tasks
from dssb.model import T5Config, generate, init_params
# pylint: enable=g-import-not-at-top,wrong-import-position

LENGTHS = {'inputs': 128, 'targets': 32}


def test_sorted_bucketed_decoding_gives_the_unsorted_predictions_in_order(svamp_vocab):
  name = tasks.get_task_name('svamp', 'standard', vocab_path=svamp_vocab)
  task = seqio.get_mixture_or_task(name)
  examples = input_pipeline.load_examples(name, 'validation', LENGTHS)
  config = T5Config(vocab_size=320, d_model=32, num_heads=2, head_dim=16, d_ff=64,
                    num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0)
  params = init_params(config, jax.random.PRNGKey(0))
  decode = lambda p, enc: generate(config, p, enc, 6)
  run = lambda buckets: evaluate.predict(decode, params, examples, task, LENGTHS, 16,
                                         jnp.asarray, limit=48, length_buckets=buckets)
  unsorted, targets, unsorted_lengths = run(None)
  ours, our_targets, our_lengths = run(input_pipeline.DEFAULT_LENGTH_BUCKETS)
  assert our_targets == targets and len(ours) == 48 and our_lengths == unsorted_lengths
  assert ours == unsorted
  assert len(set(unsorted)) > 3  # the random model's outputs tell the examples apart
  order = input_pipeline.eval_order(examples, 48, by_length=True)
  assert list(order) != list(range(48))  # the sorted run did decode in another order


def _tiny_setup(svamp_vocab):
  name = tasks.get_task_name('svamp', 'standard', vocab_path=svamp_vocab)
  config = T5Config(vocab_size=320, d_model=32, num_heads=2, head_dim=16, d_ff=64,
                    num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0)
  return (seqio.get_mixture_or_task(name), input_pipeline.load_examples(name, 'validation',
                                                                        LENGTHS),
          config, init_params(config, jax.random.PRNGKey(0)))


def test_batches_decoded_at_once_on_threads_give_the_same_predictions_in_order(svamp_vocab):
  task, examples, config, params = _tiny_setup(svamp_vocab)
  threads = set()

  def decode(p, enc):
    threads.add(threading.get_ident())
    return generate(config, p, enc, 6)

  run = lambda in_flight: evaluate.predict(decode, params, examples, task, LENGTHS, 8,
                                           jnp.asarray, limit=44, batches_in_flight=in_flight)
  one = run(1)
  assert threads == {threading.get_ident()}
  for in_flight in (2, 3):
    threads.clear()
    assert run(in_flight) == one  # predictions, targets and lengths, in the examples' order
    assert len(threads) == in_flight and threading.get_ident() not in threads
  assert len(set(one[0])) > 3


def test_decoding_threads_enter_the_callers_context(svamp_vocab):
  """JAX and Flax keep the mesh and the logical axis rules per thread: without the context a
  decoding thread traces with neither (the rules then come out empty)."""
  task, examples, config, params = _tiny_setup(svamp_vocab)
  mesh, rules = sharding.make_mesh(), sharding.logical_axis_rules()
  seen = []

  def decode(p, enc):
    seen.append((tuple(nn.get_logical_axis_rules()), jax.sharding.get_abstract_mesh().empty))
    return generate(config, p, enc, 2)

  def context():
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(mesh))
    stack.enter_context(nn.logical_axis_rules(rules))
    return stack

  for ctx, expected in ((context, (tuple(rules), False)), (contextlib.nullcontext, ((), True))):
    seen.clear()
    with context():  # the caller's own contexts, as in the trainer
      evaluate.predict(decode, params, examples, task, LENGTHS, 8, jnp.asarray, limit=24,
                       batches_in_flight=2, context=ctx)
    assert seen and set(seen) == {expected}

