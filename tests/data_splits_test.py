"""Tests of dssb.data.splits: Table 3 sizes, fractions, nesting, carve-out."""

import math

import numpy as np
import pytest

from dssb.data import splits

FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)


def _sizes(dataset, data_dir, **kw):
  return {s: len(splits.load_split(dataset, s, data_dir=data_dir, teacher=None,
                                   **kw)) for s in splits.SPLITS}


@pytest.mark.parametrize('dataset,expected', [
    ('cqa', {'train': 8766, 'validation': 975, 'test': 1221}),
    ('svamp', {'train': 720, 'validation': 80, 'test': 200}),
])
def test_table3_sizes(dss_data_dir, dataset, expected):
  assert _sizes(dataset, dss_data_dir) == expected
  # A fraction of 1.0 changes nothing, whatever the seed.
  a = splits.load_split(dataset, 'train', seed=0, data_dir=dss_data_dir)
  b = splits.load_split(dataset, 'train', seed=7, data_dir=dss_data_dir)
  assert [r['row'] for r in a] == [r['row'] for r in b]


@pytest.mark.parametrize('dataset,expected', [
    ('esnli', {'validation': 9842, 'test': 9824}),
    ('anli1', {'validation': 1000, 'test': 1000}),
])
def test_nli_released_sizes(dss_data_dir, dataset, expected):
  for split, n in expected.items():
    assert len(splits.load_split(dataset, split, data_dir=dss_data_dir)) == n


def test_subsample_formula():
  for n in (10, 800, 9741):
    for f in FRACTIONS:
      expected = n if f == 1.0 else n - math.ceil((1.0 - f) * n)
      assert len(splits.subsample(n, f, 0)) == expected
  assert list(splits.subsample(5, 1.0, 3)) == [0, 1, 2, 3, 4]


def test_hf_semantics():
  train, test = splits.hf_train_test_split(10, 0.3, seed=4)
  perm = np.random.default_rng(4).permutation(10)
  assert list(test) == list(perm[:3]) and list(train) == list(perm[3:])
  with pytest.raises(ValueError):
    splits.hf_train_test_split(3, 0.99, 0)
  with pytest.raises(ValueError):
    splits.subsample(10, 0.0, 0)


@pytest.mark.parametrize('n', [800, 9741])
def test_nested_for_one_seed_and_seeds_differ(n):
  for seed in (0, 1, 2):
    subsets = [set(splits.subsample(n, f, seed)) for f in FRACTIONS]
    for small, large in zip(subsets, subsets[1:]):
      assert small < large
  a, b = splits.subsample(n, 0.5, 0), splits.subsample(n, 0.5, 1)
  assert set(a) != set(b)


def test_carve_out_partitions_the_subset():
  sizes = {'train': 9741, 'test': 1221}
  for f in FRACTIONS:
    rows = splits.split_rows('cqa', sizes, f, seed=3)
    train, valid = rows['train'][1], rows['validation'][1]
    assert rows['validation'][0] == 'train'
    assert len(valid) == math.ceil(0.1 * (len(train) + len(valid)))
    assert not set(train) & set(valid)
    assert set(train) | set(valid) == set(splits.subsample(9741, f, 3))


def test_nli_keeps_valid_file():
  rows = splits.split_rows('anli1', {'train': 100, 'valid': 7, 'test': 9}, 0.5, seed=1)
  assert rows['validation'][0] == 'valid'
  assert list(rows['validation'][1]) == list(range(7))
  assert list(rows['train'][1]) == list(splits.subsample(100, 0.5, 1))


def test_fraction_sizes_on_data(dss_data_dir):
  for f in FRACTIONS:
    sizes = _sizes('svamp', dss_data_dir, fraction=f, seed=2)
    m = len(splits.subsample(800, f, 2))
    assert sizes == {'train': m - math.ceil(0.1 * m), 'validation': math.ceil(0.1 * m), 'test': 200}


def test_drop_parse_failures(dss_data_dir):
  keep = splits.load_split('svamp', 'train', data_dir=dss_data_dir)
  drop = splits.load_split('svamp', 'train', data_dir=dss_data_dir, parse_failures='drop')
  n_fail = sum(bool(r['teacher_failure']) for r in keep)
  assert n_fail > 0 and len(drop) == len(keep) - n_fail
  assert all(not r['teacher_failure'] for r in drop)
  valid = splits.load_split('svamp', 'validation', data_dir=dss_data_dir, parse_failures='drop')
  assert len(valid) == 80  # Eval splits are never filtered.


def test_missing_train_inputs_keep_eval_splits(dss_data_dir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  src = f'{dss_data_dir}/datasets/anli1'
  dst = tmp_path / 'datasets' / 'anli1'
  dst.mkdir(parents=True)
  for name in ('anli1_valid.json', 'anli1_test.json'):
    shutil.copy(f'{src}/{name}', dst / name)
  assert len(splits.load_split('anli1', 'test', teacher=None, data_dir=str(tmp_path))) == 1000
  with pytest.raises(FileNotFoundError, match='anli1_train.json'):
    splits.load_split('anli1', 'train', data_dir=str(tmp_path))
