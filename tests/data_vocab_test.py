"""Tests of dssb.data.vocab: T5 special ids, caching, the missing-vocab error."""

import os

import pytest
import sentencepiece as spm

from dssb.data import vocab


def test_special_ids(svamp_vocab):
  sp = spm.SentencePieceProcessor(model_file=svamp_vocab)
  assert sp.get_piece_size() == 300
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  v = vocab.get_vocabulary(svamp_vocab)
  assert (v.pad_id, v.eos_id, v.unk_id) == (0, 1, 2)
  for text in ('( 84.0 / 2.0 )', 'x [label] ( 1.0 )', '[rationale] explain:'):
    assert v.decode(v.encode(text)) == text  # Markers and prefixes too.


def test_cached_by_path(svamp_vocab, dss_data_dir):
  before = os.stat(svamp_vocab).st_mtime_ns
  assert vocab.train_vocab('svamp', 300, svamp_vocab, data_dir=dss_data_dir) == svamp_vocab
  assert os.stat(svamp_vocab).st_mtime_ns == before


def test_missing_vocab_error(monkeypatch):
  monkeypatch.delenv('DSSB_VOCAB', raising=False)
  with pytest.raises(ValueError) as e:
    vocab.resolve_vocab_path(None)
  assert 'DSSB_VOCAB' in str(e.value) and 'train_vocab' in str(e.value)
  monkeypatch.setenv('DSSB_VOCAB', '/some/spm.model')
  assert vocab.resolve_vocab_path(None) == '/some/spm.model'
