"""dssb: distilling step-by-step and context distillation on a Flax T5."""

import os
import sys

# Quiet TensorFlow (imported by seqio / tfds) before anything imports it.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')


def import_tensorflow_quietly():
  """Imports TensorFlow with its load-time C++ lines hidden, and keeps it off accelerators.

  TF 2.21 prints INFO lines (cuda stubs) while loading, before any log level applies, so
  file descriptor 2 points to /dev/null during the import. TF is only a data library here:
  it must never take GPU memory from JAX.
  """
  if 'tensorflow' in sys.modules:
    return sys.modules['tensorflow']
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  try:
    sys.stderr.flush()
    os.dup2(devnull, 2)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    for kind in ('GPU', 'TPU'):  # listing GPUs may print a cuInit failure on CPU machines
      try:
        tf.config.set_visible_devices([], kind)
      except (RuntimeError, ValueError):  # already initialised, or no such device kind
        pass
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)
  return tf
