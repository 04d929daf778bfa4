"""The offline step of context distillation: the teacher, given its context, answers every
unlabeled input; its completions and their extracted answers become the distillation set.

Snell et al. 2022 sample y ~ teacher(. | T_teacher(x)) and keep f(y) (Sec. 2); the public
addition code draws one sample per input with Hugging Face's defaults (temperature 1, top-k 50)
and skips samples its answer regex cannot read. Here k samples per input (`num_samples`) are
drawn with any temperature and top-k, and the skipped ones are counted.

Resumable: inputs are sampled in fixed batches, each batch seeded by (seed, batch index), and
each finished batch is appended to the file and flushed to disk. A rerun of the same command
keeps the finished batches, drops a partly written one, and continues; the result is the same
file an uninterrupted run writes. Settings that would change the set (teacher, sampling, data,
batch size) are recorded in PATH.meta.json and a rerun with other settings is refused.
"""

import json
import os
import sys
import time
from typing import Optional

import flax.linen as nn
import gin
import jax
import numpy as np

from dssb import paths, run_checkpoints, sharding
from dssb.context_distill import distill_set
from dssb.context_distill import sources
from dssb.model import EOS_ID, generate


def _complete_lines(path: str) -> int:
  """How many whole lines the file holds (a last line without its newline is not whole)."""
  if not os.path.exists(path):
    return 0
  with open(path, 'rb') as f:
    return f.read().count(b'\n')


def _keep_lines(path: str, count: int) -> None:
  """Truncates the file after its first `count` lines."""
  with open(path, 'rb') as f:
    lines = f.read().split(b'\n')[:count]
  with open(path, 'wb') as f:
    f.write(b''.join(line + b'\n' for line in lines))


def _check_settings(path: str, settings: dict) -> None:
  meta = distill_set.read_meta(path)
  if meta is None:
    if os.path.exists(path):
      raise ValueError(f'{path} exists without its {distill_set.meta_path(path)}; move it away')
    return
  changed = {k: (meta['settings'].get(k), v) for k, v in settings.items()
             if meta['settings'].get(k) != v}
  if changed:
    raise ValueError(f'{path} was sampled with other settings (setting: (in file, now)): '
                     f'{changed}; use another output path or the same settings')


def _write_meta(path: str, settings: dict, summary: Optional[dict] = None) -> None:
  meta = {'settings': settings, 'complete': summary is not None, 'summary': summary}
  paths.path(distill_set.meta_path(path)).write_text(json.dumps(meta, indent=1))


def _batch_seed(seed: int, batch_index: int) -> int:
  return int(np.random.SeedSequence([seed, batch_index]).generate_state(1)[0] & 0x7FFFFFFF)


@gin.configurable
def sample_distillation_set(teacher_checkpoint: str, out: str, data: sources.CDSettings, *,
                            split: str = 'unlabeled', num_samples: int = 1,
                            temperature: float = 1.0, top_k: Optional[int] = 50,
                            max_length: int = 256, batch_size: int = 64, seed: int = 0,
                            vocab_path: Optional[str] = None) -> dict:
  """Samples the teacher on every input of a split and writes the distillation set.

  Args:
    teacher_checkpoint: the teacher: a trainer MODEL_DIR (or its best/ folder), a T5X or a
      Hugging Face checkpoint (which then needs vocab_path).
    out: the distillation set (JSON lines, local path); its settings go to out + '.meta.json'.
    data: the data settings (source, sizes, seed); the inputs are `split`'s rows and the
      teacher's template is data.context()'s.
    split: which rows to answer (the unlabeled inputs).
    num_samples: teacher samples per input (k).
    temperature: sampling temperature.
    top_k: sample among the k most likely tokens (None: the whole vocabulary).
    max_length: decoded tokens per sample at most (a longer one is cut: usually no answer).
    batch_size: inputs per decoding batch (times num_samples rows); part of the settings.
    seed: sampling seed.
    vocab_path: the teacher's SentencePiece model; default: the one its run recorded.

  Returns:
    The set's summary (inputs, samples, answered, teacher accuracy on the gold answers kept for
    reporting, answers aligned for soft targets), also in the meta file.
  """
  mesh, rules = sharding.make_mesh(), sharding.logical_axis_rules()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    config, params, teacher_meta = run_checkpoints.load_frozen(teacher_checkpoint, mesh, rules)
  vocab_path = vocab_path or teacher_meta.get('vocab_path')
  if not vocab_path:
    raise ValueError(f'{teacher_checkpoint} records no vocabulary; pass vocab_path')
  sp, ctx = distill_set.Tokenizer(vocab_path), data.context()
  rows = data.rows(split)
  settings = {'teacher_checkpoint': str(paths.absolute(teacher_checkpoint)),
              'teacher_step': teacher_meta.get('step'), 'context': ctx.name,
              'data': data.data_name(), 'split': split, 'num_inputs': len(rows),
              'num_samples': num_samples, 'temperature': temperature, 'top_k': top_k,
              'max_length': max_length, 'batch_size': batch_size, 'seed': seed,
              'vocab_path': vocab_path}
  _check_settings(out, settings)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  done = (_complete_lines(out) // batch_size) * batch_size
  if os.path.exists(out):
    _keep_lines(out, done)
  _write_meta(out, settings)
  inputs = [sp.encode(ctx.teacher_input(r['input'])) + [EOS_ID] for r in rows]
  length = -(-max(map(len, inputs)) // 8) * 8
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  progress = tqdm(total=len(rows), initial=done, unit='input', file=sys.stderr,
                  dynamic_ncols=True, mininterval=2.0)
  start = time.time()
  for first in range(done, len(rows), batch_size):
    batch = rows[first:first + batch_size]
    enc = np.zeros((batch_size * num_samples, length), np.int32)
    for i, ids in enumerate(inputs[first:first + batch_size]):
      enc[i * num_samples:(i + 1) * num_samples, :len(ids)] = ids
    tokens = np.asarray(generate(config, params, enc, max_length, method='sample',
                                 temperature=temperature, top_k=top_k,
                                 seed=_batch_seed(seed, first // batch_size)))
    lines = []
    for i, row in enumerate(batch):
      samples = []
      for ids in tokens[i * num_samples:(i + 1) * num_samples].tolist():
        ids = ids[:ids.index(EOS_ID) + 1] if EOS_ID in ids else ids
        text = sp.decode(ids)
        samples.append({'text': text, 'ids': ids, 'answer': ctx.extract(text)})
      lines.append(json.dumps({'id': row['id'], 'input': row['input'], 'gold': row['answer'],
                               'samples': samples}) + '\n')
    with open(out, 'a', encoding='utf-8') as f:
      f.write(''.join(lines))
      f.flush()
      os.fsync(f.fileno())
    progress.update(len(batch))
  progress.close()
  summary = distill_set.summarize(out, sp.encode)
  summary['seconds_this_call'] = round(time.time() - start, 1)
  _write_meta(out, settings, summary)
  return summary

