"""Packed batches: a pure function of (seed, step), segments laid out as t5x lays them, and the
same per-example and mean losses as the unpacked batch of the same examples."""

import jax
import numpy as np
import pytest

from dssb import input_pipeline, packing, train
from dssb.model import T5, T5Config, init_params

LENGTHS = {'inputs': 12, 'targets': 10, 'rationale_inputs': 12, 'rationale_targets': 10}
KEYS = ('encoder_input_tokens', 'encoder_segment_ids', 'encoder_positions',
        'decoder_target_tokens', 'decoder_input_tokens', 'decoder_segment_ids',
        'decoder_positions', 'decoder_loss_weights')


def _examples(n, seed=0):
  rng = np.random.default_rng(seed)
  toks = lambda hi: [np.append(rng.integers(2, 50, size=rng.integers(1, hi)), 1).astype(np.int32)
                     for _ in range(n)]
  return input_pipeline.Examples(
      tokens={'inputs': toks(9), 'targets': toks(3), 'rationale_inputs': toks(9),
              'rationale_targets': toks(8)}, texts={}, truncated={})


def _shape(ex, batch=8, per_row=3, row_multiple=1):
  return packing.packed_shape(ex, LENGTHS, batch, per_row, seed=0, row_multiple=row_multiple,
                              length_buckets=(4, 8, 12, 16, 24))


def _assert_same(a, b):
  for name in a:
    for key in a[name]:
      np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f'{name} {key}')


def test_plan_is_a_pure_function_of_seed_and_step():
  ex = _examples(50)
  shape = _shape(ex)
  first = list(zip(range(40), packing.packed_batches(ex, shape, seed=3, start_step=0)))
  assert len(packing.Plan(ex, shape, 3)._epochs[:0]) == 0
  resumed = packing.packed_batches(ex, shape, seed=3, start_step=27)  # past the first epochs
  for want_step in range(27, 40):
    step, batch = next(resumed)
    assert step == want_step
    _assert_same(batch, first[want_step][1][1])
  other = packing.Plan(ex, shape, seed=4)
  assert not np.array_equal(other(0).examples, packing.Plan(ex, shape, seed=3)(0).examples)


def test_each_epoch_packs_every_example_once_and_steps_hold_about_the_batch():
  ex = _examples(200)
  shape = _shape(ex, batch=16, per_row=4, row_multiple=4)
  assert shape.rows % 4 == 0
  for name, inp, tgt in ex.pairs:  # every example fits a row of its own
    assert shape.lengths[inp] >= ex.lengths[inp].max()
    assert shape.lengths[tgt] >= ex.lengths[tgt].max()
  plan = packing.Plan(ex, shape, seed=0)
  epoch, step = [], 0
  while sum(map(len, epoch)) < len(ex):
    epoch.append(plan(step).examples)
    step += 1
  assert len(epoch) == len(plan._epochs[0])
  np.testing.assert_array_equal(np.concatenate(epoch),
                                input_pipeline.epoch_order(len(ex), 0, 0))
  sizes = [len(e) for e in epoch[:-1]]
  assert np.mean(sizes) >= 16 and min(sizes) < max(sizes)  # about the batch, varying


def test_rows_hold_segments_as_t5x_packs_them():
  """Tokens in order per row, segment ids 1, 2, ..., positions from 0 in each segment, decoder
  inputs shifted right within each segment (0 at its start), both sub-batches the same
  examples."""
  ex = _examples(30)
  shape = _shape(ex)
  plan = packing.Plan(ex, shape, seed=0)(0)
  batch = packing.packed_batch(ex, plan, shape)
  for name, inp, tgt in ex.pairs:
    part = batch[name]
    assert part['encoder_input_tokens'].shape == (shape.rows, shape.lengths[inp])
    assert part['decoder_target_tokens'].shape == (shape.rows, shape.lengths[tgt])
    placed = []
    for row in range(shape.rows):
      members = plan.examples[plan.rows[name] == row]
      placed += members.tolist()
      for side, feature in (('encoder', inp), ('decoder', tgt)):
        tokens = part[f'{side}_input_tokens' if side == 'encoder' else 'decoder_target_tokens']
        seg, pos = part[f'{side}_segment_ids'][row], part[f'{side}_positions'][row]
        want = np.concatenate([ex.tokens[feature][i] for i in members] + [np.zeros(0, int)])
        np.testing.assert_array_equal(tokens[row, :len(want)], want)
        assert not tokens[row, len(want):].any() and not seg[len(want):].any()
        np.testing.assert_array_equal(
            seg[:len(want)], np.repeat(np.arange(1, len(members) + 1),
                                       [len(ex.tokens[feature][i]) for i in members]))
        np.testing.assert_array_equal(pos[:len(want)], np.concatenate(
            [np.arange(len(ex.tokens[feature][i])) for i in members] + [np.zeros(0, int)]))
      dec_in = part['decoder_input_tokens'][row]
      start = 0
      for i in members:
        y = ex.tokens[tgt][i]
        assert dec_in[start] == 0  # restarts: never the previous example's EOS
        np.testing.assert_array_equal(dec_in[start + 1:start + len(y)], y[:-1])
        start += len(y)
      assert not dec_in[start:].any()
    assert sorted(placed) == sorted(plan.examples.tolist())
  np.testing.assert_array_equal(batch['label']['decoder_loss_weights'],
                                batch['label']['decoder_target_tokens'] > 0)


def test_hosts_build_their_rows_of_the_same_plan():
  ex = _examples(60)
  shape = _shape(ex, row_multiple=2)
  whole = next(packing.packed_batches(ex, shape, 0, 5))[1]
  parts = [next(packing.packed_batches(ex, shape, 0, 5, i, 2))[1] for i in range(2)]
  for name in whole:
    for key in KEYS:
      np.testing.assert_array_equal(np.concatenate([p[name][key] for p in parts]),
                                    whole[name][key])


@pytest.fixture(scope='module')
def tiny_model():
  config = T5Config(vocab_size=50, d_model=16, num_heads=2, head_dim=8, d_ff=32,
                    num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0)
  return config, init_params(config, jax.random.PRNGKey(3))


def _token_losses(config, params, part):
  """Per-token cross-entropy [R, T] of one sub-batch (0 at padding)."""
  logits = T5(config).apply({'params': params}, part['encoder_input_tokens'],
                            part['decoder_input_tokens'], part['decoder_target_tokens'],
                            part.get('encoder_segment_ids'), part.get('decoder_segment_ids'))
  logp = np.asarray(jax.nn.log_softmax(logits))
  ce = -np.take_along_axis(logp, part['decoder_target_tokens'][..., None], -1)[..., 0]
  return ce * part['decoder_loss_weights']


def test_packed_losses_equal_the_unpacked_ones_of_the_same_examples(tiny_model):
  config, params = tiny_model
  ex = _examples(40, seed=1)
  shape = _shape(ex, batch=12, per_row=3)
  plan = packing.Plan(ex, shape, seed=0)(1)
  packed = packing.packed_batch(ex, plan, shape)
  unpacked = input_pipeline.encdec_batch(ex, plan.examples, LENGTHS)
  assert shape.rows < len(plan.examples)  # several examples share rows
  for name, _, tgt in ex.pairs:
    per_token = _token_losses(config, params, packed[name])
    alone = _token_losses(config, params, unpacked[name]).sum(axis=1)
    segments = packed[name]['decoder_segment_ids']
    for k, i in enumerate(plan.examples):
      row = plan.rows[name][k]
      seg = 1 + int(np.sum(plan.rows[name][:k] == row))
      got = per_token[row][segments[row] == seg]
      assert len(got) == len(ex.tokens[tgt][i])
      np.testing.assert_allclose(got.sum(), alone[k], rtol=1e-5, atol=1e-6)
  loss_fn = train.make_loss_fn(T5(config), alpha=0.3, label_smoothing=0.0, z_loss=0.0)
  grad_fn = jax.jit(jax.value_and_grad(
      lambda p, b: loss_fn(p, b, jax.random.PRNGKey(0), enable_dropout=False)[0]))
  (loss_p, grads_p), (loss_u, grads_u) = grad_fn(params, packed), grad_fn(params, unpacked)
  np.testing.assert_allclose(loss_p, loss_u, rtol=1e-5)  # the mean over target tokens
  for a, b in zip(jax.tree.leaves(grads_p), jax.tree.leaves(grads_u)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
