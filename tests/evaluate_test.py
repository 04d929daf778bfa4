"""Evaluation decoded sorted by input length in bucketed batches gives the predictions of the
unsorted, fixed-padded decoding, in the examples' order."""

import jax
import jax.numpy as jnp

import dssb

dssb.import_tensorflow_quietly()

# pylint: disable=g-import-not-at-top,wrong-import-position
import seqio

from dssb import evaluate, input_pipeline
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
