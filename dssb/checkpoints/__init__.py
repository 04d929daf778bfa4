"""Checkpoints in and out of dssb's T5: T5X (legacy msgpack + zarr) and Hugging Face folders.

  config, params = checkpoints.load('gs://t5-data/pretrained_models/t5x/t5_1_1_base')  # latest
  config, params = checkpoints.load('/models/flan-t5-base')  # config.json + model.safetensors
  checkpoints.export_hf(config, params, '/tmp/flan-t5-base-finetuned')

`params` is a nested dict of float32 numpy arrays shaped exactly like
`dssb.model.init_params(config)`. Every unreadable or mismatched checkpoint raises
CheckpointError, whose message names the path and the problem.
"""

from typing import Optional

from dssb.checkpoints import base, hf_format, t5x_format
from dssb.checkpoints.base import CheckpointError, param_count
from dssb.checkpoints.hf_format import export_hf, load_hf
from dssb.checkpoints.t5x_format import load_t5x, save_t5x
from dssb.model.network import T5Config

__all__ = ['CheckpointError', 'detect_format', 'export_hf', 'load', 'load_hf', 'load_t5x',
           'param_count', 'save_t5x']


def detect_format(path: str) -> str:
  """'hf' or 't5x' for a loadable path; CheckpointError otherwise."""
  path = str(path)
  if not base.exists(path):
    raise CheckpointError(f'{path}: no such file or folder')
  if hf_format.is_hf(path):
    return 'hf'
  if t5x_format.is_t5x(path):
    return 't5x'
  found = base.listdir(path) if base.isdir(path) else []
  raise CheckpointError(f'{path}: unknown checkpoint layout: expected a Hugging Face folder '
                        '(config.json + model.safetensors) or a T5X checkpoint (a `checkpoint` '
                        f'msgpack file or checkpoint_<step> folders); found {found[:10]}')


def load(path: str, config: Optional[T5Config] = None):
  """Loads a T5X checkpoint or a Hugging Face T5 folder: (T5Config, params).

  Args:
    path: a T5X checkpoint (the checkpoint_<step> folder, its `checkpoint` file, or the folder
      holding checkpoint_* folders: the latest is taken) or a Hugging Face T5 folder. Local or
      gs:// (remote files are read through tf.io.gfile and TensorStore).
    config: optional architecture (e.g. from a gin model file), checked against the checkpoint;
      without it the architecture is inferred from the arrays (T5X) or config.json (HF).

  Returns:
    (config, params): params is a nested dict of float32 numpy arrays with exactly the
    structure and shapes of `dssb.model.init_params(config)`.
  """
  path = str(path)
  if detect_format(path) == 'hf':
    return load_hf(path, config)
  return load_t5x(path, config)

