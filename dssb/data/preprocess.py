"""Inputs and targets of each training recipe (paper Sec. 3.2, Tables 1-2).

Recipes (the feature dict a train example gets):
  standard                inputs = x,            targets = gold label
  distill                 inputs = x,            targets = teacher label
  step_by_step            inputs = P_label + x,  targets = label (gold, or the teacher's for
                          the unlabeled setting),
                          rationale_inputs = P_rationale + x,
                          rationale_targets = teacher rationale
  single_task_rationale_first   inputs = x, targets = "{r} [label] {y}"
  single_task_label_first       inputs = x, targets = "{y} [rationale] {r}"
  cot_completion          inputs = x, targets = the teacher's completion in its own format, up to
                          its answer sentence: trains a T5 to answer like the teacher (a
                          dssb-made teacher, dssb.teacher)
Eval splits always give inputs (label-prefixed for step_by_step) and the gold label as targets.
Prefixes P: the official code's "predict: " / "explain: " (prefix_style 'code') or the paper's
"[label] " / "[rationale] " ('paper').

NLI inputs hold "premise</s>hypothesis"; `tokenize` encodes each side and puts the eos id between
them, as the official Hugging Face tokenizer does with the literal eos token.
"""

import functools
from typing import Callable, Mapping

import dssb

tf = dssb.import_tensorflow_quietly()

import seqio  # pylint: disable=g-import-not-at-top,wrong-import-position

from dssb.data import soft_labels  # pylint: disable=g-import-not-at-top,wrong-import-position
from dssb.data import sources  # pylint: disable=g-import-not-at-top,wrong-import-position
from dssb.data import teacher_outputs  # pylint: disable=g-import-not-at-top,wrong-import-position

PREFIXES = {'code': ('predict: ', 'explain: '), 'paper': ('[label] ', '[rationale] ')}
LABEL_MARKER = '[label]'  # Separates rationale and label in single-task targets.
RATIONALE_MARKER = '[rationale]'
RECIPES = ('standard', 'distill', 'step_by_step', 'single_task_rationale_first',
           'single_task_label_first', 'cot_completion')
# The two halves of step_by_step as separate tasks (for seqio Mixtures).
SUB_RECIPES = ('step_by_step_label', 'step_by_step_rationale')
LABEL_SOURCES = ('gold', 'teacher')

Features = Mapping[str, tf.Tensor]


def default_label_source(recipe: str) -> str:
  return 'teacher' if recipe == 'distill' else 'gold'


def _join(*parts):
  return tf.strings.strip(tf.strings.join(parts))


def train_features(recipe: str, prefix_style: str = 'code',
                   label_source: str = 'gold') -> Callable[[Features], Features]:
  """Maps a raw row (input, label, teacher_*) to the recipe's train features."""
  label_prefix, rationale_prefix = PREFIXES[prefix_style]
  label_key = {'gold': 'label', 'teacher': 'teacher_label'}[label_source]

  def fn(ex):
    out = features(ex)
    if soft_labels.WEIGHT_KEY in ex:  # soft labels: the example's p(label), its loss weight
      out[soft_labels.WEIGHT_KEY] = ex[soft_labels.WEIGHT_KEY]
    return out

  def features(ex):
    x, y, r = ex['input'], ex[label_key], ex['teacher_rationale']
    if recipe in ('standard', 'distill'):
      return {'inputs': x, 'targets': y}
    if recipe == 'step_by_step':
      return {'inputs': label_prefix + x, 'targets': y,
              'rationale_inputs': rationale_prefix + x, 'rationale_targets': r}
    if recipe == 'step_by_step_label':
      return {'inputs': label_prefix + x, 'targets': y}
    if recipe == 'step_by_step_rationale':
      return {'inputs': rationale_prefix + x, 'targets': r}
    if recipe == 'single_task_rationale_first':
      return {'inputs': x, 'targets': _join(r, f' {LABEL_MARKER} ', y)}
    if recipe == 'single_task_label_first':
      return {'inputs': x, 'targets': _join(y, f' {RATIONALE_MARKER} ', r)}
    if recipe == 'cot_completion':
      return {'inputs': x, 'targets': ex['teacher_completion']}
    raise ValueError(f'Unknown recipe {recipe!r}.')

  return fn


def eval_features(recipe: str, prefix_style: str = 'code') -> Callable[[Features], Features]:
  """Raw row -> {inputs, targets=gold label} (rationale task: teacher's r)."""
  label_prefix, rationale_prefix = PREFIXES[prefix_style]

  def fn(ex):
    if recipe == 'step_by_step_rationale':
      return {'inputs': rationale_prefix + ex['input'], 'targets': ex['teacher_rationale']}
    prefix = label_prefix if recipe.startswith('step_by_step') else ''
    return {'inputs': prefix + ex['input'], 'targets': ex['label']}

  return fn


def encode_with_eos_join(vocabulary: seqio.Vocabulary, text: tf.Tensor) -> tf.Tensor:
  """Token ids of `text`, with each '</s>' in it encoded as the eos id."""
  parts = tf.strings.split(text, sources.EOS_JOIN)
  ids = vocabulary.encode_tf(parts)
  eos = tf.fill([tf.shape(parts)[0], 1], tf.cast(vocabulary.eos_id, ids.dtype))
  joined = tf.concat([ids, tf.RaggedTensor.from_tensor(eos)], axis=1)
  return joined.flat_values[:-1]


def tokenize(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature],
             copy_pretokenized: bool = True) -> tf.data.Dataset:
  """seqio preprocessor: like seqio.preprocessors.tokenize, with the eos join."""

  def fn(ex):
    out = dict(ex)
    for key, feature in output_features.items():
      if key in ex and ex[key].dtype == tf.string:
        if copy_pretokenized:
          out[f'{key}_pretokenized'] = ex[key]
        out[key] = encode_with_eos_join(feature.vocabulary, ex[key])
    return out

  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def extract_label(recipe: str, text: str, dataset: str | None = None) -> str:
  """The label part of a single-task output (cot_completion: as the teacher parsers read
  it); other recipes: text unchanged."""
  if recipe == 'cot_completion':
    return teacher_outputs.parse(dataset, text).label.strip()
  if recipe == 'single_task_rationale_first':
    head, marker, tail = text.rpartition(LABEL_MARKER)
    return tail.strip() if marker else ''
  if recipe == 'single_task_label_first':
    return text.partition(RATIONALE_MARKER)[0].strip()
  return text


def postprocess(output: str, example=None, is_target: bool = False, *, recipe: str,
                vocabulary: seqio.Vocabulary | None = None, dataset: str | None = None) -> str:
  """seqio postprocess_fn of the eval splits.

  Predictions: the label part (single-task recipes). Targets (gold labels) go through the vocabulary
  and back, so that both sides of the exact match are decoded strings, as in the official code,
  which decodes its labels.
  """
  del example
  if is_target:
    if vocabulary is None:
      return output
    return vocabulary.decode(vocabulary.encode(output))
  return extract_label(recipe, output, dataset)


def postprocess_fn(recipe: str, vocabulary: seqio.Vocabulary | None = None,
                   dataset: str | None = None):
  return functools.partial(postprocess, recipe=recipe, vocabulary=vocabulary,
                           dataset=dataset)
