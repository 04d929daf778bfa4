"""Distilling step-by-step at the paper's settings: dssb's trainer and evaluation against the
official code's pipeline, on CQA, CPU, T5 v1.1-small size (random init), as ratios.

Training: batches of 64 CQA examples, each a 'label' and a 'rationale' sub-batch, feature
lengths 1024 inputs / 256 targets; every contender trains on the same examples.
  - dssb fixed: today's padding of every batch to 1024/256 (only --fixed_batch examples per
    round: at 64 it would need tens of GB and minutes per step here);
  - dssb bucketed (the default): each sub-batch and side padded to its length bucket;
  - dssb packed (packing=4): the same examples packed about 4 per row (dssb/packing.py);
  - dssb padded to each batch's own longest row: a diagnostic (it compiles a shape per batch)
    that separates the framework's speed from the padding each scheme adds;
  - official: the official run.py rebuilt in PyTorch: transformers' T5ForConditionalGeneration
    with the same weights, DataCollatorForSeq2Seq (pads each sub-batch to its longest row, labels
    with -100) on the 'predict' and the 'explain' features, two forward passes, alpha 0.5,
    clipping at 1.0, torch AdamW, linear decay.
Every timed step includes building its batch on the host. Rounds alternate the contenders; the
figures are medians over rounds of examples/s and non-pad tokens/s, and the per-round ratios to
the official pipeline. dssb's compile time is reported apart (AOT lower + compile per shape).

Evaluation: greedy decoding of 64 tokens over all of CQA validation, dssb (sorted by input
length, bucketed batches of 64) against Hugging Face `generate` on batches of 64 in order, padded
to their longest row, as the official Seq2SeqTrainer runs it; the official trainer also runs a
teacher-forced forward pass per batch for the eval loss, timed apart.

  python -m dssb.data train_vocab --dataset cqa --vocab_size 8000 --out /tmp/cqa_8000.model
  python experiments/bench_paper_settings.py --vocab /tmp/cqa_8000.model [--rounds 5]
"""

import argparse
import os

# PyTorch's OpenMP threads spin while they wait; on this shared machine (other jobs on the same 2
# cores) that made HF generate 2-5x and a forward pass 1.8x slower than with passive waiting
# (measured here). The official pipeline gets the setting that is best for it here.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

# pylint: disable=g-import-not-at-top,wrong-import-position
import platform
import shutil
import statistics
import tempfile
import time

import dssb

dssb.import_tensorflow_quietly()

import gin
import jax
import jax.numpy as jnp
import numpy as np
import seqio
import torch

from dssb import checkpoints, evaluate, gin_utils, input_pipeline, optimizers, packing, train
from dssb.data import tasks
from dssb.model import T5, generate, init_params

import perf_report
# pylint: enable=g-import-not-at-top,wrong-import-position

LENGTHS = {'inputs': 1024, 'targets': 256, 'rationale_inputs': 1024, 'rationale_targets': 256}
BATCH, ALPHA, LR, PAPER_STEPS, DECODE_LEN, PACK_PER_ROW = 64, 0.5, 5e-5, 10000, 64, 4
MODEL_GIN = 'gin/models/t5_1_1_small.gin'


def model_config():
  gin.clear_config()
  gin_utils.parse_gin([MODEL_GIN])
  return gin.query_parameter('%MODEL_CONFIG').scoped_configurable_fn()


def non_pad_tokens(examples, indices):
  return int(sum(examples.lengths[k][indices].sum() for k in LENGTHS))


# ---------------------------------------------------------------- dssb training


class DssbTrainer:
  """The trainer's own jitted step, compiled ahead of time once per batch shape; one train
  state for every dssb contender (the weights do not change the speed)."""

  def __init__(self, config, params):
    sched = optimizers.linear_decay_schedule(LR, PAPER_STEPS)
    tx = optimizers.adamw(sched)
    step = train.make_train_step(train.make_loss_fn(T5(config), ALPHA, 0.0, 0.0), tx, sched)
    self.jitted = jax.jit(step, donate_argnums=0)
    self.state = train.TrainState(jnp.int32(0), jax.tree.map(jnp.array, params),
                                  tx.init(params))
    self.rng = jax.random.PRNGKey(0)
    self.compiled, self.compile_s = {}, {}

  def run(self, batch, contender):
    key = (contender, str(jax.tree.map(np.shape, batch)))
    if key not in self.compiled:
      start = time.perf_counter()
      self.compiled[key] = self.jitted.lower(self.state, batch, self.rng).compile()
      self.compile_s[key] = time.perf_counter() - start
    self.state, metrics = self.compiled[key](self.state, batch, self.rng)
    return float(metrics['loss'])

  def compile_report(self, contender):
    times = [t for (name, _), t in self.compile_s.items() if name == contender]
    return {'compiled_shapes': len(times), 'compile_seconds': sum(times)}


def dssb_contenders(examples, batches_idx, fixed_idx, shape):
  """name -> list of zero-argument batch makers (each builds its batch when called)."""
  longest = lambda idx: input_pipeline.padded_lengths(examples, idx, LENGTHS, range(1, 1025))
  plans = packing.plan_steps(examples, np.concatenate(batches_idx), shape)
  return {
      'dssb_fixed': [lambda: input_pipeline.encdec_batch(examples, fixed_idx, LENGTHS)],
      'dssb_bucketed': [
          lambda idx=idx: input_pipeline.encdec_batch(
              examples, idx, input_pipeline.padded_lengths(
                  examples, idx, LENGTHS, input_pipeline.DEFAULT_LENGTH_BUCKETS))
          for idx in batches_idx],
      'dssb_packed': [lambda p=p: packing.packed_batch(examples, p, shape) for p in plans],
      'dssb_longest_row': [lambda idx=idx: input_pipeline.encdec_batch(examples, idx, longest(idx))
                           for idx in batches_idx],
  }


# ---------------------------------------------------------------- the official pipeline


def hf_model(config, params, tmp):
  from transformers import T5ForConditionalGeneration  # pylint: disable=g-import-not-at-top
  checkpoints.export_hf(config, params, tmp)
  model = T5ForConditionalGeneration.from_pretrained(tmp)
  # transformers 5 reports tie_word_embeddings=True for T5 but keeps a different lm_head untied.
  assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
  assert model.config.dropout_rate == config.dropout_rate
  return model


def same_model_check(config, params, model, tokenizer, examples, idx):
  """Both pipelines' step-by-step loss on one batch with dropout off: the same function."""
  from transformers import DataCollatorForSeq2Seq  # pylint: disable=g-import-not-at-top
  batch = input_pipeline.encdec_batch(examples, idx, input_pipeline.padded_lengths(
      examples, idx, LENGTHS, input_pipeline.DEFAULT_LENGTH_BUCKETS))
  loss_fn = train.make_loss_fn(T5(config), ALPHA, 0.0, 0.0)
  ours = float(loss_fn(params, batch, jax.random.PRNGKey(0), enable_dropout=False)[0])
  trainer = OfficialTrainer.__new__(OfficialTrainer)
  trainer.collator = DataCollatorForSeq2Seq(tokenizer=tokenizer, model=model)
  inputs = trainer.collate(official_features(examples, idx))
  model.eval()
  with torch.no_grad():
    theirs = float(ALPHA * model(**inputs['pred']).loss
                   + (1 - ALPHA) * model(**inputs['expl']).loss)
  return {'dssb_loss': ours, 'official_loss': theirs}


def official_features(examples, indices):
  """The official run.py's tokenised features of these examples (the same ids as dssb's); the
  'expl_*' and 'aux_labels' ones where the split has rationales."""
  tok = lambda key, i: examples.tokens[key][i].tolist()
  out = []
  for i in indices:
    f = {'input_ids': tok('inputs', i), 'attention_mask': [1] * len(tok('inputs', i)),
         'labels': tok('targets', i)}
    if 'rationale_inputs' in examples.tokens:
      f.update(expl_input_ids=tok('rationale_inputs', i),
               expl_attention_mask=[1] * len(tok('rationale_inputs', i)),
               aux_labels=tok('rationale_targets', i))
    out.append(f)
  return out


class OfficialTrainer:
  """run.py's TaskPrefixDataCollator + TaskPrefixTrainer.compute_loss + the HF Trainer's step."""

  def __init__(self, model, tokenizer):
    from transformers import DataCollatorForSeq2Seq  # pylint: disable=g-import-not-at-top
    from transformers import get_linear_schedule_with_warmup  # pylint: disable=g-import-not-at-top
    self.model = model.train()
    self.collator = DataCollatorForSeq2Seq(tokenizer=tokenizer, model=model)
    self.opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    self.sched = get_linear_schedule_with_warmup(self.opt, 0, PAPER_STEPS)

  def collate(self, features):
    pred = [{k: f[k] for k in ('input_ids', 'attention_mask', 'labels')} for f in features]
    expl = [{'input_ids': f['expl_input_ids'], 'attention_mask': f['expl_attention_mask'],
             'labels': f['aux_labels']} for f in features]
    return {'pred': self.collator(pred), 'expl': self.collator(expl)}

  def run(self, features):
    inputs = self.collate(features)
    loss = (ALPHA * self.model(**inputs['pred']).loss
            + (1 - ALPHA) * self.model(**inputs['expl']).loss)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
    self.opt.step()
    self.sched.step()
    self.model.zero_grad(set_to_none=True)
    return float(loss.detach())


# ---------------------------------------------------------------- training rounds


def train_rounds(args, examples, config, params, model, tokenizer):
  batches_idx = [input_pipeline.train_indices(len(examples), s, BATCH, seed=0)
                 for s in range(args.batches)]
  fixed_idx = batches_idx[0][:args.fixed_batch]
  shape = packing.packed_shape(examples, LENGTHS, BATCH, PACK_PER_ROW, seed=0)
  makers = dssb_contenders(examples, batches_idx, fixed_idx, shape)
  trainer = DssbTrainer(config, params)
  official = OfficialTrainer(model, tokenizer)
  features = [official_features(examples, idx) for idx in batches_idx]
  work = {name: (args.fixed_batch if name == 'dssb_fixed' else BATCH * args.batches)
          for name in makers}
  work['official'] = BATCH * args.batches
  tokens = {name: non_pad_tokens(examples, fixed_idx if name == 'dssb_fixed'
                                 else np.concatenate(batches_idx)) for name in work}

  def run_once(name):
    start = time.perf_counter()
    if name == 'official':
      for f in features:
        official.run(f)
    else:
      for make in makers[name]:
        trainer.run(make(), name)
    return time.perf_counter() - start

  order = ['dssb_bucketed', 'dssb_packed', 'official', 'dssb_longest_row', 'dssb_fixed']
  warmup = {name: run_once(name) for name in order}  # dssb: compiles every shape
  print(f'train warm-up: {warmup}', flush=True)
  rounds = []
  for r in range(args.rounds):
    seconds = {name: run_once(name) for name in order[r % len(order):] + order[:r % len(order)]}
    rounds.append({name: {'seconds': s, 'examples_per_s': work[name] / s,
                          'tokens_per_s': tokens[name] / s} for name, s in seconds.items()})
    print(f'train round {r}: ' + ', '.join(f'{n} {v["examples_per_s"]:.2f} ex/s'
                                           for n, v in rounds[-1].items()), flush=True)
  return summarize_train(rounds, trainer, warmup, work, tokens, shape, makers)


def summarize_train(rounds, trainer, warmup, work, tokens, shape, makers):
  med = lambda name, key: statistics.median(r[name][key] for r in rounds)
  ratio = lambda name: statistics.median(r[name]['examples_per_s'] / r['official']['examples_per_s']
                                         for r in rounds)
  out = {'examples_per_round': work, 'non_pad_tokens_per_round': tokens,
         'packed_shape': {'rows': shape.rows, 'lengths': dict(shape.lengths),
                          'steps': len(makers['dssb_packed'])},
         'warmup_seconds': warmup, 'rounds': rounds, 'contenders': {}}
  for name in work:
    out['contenders'][name] = {
        'median_examples_per_s': med(name, 'examples_per_s'),
        'median_non_pad_tokens_per_s': med(name, 'tokens_per_s'),
        'median_ratio_to_official': ratio(name)}
    if name in makers:
      out['contenders'][name].update(trainer.compile_report(name))
  return out


# ---------------------------------------------------------------- evaluation


def dssb_eval_pass(config, params, task, examples):
  decode = lambda p, enc: generate(config, p, enc, DECODE_LEN)
  start = time.perf_counter()
  predictions, targets = evaluate.predict(decode, params, examples, task, LENGTHS, BATCH,
                                          jnp.asarray)
  return time.perf_counter() - start, predictions, targets


def official_eval_pass(model, tokenizer, task, examples, with_loss):
  """Seq2SeqTrainer.evaluate as run.py sets it up: batches of 64 in order, the collator, then
  generate (and, with_loss, the teacher-forced forward it runs for the eval loss)."""
  from transformers import DataCollatorForSeq2Seq  # pylint: disable=g-import-not-at-top
  collator = DataCollatorForSeq2Seq(tokenizer=tokenizer, model=model)
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
      texts = tokenizer.batch_decode(out, skip_special_tokens=True)
      predictions += [task.postprocess_fn(t, example=None, is_target=False) for t in texts]
  return time.perf_counter() - start, predictions


def eval_rounds(args, config, params, model, tokenizer, task, examples):
  model.eval()
  first = {'dssb': dssb_eval_pass(config, params, task, examples)[0],
           'official': official_eval_pass(model, tokenizer, task, examples, False)[0]}
  print(f'eval first passes (dssb compiles): {first}', flush=True)
  rounds = []
  for _ in range(args.eval_rounds):
    t_dssb, ours, targets = dssb_eval_pass(config, params, task, examples)
    t_hf, theirs = official_eval_pass(model, tokenizer, task, examples, False)
    rounds.append({'dssb_s': t_dssb, 'official_generate_s': t_hf, 'speedup': t_hf / t_dssb})
    print(f'eval round: dssb {t_dssb:.1f} s, official generate {t_hf:.1f} s', flush=True)
  loss_s = official_eval_pass(model, tokenizer, task, examples, True)[0]
  metric = task.predict_metric_fns[0]
  order = input_pipeline.eval_order(examples, len(examples), True)
  shapes = {input_pipeline.padded_lengths(examples, order[i:i + BATCH], LENGTHS,
                                          input_pipeline.DEFAULT_LENGTH_BUCKETS)['inputs']
            for i in range(0, len(order), BATCH)}
  return {
      'examples': len(examples), 'batch': BATCH, 'decode_tokens': DECODE_LEN,
      'dssb_compiled_input_lengths': sorted(shapes),
      'first_pass_s': first, 'official_eval_loss_forward_s': loss_s,
      'same_predictions_fraction': float(np.mean([a == b for a, b in zip(ours, theirs)])),
      'accuracy': {'dssb': metric(targets, ours), 'official': metric(targets, theirs)},
      'median_dssb_s': statistics.median(r['dssb_s'] for r in rounds),
      'median_official_generate_s': statistics.median(r['official_generate_s'] for r in rounds),
      'median_speedup': statistics.median(r['speedup'] for r in rounds),
      'rounds': rounds}


# ---------------------------------------------------------------- a real run's shapes


def run_shapes(examples):
  """What a 10,000-step CQA run at batch 64 compiles and pads, from its batches' lengths."""
  keys = list(LENGTHS)
  cost = {'fixed': 0, 'bucketed': 0, 'longest_row': 0}
  shapes = set()
  for step in range(PAPER_STEPS):
    idx = input_pipeline.train_indices(len(examples), step, BATCH, seed=0)
    lengths = input_pipeline.padded_lengths(examples, idx, LENGTHS,
                                            input_pipeline.DEFAULT_LENGTH_BUCKETS)
    shapes.add(tuple(lengths[k] for k in keys))
    cost['bucketed'] += BATCH * sum(lengths.values())
    cost['longest_row'] += BATCH * sum(int(examples.lengths[k][idx].max()) for k in keys)
    cost['fixed'] += BATCH * sum(LENGTHS.values())
  tokens = PAPER_STEPS * BATCH * sum(examples.lengths[k].mean() for k in keys)
  return {'steps': PAPER_STEPS, 'batch': BATCH, 'compiled_shapes': len(shapes),
          'token_share_of_slots': {k: tokens / v for k, v in cost.items()}}


# ---------------------------------------------------------------- main


def hf_tokenizer(vocab_path, tmp):
  from transformers import T5Tokenizer  # pylint: disable=g-import-not-at-top
  shutil.copy(vocab_path, os.path.join(tmp, 'spiece.model'))
  return T5Tokenizer.from_pretrained(tmp, extra_ids=0)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--vocab', required=True, help='SentencePiece model trained on CQA')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--batches', type=int, default=3, help='batches of 64 per round')
  parser.add_argument('--fixed_batch', type=int, default=8)
  parser.add_argument('--eval_rounds', type=int, default=3)
  parser.add_argument('--eval_limit', type=int, help='first N validation examples (smoke runs)')
  parser.add_argument('--out', default='results/perf/paper_settings.json')
  args = parser.parse_args()
  torch.set_flush_denormal(True)  # ENVIRONMENT.md: else PyTorch T5 runs 4x slower here
  name = tasks.get_task_name('cqa', 'step_by_step', vocab_path=args.vocab)
  task = seqio.get_mixture_or_task(name)
  train_ex = input_pipeline.load_examples(name, 'train', LENGTHS)
  valid_ex = input_pipeline.load_examples(name, 'validation', LENGTHS)
  if args.eval_limit:
    valid_ex = input_pipeline.Examples({k: v[:args.eval_limit] for k, v in valid_ex.tokens.items()},
                                       {k: v[:args.eval_limit] for k, v in valid_ex.texts.items()},
                                       valid_ex.truncated)
  config = model_config()
  params = init_params(config, jax.random.PRNGKey(0))
  with tempfile.TemporaryDirectory() as tmp:
    tokenizer = hf_tokenizer(args.vocab, tmp)
    model = hf_model(config, params, os.path.join(tmp, 'hf'))
  result = {
      'command': (f'python experiments/bench_paper_settings.py --vocab {args.vocab} --rounds '
                  f'{args.rounds} --batches {args.batches} --fixed_batch {args.fixed_batch} '
                  f'--eval_rounds {args.eval_rounds}'
                  + (f' --eval_limit {args.eval_limit}' if args.eval_limit else '')),
      'machine': f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
      'versions': {'jax': jax.__version__, 'torch': torch.__version__},
      'torch_threads': torch.get_num_threads(),
      'OMP_WAIT_POLICY': os.environ['OMP_WAIT_POLICY'],
      'vocab': {'path': args.vocab, 'size': task.output_features['targets'].vocabulary.vocab_size},
      'model': {k: getattr(config, k) for k in config.__dataclass_fields__},
      'feature_lengths': LENGTHS, 'batch': BATCH, 'length_buckets':
          list(input_pipeline.DEFAULT_LENGTH_BUCKETS), 'packing_examples_per_row': PACK_PER_ROW,
      'cqa_run': run_shapes(train_ex)}
  result['same_model_loss_without_dropout'] = same_model_check(
      config, params, model, tokenizer, train_ex, input_pipeline.train_indices(
          len(train_ex), 0, BATCH, seed=0))
  print(result['same_model_loss_without_dropout'], flush=True)
  result['evaluation'] = eval_rounds(args, config, params, model, tokenizer, task, valid_ex)
  result['train'] = train_rounds(args, train_ex, config, params, model, tokenizer)
  perf_report.write(args.out, result, summary_lines(result))


def summary_lines(result):
  c, e = result['train']['contenders'], result['evaluation']
  lines = [f"CQA step-by-step, 1024/256, T5 v1.1-small size, vocab {result['vocab']['size']}; "
           'train examples/s and non-pad tokens/s (medians), ratio to the official pipeline:']
  for name, v in c.items():
    lines.append(f"  {name:17s} {v['median_examples_per_s']:6.2f} ex/s "
                 f"{v['median_non_pad_tokens_per_s']:7.0f} tok/s  "
                 f"x{v['median_ratio_to_official']:.2f}" + (
                     f"  ({v['compiled_shapes']} shapes, {v['compile_seconds']:.0f} s compile)"
                     if 'compiled_shapes' in v else ''))
  run = result['cqa_run']
  lines.append(f"a {run['steps']}-step CQA run compiles {run['compiled_shapes']} train shapes; "
               'token share of slots: ' + ', '.join(
                   f'{k} {v:.1%}' for k, v in run['token_share_of_slots'].items()))
  lines.append(f"evaluation, {e['examples']} CQA validation examples, {e['decode_tokens']} "
               f"tokens: dssb {e['median_dssb_s']:.1f} s, HF generate "
               f"{e['median_official_generate_s']:.1f} s: x{e['median_speedup']:.2f} "
               f"(+{e['official_eval_loss_forward_s']:.1f} s eval-loss forward in the official "
               f"trainer); same predictions {e['same_predictions_fraction']:.3f}")
  return lines


if __name__ == '__main__':
  main()
