"""Shared test setup. Data layer: where the DSS data are, and a small vocab."""

import os

import pytest

# Default: the shared DSS data beside the repository (../shared/dss_data).
os.environ.setdefault('DSSB_DATA_DIR', os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared',
    'dss_data')))


@pytest.fixture(scope='session', autouse=True)
def jax_compilation_cache(tmp_path_factory):
  """One persistent XLA compilation cache for the session's runs, in this process and in the
  subprocesses it starts: the tiny model's steps are compiled once, not once per run."""
  import jax  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp('jax_cache'))
  settings = {'jax_compilation_cache_dir': path,
              'jax_persistent_cache_min_compile_time_secs': 0.2,
              'jax_persistent_cache_min_entry_size_bytes': 0}
  for name, value in settings.items():
    jax.config.update(name, value)
    os.environ[name.upper()] = str(value)
  return path


@pytest.fixture(scope='session')
def dss_data_dir():
  """The DSS data folder; skips the test when there is none."""
  path = os.environ.get('DSSB_DATA_DIR')
  if not path or not os.path.isdir(os.path.join(path, 'datasets')):
    pytest.skip(f'no DSS data: DSSB_DATA_DIR={path!r} has no datasets/ '
                '(set it to the folder holding datasets/)')
  return path


@pytest.fixture(scope='session')
def svamp_vocab(dss_data_dir, tmp_path_factory):
  """A 300-piece SentencePiece model trained on SVAMP train text."""
  from dssb.data import vocab  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp('vocab') / 'svamp_300.model'
  return vocab.train_vocab('svamp', 300, str(out), data_dir=dss_data_dir)
