"""The data layer on a non-local file system: a data folder and a vocabulary cache on ram://.

A gs:// DSSB_DATA_DIR reaches TensorFlow's file systems through `etils.epath`. No GCS is reachable
here, and TensorFlow's GCS client has no endpoint override for an emulator, so these tests use
TensorFlow's in-memory file system, ram://, served by the same epath backend (tf.io.gfile) that
serves gs://. epath knows only gs://, s3://, az:// and hf://; `_RamPath` adds ram:// through epath's
public `register_path_cls`, routed like gs://. `open('ram://...')` fails, so every read that
succeeds below went through epath.
"""

import os

import pytest
import sentencepiece as spm

import dssb
from dssb.data import sources
from dssb.data import splits

tf = dssb.import_tensorflow_quietly()

# pylint: disable=g-import-not-at-top,wrong-import-position
from etils import epath
from etils.epath import backend as epath_backend
from etils.epath import gpath
# pylint: enable=g-import-not-at-top,wrong-import-position


@epath.register_path_cls('ram://')
class _RamPath(gpath.PosixGPath):
  """epath.Path of TensorFlow's ram:// file system, served by the backend gs:// uses."""

  def __new__(cls, *parts):
    full = '/'.join(os.fspath(p) for p in parts)
    if full.startswith('ram://'):  # As epath stores 'gs://b/x': a root folder named by scheme.
      full = '/ram/' + full[len('ram://'):]
    return super().__new__(cls, full)

  @property
  def _uri_scheme(self):
    return 'ram' if self.parts[:2] == ('/', 'ram') else None

  @property
  def _backend(self):
    return epath_backend.tf_backend


SVAMP_FILES = ('svamp_train.json', 'svamp_test.json', 'llm/train_CoT_0.json',
               'llm/train_CoT_1.json', 'llm/test_CoT_0.json')


@pytest.fixture(scope='module')
def ram_data_dir(dss_data_dir):
  """ram://.../datasets/svamp: SVAMP's inputs and PaLM outputs, copied from the local data."""
  root = 'ram://dssb_data_test'
  for name in SVAMP_FILES:
    with open(os.path.join(dss_data_dir, 'datasets', 'svamp', name), 'rb') as f:
      tf.io.gfile.makedirs(os.path.dirname(f'{root}/datasets/svamp/{name}'))
      with tf.io.gfile.GFile(f'{root}/datasets/svamp/{name}', 'wb') as out:
        out.write(f.read())
  yield root
  tf.io.gfile.rmtree(root)


def test_ram_path_is_not_an_os_path(ram_data_dir):
  path = epath.Path(ram_data_dir, 'datasets', 'svamp', 'svamp_test.json')
  assert isinstance(path, _RamPath) and str(path).startswith('ram://')
  assert path.exists() and not os.path.exists(str(path))


def test_readers_on_ram_equal_local(ram_data_dir, dss_data_dir):
  for split in ('train', 'test'):
    assert sources.read_examples('svamp', split, ram_data_dir) == sources.read_examples(
        'svamp', split, dss_data_dir)
  files = sources.teacher_files('svamp', 'train', 'palm', ram_data_dir)
  assert files == [f'{ram_data_dir}/datasets/svamp/llm/train_CoT_{i}.json' for i in (0, 1)]
  assert sources.read_teacher_outputs('svamp', 'train', 'palm', ram_data_dir,
                                      expected=800) == sources.read_teacher_outputs(
                                          'svamp', 'train', 'palm', dss_data_dir)
  kw = {'fraction': 0.5, 'seed': 1, 'parse_failures': 'drop'}
  assert splits.load_split('svamp', 'train', data_dir=ram_data_dir, **kw) == splits.load_split(
      'svamp', 'train', data_dir=dss_data_dir, **kw)


def test_errors_name_the_remote_file(ram_data_dir):
  with pytest.raises(FileNotFoundError, match='ram://dssb_data_test/datasets/svamp/llm_other/'):
    sources.read_teacher_outputs('svamp', 'train', 'other', ram_data_dir)
  with pytest.raises(FileNotFoundError, match=r'ram://nowhere has no datasets/ folder'):
    sources.data_dir('ram://nowhere')
  root = 'ram://dssb_bad_json'
  tf.io.gfile.makedirs(f'{root}/datasets/cqa')
  with tf.io.gfile.GFile(f'{root}/datasets/cqa/cqa_test.json', 'w') as f:
    f.write('{"id": "a", "question": "q", "choices": ["1", "2", "3", "4", "5"], "answer": "1"}\n'
            '{"id": "b",\n')
  try:
    with pytest.raises(ValueError, match=f'{root}/datasets/cqa/cqa_test.json line 2: invalid'):
      sources.read_examples('cqa', 'test', root)
  finally:
    tf.io.gfile.rmtree(root)


def test_rewritten_remote_file_is_read_again(ram_data_dir):
  """The readers' caches are keyed by what the remote stat gives (ram://: size, mtime 0)."""
  path = f'{ram_data_dir}/datasets/svamp/llm/test_CoT_0.json'
  with tf.io.gfile.GFile(path, 'rb') as f:
    original = f.read()
  try:
    assert len(sources.read_teacher_outputs('svamp', 'test', 'palm', ram_data_dir)) == 200
    tf.io.gfile.remove(path)  # ram:// appends on 'w' to an existing file.
    with tf.io.gfile.GFile(path, 'w') as f:
      f.write('["only one"]')
    assert sources.read_teacher_outputs('svamp', 'test', 'palm', ram_data_dir) == ['only one']
  finally:
    tf.io.gfile.remove(path)
    with tf.io.gfile.GFile(path, 'wb') as f:
      f.write(original)


def test_vocab_cache_on_ram(ram_data_dir, dss_data_dir, svamp_vocab, monkeypatch):
  """cached_vocab trains from ram:// data into a ram:// cache, then reuses it without the data; the
  model equals the one trained locally on the same text."""
  from dssb.data import tasks  # pylint: disable=g-import-not-at-top
  from dssb.data import vocab  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('DSSB_CACHE_DIR', 'ram://dssb_cache')
  monkeypatch.setenv('DSSB_DATA_DIR', ram_data_dir)
  try:
    path = vocab.cached_vocab('svamp', vocab_size=300)
    assert path == 'ram://dssb_cache/vocab/svamp_palm_300.model'
    with tf.io.gfile.GFile(path, 'rb') as f:
      remote = spm.SentencePieceProcessor(model_proto=f.read())
    local = spm.SentencePieceProcessor(model_file=svamp_vocab)
    pieces = lambda sp: [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    assert pieces(remote) == pieces(local)  # The files differ in the recorded temp paths only.
    monkeypatch.setenv('DSSB_DATA_DIR', 'ram://no_data_here')  # Retraining would fail.
    assert vocab.cached_vocab('svamp', vocab_size=300) == path
    # A task reads ram:// data with the ram:// vocabulary (seqio opens it with tf.io.gfile).
    name = tasks.get_task_name('svamp', 'standard', vocab_path=path, data_dir=ram_data_dir)
    first = next(tasks.seqio.get_mixture_or_task(name).get_dataset(
        None, split='test', shuffle=False).as_numpy_iterator())
    text = sources.read_examples('svamp', 'test', dss_data_dir)[0]['input']
    assert first['inputs'].tolist() == vocab.get_vocabulary(svamp_vocab).encode(text) + [1]
  finally:
    tf.io.gfile.rmtree('ram://dssb_cache')
