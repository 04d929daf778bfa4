"""Tests of `python -m dssb.data describe` (split sizes, teacher accuracy, ids)."""

import json
import os
import subprocess
import sys

import pytest

from dssb.data import __main__ as cli
from dssb.data import sources

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
        [sys.executable, '-m', 'dssb.data', 'describe', '--dataset', 'svamp', '--fraction',
         str(fraction), '--seed', '1', '--ids', '--data_dir', dss_data_dir],
        cwd=REPO, check=True, capture_output=True, text=True).stdout
    return json.loads(out)

  r = run(0.5)
  train, valid = r['splits']['train'], r['splits']['validation']
  assert (train['size'], valid['size'], r['splits']['test']['size']) == (360, 40, 200)
  assert len(train['ids']) == 360 and train['ids'][0].startswith('train:')
  assert 0 <= train['teacher_accuracy'] <= 100
  full = cli.describe('svamp', fraction=0.75, seed=1, ids=True, data_dir=dss_data_dir)['splits']
  half = set(train['ids']) | set(valid['ids'])
  assert half < set(full['train']['ids']) | set(full['validation']['ids'])


def test_cli_command_lines():
  """The documented command lines parse; a missing required flag is a usage error."""
  parse = cli._parser().parse_args  # pylint: disable=protected-access
  args = parse(['describe', '--dataset', 'cqa', '--fraction', '0.5', '--seed', '1', '--ids'])
  assert (args.dataset, args.fraction, args.seed, args.ids, args.teacher, args.data_dir) == (
      'cqa', 0.5, 1, True, 'palm', None)
  args = parse(['download', '--out', 'D', '--url', 'z.zip'])
  assert (args.out, args.url) == ('D', 'z.zip')
  assert parse(['download', '--out=D']).url == sources.OFFICIAL_ZIP_URL
  args = parse(['train_vocab', '--dataset', 'svamp', '--vocab_size', '300', '--out', 'm'])
  assert (args.dataset, args.vocab_size, args.out) == ('svamp', 300, 'm')
  args = parse(['build_tfds', '--dataset', 'cqa', '--out', 'T', '--teacher', 'x',
                '--data_dir', 'M'])
  assert (args.dataset, args.out, args.teacher, args.data_dir) == ('cqa', 'T', 'x', 'M')
  for argv in (['describe'], ['describe', '--dataset', 'gsm8k'], ['download'], ['nope'], []):
    with pytest.raises(SystemExit) as e:
      parse(argv)
    assert e.value.code == 2, argv


def test_cli_train_vocab_reuses_the_cached_model(svamp_vocab, dss_data_dir, capsys):
  before = os.stat(svamp_vocab).st_mtime_ns
  cli.main(['train_vocab', '--dataset', 'svamp', '--vocab_size', '300', '--out', svamp_vocab,
            '--data_dir', dss_data_dir])
  assert capsys.readouterr().out.startswith(f'{svamp_vocab}  (set DSSB_VOCAB=')
  assert os.stat(svamp_vocab).st_mtime_ns == before
