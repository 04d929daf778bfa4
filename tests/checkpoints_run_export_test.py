"""Tests for `python -m dssb.checkpoints convert RUN_DIR DST`: a trainer run folder exported to
Hugging Face or T5X in one command (dssb/checkpoints/run_export.py).

The Hugging Face export is checked by transformers' PyTorch T5 decoding as dssb does.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax
import numpy as np
import pytest

from dssb import checkpoints
from dssb.model import generate

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
torch.set_flush_denormal(True)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUN_GIN = 'gin/cpu/svamp_step_by_step.gin'
RUN_BINDINGS = ['TASK_FEATURE_LENGTHS={"inputs": 64, "targets": 16, "rationale_inputs": 64, '
                '"rationale_targets": 48}', 'BATCH_SIZE=8', 'TRAIN_STEPS=20', 'EVAL_EVERY=10',
                'train.checkpoint_every=10', 'train.eval_limit=8', 'train.eval_batch_size=8',
                'train.max_decode_length=8']


@pytest.fixture(scope='module')
def trained_run(dss_data_dir, tmp_path_factory):
  """A tiny step-by-step run of 20 steps on SVAMP (checkpoints at 10 and 20, a best one)."""
  import gin  # pylint: disable=g-import-not-at-top
  from dssb import gin_utils, train  # pylint: disable=g-import-not-at-top
  saved = dict(os.environ)
  os.environ.update(DSSB_DATA_DIR=dss_data_dir,
                    DSSB_CACHE_DIR=str(tmp_path_factory.mktemp('cache')))
  model_dir = str(tmp_path_factory.mktemp('run'))
  gin.clear_config()
  try:
    gin_utils.parse_gin([RUN_GIN], [f"MODEL_DIR='{model_dir}'", *RUN_BINDINGS])
    gin_utils.call_configured(train.train, 'train')
    yield model_dir
  finally:
    gin.clear_config()
    os.environ.clear()
    os.environ.update(saved)


def _test_inputs(vocab_path, n=20):
  """The first n SVAMP test inputs of the run's task, 0-padded [n, L]."""
  from dssb import input_pipeline  # pylint: disable=g-import-not-at-top
  from dssb.data import tasks  # pylint: disable=g-import-not-at-top
  task = tasks.get_task_name('svamp', 'step_by_step', vocab_path=vocab_path)
  rows = input_pipeline.load_examples(task, 'test', {'inputs': 64, 'targets': 16,
                                                     'rationale_inputs': 64,
                                                     'rationale_targets': 48}).tokens['inputs']
  tokens = np.zeros((n, max(len(r) for r in rows[:n])), np.int32)
  for i, row in enumerate(rows[:n]):
    tokens[i, :len(row)] = row
  return tokens


def _until_eos(row):
  row = [int(t) for t in row]
  return row[:row.index(1) + 1] if 1 in row else row


def test_run_folder_exported_to_hf_decodes_as_dssb(trained_run, tmp_path, capsys):
  """convert RUN_DIR DST: transformers' PyTorch T5 loads the folder (untied v1.1 lm_head) and
  greedy-decodes 20 SVAMP test inputs exactly as dssb decodes them from the run's checkpoint."""
  from dssb.checkpoints import __main__ as cli  # pylint: disable=g-import-not-at-top
  from dssb.checkpoints import run_export  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'hf'
  assert cli.main(['convert', trained_run, str(out)]) == 0
  printed = json.loads(capsys.readouterr().out)
  assert (printed['which'], printed['step'], printed['format']) == ('last', 20, 'hf')
  config, params, meta = run_export.load_run(trained_run)
  assert meta['step'] == 20 and not config.tie_embeddings
  record = json.loads((out / 'dssb_run.json').read_text())
  assert record['step'] == 20
  assert record['model_config'] == json.loads(json.dumps(dataclasses.asdict(config)))
  assert (out / 'spiece.model').read_bytes() == open(meta['vocab_path'], 'rb').read()
  assert 'MODEL_DIR' in (out / 'dssb_config.gin').read_text()

  assert json.loads((out / 'config.json').read_text())['tie_word_embeddings'] is False
  model = transformers.T5ForConditionalGeneration.from_pretrained(str(out)).eval()
  # transformers 5 reports tie_word_embeddings=True whatever the file says: check the weights.
  assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
  assert not model.config.scale_decoder_outputs
  tokens = _test_inputs(meta['vocab_path'])
  want = np.asarray(generate(config, params, tokens, 16))
  with torch.no_grad():
    got = model.generate(input_ids=torch.tensor(tokens, dtype=torch.long),
                         attention_mask=torch.tensor(tokens > 0, dtype=torch.long),
                         max_new_tokens=16, do_sample=False, num_beams=1).numpy()
  assert (got[:, 0] == 0).all()  # the decoder start token
  decoded_dssb = [_until_eos(r) for r in want]
  decoded_hf = [_until_eos(r) for r in got[:, 1:]]
  assert decoded_hf == decoded_dssb
  assert len({tuple(r) for r in decoded_dssb}) > 1  # the inputs decode to different outputs


def test_run_folder_best_and_t5x_and_bad_sources(trained_run, tmp_path, capsys):
  from dssb.checkpoints import __main__ as cli  # pylint: disable=g-import-not-at-top
  from dssb.checkpoints import run_export  # pylint: disable=g-import-not-at-top
  best_step = run_export.load_run(trained_run, 'best')[2]['step']
  assert cli.main(['convert', trained_run, str(tmp_path / 't5x'), '--which', 'best', '--to',
                   't5x']) == 0
  assert json.loads(capsys.readouterr().out)['step'] == best_step
  config, params = checkpoints.load(str(tmp_path / 't5x'))
  _, want, _ = run_export.load_run(trained_run, 'best')
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b, err_msg=str(path))
  assert os.path.isdir(tmp_path / 't5x' / f'checkpoint_{best_step}')
  # --which on a checkpoint that is not a run; a run folder without a best checkpoint.
  assert cli.main(['convert', str(tmp_path / 't5x'), str(tmp_path / 'x'), '--which',
                   'best']) == 1
  assert '--which applies to a trainer run folder' in capsys.readouterr().err
  lone = tmp_path / 'lone'
  shutil.copytree(os.path.join(trained_run, 'checkpoints'), lone / 'checkpoints')
  assert cli.main(['convert', str(lone), str(tmp_path / 'y'), '--which', 'best']) == 1
  assert 'no best/ folder' in capsys.readouterr().err
  help_text = subprocess.run([sys.executable, '-m', 'dssb.checkpoints', 'convert', '--help'],
                             capture_output=True, text=True, cwd=REPO, check=True).stdout
  assert 'trainer run folder' in help_text and '--which {last,best}' in help_text
