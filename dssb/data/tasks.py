"""seqio Tasks and Mixtures of the paper's experiments (Sec. 4; Tables 1-2, Figs 4-9).

The only registration site. `get_task_name(...)` registers (once) the task for
one dataset x recipe x setting and returns its name. Importing this module
also registers the default-setting task of every dataset x recipe, and the
step-by-step mixtures, when $DSSB_VOCAB names a vocabulary.

Splits: 'train', 'validation', 'test' (see splits.py for the official
fractions and carve-out).

Features:
  every split           inputs, targets           (int32 ids, eos appended)
  step_by_step train    + rationale_inputs, rationale_targets
  plus *_pretokenized copies of each (strings).
Eval splits hold inputs (label-prefixed for step_by_step) and the gold label
as targets, with the dataset's metric fns and a postprocess_fn (label part of
a single-task output; targets decoded through the vocabulary).

Step-by-step in one train step (the official two-forward-pass loss):

    task = seqio.get_mixture_or_task(get_task_name('cqa', 'step_by_step'))
    ds = task.get_dataset({'inputs': 1024, 'targets': 256,
                           'rationale_inputs': 1024, 'rationale_targets': 256},
                          split='train', shuffle=True, seed=0, num_epochs=None)
    ds = convert_step_by_step(ds, {'inputs': 1024, 'targets': 256})
    # -> {'label': {encoder_input_tokens, ...}, 'rationale': {...}}, unpacked,
    #    one pair per example; then ds.batch(B).

`get_mixture_name` gives the alternative T5-style multi-task form: a Mixture
of an unpaired label task and rationale task (rate 1:1).
"""

import hashlib
import os
from typing import Any, Mapping, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from dssb.data import metrics
from dssb.data import preprocess
from dssb.data import sources
from dssb.data import splits
from dssb.data import teacher_outputs
from dssb.data import vocab as vocab_lib

RECIPES = preprocess.RECIPES
RATIONALE_FEATURES = ('rationale_inputs', 'rationale_targets')
_REGISTERED: dict[str, dict[str, Any]] = {}
_TEACHER_RECIPES = ('distill', 'step_by_step', 'single_task_rationale_first',
                    'single_task_label_first', 'cot_completion') + preprocess.SUB_RECIPES


def metric_fns(dataset: str) -> list:
  """seqio metric fns of a dataset: exact match, or SVAMP equation value."""
  return metrics.metric_fns(dataset)


def label_set(dataset: str) -> tuple[str, ...] | None:
  """Fixed label set (NLI), or None (CQA: each example's choices; SVAMP: any
  arithmetic expression)."""
  sources.check_dataset(dataset)
  return sources.NLI_LABELS if dataset in ('esnli', 'anli1') else None


def output_features(vocabulary: seqio.Vocabulary,
                    with_rationale: bool = False) -> dict[str, seqio.Feature]:
  feats = {'inputs': seqio.Feature(vocabulary, add_eos=True),
           'targets': seqio.Feature(vocabulary, add_eos=True)}
  if with_rationale:
    for key in RATIONALE_FEATURES:
      feats[key] = seqio.Feature(vocabulary, add_eos=True, required=False)
  return feats


def label_and_rationale_datasets(
    ds: tf.data.Dataset) -> tuple[tf.data.Dataset, tf.data.Dataset]:
  """Splits step_by_step examples into two {inputs, targets} datasets.

  Both keep the order of `ds`: zip them after an unpacked feature converter.
  """
  label = ds.map(lambda ex: {'inputs': ex['inputs'], 'targets': ex['targets']})
  rationale = ds.map(lambda ex: {'inputs': ex['rationale_inputs'],
                                 'targets': ex['rationale_targets']})
  return label, rationale


def convert_step_by_step(ds: tf.data.Dataset,
                         task_feature_lengths: Mapping[str, int]
                         ) -> tf.data.Dataset:
  """EncDecFeatureConverter (unpacked) on both halves, zipped per example."""
  converter = seqio.EncDecFeatureConverter(pack=False)
  label, rationale = label_and_rationale_datasets(ds)
  return tf.data.Dataset.zip({'label': converter(label, task_feature_lengths),
                              'rationale': converter(rationale,
                                                     task_feature_lengths)})


def _settings(dataset, recipe, fraction, seed, teacher, label_source,
              prefix_style, vocab_path, parse_failures, data_dir,
              tfds_data_dir) -> dict[str, Any]:
  sources.check_dataset(dataset)
  if recipe not in RECIPES + preprocess.SUB_RECIPES:
    raise ValueError(f'Unknown recipe {recipe!r}; expected one of {RECIPES}.')
  label_source = label_source or preprocess.default_label_source(recipe)
  if label_source not in preprocess.LABEL_SOURCES:
    raise ValueError(f'label_source must be one of {preprocess.LABEL_SOURCES}.')
  if recipe == 'standard' and label_source != 'gold':
    raise ValueError("recipe 'standard' trains on gold labels; use 'distill' "
                     'for teacher labels.')
  if recipe == 'distill' and label_source != 'teacher':
    raise ValueError("recipe 'distill' trains on teacher labels.")
  if prefix_style not in preprocess.PREFIXES:
    raise ValueError(f'prefix_style must be one of {tuple(preprocess.PREFIXES)}.')
  if parse_failures not in teacher_outputs.PARSE_FAILURE_POLICIES:
    raise ValueError('parse_failures must be one of '
                     f'{teacher_outputs.PARSE_FAILURE_POLICIES}.')
  uses_teacher = recipe in _TEACHER_RECIPES
  if recipe == 'cot_completion' and tfds_data_dir:
    raise ValueError("recipe 'cot_completion' reads the JSON files (the TFDS records hold no "
                     'raw completions); leave tfds_data_dir unset.')
  if uses_teacher:
    sources.check_teacher(teacher)
  return dict(
      dataset=dataset, recipe=recipe, fraction=splits.check_fraction(fraction),
      seed=int(seed), teacher=teacher if uses_teacher else None,
      label_source=label_source,
      prefix_style=prefix_style if recipe.startswith('step_by_step') else None,
      vocab_path=vocab_lib.resolve_vocab_path(vocab_path),
      parse_failures=parse_failures if uses_teacher else 'keep',
      data_dir=data_dir, tfds_data_dir=tfds_data_dir)


def _name(s: Mapping[str, Any], datasets: str) -> str:
  fraction = format(s['fraction'], '.10g').replace('-', '_')
  vocab_hash = hashlib.sha1(s['vocab_path'].encode()).hexdigest()[:8]
  parts = ['dssb', datasets, s['recipe'], s['label_source'],
           s['teacher'] or 'noteacher', f'f{fraction}', f's{s["seed"]}',
           s['prefix_style'] or 'noprefix', s['parse_failures'], f'v{vocab_hash}']
  if s['tfds_data_dir']:
    parts.append('tfds' + hashlib.sha1(s['tfds_data_dir'].encode()).hexdigest()[:6])
  return '_'.join(p.replace('-', '_') for p in parts)


def _raw_json(s: Mapping[str, Any], split: str) -> tf.data.Dataset:
  teacher = s['teacher']
  if split != 'train' and s['recipe'] != 'step_by_step_rationale':
    teacher = None  # Eval targets are gold labels: no teacher file needed.
  rows = splits.load_split(s['dataset'], split, fraction=s['fraction'],
                           seed=s['seed'], teacher=teacher,
                           parse_failures=s['parse_failures'],
                           data_dir=s['data_dir'])
  cols = {k: [r.get(k, '') for r in rows]
          for k in ('id', 'input', 'label', 'teacher_rationale',
                    'teacher_label', 'teacher_failure', 'teacher_completion')}
  cols = {k: tf.constant(v, tf.string, shape=[len(rows)])
          for k, v in cols.items()}
  cols['row'] = tf.constant([r['row'] for r in rows], tf.int64,
                            shape=[len(rows)])
  return tf.data.Dataset.from_tensor_slices(cols)


def _raw_tfds(s: Mapping[str, Any], split: str,
              shuffle_files: bool) -> tf.data.Dataset:
  from dssb.data import tfds_builder  # pylint: disable=g-import-not-at-top
  builder = tfds_builder.get_builder(s['dataset'], s['teacher'] or 'palm',
                                     s['tfds_data_dir'])
  sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
  sizes = {'valid': 0, 'test': 0, **sizes}
  source_split, idx = splits.split_rows(s['dataset'], sizes, s['fraction'],
                                        s['seed'])[split]
  ds = builder.as_dataset(split=source_split, shuffle_files=shuffle_files)
  if len(idx) != sizes[source_split]:
    keys = tf.constant(np.asarray(idx, np.int64))
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys)), 0)
    ds = ds.filter(lambda ex: table.lookup(ex['row']) > 0)
  if split == 'train' and s['parse_failures'] == 'drop':
    ds = ds.filter(lambda ex: tf.equal(ex['teacher_failure'], ''))
  return ds


def _dataset_fn(s: Mapping[str, Any]):
  train_fn = preprocess.train_features(s['recipe'], s['prefix_style'] or 'code',
                                       s['label_source'])
  eval_fn = preprocess.eval_features(s['recipe'], s['prefix_style'] or 'code')

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
    if s['tfds_data_dir']:
      ds = _raw_tfds(s, split, shuffle_files)
    else:
      ds = _raw_json(s, split)
      if shuffle_files:
        ds = ds.shuffle(ds.cardinality(), seed=seed)
    return ds.map(train_fn if split == 'train' else eval_fn,
                  num_parallel_calls=tf.data.AUTOTUNE)

  return dataset_fn


def _register(s: dict[str, Any], name: str) -> str:
  if name in _REGISTERED:
    if _REGISTERED[name] != s:
      raise ValueError(f'Task {name} is already registered with other settings '
                       f'({_REGISTERED[name]} vs {s}).')
    return name
  vocabulary = vocab_lib.get_vocabulary(s['vocab_path'])
  rationale_task = s['recipe'] == 'step_by_step_rationale'
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(_dataset_fn(s), splits=splits.SPLITS),
      preprocessors=[preprocess.tokenize,
                     seqio.preprocessors.append_eos_after_trim],
      output_features=output_features(vocabulary,
                                      s['recipe'] == 'step_by_step'),
      metric_fns=[] if rationale_task else metric_fns(s['dataset']),
      postprocess_fn=None if rationale_task else preprocess.postprocess_fn(
          s['recipe'], vocabulary, s['dataset']))
  _REGISTERED[name] = s
  return name


@gin.configurable
def get_task_name(dataset: str, recipe: str, *, fraction: float = 1.0,
                  seed: int = 0, teacher: str = 'palm',
                  label_source: str | None = None, prefix_style: str = 'code',
                  vocab_path: str | None = None, parse_failures: str = 'keep',
                  data_dir: str | None = None,
                  tfds_data_dir: str | None = None) -> str:
  """Registers (once) the seqio Task for these settings; returns its name.

  Args:
    dataset: 'cqa', 'svamp', 'esnli' or 'anli1'.
    recipe: 'standard' (gold labels), 'distill' (teacher labels),
      'step_by_step' (label + rationale features), 'single_task_rationale_first'
      or 'single_task_label_first'.
    fraction: share of the train file used (official --subsample), in (0, 1].
    seed: subsampling seed (official --run).
    teacher: 'palm' (datasets/{dataset}/llm/) or NAME (datasets/{dataset}/llm_NAME/).
    label_source: train label targets, 'gold' or 'teacher'; default 'teacher'
      for distill, else 'gold'. step_by_step + 'teacher' is the unlabeled
      setting (paper Fig. 5).
    prefix_style: 'code' ("predict: "/"explain: ") or 'paper' ("[label] "/
      "[rationale] "); used by step_by_step only.
    vocab_path: SentencePiece model; default $DSSB_VOCAB.
    parse_failures: 'keep' (official) or 'drop' train rows whose teacher label
      failed to parse.
    data_dir: folder holding datasets/; default $DSSB_DATA_DIR at read time.
    tfds_data_dir: read the records prepared by the `dss` TFDS builder there
      instead of the JSON files.

  Returns:
    The registered task name (deterministic in the settings, data_dir aside).
  """
  s = _settings(dataset, recipe, fraction, seed, teacher, label_source,
                prefix_style, vocab_path, parse_failures, data_dir,
                tfds_data_dir)
  return _register(s, _name(s, dataset))


@gin.configurable
def get_mixture_name(datasets: str | Sequence[str],
                     recipe: str = 'step_by_step', **kwargs) -> str:
  """Registers a Mixture with rate 1 per component task; returns its name.

  Args:
    datasets: one dataset name or several.
    recipe: for 'step_by_step', per dataset an unpaired label task
      (label-prefixed inputs -> label) and rationale task (rationale-prefixed
      inputs -> teacher rationale), the T5 multi-task form of the paper's
      loss; for other recipes, one task per dataset.
    **kwargs: settings of `get_task_name` (fraction, seed, teacher, ...).

  Returns:
    The registered mixture name.
  """
  datasets = (datasets,) if isinstance(datasets, str) else tuple(datasets)
  recipes = preprocess.SUB_RECIPES if recipe == 'step_by_step' else (recipe,)
  tasks = [get_task_name(d, r, **kwargs) for d in datasets for r in recipes]
  s = _settings(datasets[0], recipe, **{
      'fraction': 1.0, 'seed': 0, 'teacher': 'palm', 'label_source': None,
      'prefix_style': 'code', 'vocab_path': None, 'parse_failures': 'keep',
      'data_dir': None, 'tfds_data_dir': None, **kwargs})
  name = 'mix_' + _name(s, '_'.join(datasets))
  if name not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add(name, [(t, 1.0) for t in tasks])
  return name


def register_defaults(vocab_path: str | None = None) -> list[str]:
  """Default-setting task of every dataset x recipe + step_by_step mixtures."""
  names = [get_task_name(d, r, vocab_path=vocab_path)
           for d in sources.DATASETS for r in RECIPES]
  names += [get_mixture_name(d, vocab_path=vocab_path) for d in sources.DATASETS]
  return names


if os.environ.get(vocab_lib.VOCAB_ENV):
  register_defaults()
