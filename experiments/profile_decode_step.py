"""Where a greedy decoding step's time goes at the paper's evaluation settings, against the floors
this CPU sets: the longest sorted CQA validation batch (64 rows), 64 decoded tokens.

Why: issue 12 asks the evaluation pass at 2x Hugging Face generate; paper_settings.md measures
about 1.8x, and three quarters of dssb's pass is decoding steps. This says whether the step has
slack left on this machine:
  - dssb's and HF's step time (paper_settings_eval.decode_breakdown);
  - dssb's XLA:CPU thread time per step by kind, from a jax.profiler trace: matrix
    multiplications (YNNPACK fusions; the logits projection apart), the attention's batched dots,
    everything else;
  - two floors measured alone in the same process: the logits projection [64, d_model] x
    [d_model, vocab], and one read of the cross-attention cache (every layer's keys and values,
    which each step must read) by a multiply-and-sum over it.

  DSSB_DATA_DIR=/work/shared/dss_data python experiments/profile_decode_step.py \\
      --vocab /tmp/cqa_8000.model   # the vocabulary of bench_paper_settings.py
"""

import argparse
import collections
import os
import re
import statistics
import tempfile
import time

import paper_settings_setup as setup  # sets OMP_WAIT_POLICY and silences TensorFlow first
import jax
import jax.numpy as jnp
import numpy as np

from dssb import host_memory
from dssb.model import generate, init_params

import paper_settings_eval
import perf_report
import profile_train_step

DEFAULT_OUT = 'results/perf/decode_step_profile.json'


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--vocab', required=True, help='SentencePiece model trained on CQA')
  parser.add_argument('--out', default=DEFAULT_OUT)
  return parser.parse_args()


def median_ms(fn, *args, repeats=20):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def step_ops_ms(config, params, enc, steps):
  """{op name: thread ms per step} for the ops that ran once per decoding step."""
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      np.asarray(generate(config, params, enc, steps))
    seconds, counts = collections.Counter(), collections.Counter()
    for name, s in profile_train_step.xla_op_events(trace_dir):
      seconds[name] += s
      counts[name] += 1
  return {name: 1000 * s / steps for name, s in seconds.items() if counts[name] == steps}


def by_kind(step_ms):
  """Thread ms per step: the largest matmul (the logits projection), other matmuls, the
  attention's batched dots, the rest."""
  kinds = collections.Counter()
  logits = max((ms, name) for name, ms in step_ms.items() if name.startswith('ynn_fusion'))
  for name, ms in step_ms.items():
    kind = re.sub(r'\.\d+$', '', name)
    if name == logits[1]:
      kinds['logits projection'] += ms
    elif kind in ('ynn_fusion', 'onednn_matmul'):
      kinds['other matmuls'] += ms
    elif kind in ('dot', 'dot_general'):
      kinds['attention dots'] += ms
    else:
      kinds['rest'] += ms
  return dict(kinds.most_common())


def cross_cache_read_ms(config, batch, length, iterations=32):
  """Per iteration: every decoder layer's cross-attention keys and values read once (a sum of
  max(value, a number the loop changes): XLA can neither hoist it nor factor it out, as it does
  with a multiply-and-sum)."""
  shape = (batch, config.num_heads, length, config.head_dim)
  keys = jax.random.split(jax.random.PRNGKey(0), 2 * config.num_decoder_layers)
  cache = [jax.random.normal(key, shape) for key in keys]  # arguments, not constants to fold

  def read(x, cache):
    body = lambda _, x: x + 1e-9 * sum(jnp.sum(jnp.maximum(kv, x[0, 0, 0]), axis=2)
                                       for kv in cache)
    return jax.lax.fori_loop(0, iterations, body, x)

  x = jnp.ones((batch, config.num_heads, config.head_dim))
  return median_ms(jax.jit(read), x, cache, repeats=5) / iterations


def main():
  args = parse_args()
  host_memory.restart_keeping_freed_memory()
  _, _, valid_ex = setup.load_cqa(args.vocab, None)
  config = setup.model_config()
  params = init_params(config, jax.random.PRNGKey(0))
  with tempfile.TemporaryDirectory() as tmp:
    model = setup.hf_model(config, params, os.path.join(tmp, 'hf'))
  model.eval()
  breakdown = paper_settings_eval.decode_breakdown(config, params, model, valid_ex)
  enc = jnp.asarray(paper_settings_eval.longest_eval_batch(valid_ex))
  step_ms = step_ops_ms(config, params, enc, setup.DECODE_LEN)
  kernel = params['decoder']['logits_dense']['kernel']
  x = jnp.ones((setup.BATCH, config.d_model))
  result = {
      'command': perf_report.command('profile_decode_step.py', f'--vocab {args.vocab}', args.out,
                                     DEFAULT_OUT),
      'machine': f'{os.cpu_count()} cores',
      'keeps_freed_memory': host_memory.keeps_freed_memory(),
      'batch_shape': breakdown['batch_shape'], 'decode_tokens': setup.DECODE_LEN,
      'breakdown': breakdown,
      'dssb_thread_ms_per_step': by_kind(step_ms),
      'dssb_thread_ms_per_step_total': sum(step_ms.values()),
      'floor_logits_matmul_ms': median_ms(jax.jit(lambda x, k: x @ k), x, kernel),
      'floor_cross_cache_read_ms': cross_cache_read_ms(config, *enc.shape),
      'cross_cache_mb': (2 * config.num_decoder_layers * enc.size * config.num_heads
                         * config.head_dim * 4 / 2**20),
      'load_average_at_end': os.getloadavg()}
  perf_report.write(args.out, result, summary_lines(result))


def summary_lines(r):
  b = r['breakdown']
  kinds = ', '.join(f'{k} {v:.1f}' for k, v in r['dssb_thread_ms_per_step'].items())
  return [
      f"Greedy decoding of {r['decode_tokens']} tokens, the longest sorted CQA validation batch "
      f"{r['batch_shape']}, T5 v1.1-small size, random init; {r['machine']}, load "
      f"{r['load_average_at_end'][0]:.1f} at the end.",
      f"Per step (wall): dssb {b['dssb_per_step_ms']:.1f} ms, HF {b['official_per_step_ms']:.1f} "
      f"ms (x{b['official_per_step_ms'] / b['dssb_per_step_ms']:.2f}); encoder + first token: "
      f"dssb {b['dssb_1_tokens_s']:.2f} s, HF {b['official_1_tokens_s']:.2f} s.",
      f"dssb's XLA:CPU thread time per step ({r['dssb_thread_ms_per_step_total']:.1f} ms over "
      f"both threads): {kinds}.",
      f"Floors measured alone: the logits projection {r['floor_logits_matmul_ms']:.1f} ms; one "
      f"read of the cross-attention cache ({r['cross_cache_mb']:.0f} MiB) "
      f"{r['floor_cross_cache_read_ms']:.1f} ms.",
  ]


if __name__ == '__main__':
  main()
