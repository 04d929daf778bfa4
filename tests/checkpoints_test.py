"""Tests for dssb.checkpoints: T5X and Hugging Face loading, HF export, numerical parity.

The numerical reference is transformers' PyTorch T5ForConditionalGeneration (float32, CPU).
"""

import dataclasses
import gzip
import json
import os
import re
import shutil
import subprocess
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax
import msgpack
import numpy as np
import pytest
from flax import serialization

from dssb import checkpoints
from dssb.checkpoints import CheckpointError
from dssb.checkpoints import hf_format
from dssb.model import T5, T5Config, generate, init_params

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
torch.set_flush_denormal(True)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T5X_TESTDATA = os.path.join(os.path.dirname(REPO), 'shared', 't5x_testdata', 'test_t5_tiny')

# Small configs of both kinds; decoder depth != encoder depth, heads * head_dim != d_model.
HF_CONFIGS = {
    'v1_0': dict(vocab_size=96, d_model=16, d_kv=6, num_heads=3, d_ff=24, num_layers=2,
                 num_decoder_layers=3, feed_forward_proj='relu', dropout_rate=0.0),
    'v1_1': dict(vocab_size=96, d_model=12, d_kv=5, num_heads=4, d_ff=20, num_layers=3,
                 num_decoder_layers=2, feed_forward_proj='gated-gelu', tie_word_embeddings=False,
                 relative_attention_num_buckets=16, relative_attention_max_distance=20,
                 dropout_rate=0.0),
}
DSSB_CONFIGS = {
    'v1_0': T5Config(vocab_size=80, d_model=16, num_heads=3, head_dim=6, d_ff=24,
                     num_encoder_layers=2, num_decoder_layers=3, mlp_activations=('relu',),
                     tie_embeddings=True),
    'v1_1': T5Config(vocab_size=80, d_model=12, num_heads=4, head_dim=5, d_ff=20,
                     num_encoder_layers=3, num_decoder_layers=2,
                     mlp_activations=('gelu', 'linear'), tie_embeddings=False),
}
ATOL = 1e-4


def _random_hf_model(kind, seed):
  """A random HF T5 with weights large enough that outputs depend on every part of the net.

  HF's own init is tiny (std d_model**-0.5 and less), which would make logits nearly constant;
  these standard deviations keep float32 well conditioned (torch float32 vs float64 ~1e-5)
  while greedy decodes vary. lm_head of v1.1 is a separate parameter (untied).
  """
  config = transformers.T5Config(**HF_CONFIGS[kind])
  torch.manual_seed(seed)
  model = transformers.T5ForConditionalGeneration(config).eval()
  with torch.no_grad():
    if kind == 'v1_1':
      model.lm_head.weight = torch.nn.Parameter(torch.empty(config.vocab_size, config.d_model))
    for name, p in model.named_parameters():
      if 'layer_norm' in name:
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif name == 'shared.weight':
        p.normal_(0.0, 0.5)
      elif name == 'lm_head.weight':
        p.normal_(0.0, 1.0)
      elif 'relative_attention_bias' in name:
        p.normal_(0.0, 3.0)
      elif re.search(r'\.(q|k|v|o)\.weight$', name):
        p.normal_(0.0, 0.3)
      else:
        p.normal_(0.0, 0.2)
    head = model.shared.weight if kind == 'v1_0' else model.lm_head.weight
    head[1] *= 0.05  # EOS (id 1) rarely wins, so that decodes run long
  return model


def _hf_forward(model, enc, dec_in, dec_target):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0),
                decoder_input_ids=torch.tensor(dec_in),
                decoder_attention_mask=torch.tensor(dec_target > 0), use_cache=False)
  return out.logits.numpy()


def _hf_greedy(model, enc, steps):
  """Greedy decoding by plain forward passes over the whole prefix (no HF cache, no generate)."""
  with torch.no_grad():
    mask = torch.tensor(enc > 0)
    encoded = model.encoder(input_ids=torch.tensor(enc), attention_mask=mask)
    prefix = torch.zeros((enc.shape[0], 1), dtype=torch.long)
    for _ in range(steps):
      logits = model(encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=prefix,
                     decoder_attention_mask=torch.ones_like(prefix), use_cache=False).logits
      prefix = torch.cat([prefix, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
  return prefix[:, 1:].numpy()


def _batch(vocab, seed=0):
  rng = np.random.RandomState(seed)
  enc = rng.randint(2, vocab, size=(3, 20))
  enc[1, 13:] = 0
  enc[2, 7:] = 0
  target = rng.randint(2, vocab, size=(3, 12))
  target[1, 9:] = 0
  dec_in = np.pad(target[:, :-1], ((0, 0), (1, 0)))
  return enc, dec_in, target


def _dssb_logits(config, params, enc, dec_in, target):
  return np.asarray(T5(config).apply({'params': params}, enc, dec_in, target))


def _max_diff(a, b, valid):
  return float(np.abs(np.asarray(a) - np.asarray(b))[valid].max())


# ---------------------------------------------------------------------------------------------
# Hugging Face -> dssb: numerical parity


@pytest.mark.parametrize('kind,seed', [('v1_0', 1), ('v1_1', 1)])
def test_hf_parity(kind, seed, tmp_path):
  model = _random_hf_model(kind, seed)
  assert (model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()) == (kind == 'v1_1')
  model.save_pretrained(tmp_path)
  config, params = checkpoints.load(str(tmp_path))

  hf = HF_CONFIGS[kind]
  assert (config.d_model, config.num_heads, config.head_dim, config.d_ff) == (
      hf['d_model'], hf['num_heads'], hf['d_kv'], hf['d_ff'])
  assert (config.num_encoder_layers, config.num_decoder_layers) == (
      hf['num_layers'], hf['num_decoder_layers'])
  assert config.tie_embeddings == (kind == 'v1_0')
  assert config.mlp_activations == (('relu',) if kind == 'v1_0' else ('gelu', 'linear'))
  assert config.relative_attention_max_distance == hf.get('relative_attention_max_distance', 128)
  jax.tree.map(lambda a, b: np.testing.assert_equal(np.shape(a), np.shape(b)), params,
               init_params(config))

  enc, dec_in, target = _batch(config.vocab_size)
  with torch.no_grad():
    encoded_hf = model.encoder(input_ids=torch.tensor(enc),
                               attention_mask=torch.tensor(enc > 0)).last_hidden_state.numpy()
  encoded = T5(config).apply({'params': params}, enc, method=T5.encode)
  enc_diff = _max_diff(encoded, encoded_hf, enc > 0)
  logits_hf = _hf_forward(model, enc, dec_in, target)
  logits = _dssb_logits(config, params, enc, dec_in, target)
  logit_diff = _max_diff(logits, logits_hf, target > 0)
  print(f'\n{kind}: encoder max abs diff {enc_diff:.2e}, logits max abs diff {logit_diff:.2e} '
        f'(logits std {logits_hf[target > 0].std():.2f})')
  assert enc_diff < ATOL
  assert logit_diff < ATOL
  assert logits_hf[target > 0].std() > 0.3  # a meaningful comparison, not of near-zero logits

  steps = 24
  reference = _hf_greedy(model, enc, steps)
  decoded = np.asarray(generate(config, params, enc, steps))
  for row_ref, row in zip(reference, decoded):
    eos = list(row_ref).index(1) + 1 if 1 in row_ref else steps
    assert eos >= 20, row_ref
    np.testing.assert_array_equal(row[:eos], row_ref[:eos])
    assert len(set(row_ref[:eos].tolist())) >= 2, row_ref  # not collapsed to one token
  assert len(set(reference.ravel().tolist())) >= 8


# ---------------------------------------------------------------------------------------------
# dssb -> Hugging Face export


@pytest.mark.parametrize('kind', ['v1_0', 'v1_1'])
def test_export_hf_round_trip(kind, tmp_path):
  config = DSSB_CONFIGS[kind]
  params = init_params(config, jax.random.PRNGKey(3))
  out = tmp_path / 'hf'
  checkpoints.export_hf(config, params, str(out))
  written = json.loads((out / 'config.json').read_text())
  assert written['tie_word_embeddings'] == (kind == 'v1_0')

  model = transformers.T5ForConditionalGeneration.from_pretrained(str(out)).eval()
  tied = model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()
  assert tied == (kind == 'v1_0')
  assert model.config.scale_decoder_outputs == (kind == 'v1_0')
  if kind == 'v1_1':
    np.testing.assert_array_equal(model.lm_head.weight.detach().numpy(),
                                  np.asarray(params['decoder']['logits_dense']['kernel']).T)
    assert not np.array_equal(model.lm_head.weight.detach().numpy(),
                              model.shared.weight.detach().numpy())

  enc, dec_in, target = _batch(config.vocab_size, seed=1)
  logits = _dssb_logits(config, params, enc, dec_in, target)
  diff = _max_diff(logits, _hf_forward(model, enc, dec_in, target), target > 0)
  assert diff < ATOL, diff

  config_back, params_back = checkpoints.load(str(out))
  assert config_back == config
  jax.tree.map(np.testing.assert_array_equal, params_back,
               jax.tree.map(np.asarray, params))


@pytest.mark.parametrize('kind', ['v1_0', 'v1_1'])
def test_hf_other_tie_and_scale(kind, tmp_path):
  """HF configs whose output scale disagrees with the tying load as untied, same logits.

  transformers scales the decoder output by d_model**-0.5 iff scale_decoder_outputs (default:
  tie_word_embeddings); it ties lm_head unless the file holds a different one.
  """
  config = DSSB_CONFIGS[kind]
  out = tmp_path / 'hf'
  checkpoints.export_hf(config, init_params(config, jax.random.PRNGKey(4)), str(out))
  hf_config = json.loads((out / 'config.json').read_text())
  hf_config['scale_decoder_outputs'] = not hf_config['scale_decoder_outputs']
  (out / 'config.json').write_text(json.dumps(hf_config))
  model = transformers.T5ForConditionalGeneration.from_pretrained(str(out)).eval()
  assert model.config.scale_decoder_outputs == (kind == 'v1_1')
  loaded_config, params = checkpoints.load(str(out))
  assert not loaded_config.tie_embeddings
  enc, dec_in, target = _batch(config.vocab_size, seed=2)
  logits = _dssb_logits(loaded_config, params, enc, dec_in, target)
  diff = _max_diff(logits, _hf_forward(model, enc, dec_in, target), target > 0)
  assert diff < ATOL, diff


def test_hf_pytorch_bin(tmp_path):
  """A folder with pytorch_model.bin (all of state_dict(), tied copies included) loads too."""
  config = DSSB_CONFIGS['v1_0']
  params = init_params(config, jax.random.PRNGKey(5))
  out = tmp_path / 'hf'
  checkpoints.export_hf(config, params, str(out))
  model = transformers.T5ForConditionalGeneration.from_pretrained(str(out))
  state = model.state_dict()
  assert {'lm_head.weight', 'encoder.embed_tokens.weight'} <= set(state)
  torch.save(state, out / 'pytorch_model.bin')
  os.remove(out / 'model.safetensors')
  loaded_config, loaded = checkpoints.load(str(out))
  assert loaded_config == config
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.tree.map(np.asarray, params))


# ---------------------------------------------------------------------------------------------
# T5X legacy checkpoints


def _fake_adafactor_states(params):
  states = {}
  for name, x in checkpoints.base.flatten(params).items():
    if np.ndim(x) == 2:
      states[name + '/v_row'] = np.zeros(np.shape(x)[0], np.float32)
      states[name + '/v_col'] = np.zeros(np.shape(x)[1], np.float32)
    else:
      states[name + '/v'] = np.zeros(np.shape(x), np.float32)
  return checkpoints.base.unflatten(states)


def _raw_msgpack(path):
  with open(path, 'rb') as f:
    return msgpack.unpackb(f.read(), ext_hook=lambda code, data: msgpack.ExtType(code, data),
                           strict_map_key=False)


@pytest.mark.parametrize('kind', ['v1_0', 'v1_1'])
def test_t5x_written_checkpoint(kind, tmp_path):
  config = DSSB_CONFIGS[kind]
  old = init_params(config, jax.random.PRNGKey(1))
  new = init_params(config, jax.random.PRNGKey(2))
  for step, params in ((5, old), (10, new)):
    checkpoints.save_t5x(config, params, str(tmp_path), step=step,
                         param_states=_fake_adafactor_states(params), inline_max_elements=32,
                         chunk_bytes=1024)
  assert sorted(os.listdir(tmp_path)) == ['checkpoint_10', 'checkpoint_5']
  ckpt = tmp_path / 'checkpoint_10'

  # The upstream layout, read without dssb: msgpack structure, inline ext arrays, zarr folders.
  raw = _raw_msgpack(ckpt / 'checkpoint')
  assert raw['version'] == 3
  assert set(raw['optimizer']) == {'target', 'state'}
  assert set(raw['optimizer']['state']) == {'step', 'param_states'}
  scale = raw['optimizer']['target']['encoder']['layers_0']['pre_mlp_layer_norm']['scale']
  assert isinstance(scale, msgpack.ExtType) and scale.code == 1
  shape, dtype, data = msgpack.unpackb(scale.data)
  np.testing.assert_array_equal(np.frombuffer(data, dtype).reshape(shape),
                                new['encoder']['layers_0']['pre_mlp_layer_norm']['scale'])
  spec = raw['optimizer']['target']['token_embedder']['embedding']
  assert spec['driver'] == 'zarr' and spec['kvstore']['driver'] == 'file'
  assert spec['kvstore']['path'].rstrip('/') == 'target.token_embedder.embedding'
  assert spec['metadata']['compressor']['id'] == 'gzip'
  zarr_dir = ckpt / 'target.token_embedder.embedding'
  zarray = json.loads((zarr_dir / '.zarray').read_text())
  assert zarray['zarr_format'] == 2 and zarray['compressor']['id'] == 'gzip'
  rows, cols = zarray['chunks']
  assert rows < config.vocab_size  # several chunks
  chunk = np.frombuffer(gzip.decompress((zarr_dir / '1.0').read_bytes()), zarray['dtype'])
  np.testing.assert_array_equal(chunk.reshape(rows, cols),
                                np.asarray(new['token_embedder']['embedding'])[rows:2 * rows])
  assert (ckpt / 'target.encoder.layers_0.attention.key.kernel' / '.zarray').exists()
  # Optimizer state is skipped: remove one of its zarr arrays, loading still works.
  state_dirs = [d for d in os.listdir(ckpt) if d.startswith('state.param_states.')]
  assert state_dirs
  shutil.rmtree(ckpt / state_dirs[0])

  expected = jax.tree.map(np.asarray, new)
  for path in (tmp_path, ckpt, ckpt / 'checkpoint'):  # parent (latest), folder, file
    loaded_config, params = checkpoints.load(str(path))
    assert loaded_config == config
    jax.tree.map(np.testing.assert_array_equal, params, expected)
  _, params = checkpoints.load(str(tmp_path / 'checkpoint_5'))
  jax.tree.map(np.testing.assert_array_equal, params, jax.tree.map(np.asarray, old))

  # Specs of tensorstore < 0.1.14 keep the path outside the kvstore (the oldest public ones).
  contents = serialization.msgpack_restore((ckpt / 'checkpoint').read_bytes())
  leaf = contents['optimizer']['target']['token_embedder']['embedding']
  leaf['path'] = leaf['kvstore'].pop('path')
  (ckpt / 'checkpoint').write_bytes(serialization.msgpack_serialize(contents))
  _, params = checkpoints.load(str(ckpt))
  jax.tree.map(np.testing.assert_array_equal, params, expected)


def test_t5x_testdata_checkpoint(tmp_path):
  """The checkpoint t5x itself wrote (t5x/testdata/test_t5_tiny.checkpoint_0)."""
  if not os.path.exists(T5X_TESTDATA):
    pytest.skip(f'{T5X_TESTDATA} is absent (see shared/t5x_testdata/PROVENANCE.md)')
  config, params = checkpoints.load(T5X_TESTDATA)
  assert config == T5Config(vocab_size=32128, d_model=8, num_heads=4, head_dim=3, d_ff=16,
                            num_encoder_layers=2, num_decoder_layers=2,
                            mlp_activations=('gelu', 'linear'), tie_embeddings=False)
  assert checkpoints.param_count(params) == 518_240
  assert len(checkpoints.base.flatten(params)) == 52
  raw = _raw_msgpack(os.path.join(T5X_TESTDATA, 'checkpoint_0', 'checkpoint'))
  shape, dtype, data = msgpack.unpackb(
      raw['optimizer']['target']['encoder']['layers_1']['attention']['query']['kernel'].data)
  np.testing.assert_array_equal(np.frombuffer(data, dtype).reshape(shape),
                                params['encoder']['layers_1']['attention']['query']['kernel'])

  rng = np.random.RandomState(0)
  enc = rng.randint(2, 32128, size=(2, 9))
  enc[1, 6:] = 0
  target = rng.randint(2, 32128, size=(2, 7))
  dec_in = np.pad(target[:, :-1], ((0, 0), (1, 0)))
  logits = _dssb_logits(config, params, enc, dec_in, target)
  assert logits.shape == (2, 7, 32128) and np.isfinite(logits).all()
  tokens = np.asarray(generate(config, params, enc, 5))
  assert tokens.shape == (2, 5)

  out = tmp_path / 'hf'
  checkpoints.export_hf(config, params, str(out))
  model = transformers.T5ForConditionalGeneration.from_pretrained(str(out)).eval()
  assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
  diff = _max_diff(logits, _hf_forward(model, enc, dec_in, target), target > 0)
  assert diff < ATOL, diff


def test_t5x_config_override(tmp_path):
  config = DSSB_CONFIGS['v1_1']
  checkpoints.save_t5x(config, init_params(config), str(tmp_path))
  # What the arrays cannot tell (activation kind, dropout) comes from the given config.
  given = T5Config(**{**config.__dict__, 'mlp_activations': ('silu', 'linear'),
                      'dropout_rate': 0.0})
  loaded, _ = checkpoints.load(str(tmp_path), config=given)
  assert loaded == given
  wrong = T5Config(**{**config.__dict__, 'd_ff': 32})
  with pytest.raises(CheckpointError, match=r'checkpoint_0.*does not match.*d_ff: checkpoint 20'):
    checkpoints.load(str(tmp_path), config=wrong)
  wrong = T5Config(**{**config.__dict__, 'mlp_activations': ('relu',)})
  with pytest.raises(CheckpointError, match=r'does not match.*mlp_activations'):
    checkpoints.load(str(tmp_path), config=wrong)


# ---------------------------------------------------------------------------------------------
# Scanned layers (T5Config.scan_layers): files stay per-layer, the tree is stacked


@pytest.mark.parametrize('kind', ['v1_0', 'v1_1'])
def test_scanned_model_loads_and_exports(kind, tmp_path):
  """An HF folder and a T5X checkpoint load into the stacked tree of a scan_layers config with
  the reference logits, and export from it back to per-layer files."""
  model = _random_hf_model(kind, seed=3)
  model.save_pretrained(tmp_path / 'hf')
  config, per_layer = checkpoints.load(str(tmp_path / 'hf'))
  scanned = dataclasses.replace(config, scan_layers=True)
  loaded_config, stacked = checkpoints.load(str(tmp_path / 'hf'), config=scanned)
  assert loaded_config == scanned
  assert not any(k.startswith('layers_') for k in list(stacked['encoder']) + list(
      stacked['decoder']))
  jax.tree.map(lambda a, b: np.testing.assert_equal(np.shape(a), np.shape(b)), stacked,
               init_params(scanned))
  np.testing.assert_array_equal(stacked['decoder']['layers']['mlp']['wo']['kernel'][1],
                                per_layer['decoder']['layers_1']['mlp']['wo']['kernel'])
  enc, dec_in, target = _batch(config.vocab_size)
  logits_hf = _hf_forward(model, enc, dec_in, target)
  logits = _dssb_logits(scanned, stacked, enc, dec_in, target)
  assert _max_diff(logits, logits_hf, target > 0) < ATOL

  # T5X written from the stacked tree: upstream per-layer names, loads into both layouts.
  checkpoints.save_t5x(scanned, stacked, str(tmp_path / 't5x'))
  raw = _raw_msgpack(tmp_path / 't5x' / 'checkpoint_0' / 'checkpoint')
  assert {f'layers_{i}' for i in range(config.num_decoder_layers)} <= set(
      raw['optimizer']['target']['decoder'])
  _, from_t5x = checkpoints.load(str(tmp_path / 't5x'), config=scanned)
  jax.tree.map(np.testing.assert_array_equal, from_t5x, stacked)
  unscanned_config, from_t5x = checkpoints.load(str(tmp_path / 't5x'))
  assert not unscanned_config.scan_layers
  jax.tree.map(np.testing.assert_array_equal, from_t5x, per_layer)

  checkpoints.export_hf(scanned, stacked, str(tmp_path / 'out'))
  exported = transformers.T5ForConditionalGeneration.from_pretrained(
      str(tmp_path / 'out')).eval()
  assert _max_diff(_hf_forward(exported, enc, dec_in, target), logits_hf, target > 0) < ATOL
  with pytest.raises(CheckpointError, match='scan_layers=True.*encoder/layers'):
    checkpoints.export_hf(scanned, per_layer, str(tmp_path / 'wrong'))


# ---------------------------------------------------------------------------------------------
# Errors


def _rewrite_target(ckpt_dir, edit):
  path = os.path.join(ckpt_dir, 'checkpoint')
  with open(path, 'rb') as f:
    contents = serialization.msgpack_restore(f.read())
  edit(contents['optimizer']['target'])
  with open(path, 'wb') as f:
    f.write(serialization.msgpack_serialize(contents))


def _drop_norm(target):
  del target['encoder']['layers_1']['pre_mlp_layer_norm']


def _add_bias(target):
  target['encoder']['layers_0']['attention']['query']['bias'] = np.zeros(18, np.float32)


def _reshape_wo(target):
  target['decoder']['layers_0']['mlp']['wo']['kernel'] = np.zeros((25, 16), np.float32)


def _drop_relpos(target):
  del target['encoder']['relpos_bias']


@pytest.mark.parametrize('edit,message', [
    (_drop_norm, r'missing parameter arrays: encoder/layers_1/pre_mlp_layer_norm/scale'),
    (_add_bias, r'unexpected parameter arrays: encoder/layers_0/attention/query/bias'),
    (_reshape_wo, r'wrong shapes: decoder/layers_0/mlp/wo/kernel has shape \(25, 16\), '
                  r'expected \(24, 16\)'),
    (_drop_relpos, r'unknown layout.*encoder/relpos_bias/rel_embedding'),
])
def test_t5x_bad_params(edit, message, tmp_path):
  config = DSSB_CONFIGS['v1_0']
  ckpt = checkpoints.save_t5x(config, init_params(config), str(tmp_path), inline_max_elements=10**9)
  _rewrite_target(ckpt, edit)
  with pytest.raises(CheckpointError, match=re.escape(ckpt) + '.*' + message):
    checkpoints.load(ckpt)


def test_t5x_bad_files(tmp_path):
  config = DSSB_CONFIGS['v1_0']
  missing = str(tmp_path / 'nowhere')
  with pytest.raises(CheckpointError, match=re.escape(missing) + ': no such file'):
    checkpoints.load(missing)
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(CheckpointError, match=re.escape(str(empty)) + ': unknown checkpoint layout'):
    checkpoints.load(str(empty))

  ckpt = checkpoints.save_t5x(config, init_params(config), str(tmp_path / 'run'))
  file = os.path.join(ckpt, 'checkpoint')
  with open(file, 'rb') as f:
    good = f.read()
  with open(file, 'wb') as f:
    f.write(good[:len(good) // 2])
  with pytest.raises(CheckpointError, match=re.escape(file) + ': corrupt msgpack'):
    checkpoints.load(ckpt)
  with open(file, 'wb') as f:
    f.write(msgpack.packb({'version': 3, 'optimizer': {'state': {}}}))
  with pytest.raises(CheckpointError, match=re.escape(file) + ': unknown layout, no params'):
    checkpoints.load(ckpt)
  with open(file, 'wb') as f:
    f.write(msgpack.packb([1, 2, 3]))
  with pytest.raises(CheckpointError, match=re.escape(file) + ': not a T5X checkpoint'):
    checkpoints.load(ckpt)
  with open(file, 'wb') as f:
    f.write(good)
  shutil.rmtree(os.path.join(ckpt, 'target.decoder.layers_2.mlp.wo.kernel'))
  with pytest.raises(CheckpointError, match=re.escape(file) +
                     r': cannot open the zarr array of decoder/layers_2/mlp/wo/kernel'):
    checkpoints.load(ckpt)


def test_hf_bad_folders(tmp_path):
  config = DSSB_CONFIGS['v1_1']
  good = tmp_path / 'good'
  checkpoints.export_hf(config, init_params(config), str(good))
  tensors = {k: np.array(v) for k, v in
             hf_format.read_safetensors(str(good / 'model.safetensors')).items()}

  def variant(name, config_json=None, weights=None):
    folder = tmp_path / name
    shutil.copytree(good, folder)
    if config_json is not None:
      (folder / 'config.json').write_text(config_json)
    if weights is not None:
      hf_format.write_safetensors(str(folder / 'model.safetensors'), weights)
    return str(folder)

  path = variant('no_weights')
  os.remove(os.path.join(path, 'model.safetensors'))
  with pytest.raises(CheckpointError, match=re.escape(path) + ': no weights'):
    checkpoints.load(path)
  path = variant('truncated')
  blob = open(os.path.join(path, 'model.safetensors'), 'rb').read()
  open(os.path.join(path, 'model.safetensors'), 'wb').write(blob[:len(blob) // 2])
  with pytest.raises(CheckpointError, match=re.escape(path) + '.*corrupt safetensors'):
    checkpoints.load(path)
  name = 'encoder.block.1.layer.1.DenseReluDense.wo.weight'
  path = variant('missing', weights={k: v for k, v in tensors.items() if k != name})
  with pytest.raises(CheckpointError, match=re.escape(path) + '.*missing parameter arrays: ' +
                     re.escape(name)):
    checkpoints.load(path)
  path = variant('extra', weights={**tensors, 'encoder.block.0.layer.0.SelfAttention.q.bias':
                                   np.zeros(20, np.float32)})
  with pytest.raises(CheckpointError, match=re.escape(path) + r'.*unexpected parameter arrays: '
                     r'encoder.block.0.layer.0.SelfAttention.q.bias'):
    checkpoints.load(path)
  name = 'decoder.block.1.layer.1.EncDecAttention.k.weight'
  path = variant('shape', weights={**tensors, name: tensors[name].T})
  with pytest.raises(CheckpointError, match=re.escape(path) + '.*' + re.escape(
      f'{name} has shape (12, 20), expected (20, 12)')):
    checkpoints.load(path)
  cfg = json.loads((good / 'config.json').read_text())
  path = variant('gelu', config_json=json.dumps({**cfg, 'feed_forward_proj': 'gelu'}))
  with pytest.raises(CheckpointError,
                     match=re.escape(path) + ".*unsupported feed_forward_proj 'gelu'"):
    checkpoints.load(path)
  path = variant('json', config_json='{"d_model": ')
  with pytest.raises(CheckpointError, match=re.escape(path) + '.*config.json: not valid JSON'):
    checkpoints.load(path)


# ---------------------------------------------------------------------------------------------
# Command line


def test_cli(tmp_path):
  config = DSSB_CONFIGS['v1_0']
  params = init_params(config)
  checkpoints.save_t5x(config, params, str(tmp_path / 't5x'), step=7)
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  run = subprocess.run([sys.executable, '-m', 'dssb.checkpoints', 'describe',
                        str(tmp_path / 't5x')], capture_output=True, text=True, env=env,
                       check=True)
  described = json.loads(run.stdout)
  assert described['format'] == 't5x'
  assert T5Config(**described['config']) == config
  assert described['num_params'] == checkpoints.param_count(params)

  from dssb.checkpoints import __main__ as cli  # pylint: disable=g-import-not-at-top
  assert cli.main(['convert', str(tmp_path / 't5x'), str(tmp_path / 'hf')]) == 0
  loaded_config, loaded = checkpoints.load(str(tmp_path / 'hf'))
  assert loaded_config == config
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.tree.map(np.asarray, params))
  assert cli.main(['describe', str(tmp_path / 'nowhere')]) == 1
