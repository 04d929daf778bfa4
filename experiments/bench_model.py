"""Speed of the dssb T5 against Hugging Face PyTorch T5 on this machine, as ratios.

One invocation, the same T5-small-sized config (v1.1 small: d_model 512, 8+8 layers, gated GELU,
vocab 32128) and the same weights (dssb params exported with dssb.checkpoints.export_hf):
  1. one train step (forward, backward, AdamW, clip 1.0): tokens/s, dssb / PyTorch;
  2. greedy decoding of 64 tokens for 32 inputs: seconds, HF generate / dssb generate, split
     into the encoder pass and the per-token steps, with the time of dssb's step matmuls alone;
  3. the float32 matmul peak of this CPU (the ceiling both run against).
Rounds alternate dssb and PyTorch so that machine noise hits both; ratios are per round and the
medians are reported. Writes results/perf/model_benchmark.json and prints a summary.

  .venv/bin/python experiments/bench_model.py [--rounds 5] [--out results/perf/model_benchmark.json]
"""

import argparse
import functools
import os
import platform
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from dssb import checkpoints, losses
from dssb.model import T5, T5Config, generate, init_params

import perf_report  # experiments/perf_report.py

CONFIG = T5Config(vocab_size=32128, d_model=512, num_heads=6, head_dim=64, d_ff=1024,
                  num_encoder_layers=8, num_decoder_layers=8, dropout_rate=0.0)
BATCH, INPUT_LEN, TARGET_LEN = 8, 128, 32
DECODE_BATCH, DECODE_LEN = 32, 64


def dssb_greedy(params, inputs, n):
  return np.asarray(generate(CONFIG, params, inputs, n))


def hf_greedy(hf, inputs, n):
  """HF's greedy tokens, without the leading BOS its output starts with."""
  ids = torch.tensor(inputs)
  with torch.no_grad():
    return hf.generate(input_ids=ids, attention_mask=ids > 0, max_new_tokens=n,
                       do_sample=False, num_beams=1).numpy()[:, 1:]


def decode_breakdown(params, hf, inputs, reps=2):
  """Milliseconds of the encoder pass (plus one step) and of each further decoding step, dssb
  and HF: (generate(64) - generate(1)) / 63 per step. Also the time of dssb's step matrix
  products alone: the decoder's 8 x 9 weight matmuls and the logits matmul at batch 32, chained
  in one jitted function with no attention, norms or cache. That is what XLA:CPU's matmul
  kernels cost per step whatever the rest of the step does."""
  best = lambda f: min(time_steps(f, 1) for _ in range(reps))
  out = {}
  for name, run in (('dssb', lambda n: dssb_greedy(params, inputs, n)),
                    ('hf', lambda n: hf_greedy(hf, inputs, n))):
    for n in (DECODE_LEN, 1):
      run(n)  # compile, warm up
    steps = run(DECODE_LEN).shape[1]
    first, full = best(lambda: run(1)), best(lambda: run(DECODE_LEN))
    out[name] = {'encode_and_first_step_ms': 1000 * first,
                 'per_step_ms': 1000 * (full - first) / (steps - 1)}

  dec = params['decoder']
  x = jnp.asarray(np.random.default_rng(1).normal(size=(inputs.shape[0], CONFIG.d_model)),
                  jnp.float32)

  @jax.jit
  def step_matmuls(x, dec):
    for i in range(CONFIG.num_decoder_layers):
      layer = dec[f'layers_{i}']
      sa, ca, mlp = layer['self_attention'], layer['encoder_decoder_attention'], layer['mlp']
      k = lambda block, name: block[name]['kernel']
      x = x + (x @ k(sa, 'query') + x @ k(sa, 'key') + x @ k(sa, 'value')) @ k(sa, 'out')
      x = x + (x @ k(ca, 'query')) @ k(ca, 'out')
      x = x + (jax.nn.gelu(x @ k(mlp, 'wi_0')) * (x @ k(mlp, 'wi_1'))) @ k(mlp, 'wo')
    return x @ dec['logits_dense']['kernel']
  step_matmuls(x, dec).block_until_ready()
  out['dssb']['step_matmuls_only_ms'] = 1000 * statistics.median(
      time_steps(lambda: step_matmuls(x, dec).block_until_ready(), 1) for _ in range(10))
  flops = step_matmuls.lower(x, dec).compile().cost_analysis()
  flops = (flops[0] if isinstance(flops, list) else flops)['flops']
  out['dssb']['step_matmuls_gflops_per_s'] = flops / out['dssb']['step_matmuls_only_ms'] / 1e6
  # The most dssb could gain with XLA's matmul kernels: encoder as fast as the faster of the two,
  # and every further step costing its matmuls only.
  d, h = out['dssb'], out['hf']
  hf_total = h['encode_and_first_step_ms'] + (DECODE_LEN - 1) * h['per_step_ms']
  out['speedup_bound_with_xla_matmuls'] = hf_total / (
      min(d['encode_and_first_step_ms'], h['encode_and_first_step_ms'])
      + (DECODE_LEN - 1) * d['step_matmuls_only_ms'])
  return out


def matmul_peak_gflops(n=2048, reps=10):
  """Best-of float32 matmul throughput of JAX and PyTorch on this CPU."""
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(reps):
    f(a).block_until_ready()
  jax_rate = 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9
  t = torch.randn(n, n)
  t @ t
  start = time.perf_counter()
  for _ in range(reps):
    t @ t
  torch_rate = 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9
  return {'jax_gflops': jax_rate, 'torch_gflops': torch_rate,
          'peak_gflops': max(jax_rate, torch_rate)}


def batch_arrays(rng):
  enc = rng.integers(2, CONFIG.vocab_size, (BATCH, INPUT_LEN))
  tgt = rng.integers(2, CONFIG.vocab_size, (BATCH, TARGET_LEN))
  dec = np.pad(tgt[:, :-1], ((0, 0), (1, 0)))
  return enc, dec, tgt


def dssb_loss(params, enc, dec, tgt):
  logits = T5(CONFIG).apply({'params': params}, enc, dec, tgt)
  return losses.cross_entropy(logits, tgt, (tgt > 0).astype(jnp.float32)).loss


def torch_loss(hf, enc, dec, tgt):
  return hf(input_ids=enc, attention_mask=enc > 0, decoder_input_ids=dec, labels=tgt).loss


def dssb_optimizer():
  """AdamW as torch.optim.AdamW(lr=1e-4, weight_decay=0) after clipping the norm to 1."""
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, weight_decay=0.0))


def dssb_train_step(params):
  tx = dssb_optimizer()

  def step(params, opt_state, enc, dec, tgt):
    loss, grads = jax.value_and_grad(dssb_loss)(params, enc, dec, tgt)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1)), tx.init(params)


def torch_train_step(model):
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)

  def step(enc, dec, tgt):
    loss = torch_loss(model, enc, dec, tgt)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss
  return step


def train_breakdown(params, hf, jax_batch, torch_batch, reps=3):
  """Milliseconds of forward, forward+backward and the clipped AdamW update, both frameworks."""
  loss_fn = functools.partial(dssb_loss, enc=jax_batch[0], dec=jax_batch[1], tgt=jax_batch[2])
  fwd, grad = jax.jit(loss_fn), jax.jit(jax.grad(loss_fn))
  tx = dssb_optimizer()
  update = jax.jit(lambda g, s, p: optax.apply_updates(p, tx.update(g, s, p)[0]))
  grads, opt_state = grad(params), tx.init(params)
  def ms(f):
    f()  # warm-up: compilation, allocations
    return 1000 * time_steps(f, reps)
  block = jax.block_until_ready
  out = {'dssb': {'forward': ms(lambda: block(fwd(params))),
                  'forward_backward': ms(lambda: block(grad(params))),
                  'update': ms(lambda: block(update(grads, opt_state, params)))}}
  e, d, t = torch_batch
  opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, weight_decay=0.0)
  run = lambda: torch_loss(hf, e, d, t)

  def fwd_bwd():
    hf.zero_grad(set_to_none=True)
    run().backward()

  def torch_update():
    torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
    opt.step()
  with torch.no_grad():
    torch_forward = ms(run)
  out['torch'] = {'forward': torch_forward, 'forward_backward': ms(fwd_bwd),
                  'update': ms(torch_update)}
  return out


def time_steps(fn, n):
  start = time.perf_counter()
  for _ in range(n):
    fn()
  return (time.perf_counter() - start) / n


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=3, help='train steps timed per round')
  parser.add_argument('--out', default='results/perf/model_benchmark.json')
  args = parser.parse_args()
  torch.set_flush_denormal(True)  # see ENVIRONMENT.md: else PyTorch T5 runs 4x slower here
  from transformers import T5ForConditionalGeneration  # pylint: disable=g-import-not-at-top

  params = init_params(CONFIG, jax.random.PRNGKey(0))
  with tempfile.TemporaryDirectory() as hf_dir:
    checkpoints.export_hf(CONFIG, params, hf_dir)
    hf = T5ForConditionalGeneration.from_pretrained(hf_dir)
  rng = np.random.default_rng(0)
  enc, dec, tgt = batch_arrays(rng)
  tokens = BATCH * (INPUT_LEN + TARGET_LEN)

  # Decoding first (before training changes the weights): same weights, same greedy tokens.
  dec_inputs = rng.integers(2, CONFIG.vocab_size, (DECODE_BATCH, INPUT_LEN))
  hf.eval()
  run_dssb = lambda: dssb_greedy(params, dec_inputs, DECODE_LEN)
  run_hf = lambda: hf_greedy(hf, dec_inputs, DECODE_LEN)
  ours, theirs = run_dssb(), run_hf()  # warm-up (compilation) and a check
  n = min(ours.shape[1], theirs.shape[1])
  same_tokens = float((ours[:, :n] == theirs[:, :n]).mean())
  decode_rounds = []
  for _ in range(args.rounds):
    t_dssb = time_steps(run_dssb, 1)
    t_hf = time_steps(run_hf, 1)
    decode_rounds.append({'dssb_s': t_dssb, 'hf_s': t_hf, 'speedup': t_hf / t_dssb})
  decode_parts = decode_breakdown(params, hf, dec_inputs)

  hf.train()
  step, opt_state = dssb_train_step(params)
  state = {'params': jax.tree.map(jnp.array, params), 'opt': opt_state}
  enc_j, dec_j, tgt_j = (jnp.asarray(x, jnp.int32) for x in (enc, dec, tgt))

  def run_dssb_step():
    state['params'], state['opt'], loss = step(state['params'], state['opt'], enc_j, dec_j,
                                               tgt_j)
    loss.block_until_ready()
  t_step = torch_train_step(hf)
  enc_t, dec_t, tgt_t = (torch.tensor(x) for x in (enc, dec, tgt))
  run_torch_step = lambda: t_step(enc_t, dec_t, tgt_t)
  for _ in range(2):  # warm-up
    run_dssb_step()
    run_torch_step()
  train_rounds = []
  for _ in range(args.rounds):
    s_dssb = time_steps(run_dssb_step, args.steps)
    s_torch = time_steps(run_torch_step, args.steps)
    train_rounds.append({'dssb_tokens_per_s': tokens / s_dssb,
                         'torch_tokens_per_s': tokens / s_torch, 'ratio': s_torch / s_dssb})
  breakdown = train_breakdown(state['params'], hf, (enc_j, dec_j, tgt_j), (enc_t, dec_t, tgt_t))
  peak = matmul_peak_gflops()

  med = lambda rows, k: statistics.median(r[k] for r in rows)
  result = {
      'command': 'python experiments/bench_model.py --rounds %d --steps %d' % (args.rounds,
                                                                              args.steps),
      'machine': f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
      'versions': {'jax': jax.__version__, 'torch': torch.__version__},
      'config': {k: getattr(CONFIG, k) for k in CONFIG.__dataclass_fields__},
      'train_step': {'batch': BATCH, 'input_len': INPUT_LEN, 'target_len': TARGET_LEN,
                     'median_dssb_tokens_per_s': med(train_rounds, 'dssb_tokens_per_s'),
                     'median_torch_tokens_per_s': med(train_rounds, 'torch_tokens_per_s'),
                     'median_ratio_dssb_over_torch': med(train_rounds, 'ratio'),
                     'target': '>= 1.0', 'rounds': train_rounds},
      'greedy_decode': {'batch': DECODE_BATCH, 'new_tokens': DECODE_LEN,
                        'same_tokens_fraction': same_tokens,
                        'median_speedup_dssb_over_hf': med(decode_rounds, 'speedup'),
                        'target': '>= 2.0', 'rounds': decode_rounds,
                        'breakdown': decode_parts},
      'matmul_float32': peak,
      'train_step_breakdown_ms': breakdown,
  }
  step_flops = step.lower(state['params'], state['opt'], enc_j, dec_j,
                          tgt_j).compile().cost_analysis()
  step_flops = (step_flops[0] if isinstance(step_flops, list) else step_flops)['flops']
  result['train_step']['xla_flops_per_step'] = step_flops
  result['train_step']['dssb_fraction_of_peak'] = (
      step_flops * result['train_step']['median_dssb_tokens_per_s'] / tokens
      / (peak['peak_gflops'] * 1e9))
  lines = []
  lines.append(f"train step: dssb {result['train_step']['median_dssb_tokens_per_s']:.0f} tok/s, "
               f"PyTorch {result['train_step']['median_torch_tokens_per_s']:.0f} tok/s, "
               f"ratio {result['train_step']['median_ratio_dssb_over_torch']:.2f} (target >= 1)")
  lines.append(f"greedy decode 32x64: speedup over HF generate "
               f"{result['greedy_decode']['median_speedup_dssb_over_hf']:.2f} (target >= 2), "
               f"same tokens {same_tokens:.3f}")
  d, h = decode_parts['dssb'], decode_parts['hf']
  lines.append(f"decoding parts, ms (dssb / HF): encoder + first step "
               f"{d['encode_and_first_step_ms']:.0f} / {h['encode_and_first_step_ms']:.0f}, "
               f"each further step {d['per_step_ms']:.1f} / {h['per_step_ms']:.1f}; "
               f"dssb's step matmuls alone {d['step_matmuls_only_ms']:.1f} "
               f"({d['step_matmuls_gflops_per_s']:.0f} GFLOP/s)")
  lines.append(f"so with XLA:CPU's matmul kernels decoding can be at most "
               f"{decode_parts['speedup_bound_with_xla_matmuls']:.2f}x HF (encoder at the faster "
               f"one's time, each step costing its matmuls only)")
  b = result['train_step_breakdown_ms']
  lines.append('train step parts, ms (dssb / PyTorch): ' + ', '.join(
      f"{k} {b['dssb'][k]:.0f} / {b['torch'][k]:.0f}" for k in b['dssb']))
  lines.append(f"float32 matmul peak {peak['peak_gflops']:.0f} GFLOP/s; dssb step at "
               f"{result['train_step']['dssb_fraction_of_peak']:.2f} of it (XLA's FLOP count)")
  perf_report.write(args.out, result, lines)


if __name__ == '__main__':
  main()
