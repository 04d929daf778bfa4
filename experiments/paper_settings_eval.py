"""The evaluation part of experiments/bench_paper_settings.py: greedy decoding of 64 tokens
over CQA validation, dssb's evaluation (sorted, bucketed, two batches in flight by default; and
one batch at a time) against the official Seq2SeqTrainer's (Hugging Face `generate` on batches
of 64 in order, plus its eval-loss forward), in alternating rounds; and a breakdown of one batch
into encoder + first token and per decoding step (profile_decode_step.py reuses it).
"""

import statistics
import time

from paper_settings_setup import BATCH, DECODE_LEN, LENGTHS, official_features  # env first
# pylint: disable=g-import-not-at-top,wrong-import-position,g-bad-import-order
import jax.numpy as jnp
import numpy as np
import torch

from dssb import evaluate, input_pipeline
from dssb.model import generate
# pylint: enable=g-import-not-at-top,wrong-import-position,g-bad-import-order


def dssb_eval_pass(config, params, task, examples, batches_in_flight=None):
  """dssb's evaluation as the trainer runs it (None: its default, 2 batches at once here)."""
  decode = lambda p, enc: generate(config, p, enc, DECODE_LEN)
  start = time.perf_counter()
  predictions, targets, _ = evaluate.predict(decode, params, examples, task, LENGTHS, BATCH,
                                             jnp.asarray, batches_in_flight=batches_in_flight)
  return time.perf_counter() - start, predictions, targets


def official_eval_pass(model, tokenizer, task, examples, with_loss):
  """Seq2SeqTrainer.evaluate as run.py sets it up: batches of 64 in order, the collator, then
  generate (and, with_loss, the teacher-forced forward it runs for the eval loss)."""
  from transformers import DataCollatorForSeq2Seq  # pylint: disable=g-import-not-at-top
  collator = DataCollatorForSeq2Seq(tokenizer=tokenizer, model=model)
  # The task's vocabulary turns the ids into text, as dssb does: the HF tokenizer and seqio
  # decode ids above the pieces (a random model's) differently, and the decode is not timed work.
  vocab = task.output_features['targets'].vocabulary
  features = official_features(examples, np.arange(len(examples)))
  start = time.perf_counter()
  predictions = []
  with torch.no_grad():
    for i in range(0, len(features), BATCH):
      pred = collator([{k: f[k] for k in ('input_ids', 'attention_mask', 'labels')}
                       for f in features[i:i + BATCH]])
      if with_loss:
        model(**pred)
        continue
      out = model.generate(input_ids=pred['input_ids'], attention_mask=pred['attention_mask'],
                           max_new_tokens=DECODE_LEN, do_sample=False, num_beams=1)
      predictions += [task.postprocess_fn(vocab.decode(_until_eos(row[1:])), example=None,
                                          is_target=False) for row in out.tolist()]
  return time.perf_counter() - start, predictions


def _until_eos(ids):
  return ids[:ids.index(1)] if 1 in ids else ids


def eval_input_slots(examples):
  """Encoder input slots per scheme: dssb's sorted bucketed batches (their bucket lengths) and
  the official in-order batches padded to their longest row; and the tokens they hold."""
  lengths = examples.lengths['inputs']
  order = input_pipeline.eval_order(examples, len(examples), True)
  buckets = [input_pipeline.bucket_length(int(lengths[order[i:i + BATCH]].max()),
                                          LENGTHS['inputs'], input_pipeline.DEFAULT_LENGTH_BUCKETS)
             for i in range(0, len(order), BATCH)]
  longest = [int(lengths[i:i + BATCH].max()) for i in range(0, len(lengths), BATCH)]
  return {'tokens': int(lengths.sum()), 'dssb_bucket_lengths': buckets,
          'dssb_slots': BATCH * sum(buckets), 'official_slots': BATCH * sum(longest),
          'fixed_slots': BATCH * len(buckets) * LENGTHS['inputs']}


def warm_dssb_decode(config, params, bucket_lengths):
  """Compiles dssb's decoding once per input bucket (a [BATCH, L] batch of each), untimed in
  the rounds; returns the seconds (compile plus one decode per shape)."""
  start = time.perf_counter()
  for length in sorted(set(bucket_lengths)):
    tokens = np.ones((BATCH, length), np.int32) * 5
    np.asarray(generate(config, params, jnp.asarray(tokens), DECODE_LEN))
  return time.perf_counter() - start


def longest_eval_batch(examples):
  """The encoder tokens of the first (longest) batch of the sorted, bucketed evaluation order."""
  order = input_pipeline.eval_order(examples, len(examples), True)[:BATCH]
  batch = input_pipeline.encdec_batch(examples, order, input_pipeline.padded_lengths(
      examples, order, LENGTHS, input_pipeline.DEFAULT_LENGTH_BUCKETS))
  return batch['label']['encoder_input_tokens']


def decode_breakdown(config, params, model, examples):
  """Where an eval batch's time goes: both frameworks on the longest sorted batch, decoding 1
  token (encoder + one step) and DECODE_LEN tokens; per step = the difference / (DECODE_LEN-1)."""
  enc = longest_eval_batch(examples)
  enc_pt = torch.tensor(enc, dtype=torch.long)
  out = {'batch_shape': list(enc.shape)}
  for n in (1, DECODE_LEN):
    np.asarray(generate(config, params, jnp.asarray(enc), n))  # compile
    start = time.perf_counter()
    np.asarray(generate(config, params, jnp.asarray(enc), n))
    out[f'dssb_{n}_tokens_s'] = time.perf_counter() - start
    with torch.no_grad():
      start = time.perf_counter()
      model.generate(input_ids=enc_pt, attention_mask=(enc_pt > 0).long(), max_new_tokens=n,
                     min_new_tokens=n, do_sample=False, num_beams=1)
      out[f'official_{n}_tokens_s'] = time.perf_counter() - start
  for who in ('dssb', 'official'):
    out[f'{who}_per_step_ms'] = 1000 * (out[f'{who}_{DECODE_LEN}_tokens_s']
                                        - out[f'{who}_1_tokens_s']) / (DECODE_LEN - 1)
  return out


def eval_rounds(args, config, params, model, tokenizer, task, examples):
  """Full evaluation passes: dssb (its default), dssb one batch at a time and the official one,
  alternating (the order reverses every round)."""
  model.eval()
  slots = eval_input_slots(examples)
  warm_s = warm_dssb_decode(config, params, slots['dssb_bucket_lengths'])
  print(f'eval: dssb decode warm-up (compile per bucket) {warm_s:.0f} s', flush=True)
  rounds = []
  for r in range(args.eval_rounds):
    passes = {}
    for who in ('dssb', 'dssb_one_batch', 'official')[::1 if r % 2 == 0 else -1]:
      if who == 'dssb':
        passes['dssb_s'], ours, gold = dssb_eval_pass(config, params, task, examples)
      elif who == 'dssb_one_batch':
        passes['dssb_one_batch_s'], ours_one, _ = dssb_eval_pass(config, params, task,
                                                                 examples, batches_in_flight=1)
      else:
        passes['official_generate_s'], theirs = official_eval_pass(model, tokenizer, task,
                                                                   examples, False)
    passes['speedup'] = passes['official_generate_s'] / passes['dssb_s']
    passes['speedup_one_batch'] = passes['official_generate_s'] / passes['dssb_one_batch_s']
    passes['same_predictions_one_batch'] = ours_one == ours
    rounds.append(passes)
    print(f"eval round {r}: dssb {passes['dssb_s']:.1f} s, one batch at a time "
          f"{passes['dssb_one_batch_s']:.1f} s, official generate "
          f"{passes['official_generate_s']:.1f} s", flush=True)
  loss_s = official_eval_pass(model, tokenizer, task, examples, True)[0]
  breakdown = decode_breakdown(config, params, model, examples)
  print(f'eval breakdown: {breakdown}', flush=True)
  metric = task.predict_metric_fns[0]
  return {
      'examples': len(examples), 'batch': BATCH, 'decode_tokens': DECODE_LEN,
      'input_slots': slots, 'dssb_warmup_s': warm_s, 'breakdown': breakdown,
      'official_eval_loss_forward_s': loss_s,
      # Seq2SeqTrainer.evaluate runs generate and the eval-loss forward on every batch.
      'speedup_vs_official_evaluate': (
          statistics.median(r['official_generate_s'] for r in rounds) + loss_s)
                                      / statistics.median(r['dssb_s'] for r in rounds),
      'same_predictions_fraction': float(np.mean([a == b for a, b in zip(ours, theirs)])),
      'accuracy': {'dssb': metric(gold, ours), 'official': metric(gold, theirs)},
      'median_dssb_s': statistics.median(r['dssb_s'] for r in rounds),
      'median_official_generate_s': statistics.median(r['official_generate_s'] for r in rounds),
      'median_speedup': statistics.median(r['speedup'] for r in rounds),
      'batches_in_flight': evaluate.default_batches_in_flight(),
      'median_dssb_one_batch_s': statistics.median(r['dssb_one_batch_s'] for r in rounds),
      'median_speedup_one_batch': statistics.median(r['speedup_one_batch'] for r in rounds),
      'rounds': rounds}
