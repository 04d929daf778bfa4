"""Rank classification vs greedy decoding: scoring CQA train's candidate labels with a T5 student.

  DSSB_DATA_DIR=../shared/dss_data nice -n 10 .venv/bin/python \\
      experiments/bench_rank_classification.py --out results/perf/rank_classification.json

Both read the same rows of CQA train (the trainer's train split, 8,766 rows x 5 choices) with the
same model: T5 v1.1 small's architecture (d_model 512, 8+8 layers) over the 1,000-piece CQA
vocabulary (dssb.data.vocab.cached_vocab), random weights, float32, batch 32.
  - rank classification (dssb.review.crossfit.rank_scores): one encoder pass per batch, one
    teacher-forced decoder pass over the batch's 5 x 32 candidates;
  - greedy decoding (dssb.inference.Engine, the serving path) with max_tokens per row = its
    gold label's tokens + EOS: what a perfect student that answers and stops costs (random
    weights never emit EOS early, so each batch runs to its bucketed longest such row). This
    favours decoding: a real student's answer can run longer.
Rounds alternate (rank, greedy, rank, ...) on a fixed subset (--rows; the shared 2-core CPU
cannot time all 8,766 rows several times), after one compile pass each; medians of per-row time;
the ratio is greedy / rank within this invocation; peak RSS of the process.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from dssb import host_memory
from dssb import inference
from dssb.data import splits
from dssb.data import vocab as vocab_lib
from dssb.model import T5Config, init_params
from dssb.review import crossfit
# pylint: enable=g-import-not-at-top,wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rows', type=int, default=256, help='rows timed per round')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--out', default='results/perf/rank_classification.json')
  args = parser.parse_args()
  rows = splits.load_split('cqa', 'train', teacher=None)
  vocab = vocab_lib.cached_vocab('cqa', 1000)
  config = T5Config(vocab_size=1024, d_model=512, num_heads=6, head_dim=64, d_ff=1024,
                    num_encoder_layers=8, num_decoder_layers=8,
                    mlp_activations=('gelu', 'linear'), tie_embeddings=False, dropout_rate=0.0)
  model = inference.Model(config, init_params(config), vocab, 'random T5 v1.1 small (vocab 1024)')
  tokenizer = inference.Tokenizer(vocab)
  subset = rows[:args.rows]
  inputs = [r['input'] for r in subset]
  candidates = [r['choices'] for r in subset]
  longest = max(len(tokenizer.encode(c)) for r in rows for c in r['choices'])
  gold_tokens = [len(tokenizer.encode(r['label'])) for r in subset]  # EOS included
  engine = inference.Engine(model, max_batch=args.batch)

  def rank():
    scores = crossfit.rank_scores(model, inputs, candidates, args.batch)
    return [c[int(np.argmax(s))] for s, c in zip(scores, candidates)]

  def greedy():
    return [c.text for c in engine.run([inference.Request(x, max_tokens=n)
                                        for x, n in zip(inputs, gold_tokens)])]

  # compile every shape once (untimed)
  rank()
  greedy()
  times = {'rank classification': [], 'greedy decoding': []}
  for _ in range(args.rounds):
    for name, fn in (('rank classification', rank), ('greedy decoding', greedy)):
      start = time.perf_counter()
      fn()
      times[name].append((time.perf_counter() - start) / len(inputs))
      print(f'{name}: {1000 * times[name][-1]:.2f} ms/row', file=sys.stderr, flush=True)
  medians = {k: statistics.median(v) for k, v in times.items()}
  result = {
      'command': 'DSSB_DATA_DIR=../shared/dss_data nice -n 10 .venv/bin/python '
                 f'experiments/bench_rank_classification.py --rows {args.rows} --rounds '
                 f'{args.rounds} --batch {args.batch} --out {args.out}',
      'model': model.source, 'rows_timed': len(inputs), 'train_rows': len(rows),
      'candidates_per_row': 5, 'longest_candidate_tokens': longest,
      'greedy_max_tokens': 'per row: its gold label tokens + EOS (a perfect student stops '
                           'there; the batch runs to the bucketed longest)', 'batch': args.batch,
      'ms_per_row': {k: [round(1000 * t, 3) for t in v] for k, v in times.items()},
      'median_ms_per_row': {k: round(1000 * v, 3) for k, v in medians.items()},
      'projected_seconds_all_train_rows': {k: round(v * len(rows), 1) for k, v in medians.items()},
      'speedup_rank_vs_greedy': round(medians['greedy decoding'] /
                                      medians['rank classification'], 2),
      'target': '>= 3x', 'peak_rss_mib': host_memory.peak_rss_mib(),
      'load_average_at_end': os.getloadavg()[0]}
  os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=1)
  print(json.dumps(result, indent=1))


if __name__ == '__main__':
  main()
