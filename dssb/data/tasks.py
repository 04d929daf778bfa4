"""seqio Tasks and Mixtures of the paper's experiments (Sec. 4; Tables 1-2, Figs 4-9).

The only registration site, and nothing is registered at import: `get_task_name(...)` registers
(once) the task for one dataset x recipe x setting and returns its name; `get_mixture_name(...)`
does the same for a Mixture. The settings travel as one frozen `TaskSettings`, validated when it is
built; the task name is derived from it (`TaskSettings.name`), so equal settings give equal names
across processes (vocabulary caches and run directories rely on that).

Splits: 'train', 'validation', 'test' (see splits.py for the official fractions and carve-out).

Features:
  every split           inputs, targets           (int32 ids, eos appended)
  step_by_step train    + rationale_inputs, rationale_targets
  soft_labels train     + label_weight            (float32, the example's p(label); see
                                                   dssb.data.soft_labels)
  plus *_pretokenized copies of each (strings).
Eval splits hold inputs (label-prefixed for step_by_step) and the gold label as targets, with the
dataset's metric fns and a postprocess_fn (label part of a single-task output; targets decoded
through the vocabulary).

Step-by-step in one train step (the official two-forward-pass loss): the trainer reads the task with
`dssb.input_pipeline.load_examples(get_task_name('cqa', 'step_by_step'), 'train', lengths)` and
`encdec_batch` turns each example into a 'label' and a 'rationale' sub-batch of the same rows.
`get_mixture_name` gives the alternative T5-style multi-task form: a Mixture of an unpaired label
task and rationale task (rate 1:1).

Context distillation (Snell et al. 2022): `get_context_distill_task_name(source, recipe, ...)`
registers the tasks of dssb.context_distill.sources (synthetic addition with a scratchpad, and
CQA with an instruction-and-exemplar context); their rows are built in plain Python there.
"""

import dataclasses
import functools
import hashlib
import os
from typing import Sequence

import gin
import numpy as np

import dssb

tf = dssb.import_tensorflow_quietly()

# pylint: disable=g-import-not-at-top,wrong-import-position
import seqio

from dssb.data import metrics
from dssb.data import preprocess
from dssb.data import soft_labels as soft_labels_lib
from dssb.data import sources
from dssb.data import splits
from dssb.data import teacher_outputs
from dssb.data import vocab as vocab_lib
from dssb.data import word_problems
# pylint: enable=g-import-not-at-top,wrong-import-position

RECIPES = preprocess.RECIPES
RATIONALE_FEATURES = ('rationale_inputs', 'rationale_targets')
_TEACHER_RECIPES = ('distill', 'step_by_step', 'single_task_rationale_first',
                    'single_task_label_first', 'cot_completion') + preprocess.SUB_RECIPES


@dataclasses.dataclass(frozen=True)
class TaskSettings:
  """Everything that defines one task (see `get_task_name` for the fields), checked and normalised.

  Normalised so that settings giving the same data compare equal: the label source is filled in from
  the recipe, the teacher is None for recipes that read no teacher outputs (and parse_failures is
  then 'keep'), the prefix style is None outside step_by_step, and vocab_path is resolved from
  $DSSB_VOCAB. Invalid settings raise ValueError naming the field.
  """
  dataset: str
  recipe: str
  fraction: float = 1.0
  seed: int = 0
  teacher: str | None = 'palm'
  label_source: str | None = None
  prefix_style: str | None = 'code'
  vocab_path: str | None = None
  parse_failures: str = 'keep'
  data_dir: str | None = None
  tfds_data_dir: str | None = None
  soft_labels: bool = False
  soft_label_floor: float = soft_labels_lib.DEFAULT_FLOOR

  def __post_init__(self):
    sources.check_dataset(self.dataset)
    if self.recipe not in RECIPES + preprocess.SUB_RECIPES:
      raise ValueError(f'Unknown recipe {self.recipe!r}; expected one of {RECIPES}.')
    label_source = self.label_source or preprocess.default_label_source(self.recipe)
    if label_source not in preprocess.LABEL_SOURCES:
      raise ValueError(f'label_source must be one of {preprocess.LABEL_SOURCES}.')
    if self.recipe == 'standard' and label_source != 'gold':
      raise ValueError("recipe 'standard' trains on gold labels; use 'distill' for teacher labels.")
    if self.recipe == 'distill' and label_source != 'teacher':
      raise ValueError("recipe 'distill' trains on teacher labels.")
    if self.prefix_style not in preprocess.PREFIXES:
      raise ValueError(f'prefix_style must be one of {tuple(preprocess.PREFIXES)}.')
    if self.parse_failures not in teacher_outputs.PARSE_FAILURE_POLICIES:
      raise ValueError(f'parse_failures must be one of {teacher_outputs.PARSE_FAILURE_POLICIES}.')
    uses_teacher = self.recipe in _TEACHER_RECIPES
    if self.recipe == 'cot_completion' and self.tfds_data_dir:
      raise ValueError("recipe 'cot_completion' reads the JSON files (the TFDS records hold no "
                       'raw completions); leave tfds_data_dir unset.')
    if uses_teacher:
      sources.check_teacher(self.teacher)
    if self.soft_labels:
      if not uses_teacher or label_source != 'teacher' or self.recipe == 'cot_completion':
        raise ValueError('soft_labels replace the teacher\'s label: they need label_source '
                         f"'teacher' and a recipe that trains on it, got recipe {self.recipe!r} "
                         f'with label_source {label_source!r}.')
      if self.tfds_data_dir:
        raise ValueError('soft_labels read the JSON teacher folder (the TFDS records hold no '
                         'label probabilities); leave tfds_data_dir unset.')
      if not 0.0 <= self.soft_label_floor < 1.0:
        raise ValueError(f'soft_label_floor must be in [0, 1), got {self.soft_label_floor}.')
    normalised = dict(
        fraction=splits.check_fraction(self.fraction), seed=int(self.seed),
        teacher=self.teacher if uses_teacher else None, label_source=label_source,
        prefix_style=self.prefix_style if self.recipe.startswith('step_by_step') else None,
        vocab_path=vocab_lib.resolve_vocab_path(self.vocab_path),
        parse_failures=self.parse_failures if uses_teacher else 'keep',
        soft_labels=bool(self.soft_labels),
        soft_label_floor=float(self.soft_label_floor) if self.soft_labels
        else soft_labels_lib.DEFAULT_FLOOR)
    for field, value in normalised.items():
      object.__setattr__(self, field, value)

  def name(self, datasets: str | None = None) -> str:
    """The task name: every field but data_dir, paths as short hashes; `datasets` replaces the
    dataset (a Mixture's '_'-joined list)."""
    fraction = format(self.fraction, '.10g').replace('-', '_')
    vocab_hash = hashlib.sha1(self.vocab_path.encode()).hexdigest()[:8]
    parts = ['dssb', datasets or self.dataset, self.recipe, self.label_source,
             self.teacher or 'noteacher', f'f{fraction}', f's{self.seed}',
             self.prefix_style or 'noprefix', self.parse_failures, f'v{vocab_hash}']
    if self.tfds_data_dir:
      parts.append('tfds' + hashlib.sha1(self.tfds_data_dir.encode()).hexdigest()[:6])
    if self.soft_labels:  # hard-label names stay as they were
      parts.append('soft' + format(self.soft_label_floor, '.10g'))
    return '_'.join(p.replace('-', '_') for p in parts)


_REGISTERED: dict[str, TaskSettings] = {}


def metric_fns(dataset: str) -> list:
  """seqio metric fns of a dataset: exact match, or SVAMP equation value."""
  return metrics.metric_fns(dataset)


def label_set(dataset: str) -> tuple[str, ...] | None:
  """Fixed label set (NLI), or None (CQA: each example's choices; SVAMP: any arithmetic
  expression)."""
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


def _raw_json(s: TaskSettings, split: str) -> tf.data.Dataset:
  teacher = s.teacher
  if split != 'train' and s.recipe != 'step_by_step_rationale':
    teacher = None  # Eval targets are gold labels: no teacher file needed.
  rows = splits.load_split(s.dataset, split, fraction=s.fraction, seed=s.seed, teacher=teacher,
                           parse_failures=s.parse_failures, data_dir=s.data_dir,
                           soft_labels=s.soft_labels, soft_label_floor=s.soft_label_floor)
  cols = {k: [r.get(k, '') for r in rows]
          for k in ('id', 'input', 'label', 'teacher_rationale', 'teacher_label',
                    'teacher_failure', 'teacher_completion')}
  cols = {k: tf.constant(v, tf.string, shape=[len(rows)]) for k, v in cols.items()}
  cols['row'] = tf.constant([r['row'] for r in rows], tf.int64, shape=[len(rows)])
  if rows and soft_labels_lib.WEIGHT_KEY in rows[0]:
    cols[soft_labels_lib.WEIGHT_KEY] = tf.constant(
        [r[soft_labels_lib.WEIGHT_KEY] for r in rows], tf.float32, shape=[len(rows)])
  return tf.data.Dataset.from_tensor_slices(cols)


def _raw_tfds(s: TaskSettings, split: str, shuffle_files: bool) -> tf.data.Dataset:
  from dssb.data import tfds_builder  # pylint: disable=g-import-not-at-top
  builder = tfds_builder.get_builder(s.dataset, s.teacher or 'palm', s.tfds_data_dir)
  sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
  sizes = {'valid': 0, 'test': 0, **sizes}
  source_split, idx = splits.split_rows(s.dataset, sizes, s.fraction, s.seed)[split]
  ds = builder.as_dataset(split=source_split, shuffle_files=shuffle_files)
  if len(idx) != sizes[source_split]:
    keys = tf.constant(np.asarray(idx, np.int64))
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys)), 0)
    ds = ds.filter(lambda ex: table.lookup(ex['row']) > 0)
  if split == 'train' and s.parse_failures == 'drop':
    ds = ds.filter(lambda ex: tf.equal(ex['teacher_failure'], ''))
  return ds


def _dataset_fn(s: TaskSettings):
  train_fn = preprocess.train_features(s.recipe, s.prefix_style or 'code', s.label_source)
  eval_fn = preprocess.eval_features(s.recipe, s.prefix_style or 'code')

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
    if s.tfds_data_dir:
      ds = _raw_tfds(s, split, shuffle_files)
    else:
      ds = _raw_json(s, split)
      if shuffle_files:
        ds = ds.shuffle(ds.cardinality(), seed=seed)
    return ds.map(train_fn if split == 'train' else eval_fn, num_parallel_calls=tf.data.AUTOTUNE)

  return dataset_fn


def _register(s: TaskSettings) -> str:
  name = s.name()
  if name in _REGISTERED:
    if _REGISTERED[name] != s:
      raise ValueError(f'Task {name} is already registered with other settings '
                       f'({_REGISTERED[name]} vs {s}).')
    return name
  vocabulary = vocab_lib.get_vocabulary(s.vocab_path)
  rationale_task = s.recipe == 'step_by_step_rationale'
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(_dataset_fn(s), splits=splits.SPLITS),
      preprocessors=[preprocess.tokenize, seqio.preprocessors.append_eos_after_trim],
      output_features=output_features(vocabulary, s.recipe == 'step_by_step'),
      metric_fns=[] if rationale_task else metric_fns(s.dataset),
      postprocess_fn=None if rationale_task else preprocess.postprocess_fn(s.recipe, vocabulary,
                                                                            s.dataset))
  _REGISTERED[name] = s
  return name


@gin.configurable
def get_task_name(dataset: str, recipe: str, *, fraction: float = 1.0, seed: int = 0,
                  teacher: str = 'palm', label_source: str | None = None,
                  prefix_style: str = 'code', vocab_path: str | None = None,
                  parse_failures: str = 'keep', data_dir: str | None = None,
                  tfds_data_dir: str | None = None, soft_labels: bool = False,
                  soft_label_floor: float = soft_labels_lib.DEFAULT_FLOOR) -> str:
  """Registers (once) the seqio Task for these settings; returns its name.

  Args:
    dataset: 'cqa', 'svamp', 'esnli' or 'anli1'.
    recipe: 'standard' (gold labels), 'distill' (teacher labels), 'step_by_step' (label + rationale
      features), 'single_task_rationale_first' or 'single_task_label_first'.
    fraction: share of the train file used (official --subsample), in (0, 1].
    seed: subsampling seed (official --run).
    teacher: 'palm' (datasets/{dataset}/llm/) or NAME (datasets/{dataset}/llm_NAME/).
    label_source: train label targets, 'gold' or 'teacher'; default 'teacher' for distill, else
      'gold'. step_by_step + 'teacher' is the unlabeled setting (paper Fig. 5).
    prefix_style: 'code' ("predict: "/"explain: ") or 'paper' ("[label] "/"[rationale] "); used by
      step_by_step only.
    vocab_path: SentencePiece model; default $DSSB_VOCAB.
    parse_failures: 'keep' (official) or 'drop' train rows whose teacher label failed to parse.
    data_dir: folder holding datasets/ (local or gs://); default $DSSB_DATA_DIR at read time.
    tfds_data_dir: read the records prepared by the `dss` TFDS builder there instead of the JSON
      files.
    soft_labels: train on the teacher's label distribution instead of its one label: each train
      row becomes one example per candidate label, weighted by its probability (the expected
      cross-entropy; dssb.data.soft_labels). Reads `{split}_label_probs.json` beside the
      teacher's completions (`python -m dssb.review apply --soft` writes it); needs
      label_source 'teacher'.
    soft_label_floor: candidates below this probability are left out (the rest renormalised).

  Returns:
    The registered task name (deterministic in the settings, data_dir aside).
  """
  return _register(TaskSettings(
      dataset, recipe, fraction=fraction, seed=seed, teacher=teacher, label_source=label_source,
      prefix_style=prefix_style, vocab_path=vocab_path, parse_failures=parse_failures,
      data_dir=data_dir, tfds_data_dir=tfds_data_dir, soft_labels=soft_labels,
      soft_label_floor=soft_label_floor))


@gin.configurable
def get_mixture_name(datasets: str | Sequence[str], recipe: str = 'step_by_step', **kwargs) -> str:
  """Registers a Mixture with rate 1 per component task; returns its name.

  Args:
    datasets: one dataset name or several.
    recipe: for 'step_by_step', per dataset an unpaired label task (label-prefixed inputs -> label)
      and rationale task (rationale-prefixed inputs -> teacher rationale), the T5 multi-task form of
      the paper's loss; for other recipes, one task per dataset.
    **kwargs: settings of `get_task_name` (fraction, seed, teacher, ...).

  Returns:
    The registered mixture name.
  """
  datasets = (datasets,) if isinstance(datasets, str) else tuple(datasets)
  recipes = preprocess.SUB_RECIPES if recipe == 'step_by_step' else (recipe,)
  tasks = [get_task_name(d, r, **kwargs) for d in datasets for r in recipes]
  name = 'mix_' + TaskSettings(datasets[0], recipe, **kwargs).name('_'.join(datasets))
  if name not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add(name, [(t, 1.0) for t in tasks])
  return name


# ---------------------------------------------------------------------------------------------
# Context distillation (dssb.context_distill.sources builds the rows; registered here)

_CD_INT_FEATURES = ('teacher_targets', 'teacher_positions')  # token ids given, not text
_CD_REGISTERED: dict[str, tuple] = {}


def _cd_output_features(vocabulary: seqio.Vocabulary, recipe: str) -> dict:
  feats = output_features(vocabulary, with_rationale=recipe == 'step_by_step')
  if recipe == 'distill':
    feats['teacher_inputs'] = seqio.Feature(vocabulary, add_eos=True, required=False)
    for key in _CD_INT_FEATURES:
      feats[key] = seqio.Feature(vocabulary, add_eos=False, required=False)
  return feats


def _cd_dataset(examples: list) -> tf.data.Dataset:
  """tf.data of feature dicts: strings, or (distill) ragged int32 token lists."""
  cols = {}
  for key in examples[0]:
    values = [e[key] for e in examples]
    cols[key] = (tf.ragged.constant(values, tf.int32) if key in _CD_INT_FEATURES
                 else tf.constant(values, tf.string))
  return tf.data.Dataset.from_tensor_slices(cols)


@gin.configurable
def get_context_distill_task_name(source: str = 'addition', recipe: str = 'teacher', *,
                                  fraction: float = 1.0, seed: int = 0,
                                  digits: Sequence[int] = (1, 2, 3), num_labelled: int = 500,
                                  num_validation: int = 200, num_test: int = 1000,
                                  num_unlabeled: int = 10_000, num_exemplars: int = 4,
                                  distill_file: str | None = None, vocab_path: str | None = None,
                                  data_dir: str | None = None) -> str:
  """Registers (once) a context-distillation task; returns its name.

  Args:
    source: 'addition' (synthetic, scratchpad context) or 'cqa' (instructions + exemplars).
    recipe: 'teacher', 'direct', 'step_by_step', 'oracle' or 'distill' (see
      dssb.context_distill.sources).
    fraction: share of the labelled rows for 'teacher', 'direct' and 'step_by_step' (nested
      across fractions for one seed).
    seed: draws the data (addition problems; CQA exemplars and row split) and the fraction.
    digits: operand digit counts (addition).
    num_labelled: labelled rows (the teacher's training set).
    num_validation: validation rows.
    num_test: test rows.
    num_unlabeled: unlabeled rows (the distillation inputs).
    num_exemplars: solved exemplars in the CQA teacher's context.
    distill_file: the distillation set written by `python -m dssb.context_distill` ('distill').
    vocab_path: SentencePiece model; default $DSSB_VOCAB (addition: vocab.cached_addition_vocab).
    data_dir: folder holding datasets/ (CQA); default $DSSB_DATA_DIR.

  Returns:
    The task name, derived from the settings (paths as a short hash).
  """
  from dssb.context_distill import sources as cd  # pylint: disable=g-import-not-at-top
  s = cd.CDSettings(source, recipe, fraction=fraction, seed=seed, digits=tuple(digits),
                    num_labelled=num_labelled, num_validation=num_validation, num_test=num_test,
                    num_unlabeled=num_unlabeled, num_exemplars=num_exemplars,
                    distill_file=distill_file, data_dir=data_dir)
  vocab_path = vocab_lib.resolve_vocab_path(vocab_path)
  digest = hashlib.sha1(repr((s.distill_file, vocab_path)).encode()).hexdigest()[:8]
  fraction = format(s.fraction, '.10g')
  name = f'dssb_cd_{s.data_name()}_{recipe}_f{fraction}_{digest}'.replace('.', '_')
  if name in _CD_REGISTERED:
    if _CD_REGISTERED[name] != (s, vocab_path):
      raise ValueError(f'Task {name} is already registered with other settings '
                       f'({_CD_REGISTERED[name]} vs {(s, vocab_path)}).')
    return name
  vocabulary = vocab_lib.get_vocabulary(vocab_path)

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
    rows = (cd.train_examples(s, vocabulary.encode) if split == 'train'
            else cd.eval_examples(s, split))
    ds = _cd_dataset(rows)
    return ds.shuffle(len(rows), seed=seed) if shuffle_files else ds

  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(dataset_fn, splits=splits.SPLITS),
      preprocessors=[preprocess.tokenize, seqio.preprocessors.append_eos_after_trim],
      output_features=_cd_output_features(vocabulary, recipe),
      metric_fns=[metrics.exact_match],
      postprocess_fn=functools.partial(cd.postprocess, settings=s))
  _CD_REGISTERED[name] = (s, vocab_path)
  return name


# ---------------------------------------------------------------------------------------------
# The testbed's word problems (dssb.data.word_problems builds the rows; the recipes are the
# paper's, mapped by dssb.data.preprocess exactly as for the real datasets)

_TESTBED_REGISTERED: dict[str, tuple] = {}
TESTBED_ROW_KEYS = ('id', 'input', 'label', 'teacher_rationale', 'teacher_label')


@gin.configurable
def testbed_vocab() -> str:
  """Path of the word problems' vocabulary (characters, digits, every template word), built on
  first use under $DSSB_CACHE_DIR (default ~/.cache/dssb)/vocab/ (gin: VOCAB_PATH)."""
  cache = os.environ.get(vocab_lib.CACHE_ENV) or os.path.join(os.path.expanduser('~'), '.cache',
                                                              'dssb')
  out = os.path.join(cache, 'vocab', 'word_problems_pieces.model')
  return vocab_lib.train_piece_vocab(word_problems.vocabulary_text(),
                                     word_problems.VOCAB_SYMBOLS, out)


@gin.configurable
def get_testbed_task_name(recipe: str = 'standard', *, fraction: float = 1.0, seed: int = 0,
                          label_source: str | None = None, num_steps: int = 2,
                          num_labelled: int = 1000, num_unlabeled: int = 1000,
                          num_validation: int = 200, num_test: int = 500,
                          teacher_error: float = 0.25, vocab_path: str | None = None) -> str:
  """Registers (once) a testbed task on the synthetic word problems; returns its name.

  Args:
    recipe: a recipe of dssb.data.preprocess ('standard', 'distill', 'step_by_step',
      'single_task_rationale_first', ...), with the same features as on the real datasets.
    fraction: share of the train rows (nested across fractions for one seed).
    seed: draws the problems, the teacher's slips and the fraction.
    label_source: 'gold' trains on the labelled split's human labels; 'teacher' on the
      unlabeled pool with the simulated teacher's labels (the paper's Fig. 5 setting). Default:
      the recipe's ('teacher' for 'distill', else 'gold').
    num_steps: operations per problem (difficulty).
    num_labelled: human-labelled problems (100% of the data).
    num_unlabeled: the unlabeled pool (what teacher-labelled recipes train on).
    num_validation: validation problems.
    num_test: test problems.
    teacher_error: the simulated teacher's error rate (its rationales on every train row).
    vocab_path: SentencePiece model; default testbed_vocab().

  Returns:
    The task name, derived from the settings.
  """
  data = word_problems.WordProblemSettings(num_steps, num_labelled, num_unlabeled,
                                           num_validation, num_test, teacher_error, seed)
  if recipe not in RECIPES or recipe == 'cot_completion':
    raise ValueError(f'testbed recipe must be one of {RECIPES[:-1]}, got {recipe!r}')
  label_source = label_source or preprocess.default_label_source(recipe)
  if label_source not in preprocess.LABEL_SOURCES:
    raise ValueError(f'label_source must be one of {preprocess.LABEL_SOURCES}, '
                     f'got {label_source!r}')
  if (recipe, label_source) in (('standard', 'teacher'), ('distill', 'gold')):
    raise ValueError(f"recipe {recipe!r} cannot train on label_source {label_source!r} "
                     "('standard' is gold labels, 'distill' the teacher's)")
  fraction = splits.check_fraction(fraction)
  vocab_path = vocab_path or testbed_vocab()
  digest = hashlib.sha1(vocab_path.encode()).hexdigest()[:8]
  name = (f'dssb_tb_{data.name()}_{recipe}_{label_source}_f{format(fraction, ".10g")}'
          f'_v{digest}').replace('.', '_')
  key = (data, recipe, label_source, fraction, vocab_path)
  if name in _TESTBED_REGISTERED:
    if _TESTBED_REGISTERED[name] != key:
      raise ValueError(f'Task {name} is already registered with other settings.')
    return name
  vocabulary = vocab_lib.get_vocabulary(vocab_path)
  train_fn = preprocess.train_features(recipe, 'code', label_source)
  eval_fn = preprocess.eval_features(recipe, 'code')
  train_split = 'labelled' if label_source == 'gold' else 'unlabeled'

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
    if split == 'train':
      rows = word_problems.rows(data, train_split)
      rows = [rows[i] for i in splits.subsample(len(rows), fraction, data.seed)]
    else:
      rows = word_problems.rows(data, split)
    cols = {k: tf.constant([r[k] for r in rows], tf.string, shape=[len(rows)])
            for k in TESTBED_ROW_KEYS}
    ds = tf.data.Dataset.from_tensor_slices(cols)
    if shuffle_files:
      ds = ds.shuffle(len(rows), seed=seed)
    return ds.map(train_fn if split == 'train' else eval_fn)

  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(dataset_fn, splits=splits.SPLITS),
      preprocessors=[preprocess.tokenize, seqio.preprocessors.append_eos_after_trim],
      output_features=output_features(vocabulary, recipe == 'step_by_step'),
      metric_fns=[metrics.exact_match],
      postprocess_fn=preprocess.postprocess_fn(recipe, vocabulary))
  _TESTBED_REGISTERED[name] = key
  return name
