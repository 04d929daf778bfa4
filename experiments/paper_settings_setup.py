"""What both pipelines of experiments/bench_paper_settings.py share: the paper's settings (CQA
step-by-step, T5 v1.1-small size, batch 64, 1024/256), the data, the same random weights in
dssb and in transformers' PyTorch T5, and the official run.py's features and collator.

Why a module of its own: the benchmark, its evaluation part (paper_settings_eval.py) and the
profilers (profile_train_step.py, profile_decode_step.py, bench_malloc_settings.py) set up the
same model and data, and importing this first sets the environment they all need.
"""

import os

# PyTorch's OpenMP threads spin while they wait; on this shared machine (other jobs on the same 2
# cores) that made HF generate 2-5x and a forward pass 1.8x slower than with passive waiting
# (measured here). The official pipeline gets the setting that is best for it here.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

# pylint: disable=g-import-not-at-top,wrong-import-position
import shutil

import dssb

dssb.import_tensorflow_quietly()

import gin
import seqio

from dssb import checkpoints, gin_utils, input_pipeline
from dssb.data import tasks
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


def hf_model(config, params, tmp):
  from transformers import T5ForConditionalGeneration  # pylint: disable=g-import-not-at-top
  checkpoints.export_hf(config, params, tmp)
  model = T5ForConditionalGeneration.from_pretrained(tmp)
  # transformers 5 reports tie_word_embeddings=True for T5 but keeps a different lm_head untied.
  assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
  assert model.config.dropout_rate == config.dropout_rate
  return model


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


def official_collate(collator, features):
  """run.py's TaskPrefixDataCollator: the 'predict' and the 'explain' features, each padded
  by DataCollatorForSeq2Seq to its own longest row (labels with -100)."""
  pred = [{k: f[k] for k in ('input_ids', 'attention_mask', 'labels')} for f in features]
  expl = [{'input_ids': f['expl_input_ids'], 'attention_mask': f['expl_attention_mask'],
           'labels': f['aux_labels']} for f in features]
  return {'pred': collator(pred), 'expl': collator(expl)}


def hf_tokenizer(vocab_path, tmp):
  from transformers import T5Tokenizer  # pylint: disable=g-import-not-at-top
  shutil.copy(vocab_path, os.path.join(tmp, 'spiece.model'))
  return T5Tokenizer.from_pretrained(tmp, extra_ids=0)


def load_cqa(vocab, eval_limit):
  """(task, train examples, validation examples) of CQA step-by-step at LENGTHS."""
  name = tasks.get_task_name('cqa', 'step_by_step', vocab_path=vocab)
  task = seqio.get_mixture_or_task(name)
  train_ex = input_pipeline.load_examples(name, 'train', LENGTHS)
  valid_ex = input_pipeline.load_examples(name, 'validation', LENGTHS)
  if eval_limit:
    valid_ex = input_pipeline.Examples({k: v[:eval_limit] for k, v in valid_ex.tokens.items()},
                                       {k: v[:eval_limit] for k, v in valid_ex.texts.items()},
                                       valid_ex.truncated)
  return task, train_ex, valid_ex
