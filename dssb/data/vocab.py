"""SentencePiece vocabularies for the tasks (paper Sec. 4: T5 tokenizer).

Real runs use the T5 vocabulary, gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model.
For CPU work without it, `train_vocab` trains a small SentencePiece model on one dataset's training
text (inputs, gold labels, teacher rationales and labels) with the T5 special ids pad=0, eos=1,
unk=2 and no bos:

    python -m dssb.data train_vocab --dataset svamp --vocab_size 1000 --out /tmp/svamp_1000.model

The synthetic addition task (context distillation, dssb.data.addition) uses a vocabulary of fixed
pieces built in code (`cached_addition_vocab`): characters, and digits and symbols with their
leading space, so that text round-trips exactly, a digit is one token wherever it appears, and a
scratchpad takes about as many tokens as with T5's vocabulary (one per space-separated item).

Tasks take `vocab_path`, else $DSSB_VOCAB. Vocabulary files and their caches are read and written
through `etils.epath` (dssb.paths), so every path may be a gs:// one; SentencePiece itself
trains on local files, in a local temporary folder.
"""

import functools
import json
import os
import tempfile

import gin
import sentencepiece as spm

import dssb

dssb.import_tensorflow_quietly()

# pylint: disable=g-import-not-at-top,wrong-import-position
import seqio

from dssb.data import addition
from dssb.data import preprocess
from dssb import paths
from dssb.data import sources
from dssb.data import splits
# pylint: enable=g-import-not-at-top,wrong-import-position

VOCAB_ENV = 'DSSB_VOCAB'
T5_VOCAB = 'gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model'


def resolve_vocab_path(vocab_path: str | None = None) -> str:
  """`vocab_path`, else $DSSB_VOCAB; raises naming both ways to set it."""
  path = vocab_path or os.environ.get(VOCAB_ENV)
  if not path:
    raise ValueError(
        f'No vocabulary: pass vocab_path or set {VOCAB_ENV} to a SentencePiece model (real runs: '
        f'{T5_VOCAB}; on CPU train one with `python -m dssb.data train_vocab --dataset NAME '
        '--vocab_size 1000 --out PATH.model`).')
  return path


@functools.lru_cache(maxsize=None)
def get_vocabulary(vocab_path: str | None = None) -> seqio.SentencePieceVocabulary:
  """seqio vocabulary of a SentencePiece model (path or $DSSB_VOCAB)."""
  return seqio.SentencePieceVocabulary(resolve_vocab_path(vocab_path))


def training_text(dataset: str, teacher: str | None = 'palm',
                  data_dir: str | None = None) -> list[str]:
  """Lines to train a vocabulary on: the train file's texts (all rows).

  Also the task prefixes and single-task markers of preprocess, so that their characters (e.g. '[')
  are in the vocabulary.
  """
  lines = [p for pair in preprocess.PREFIXES.values() for p in pair]
  lines += [preprocess.LABEL_MARKER, preprocess.RATIONALE_MARKER]
  for row in splits.source_rows(dataset, 'train', teacher, data_dir):
    lines.extend(row['input'].replace(sources.EOS_JOIN, ' ').split('\n'))
    lines.append(row['label'])
    if teacher is not None:
      lines.append(row['teacher_rationale'])
      lines.append(row['teacher_label'])
  return [l for l in (x.strip() for x in lines) if l]


def train_vocab(dataset: str, vocab_size: int, out_path: str, *, teacher: str | None = 'palm',
                data_dir: str | None = None, force: bool = False) -> str:
  """Trains a SentencePiece model (pad 0, eos 1, unk 2) on `dataset`'s text.

  Cached by path: if `out_path` exists and was trained with the same settings (recorded in
  `out_path + '.json'`) it is returned as is. Returns out_path.
  """
  sources.check_dataset(dataset)
  settings = {'dataset': dataset, 'vocab_size': vocab_size, 'teacher': teacher, 'text_version': 2}
  out, meta = paths.path(out_path), paths.path(out_path + '.json')
  if not force and out.exists() and meta.exists():
    if json.loads(meta.read_text(encoding='utf-8')) == settings:
      return out_path
  lines = training_text(dataset, teacher, data_dir)
  out.parent.mkdir(parents=True, exist_ok=True)
  # Local: train beside the output and rename it into place (atomic). Remote: train in a local
  # temporary folder and copy the model over.
  local_dir = None if paths.is_remote(out_path) else os.path.dirname(os.path.abspath(out_path))
  with tempfile.TemporaryDirectory(dir=local_dir) as tmp:
    text_path = os.path.join(tmp, 'text.txt')
    with open(text_path, 'w', encoding='utf-8') as f:
      f.write('\n'.join(lines) + '\n')
    if hasattr(spm, 'set_random_generator_seed'):
      spm.set_random_generator_seed(0)
    spm.SentencePieceTrainer.train(
        input=text_path, model_prefix=os.path.join(tmp, 'spm'), vocab_size=vocab_size,
        model_type='unigram', character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        input_sentence_size=2_000_000, shuffle_input_sentence=True,
        num_threads=os.cpu_count() or 1, minloglevel=2)
    model = os.path.join(tmp, 'spm.model')
    if local_dir:
      os.replace(model, out_path)
    else:
      with open(model, 'rb') as f:
        out.write_bytes(f.read())
  meta.write_text(json.dumps(settings), encoding='utf-8')
  get_vocabulary.cache_clear()
  return out_path


CACHE_ENV = 'DSSB_CACHE_DIR'


@gin.configurable
def cached_vocab(dataset: str, vocab_size: int = 1000, teacher: str | None = 'palm') -> str:
  """Path of a CPU vocabulary for `dataset`, trained on first use (gin: VOCAB_PATH).

  Args:
    dataset: whose training text to train on.
    vocab_size: SentencePiece pieces.
    teacher: include this teacher's rationales in the training text.

  Returns:
    The path, under $DSSB_CACHE_DIR (default ~/.cache/dssb)/vocab/.
  """
  cache = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser('~'), '.cache', 'dssb')
  out = paths.path(cache, 'vocab', f'{dataset}_{teacher}_{vocab_size}.model')
  return train_vocab(dataset, vocab_size, str(out), teacher=teacher)


def train_piece_vocab(lines: list, symbols: tuple, out_path: str) -> str:
  """A SentencePiece model (pad 0, eos 1, unk 2) of fixed pieces: each character of `lines` and
  each of `symbols`, matched longest first; the text is kept as written (NFKC, the identity on
  ASCII; no whitespace folding, no dummy prefix), so decode(encode(s)) == s. Cached by path and
  content like train_vocab; returns out_path."""
  characters = ''.join(sorted(set(''.join(lines))))
  settings = {'kind': 'pieces', 'characters': characters, 'symbols': list(symbols)}
  out, meta = paths.path(out_path), paths.path(out_path + '.json')
  if out.exists() and meta.exists() and json.loads(meta.read_text()) == settings:
    return out_path
  out.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    text_path = os.path.join(tmp, 'text.txt')
    with open(text_path, 'w', encoding='utf-8') as f:
      f.write('\n'.join(lines) + '\n')
    spm.SentencePieceTrainer.train(
        input=text_path, model_prefix=os.path.join(tmp, 'spm'), model_type='char',
        vocab_size=len(characters) + len(symbols) + 3, user_defined_symbols=list(symbols),
        character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        normalization_rule_name='nfkc', remove_extra_whitespaces=False, add_dummy_prefix=False,
        minloglevel=2)
    with open(os.path.join(tmp, 'spm.model'), 'rb') as f:
      out.write_bytes(f.read())
  meta.write_text(json.dumps(settings), encoding='utf-8')
  get_vocabulary.cache_clear()
  return out_path


@gin.configurable
def cached_addition_vocab() -> str:
  """Path of the addition task's vocabulary (66 pieces: characters, digits and symbols with
  their leading space, template words), built on first use under $DSSB_CACHE_DIR (default
  ~/.cache/dssb)/vocab/ (gin: VOCAB_PATH)."""
  cache = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser('~'), '.cache', 'dssb')
  out = paths.path(cache, 'vocab', 'addition_pieces.model')
  return train_piece_vocab(addition.vocabulary_text(), addition.VOCAB_SYMBOLS, str(out))
