"""Tests of `python -m dssb.data describe` (split sizes, teacher accuracy, ids)."""

import json
import os
import subprocess
import sys

import pytest

from dssb.data import __main__ as cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_describe_cqa(dss_data_dir):
  r = cli.describe('cqa', data_dir=dss_data_dir)
  sizes = {k: v['size'] for k, v in r['splits'].items()}
  assert sizes == {'train': 8766, 'validation': 975, 'test': 1221}
  assert r['splits']['test']['teacher_accuracy'] == pytest.approx(77.23, abs=5e-3)
  assert r['splits']['test']['parse_failures']['n'] == 1221


def test_describe_missing_train_inputs(dss_data_dir):
  if os.path.exists(f'{dss_data_dir}/datasets/anli1/anli1_train.json'):
    pytest.skip('full release present: nothing missing')
  r = cli.describe('anli1', data_dir=dss_data_dir)
  train = r['splits']['train']
  assert train['size'] is None and 'anli1_train.json' in train['missing']
  assert train['teacher_outputs_of_train_file']['n'] == 16946
  assert r['splits']['validation']['size'] == 1000


def test_cli_ids_nested(dss_data_dir):
  def run(fraction):
    out = subprocess.run(
        [sys.executable, '-m', 'dssb.data', 'describe', '--dataset', 'svamp',
         '--fraction', str(fraction), '--seed', '1', '--ids',
         '--data_dir', dss_data_dir],
        cwd=REPO, check=True, capture_output=True, text=True).stdout
    return json.loads(out)

  r = run(0.5)
  train, valid = r['splits']['train'], r['splits']['validation']
  assert (train['size'], valid['size'], r['splits']['test']['size']) == (
      360, 40, 200)
  assert len(train['ids']) == 360 and train['ids'][0].startswith('train:')
  assert 0 <= train['teacher_accuracy'] <= 100
  full = cli.describe('svamp', fraction=0.75, seed=1, ids=True,
                      data_dir=dss_data_dir)['splits']
  half = set(train['ids']) | set(valid['ids'])
  assert half < set(full['train']['ids']) | set(full['validation']['ids'])
