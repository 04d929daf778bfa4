"""Rows of the context-distillation experiments, per recipe: what each Table 3 cell trains on.

A source gives four disjoint splits of raw inputs x with gold answers: 'labelled' (the examples
the teacher learns its context-conditioned behaviour from, e.g. 500 scratchpads), 'unlabeled'
(the distillation inputs: their gold answers are used only by the oracle control and for
reporting the teacher's accuracy on them), 'validation' and 'test'.

Recipes (train features; eval splits give the recipe's own input template and the gold answer):
  teacher       T_teacher(x) -> teacher target (the scratchpad, or the answer for CQA), on
                `fraction` of the labelled rows
  direct        T_student(x) -> answer, on `fraction` of the labelled rows (label-only; also
                "scratchpad then direct" when started from the teacher's weights)
  step_by_step  label T_student(x) -> answer and rationale T_teacher(x) -> scratchpad on the
                same labelled rows: distilling step-by-step's recipe, the paper's "multi-task"
  oracle        T_student(x) -> GOLD answer on the unlabeled inputs (the control Table 3 lacks)
  distill       T_student(x) -> f(teacher sample) from a distillation set file, with the
                teacher's input and sampled tokens for the soft (KL) targets

Sources: 'addition' (dssb.data.addition) and 'cqa' (the DSS CommonsenseQA files: exemplars,
labelled and unlabeled rows are drawn from the official train split, validation and test are
the official ones).
"""

import dataclasses
import functools
import random
from typing import Callable, Optional

from dssb.context_distill import distill_set
from dssb.context_distill import templates
from dssb.data import addition
from dssb.data import splits as dss_splits

SOURCES = ('addition', 'cqa')
RECIPES = ('teacher', 'direct', 'step_by_step', 'oracle', 'distill')
EVAL_SPLITS = ('validation', 'test')


@dataclasses.dataclass(frozen=True)
class CDSettings:
  """Everything that defines one context-distillation task; invalid settings raise ValueError.

  Attributes:
    source: 'addition' or 'cqa'.
    recipe: one of RECIPES.
    fraction: share of the labelled rows used by 'teacher', 'direct' and 'step_by_step' (nested
      subsets across fractions for one seed, as distilling step-by-step's --subsample).
    seed: draws the addition problems / the CQA exemplars and row split, and the fraction subset.
    digits: operand digit counts (addition).
    num_labelled, num_validation, num_test, num_unlabeled: split sizes (CQA: at most these many
      of the official rows).
    num_exemplars: solved examples in the CQA teacher context.
    distill_file: the distillation set ('distill' only).
    data_dir: folder holding datasets/ (CQA); default $DSSB_DATA_DIR.
  """
  source: str = 'addition'
  recipe: str = 'teacher'
  fraction: float = 1.0
  seed: int = 0
  digits: tuple = (1, 2, 3)
  num_labelled: int = 500
  num_validation: int = 200
  num_test: int = 1000
  num_unlabeled: int = 10_000
  num_exemplars: int = 4
  distill_file: Optional[str] = None
  data_dir: Optional[str] = None

  def __post_init__(self):
    if self.source not in SOURCES:
      raise ValueError(f'source must be one of {SOURCES}, got {self.source!r}')
    if self.recipe not in RECIPES:
      raise ValueError(f'recipe must be one of {RECIPES}, got {self.recipe!r}')
    if (self.recipe == 'distill') != bool(self.distill_file):
      raise ValueError("distill_file is needed by recipe 'distill' and by no other recipe "
                       f'(recipe {self.recipe!r}, distill_file {self.distill_file!r})')
    dss_splits.check_fraction(self.fraction)
    object.__setattr__(self, 'digits', tuple(int(d) for d in self.digits))
    if self.source == 'addition':
      self.addition_settings()  # validates sizes against the number of distinct problems

  def addition_settings(self) -> addition.AdditionSettings:
    return addition.AdditionSettings(self.digits, self.num_labelled, self.num_validation,
                                     self.num_test, self.num_unlabeled, self.seed)

  def data_name(self) -> str:
    """The data's name, recipe aside (a teacher run and its distillation share it)."""
    if self.source == 'addition':
      return self.addition_settings().name()
    return (f'cqa_x{self.num_exemplars}_l{self.num_labelled}_v{self.num_validation}'
            f'_t{self.num_test}_u{self.num_unlabeled}_s{self.seed}')

  def context(self) -> templates.Context:
    if self.source == 'addition':
      return templates.ADDITION
    return templates.cqa_context(_cqa_splits(self)['exemplars'])

  def rows(self, split: str) -> list:
    """Rows {'id', 'input', 'answer', 'teacher_target'} of one of addition.SPLITS."""
    if split not in addition.SPLITS:
      raise ValueError(f'unknown split {split!r}; expected one of {addition.SPLITS}')
    if self.source == 'addition':
      return [{'id': r['id'], 'input': r['input'], 'answer': r['answer'],
               'teacher_target': r['scratchpad']}
              for r in addition.rows(self.addition_settings(), split)]
    return [{'id': r['id'], 'input': r['input'], 'answer': r['label'],
             'teacher_target': r['label']} for r in _cqa_splits(self)[split]]


def _subsample(rows: list, fraction: float, seed: int) -> list:
  return [rows[i] for i in dss_splits.subsample(len(rows), fraction, seed)]


@functools.lru_cache(maxsize=8)
def _cqa_splits(s: CDSettings) -> dict:
  """Exemplars, labelled and unlabeled rows from the official CQA train split (shuffled by the
  seed), and the official validation and test rows."""
  train = dss_splits.load_split('cqa', 'train', teacher=None, data_dir=s.data_dir)
  order = list(range(len(train)))
  random.Random(s.seed).shuffle(order)
  train = [train[i] for i in order]
  sizes = (s.num_exemplars, s.num_labelled, s.num_unlabeled)
  if sum(sizes) > len(train):
    raise ValueError(f'cqa: {s.num_exemplars} exemplars + {s.num_labelled} labelled + '
                     f'{s.num_unlabeled} unlabeled rows requested but the train split has '
                     f'{len(train)}')
  out, start = {}, 0
  for name, size in zip(('exemplars', 'labelled', 'unlabeled'), sizes):
    out[name], start = train[start:start + size], start + size
  for split, limit in (('validation', s.num_validation), ('test', s.num_test)):
    out[split] = dss_splits.load_split('cqa', split, teacher=None, data_dir=s.data_dir)[:limit]
  return out


def train_examples(s: CDSettings, encode: Callable[[str], list]) -> list:
  """Feature dicts of the recipe's train split (strings; the distill recipe adds int lists).

  Args:
    s: the task settings.
    encode: text -> token ids without EOS (the task's vocabulary), to align the student's target
      tokens with the teacher's sampled tokens (distill recipe).
  """
  ctx = s.context()
  if s.recipe == 'distill':
    return distill_set.training_examples(s.distill_file, encode, ctx)
  if s.recipe == 'oracle':
    return [{'inputs': ctx.student_input(r['input']), 'targets': r['answer']}
            for r in s.rows('unlabeled')]
  labelled = _subsample(s.rows('labelled'), s.fraction, s.seed)
  if s.recipe == 'teacher':
    return [{'inputs': ctx.teacher_input(r['input']), 'targets': r['teacher_target']}
            for r in labelled]
  if s.recipe == 'direct':
    return [{'inputs': ctx.student_input(r['input']), 'targets': r['answer']} for r in labelled]
  return [{'inputs': ctx.student_input(r['input']), 'targets': r['answer'],
           'rationale_inputs': ctx.teacher_input(r['input']),
           'rationale_targets': r['teacher_target']} for r in labelled]


def eval_examples(s: CDSettings, split: str) -> list:
  """{'inputs', 'targets'} of validation or test: the recipe's input template, gold answer."""
  if split not in EVAL_SPLITS:
    raise ValueError(f'eval split must be one of {EVAL_SPLITS}, got {split!r}')
  ctx = s.context()
  template = ctx.teacher_input if s.recipe == 'teacher' else ctx.student_input
  return [{'inputs': template(r['input']), 'targets': r['answer']} for r in s.rows(split)]


def postprocess(output: str, example=None, is_target: bool = False, *,
                settings: CDSettings) -> str:
  """seqio postprocess_fn: the comparable answer of a prediction (the teacher's is read out of
  its scratchpad) or of a gold answer."""
  del example
  ctx = settings.context()
  if is_target:
    return ctx.student_answer_key(output)
  key = ctx.teacher_answer_key if settings.recipe == 'teacher' else ctx.student_answer_key
  return key(output)
