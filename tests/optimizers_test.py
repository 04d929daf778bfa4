"""Learning-rate schedule and AdamW against the official code's Hugging Face defaults."""

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
