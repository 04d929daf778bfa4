"""The in-memory training order: deterministic, resumable by step, split over hosts."""

import numpy as np

from dssb import input_pipeline


def _examples(n):
  rng = np.random.default_rng(0)
  toks = lambda: [rng.integers(2, 50, size=rng.integers(1, 9)).astype(np.int32) for _ in range(n)]
  return input_pipeline.Examples(
      tokens={'inputs': toks(), 'targets': toks(), 'rationale_inputs': toks(),
              'rationale_targets': toks()},
      texts={}, truncated={})


LENGTHS = {'inputs': 10, 'targets': 10, 'rationale_inputs': 10, 'rationale_targets': 10}


def test_each_epoch_visits_every_example_once_in_a_seeded_order():
  n, b = 10, 4
  rows = np.concatenate([input_pipeline.train_indices(n, s, b, seed=3) for s in range(5)])
  assert sorted(rows[:10]) == list(range(10))
  assert sorted(rows[10:20]) == list(range(10))
  assert list(rows[:10]) != list(rows[10:20])  # reshuffled each epoch
  other = np.concatenate([input_pipeline.train_indices(n, s, b, seed=4) for s in range(3)])
  assert list(other[:10]) != list(rows[:10])


def test_resume_from_a_step_gives_the_same_batches():
  ex = _examples(13)
  full = input_pipeline.train_batches(ex, LENGTHS, 4, seed=0, start_step=0)
  first = [next(full) for _ in range(8)]
  resumed = input_pipeline.train_batches(ex, LENGTHS, 4, seed=0, start_step=5)
  for step, batch in (next(resumed) for _ in range(3)):
    np.testing.assert_array_equal(batch['label']['encoder_input_tokens'],
                                  first[step][1]['label']['encoder_input_tokens'])


def test_hosts_take_disjoint_slices_of_the_global_batch():
  ex = _examples(13)
  whole = input_pipeline.encdec_batch(ex, input_pipeline.train_indices(13, 2, 6, 0), LENGTHS)
  parts = [input_pipeline.encdec_batch(ex, input_pipeline.train_indices(13, 2, 6, 0, i, 3),
                                       LENGTHS) for i in range(3)]
  for key in ('label', 'rationale'):
    np.testing.assert_array_equal(
        np.concatenate([p[key]['decoder_target_tokens'] for p in parts]),
        whole[key]['decoder_target_tokens'])


def test_features_follow_encdec_conversion_and_pair_the_same_rows():
  ex = _examples(5)
  batch = input_pipeline.encdec_batch(ex, [3, -1], LENGTHS)
  label = batch['label']
  np.testing.assert_array_equal(label['decoder_target_tokens'][0, :len(ex.tokens['targets'][3])],
                                ex.tokens['targets'][3])
  np.testing.assert_array_equal(label['decoder_input_tokens'][0, 1:],
                                label['decoder_target_tokens'][0, :-1])
  assert label['decoder_input_tokens'][0, 0] == 0
  np.testing.assert_array_equal(label['decoder_loss_weights'], label['decoder_target_tokens'] > 0)
  assert not batch['rationale']['encoder_input_tokens'][1].any()  # -1 is an empty row
  np.testing.assert_array_equal(
      batch['rationale']['encoder_input_tokens'][0, :len(ex.tokens['rationale_inputs'][3])],
      ex.tokens['rationale_inputs'][3])
  assert 0 < input_pipeline.padding_fraction(batch) < 1


def test_bucket_length_is_the_smallest_bucket_that_holds_the_row():
  buckets = (8, 16, 32)
  assert input_pipeline.bucket_length(0, 100, buckets) == 8
  assert input_pipeline.bucket_length(8, 100, buckets) == 8
  assert input_pipeline.bucket_length(9, 100, buckets) == 16
  assert input_pipeline.bucket_length(33, 100, buckets) == 100  # past the last: feature length
  assert input_pipeline.bucket_length(9, 12, buckets) == 12  # never above the feature length
  assert input_pipeline.bucket_length(3, 12, None) == 12  # None: fixed padding
  default = input_pipeline.DEFAULT_LENGTH_BUCKETS
  assert input_pipeline.bucket_length(1024, 1024, default) == 1024
  assert input_pipeline.bucket_length(100, 1024, default) == 128


def test_bucketed_batches_hold_the_fixed_batches_rows_cut_to_their_buckets():
  ex = _examples(40)
  buckets = (2, 4, 6)
  fixed = input_pipeline.train_batches(ex, LENGTHS, 8, seed=1, start_step=0, length_buckets=None)
  bucketed = input_pipeline.train_batches(ex, LENGTHS, 8, seed=1, start_step=0,
                                          length_buckets=buckets)
  seen = set()
  for _ in range(5):
    (step, want), (_, got) = next(fixed), next(bucketed)
    idx = input_pipeline.train_indices(40, step, 8, seed=1)
    for name, inp, tgt in ex.pairs:
      for key, feature in (('encoder_input_tokens', inp), ('decoder_target_tokens', tgt)):
        longest = max(len(ex.tokens[feature][i]) for i in idx)
        length = got[name][key].shape[1]
        assert length == min([b for b in buckets if b >= longest] + [LENGTHS[feature]])
        seen.add(length)
        np.testing.assert_array_equal(got[name][key], want[name][key][:, :length])
        assert not want[name][key][:, length:].any()  # only padding was cut
      t = got[name]['decoder_target_tokens'].shape[1]
      np.testing.assert_array_equal(got[name]['decoder_input_tokens'],
                                    want[name]['decoder_input_tokens'][:, :t])
      np.testing.assert_array_equal(got[name]['decoder_loss_weights'],
                                    want[name]['decoder_loss_weights'][:, :t])
  assert len(seen) > 1  # the batches took more than one bucket


def test_every_host_pads_to_the_bucket_of_the_global_batch():
  """One long example lands on one host only; every host still pads to its bucket, and the
  hosts' rows put together are the one-host batch."""
  ex = _examples(24)
  step, batch, hosts = 1, 8, 4
  idx = input_pipeline.train_indices(24, step, batch, seed=0)
  long_row = idx[1]  # host 0's second row
  ex.tokens['rationale_inputs'][long_row] = np.arange(2, 12, dtype=np.int32)
  ex.__dict__.pop('lengths', None)  # the lengths cache
  buckets = (4, 8, 12)
  whole = next(input_pipeline.train_batches(ex, LENGTHS, batch, 0, step, length_buckets=buckets))
  parts = [next(input_pipeline.train_batches(ex, LENGTHS, batch, 0, step, i, hosts,
                                             length_buckets=buckets))[1] for i in range(hosts)]
  assert whole[1]['rationale']['encoder_input_tokens'].shape == (8, 10)  # the feature length
  for name in ('label', 'rationale'):
    for key in whole[1][name]:
      shapes = {p[name][key].shape for p in parts}
      assert shapes == {(batch // hosts, whole[1][name][key].shape[1])}, (name, key, shapes)
      np.testing.assert_array_equal(np.concatenate([p[name][key] for p in parts]),
                                    whole[1][name][key])


def test_eval_batches_sorted_by_length_cover_every_example_once():
  ex = _examples(23)
  lengths = np.array([len(t) for t in ex.tokens['inputs']])
  order, shapes = [], []
  for idx, batch in input_pipeline.eval_batches(ex, LENGTHS, 4, length_buckets=(2, 4, 6, 8)):
    rows = idx[idx >= 0]
    order += rows.tolist()
    shapes.append(batch['label']['encoder_input_tokens'].shape[1])
    assert shapes[-1] == min(b for b in (2, 4, 6, 8, 10) if b >= lengths[rows].max())
  assert sorted(order) == list(range(23))
  assert list(lengths[order]) == sorted(lengths, reverse=True)
  assert shapes == sorted(shapes, reverse=True) and len(set(shapes)) > 1
  unsorted = [idx for idx, _ in input_pipeline.eval_batches(ex, LENGTHS, 4, limit=10,
                                                            length_buckets=None)]
  assert np.concatenate(unsorted).tolist() == list(range(10)) + [-1, -1]
  halves = [list(input_pipeline.eval_batches(ex, LENGTHS, 4, i, 2)) for i in range(2)]
  for (idx0, b0), (idx1, b1) in zip(*halves):
    np.testing.assert_array_equal(idx0, idx1)  # both hosts walk the same global batches
    assert b0['label']['encoder_input_tokens'].shape == b1['label']['encoder_input_tokens'].shape
