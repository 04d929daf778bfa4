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


# Serving and teacher tests: a tiny random T5 (Hugging Face folder) behind dssb.serve, which
# demands an API key (so tests can check the key is sent and never written anywhere).
SERVE_KEY_ENV = 'DSSB_TEST_SERVE_KEY'


@pytest.fixture(scope='session')
def tiny_checkpoint(tmp_path_factory):
  """A random tiny T5 exported as a Hugging Face folder (vocab 384 >= the 300-piece vocab)."""
  from dssb import checkpoints  # pylint: disable=g-import-not-at-top
  from dssb.model import T5Config, init_params  # pylint: disable=g-import-not-at-top
  config = T5Config(vocab_size=384, d_model=32, num_heads=2, head_dim=16, d_ff=64,
                    num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0)
  path = tmp_path_factory.mktemp('tiny_hf') / 'model'
  checkpoints.export_hf(config, init_params(config), str(path))
  return str(path)


@pytest.fixture(scope='session')
def tiny_server(tiny_checkpoint, svamp_vocab, tmp_path_factory):
  """dssb.serve on the tiny checkpoint (API key required; `.api_key` holds it)."""
  import secrets  # pylint: disable=g-import-not-at-top
  import teacher_testlib  # pylint: disable=g-import-not-at-top
  key = 'sk-dssb-test-' + secrets.token_hex(8)
  server = teacher_testlib.Server(
      tiny_checkpoint, '--vocab', svamp_vocab, '--api_key_env', SERVE_KEY_ENV,
      '--batch_wait_ms', '30', '--max_tokens_limit', '64', '--max_request_bytes', '200000',
      log_dir=str(tmp_path_factory.mktemp('serve')), extra_env={SERVE_KEY_ENV: key},
      name='tiny')
  server.api_key = key
  yield server
  server.stop()
