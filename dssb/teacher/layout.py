"""Annotation outputs in the official data layout, so `DSSB_DATA_DIR=OUT` trains unchanged.

    OUT/datasets/{dataset}/{dataset}_{split}.json        inputs: links to the source files (a
                                                         truncated copy with --limit)
    OUT/datasets/{dataset}/llm/...                       the other entries of the source folder,
                                                         linked (PaLM outputs, other teachers)
    OUT/datasets/{dataset}/llm_{teacher}/{split}_CoT_0.json   one completion per input row
    OUT/datasets/{dataset}/llm_{teacher}/{split}_annotations.jsonl   every sample, parsed, voted
    OUT/datasets/{dataset}/llm_{teacher}/{split}_summary.json        accuracy, failures, agreement

dssb.data.sources reads only the `{split}_CoT_{i}.json` files of a teacher folder; the rest sits
beside them for people. Files are written whole and then renamed, so a killed run never leaves a
half-written output. OUT may also be remote (gs://...): inputs are then copied, not linked.
"""

import json
import os
from typing import Iterable, Optional

from etils import epath

from dssb.data import sources


def _write_atomic(path, write) -> None:
  path = epath.Path(path)
  tmp = path.with_name(f'{path.name}.tmp{os.getpid()}')
  with tmp.open('w') as f:
    write(f)
  tmp.replace(path)


def write_json(path: str, obj) -> None:
  _write_atomic(path, lambda f: (json.dump(obj, f, indent=1, ensure_ascii=False), f.write('\n')))


def write_jsonl(path: str, records: Iterable[dict]) -> None:
  _write_atomic(path, lambda f: f.writelines(json.dumps(r, ensure_ascii=False) + '\n'
                                             for r in records))


def _is_local(path) -> bool:
  return '://' not in str(path)


def _copy(src: epath.Path, dst: epath.Path) -> None:
  if src.is_dir():
    dst.mkdir(parents=True, exist_ok=True)
    for child in src.iterdir():
      _copy(child, dst / child.name)
  else:
    src.copy(dst, overwrite=True)


def _link(src, dst) -> None:
  """dst -> src (a symlink, or a copy where links do not exist); a real dst is kept."""
  if _is_local(dst) and os.path.islink(dst):
    os.remove(dst)
  elif epath.Path(dst).exists():
    return  # a real file or folder of OUT (another teacher's outputs): keep it
  if _is_local(src) and _is_local(dst):
    os.symlink(os.path.abspath(src), dst)
  else:
    _copy(epath.Path(src), epath.Path(dst))


def prepare(out_dir: str, dataset: str, split: str, teacher: str,
            source_root: Optional[str] = None, limit: Optional[int] = None) -> str:
  """Lays out OUT for one annotation; returns the teacher's folder (created, empty of stale
  numbered files for `split`)."""
  sources.check_teacher(teacher)
  if teacher == 'palm':
    raise ValueError("teacher name 'palm' is the released PaLM outputs (datasets/*/llm/); "
                     'give your teacher its own name')
  src = epath.Path(sources.data_dir(source_root)) / 'datasets' / dataset
  dst = epath.Path(out_dir) / 'datasets' / dataset
  dst.mkdir(parents=True, exist_ok=True)
  inputs = f'{dataset}_{split}.json'
  own = 'llm_' + teacher
  same = _is_local(dst) and os.path.realpath(src) == os.path.realpath(dst)
  if same and limit is not None:
    raise ValueError(f'--out {out_dir} is the source data folder: --limit would overwrite '
                     f'{src / inputs}; write to another folder')
  if not same:
    # The annotated split's inputs are ours: a link, or the first `limit` rows (replacing what an
    # earlier run with another limit left, so inputs and outputs always align).
    if (dst / inputs).exists() or (_is_local(dst) and os.path.islink(dst / inputs)):
      (dst / inputs).unlink()
    for entry in sorted(p.name for p in src.iterdir()):
      if entry != own and not (limit is not None and entry == inputs):
        _link(src / entry, dst / entry)
    if limit is not None:
      lines = [line for line in (src / inputs).read_text().splitlines(keepends=True)
               if line.strip()][:limit]
      _write_atomic(dst / inputs, lambda f: f.writelines(lines))
  folder = dst / own
  if _is_local(folder) and os.path.islink(folder):
    os.remove(folder)
  folder.mkdir(parents=True, exist_ok=True)
  return str(folder)


def write_outputs(folder: str, split: str, completions: list, records: list,
                  summary: dict) -> dict:
  """Writes the CoT file, the per-row records and the summary; returns their paths."""
  folder = epath.Path(folder)
  for path in folder.iterdir():  # numbered files of an earlier layout would be concatenated
    name = path.name
    numbered = name.startswith(f'{split}_CoT_') and name.endswith('.json')
    if numbered and name != f'{split}_CoT_0.json':
      path.unlink()
  paths = {'completions': str(folder / f'{split}_CoT_0.json'),
           'annotations': str(folder / f'{split}_annotations.jsonl'),
           'summary': str(folder / f'{split}_summary.json')}
  write_json(paths['completions'], completions)
  write_jsonl(paths['annotations'], records)
  write_json(paths['summary'], summary)
  return paths
