"""A trainer run folder (python -m dssb.train's MODEL_DIR) exported as a Hugging Face or T5X
checkpoint, with its config: what `python -m dssb.checkpoints convert RUN_DIR DST` does.

The run's checkpoints are orbax folders (dssb/run_checkpoints.py): MODEL_DIR/checkpoints/<step>
(the last N) and MODEL_DIR/best/<step> (best on validation). Their meta holds the model config,
so the architecture comes from the run itself, as the run trained it (dropout rate included).
Beside the weights go the run's own records: its gin config (dssb_config.gin), a small JSON
(dssb_run.json: run folder, step, which checkpoint, vocabulary path) and, when the run's
vocabulary file can be read, that SentencePiece model as spiece.model (the name Hugging Face's
T5 tokenizer looks for).
"""

import dataclasses
import json
from typing import Optional, Tuple

import numpy as np

from dssb import paths
from dssb.checkpoints import base, hf_format, t5x_format
from dssb.checkpoints.base import CheckpointError
from dssb.model.network import T5Config

WHICH = ('last', 'best')
RUN_RECORD = 'dssb_run.json'
RUN_GIN = 'dssb_config.gin'
VOCAB_FILE = 'spiece.model'


def is_run(path: str) -> bool:
  """A trainer MODEL_DIR (or its checkpoints/ or best/ folder)."""
  from dssb import run_checkpoints  # pylint: disable=g-import-not-at-top
  return base.exists(str(path)) and run_checkpoints.run_folder(path) is not None


def load_run(run_dir: str, which: str = 'last') -> Tuple[T5Config, dict, dict]:
  """(config, numpy params, checkpoint meta) of a run's last or best checkpoint.

  Args:
    run_dir: a trainer MODEL_DIR.
    which: 'last' (the latest of MODEL_DIR/checkpoints) or 'best' (MODEL_DIR/best).
  """
  from dssb import run_checkpoints, sharding  # pylint: disable=g-import-not-at-top
  if which not in WHICH:
    raise CheckpointError(f'--which {which!r}: expected one of {WHICH}')
  folder = paths.absolute(run_dir)
  if which == 'best':
    folder = folder / 'best'
  elif folder.name not in ('checkpoints', 'best'):
    folder = folder / 'checkpoints'
  if not folder.is_dir():
    raise CheckpointError(f'{run_dir}: no {folder.name}/ folder: not a trainer run folder, or '
                          f'it has no {which} checkpoint yet')
  mesh, rules = sharding.make_mesh(), sharding.logical_axis_rules()
  try:
    config, params, meta = run_checkpoints.load_params(
        str(folder), lambda c: sharding.sharded_abstract_params(c, mesh, rules))
  except ValueError as e:
    raise CheckpointError(f'{run_dir}: {e}') from e
  return config, _to_numpy(params), meta


def _to_numpy(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, tree)


def export_run(run_dir: str, dst: str, which: str = 'last', to: str = 'hf',
               t5x_step: Optional[int] = None) -> dict:
  """Writes the run's last or best params as a Hugging Face folder or a T5X checkpoint (named
  after t5x_step, default the run's step), with the run's records beside them; returns a
  description (what was written, from which step)."""
  config, params, meta = load_run(run_dir, which)
  step = int(meta.get('step', 0))
  if to == 'hf':
    out = hf_format.export_hf(config, params, dst)
  elif to == 't5x':
    out = t5x_format.save_t5x(config, params, dst, step=step if t5x_step is None else t5x_step)
  else:
    raise CheckpointError(f'--to {to!r}: expected hf or t5x')
  run = paths.absolute(run_dir)
  if run.name in ('checkpoints', 'best'):
    run = run.parent
  record = {'run_dir': str(run), 'which': which, 'step': step,
            'vocab_path': meta.get('vocab_path'), 'model_config': dataclasses.asdict(config)}
  base.write_bytes(base.join(dst, RUN_RECORD), json.dumps(record, indent=2).encode())
  if (run / 'config.gin').exists():
    base.write_bytes(base.join(dst, RUN_GIN), (run / 'config.gin').read_bytes())
  vocab = _copy_vocab(meta.get('vocab_path'), dst)
  return {'written': out, 'format': to, 'run_dir': str(run), 'which': which, 'step': step,
          'vocab': vocab, 'config': dataclasses.asdict(config),
          'num_params': base.param_count(params)}


def _copy_vocab(vocab_path: Optional[str], out_dir: str) -> Optional[str]:
  """Copies the run's SentencePiece model as spiece.model; None when it cannot be read."""
  if not vocab_path:
    return None
  try:
    data = paths.path(vocab_path).read_bytes()
  except Exception:  # pylint: disable=broad-except  (unreachable bucket, moved file)
    return None
  base.write_bytes(base.join(out_dir, VOCAB_FILE), data)
  return base.join(out_dir, VOCAB_FILE)
