"""Locating, downloading and reading the official DSS data (paper Sec. 4, Table 3).

Layout of a data folder (the official release, unzipped):

    {DSSB_DATA_DIR}/datasets/{cqa,svamp,esnli,anli1}/{name}_{train,valid,test}.json
        one JSON object per line (cqa and svamp have no `valid` file);
    {DSSB_DATA_DIR}/datasets/{name}/llm/{split}_CoT_{i}.json
        teacher `palm` (PaLM-540B few-shot CoT): a JSON array of raw completion strings; files
        i = 0, 1, 2, ... concatenated give one output per row of `{name}_{split}.json`, in order;
    {DSSB_DATA_DIR}/datasets/{name}/llm_{TEACHER}/{split}_CoT_{i}.json
        any other teacher (for example one that dssb runs itself), same format.

Input formats follow the official loaders: CQA "{question}\\nAnswer Choices:\\n(a) ...\\n(e) ..."
with the choice text as label; SVAMP "{Body}\\n{Question}" with the equation as label (the released
json already holds it); e-SNLI / ANLI "{premise}</s>{hypothesis}" (joined by the T5 eos token;
`preprocess` turns the `</s>` into the eos id) with labels entailment / neutral / contradiction.

Every data file is read through `etils.epath`, so DSSB_DATA_DIR may be a gs:// folder (epath serves
it with TensorFlow's file systems, loaded quietly on first use); local paths behave as with `open`.
`download` alone works on local disk: it unzips (random access into the zip) and a gs:// data folder
is filled by copying the unzipped folder there (`gsutil -m cp -r`).
"""

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from typing import Any

from dssb import paths

DATA_DIR_ENV = 'DSSB_DATA_DIR'
DATASETS = ('cqa', 'svamp', 'esnli', 'anli1')
# Source files present per dataset in the official release.
SOURCE_SPLITS = {
    'cqa': ('train', 'test'),
    'svamp': ('train', 'test'),
    'esnli': ('train', 'valid', 'test'),
    'anli1': ('train', 'valid', 'test'),
}
NLI_LABELS = ('entailment', 'neutral', 'contradiction')
EOS_JOIN = '</s>'  # How the official code joins premise and hypothesis.
OFFICIAL_ZIP_URL = ('https://github.com/google-research/distilling-step-by-step'
                    '/raw/HEAD/datasets.zip')
# Line counts of the files that are not in the checksum list (HF esnli train, HF anli train_r1),
# used to verify a download.
EXPECTED_LINES = {
    'datasets/esnli/esnli_train.json': 549_367,
    'datasets/anli1/anli1_train.json': 16_946,
}
_CHECKSUMS = os.path.join(os.path.dirname(__file__), 'SHA256SUMS')
_HOW_TO_GET = (
    'Get the official data with `python -m dssb.data download --out DIR` (fetches '
    f'{OFFICIAL_ZIP_URL}) and set {DATA_DIR_ENV}=DIR, or point {DATA_DIR_ENV} at a folder that '
    'holds datasets/.')


def check_dataset(dataset: str) -> str:
  if dataset not in DATASETS:
    raise ValueError(f'Unknown dataset {dataset!r}; expected one of {DATASETS}.')
  return dataset


def data_dir(path: str | None = None) -> str:
  """The folder holding `datasets/`: `path` if given, else $DSSB_DATA_DIR."""
  path = path or os.environ.get(DATA_DIR_ENV)
  if not path:
    raise ValueError(f'No data folder: set {DATA_DIR_ENV}. {_HOW_TO_GET}')
  if not paths.path(path, 'datasets').is_dir():
    raise FileNotFoundError(
        f'{path} has no datasets/ folder ({DATA_DIR_ENV}={path}). {_HOW_TO_GET}')
  return path


def source_path(dataset: str, split: str, root: str | None = None) -> str:
  """Path of `{dataset}_{split}.json`; raises naming the file if missing."""
  check_dataset(dataset)
  if split not in SOURCE_SPLITS[dataset]:
    raise ValueError(f'{dataset} has no source split {split!r}; it has {SOURCE_SPLITS[dataset]}.')
  path = paths.path(data_dir(root), 'datasets', dataset, f'{dataset}_{split}.json')
  if not path.exists():
    raise FileNotFoundError(f'Missing input file {path} ({dataset} {split} inputs). The full '
                            'release has it inside datasets.zip. ' + _HOW_TO_GET)
  return str(path)


def check_teacher(teacher: str) -> str:
  if not isinstance(teacher, str) or not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', teacher):
    raise ValueError(f'Bad teacher name {teacher!r} (letters, digits, _ . -).')
  return teacher


def teacher_dir(dataset: str, teacher: str, root: str | None = None) -> str:
  """`datasets/{dataset}/llm` for teacher 'palm', else `.../llm_{teacher}`."""
  check_dataset(dataset)
  check_teacher(teacher)
  sub = 'llm' if teacher == 'palm' else f'llm_{teacher}'
  return str(paths.path(data_dir(root), 'datasets', dataset, sub))


def _version(path: str) -> tuple[int, int]:
  """Changes when the file is rewritten: the caches below are keyed by it.

  Local files: os.stat's mtime in ns and size (epath's stat rounds mtime down to seconds, too coarse
  for a file rewritten within a second); remote files: epath's stat, mtime in seconds and size.
  """
  if paths.is_remote(path):
    st = paths.path(path).stat()
    return st.mtime, st.length
  st = os.stat(path)
  return st.st_mtime_ns, st.st_size


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Rows of a JSON-lines file, each with its 1-based '_line'.

  Errors name the file and the line.
  """
  return list(_read_jsonl(path, _version(path)))


@functools.lru_cache(maxsize=8)
def _read_jsonl(path: str, version: tuple[int, int]) -> tuple[dict[str, Any], ...]:
  del version  # Cache key only.
  rows = []
  with paths.path(path).open('r', encoding='utf-8') as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path} line {lineno}: invalid JSON ({e.msg})') from e
      if not isinstance(row, dict):
        raise ValueError(f'{path} line {lineno}: expected a JSON object, got '
                         f'{type(row).__name__}')
      rows.append((lineno, row))
  return tuple({'_line': n, **r} for n, r in rows)


def _field(row, name, kind, path):
  if name not in row:
    raise ValueError(f"{path} line {row['_line']}: missing field {name!r}")
  value = row[name]
  if not isinstance(value, kind):
    raise ValueError(f"{path} line {row['_line']}: field {name!r} is {type(value).__name__}, "
                     f'expected {kind.__name__}')
  return value


def _cqa(row, path):
  question = _field(row, 'question', str, path)
  choices = _field(row, 'choices', list, path)
  if len(choices) != 5 or not all(isinstance(c, str) for c in choices):
    raise ValueError(f"{path} line {row['_line']}: field 'choices' must be 5 strings, got "
                     f'{choices!r}')
  letters = ''.join(f'\n({l}) {c}' for l, c in zip('abcde', choices))
  return {'id': _field(row, 'id', str, path), 'input': f'{question}\nAnswer Choices:{letters}',
          'label': _field(row, 'answer', str, path), 'choices': choices}


def _svamp(row, path):
  return {'input': _field(row, 'input', str, path), 'label': _field(row, 'label', str, path)}


def _nli(row, path):
  label = _field(row, 'label', int, path)
  if label not in (0, 1, 2):
    raise ValueError(f"{path} line {row['_line']}: label {label} not in 0, 1, 2")
  premise, hypothesis = _field(row, 'premise', str, path), _field(row, 'hypothesis', str, path)
  ex = {'input': premise + EOS_JOIN + hypothesis, 'label': NLI_LABELS[label]}
  if 'uid' in row:
    ex['id'] = _field(row, 'uid', str, path)
  return ex


_READERS = {'cqa': _cqa, 'svamp': _svamp, 'esnli': _nli, 'anli1': _nli}


def read_examples(dataset: str, split: str, root: str | None = None) -> list[dict[str, Any]]:
  """Rows of a source file as {'id', 'row', 'input', 'label'[, 'choices']}.

  `id` is the file's own id (CQA `id`, ANLI `uid`) or '{split}:{row}' (SVAMP, e-SNLI have none).
  `row` is the 0-based row index in the file.
  """
  path = source_path(dataset, split, root)
  out = []
  for i, row in enumerate(read_jsonl(path)):
    ex = _READERS[dataset](row, path)
    ex.setdefault('id', f'{split}:{i}')
    ex['row'] = i
    out.append(ex)
  return out


def teacher_files(dataset: str, split: str, teacher: str = 'palm',
                  root: str | None = None) -> list[str]:
  """`{split}_CoT_{i}.json` for i = 0, 1, ... (contiguous), in order."""
  folder = teacher_dir(dataset, teacher, root)
  found = {}
  if paths.path(folder).is_dir():
    for path in paths.path(folder).iterdir():
      m = re.fullmatch(re.escape(split) + r'_CoT_(\d+)\.json', path.name)
      if m:
        found[int(m.group(1))] = str(path)
  if not found:
    raise FileNotFoundError(f'Missing teacher outputs {folder}/{split}_CoT_0.json (teacher '
                            f'{teacher!r}, {dataset} {split}). ' + _HOW_TO_GET)
  missing = sorted(set(range(max(found) + 1)) - set(found))
  if missing:
    raise FileNotFoundError(f'Missing teacher file {folder}/{split}_CoT_{missing[0]}.json (files '
                            'must be numbered 0..N).')
  return [found[i] for i in sorted(found)]


def read_teacher_outputs(dataset: str, split: str, teacher: str = 'palm', root: str | None = None,
                         expected: int | None = None) -> list[str]:
  """Raw completions for a source split, concatenated over the files.

  If `expected` (the number of input rows) is given, a different count raises an error naming the
  files and their counts.
  """
  files = teacher_files(dataset, split, teacher, root)
  outputs, counts = [], []
  for path in files:
    part = _read_json_array(path, _version(path))
    outputs.extend(part)
    counts.append(f'{paths.path(path).name}: {len(part)}')
  if expected is not None and len(outputs) != expected:
    raise ValueError(
        f'{files[-1]}: teacher {teacher!r} has {len(outputs)} outputs for {dataset} {split} but '
        f'the split has {expected} inputs (files {", ".join(counts)}); outputs must align '
        'one-to-one with rows.')
  return outputs


@functools.lru_cache(maxsize=8)
def _read_json_array(path: str, version: tuple[int, int]) -> tuple[str, ...]:
  del version  # Cache key only.
  text = paths.path(path).read_text(encoding='utf-8')
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} line {e.lineno}: invalid JSON ({e.msg})') from e
  if not isinstance(data, list):
    raise ValueError(f'{path} line 1: expected a JSON array of strings')
  for i, item in enumerate(data):
    if not isinstance(item, str):
      raise ValueError(f'{path}: element {i} is {type(item).__name__}, expected a string')
  return tuple(data)


def load_checksums() -> dict[str, str]:
  """{relative path: sha256} of the files of the official release."""
  out = {}
  with open(_CHECKSUMS, encoding='utf-8') as f:
    for line in f:
      if line.strip():
        digest, name = line.split(maxsplit=1)
        out[name.strip()] = digest
  return out


def _sha256(f) -> str:
  h = hashlib.sha256()
  for block in iter(lambda: f.read(1 << 20), b''):
    h.update(block)
  return h.hexdigest()


def _zip_members(zf: zipfile.ZipFile) -> dict[str, str]:
  """{path relative to the data folder: member name}; accepts zips with or without the top-level
  datasets/ folder."""
  names = [n for n in zf.namelist() if not n.startswith('__MACOSX') and not n.endswith('/')]
  for name in names:
    if name.startswith('/') or '..' in name.split('/'):
      raise ValueError(f'{zf.filename}: unsafe member path {name!r}.')
  prefix = '' if any(n.startswith('datasets/') for n in names) else 'datasets/'
  return {prefix + n: n for n in names}


def verify_zip(zip_path: str, datasets: tuple[str, ...] = DATASETS) -> list[str]:
  """Checks CRCs, required members, sha256 and line counts; returns paths.

  Every member listed in the checksum file must match it; the inputs and teacher outputs of
  `datasets` must be present; the two large train files not in the checksum list must have their
  known line counts. Returned paths are relative to the data folder (datasets/...).
  """
  sums = load_checksums()
  try:
    zf = zipfile.ZipFile(zip_path)
  except zipfile.BadZipFile as e:
    raise ValueError(f'{zip_path} is not a zip file ({e}).') from e
  with zf:
    bad = zf.testzip()
    if bad:
      raise ValueError(f'{zip_path}: member {bad} fails its CRC check.')
    members = _zip_members(zf)
    for d in datasets:
      for s in SOURCE_SPLITS[d]:
        for n in (f'datasets/{d}/{d}_{s}.json', f'datasets/{d}/llm/{s}_CoT_0.json'):
          if n not in members:
            raise ValueError(f'{zip_path}: missing member {n}.')
    for rel, name in members.items():
      if rel in sums:
        with zf.open(name) as f:
          if _sha256(f) != sums[rel]:
            raise ValueError(f'{zip_path}: {name} does not match its sha256.')
      elif rel in EXPECTED_LINES:
        with zf.open(name) as f:
          n = sum(1 for line in f if line.strip())
        if n != EXPECTED_LINES[rel]:
          raise ValueError(f'{zip_path}: {name} has {n} lines, expected {EXPECTED_LINES[rel]}.')
  return sorted(members)


def extract_zip(zip_path: str, out_dir: str) -> None:
  """Unzips so that out_dir/datasets/... exists (after `verify_zip`)."""
  with zipfile.ZipFile(zip_path) as zf:
    for rel, name in _zip_members(zf).items():
      dest = os.path.join(out_dir, *rel.split('/'))
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      with zf.open(name) as src, open(dest, 'wb') as dst:
        shutil.copyfileobj(src, dst)


def download(out_dir: str, url: str = OFFICIAL_ZIP_URL,
             datasets: tuple[str, ...] = DATASETS) -> str:
  """Fetches datasets.zip (URL or local path), verifies it, unzips to out_dir.

  Returns out_dir, which then holds datasets/: set DSSB_DATA_DIR to it.
  """
  os.makedirs(out_dir, exist_ok=True)
  zip_path = os.path.join(out_dir, 'datasets.zip')
  if os.path.exists(url):
    if os.path.abspath(url) != os.path.abspath(zip_path):
      shutil.copyfile(url, zip_path)
  else:
    with tempfile.NamedTemporaryFile(dir=out_dir, delete=False) as tmp:
      with urllib.request.urlopen(url) as r:  # Official URL or user's mirror.
        shutil.copyfileobj(r, tmp)
    os.replace(tmp.name, zip_path)
  verify_zip(zip_path, datasets)
  extract_zip(zip_path, out_dir)
  return out_dir
