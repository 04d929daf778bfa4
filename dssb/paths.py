"""The one path layer for what a run reads and writes: local folders and object stores alike.

A pod job's MODEL_DIR is a gs:// folder that every host sees; a worker's local disk is not. So
every file of a run (config.gin, metrics.jsonl, results.json, checkpoints, data, vocabularies) is
opened through `etils.epath`, which serves local paths with `os` and gs:// (s3://, ...) paths
with TensorFlow's file systems. TensorFlow is imported (quietly) only when a remote path is met.
"""

from etils import epath


def is_remote(path) -> bool:
  return '://' in str(path)


def path(p, *parts: str) -> epath.Path:
  """An epath.Path of a local or remote file or folder, as written (TensorFlow is loaded
  quietly first for a remote one: epath's gs:// backend is tf.io.gfile)."""
  if is_remote(p):
    import dssb  # pylint: disable=g-import-not-at-top
    dssb.import_tensorflow_quietly()
  return epath.Path(p, *parts)


def absolute(p) -> epath.Path:
  """`path(p)` with a local path made absolute (orbax needs that); remote ones as given."""
  return path(p) if is_remote(p) else epath.Path(p).expanduser().resolve()


def append_line(p, line: str) -> None:
  """Appends one line (object stores rewrite the object; local files append)."""
  with path(p).open('a') as f:
    f.write(line + '\n')
