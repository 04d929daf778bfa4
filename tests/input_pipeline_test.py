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
