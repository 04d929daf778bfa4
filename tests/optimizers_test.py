"""Learning-rate schedule and AdamW against the official code's Hugging Face defaults."""

import dataclasses
import re

import jax
import numpy as np
import optax
import pytest
import torch

from dssb import optimizers


@pytest.mark.parametrize('warmup', [0, 30])
def test_linear_schedule_matches_transformers(warmup):
  from transformers import get_linear_schedule_with_warmup
  num_steps, lr = 200, 5e-5
  param = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.AdamW([param], lr=lr)
  hf = get_linear_schedule_with_warmup(opt, warmup, num_steps)
  want = []
  for _ in range(num_steps + 5):
    want.append(opt.param_groups[0]['lr'])
    opt.step()
    hf.step()
  ours = optimizers.linear_decay_schedule(lr, num_steps, warmup)
  got = [float(ours(s)) for s in range(num_steps + 5)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)


def test_adamw_clipped_step_matches_torch():
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=(4, 3)).astype(np.float32)
  grads = [rng.normal(size=(4, 3)).astype(np.float32) * 3 for _ in range(5)]
  tx = optimizers.adamw(optimizers.linear_decay_schedule(1e-2, 5), grad_clip_norm=1.0)
  params, state = w0, tx.init(w0)
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  p = torch.nn.Parameter(torch.tensor(w0))
  opt = torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
  sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (5 - s) / 5))
  for g in grads:
    p.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_([p], 1.0)
    opt.step()
    sched.step()
  np.testing.assert_allclose(np.asarray(params), p.detach().numpy(), rtol=1e-5, atol=1e-6)


def _hf_t5(kind):
  """A real transformers T5 (v1.0 tied, or v1.1 untied with a deeper decoder)."""
  import transformers  # pylint: disable=g-import-not-at-top
  common = dict(vocab_size=64, d_model=16, d_kv=4, num_heads=2, d_ff=24, dropout_rate=0.0)
  if kind == 'v1_0':
    config = transformers.T5Config(num_layers=2, num_decoder_layers=2, feed_forward_proj='relu',
                                   **common)
  else:
    config = transformers.T5Config(num_layers=2, num_decoder_layers=3,
                                   feed_forward_proj='gated-gelu', tie_word_embeddings=False,
                                   **common)
  return transformers.T5ForConditionalGeneration(config)


@pytest.mark.parametrize('kind', ['v1_0', 'v1_1'])
@pytest.mark.parametrize('scan_layers', [False, True])
def test_decay_mask_is_hugging_face_trainers_on_every_t5_array(kind, scan_layers):
  """transformers' Trainer names the parameters that decay; every dssb array of the same T5
  decays exactly when its Hugging Face counterpart does (tied embedding names included)."""
  from transformers import Trainer  # pylint: disable=g-import-not-at-top
  from dssb.checkpoints import base, hf_format  # pylint: disable=g-import-not-at-top
  from dssb.model import init_params  # pylint: disable=g-import-not-at-top
  model = _hf_t5(kind)
  # get_decay_parameter_names uses nothing of the Trainer but the model.
  hf_decays = set(Trainer.get_decay_parameter_names(None, model))
  hf_names = {name for name, _ in model.named_parameters(remove_duplicate=False)}
  assert hf_decays < hf_names
  assert 'shared.weight' in hf_decays  # the rule is not "nothing decays"
  assert 'encoder.final_layer_norm.weight' not in hf_decays
  assert ('encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight'
          not in hf_decays)
  config, _ = hf_format.load_hf(_export(model), None)
  config = dataclasses.replace(config, scan_layers=scan_layers)
  to_dssb = {hf: t5x for hf, t5x, _ in hf_format.name_map(config)}
  tied = ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight')  # share shared.weight
  to_dssb.update({name: 'token_embedder/embedding' for name in tied})
  if kind == 'v1_0':
    to_dssb['lm_head.weight'] = 'token_embedder/embedding'  # tied to shared.weight
  want = {}
  for hf in hf_names:
    t5x = to_dssb[hf]
    if scan_layers:
      t5x = re.sub(r'layers_\d+', 'layers', t5x)
    assert want.setdefault(t5x, hf in hf_decays) == (hf in hf_decays), (hf, t5x)
  params = init_params(config)
  flat_mask = base.flatten(optimizers.decay_mask(params))
  assert set(flat_mask) == set(want)
  assert flat_mask == want
  assert all(base.flatten(optimizers.decay_mask(params, 'all')).values())


def _export(model):
  import tempfile  # pylint: disable=g-import-not-at-top
  out = tempfile.mkdtemp()
  model.save_pretrained(out)
  return out


@pytest.mark.parametrize('rule', ['hugging_face', 'all'])
def test_adamw_weight_decay_matches_torch_param_groups(rule):
  """Decay 0.1 on a norm scale, a relative bias table and a kernel: PyTorch AdamW with the
  Trainer's two parameter groups (or one group that decays all) takes the same steps."""
  rng = np.random.default_rng(1)
  w0 = {'encoder': {'encoder_norm': {'scale': rng.normal(size=(4,)).astype(np.float32)},
                    'relpos_bias': {'rel_embedding': rng.normal(size=(2, 8)).astype(np.float32)},
                    'mlp': {'wo': {'kernel': rng.normal(size=(4, 3)).astype(np.float32)}}}}
  grads = [jax.tree.map(lambda w: rng.normal(size=w.shape).astype(np.float32), w0)
           for _ in range(4)]
  tx = optimizers.adamw(optimizers.linear_decay_schedule(1e-2, 4), weight_decay=0.1,
                        weight_decay_rule=rule)
  params, state = w0, tx.init(w0)
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  leaves = lambda tree: jax.tree_util.tree_leaves_with_path(tree)
  torch_params = [torch.nn.Parameter(torch.tensor(np.asarray(w))) for _, w in leaves(w0)]
  decayed = [optimizers.decays(optimizers.path_name(kp), rule) for kp, _ in leaves(w0)]
  assert decayed == ([True] * 3 if rule == 'all' else [False, True, False])  # norm, mlp, relpos
  opt = torch.optim.AdamW(
      [{'params': [p for p, d in zip(torch_params, decayed) if d], 'weight_decay': 0.1},
       {'params': [p for p, d in zip(torch_params, decayed) if not d], 'weight_decay': 0.0}],
      lr=1e-2)
  sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (4 - s) / 4))
  for g in grads:
    for p, (_, gi) in zip(torch_params, leaves(g)):
      p.grad = torch.tensor(np.asarray(gi))
    torch.nn.utils.clip_grad_norm_(torch_params, 1.0)
    opt.step()
    sched.step()
  for p, (_, got) in zip(torch_params, leaves(params)):
    np.testing.assert_allclose(np.asarray(got), p.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_decay_settings_read_gin_and_bad_rule_is_refused():
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    assert optimizers.decay_settings(optimizers.adamw) == {
        'optimizer': 'adamw', 'weight_decay': 0.0, 'weight_decay_rule': 'hugging_face'}
    gin.bind_parameter('optimizers.adamw.weight_decay', 0.1)
    gin.bind_parameter('optimizers.adamw.weight_decay_rule', 'all')
    assert optimizers.decay_settings(optimizers.adamw) == {
        'optimizer': 'adamw', 'weight_decay': 0.1, 'weight_decay_rule': 'all'}
  finally:
    gin.clear_config()
  with pytest.raises(ValueError, match="weight_decay_rule='layers'"):
    optimizers.adamw(optimizers.constant_schedule(1e-3, 1), weight_decay_rule='layers')
