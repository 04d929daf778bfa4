"""Multi-step arithmetic word problems with a simulated teacher: the testbed's task family.

A problem is a person, an item, a start quantity and `num_steps` operations, each told in words
by a template; the label is the final quantity; the gold rationale is the equations in order:

  input      "Ann has 7 pens . She buys 5 more . She gives away 3 . How many pens now ?"
  label      "9"                       (digits separated by spaces, as dssb.data.addition)
  rationale  "7 + 5 = 1 2 , 1 2 - 3 = 9"

Why this task: the label is a composition of several operations that the input only names in
words, so a small T5 trained from scratch on a few hundred labelled examples learns it slowly;
the rationale spells each step out, so the same examples teach much more (the addition task of
Snell et al. showed that: label + scratchpad 94.5% vs label-only 3.4%, results/
context_distillation). The number of steps sets the difficulty.

The simulated teacher (an LLM's annotations at a set error rate): on each input, with probability
`teacher_error`, one step's arithmetic slips by a small amount and the error propagates through
the later steps, so its wrong rationale ends in its wrong label (as an LLM's chain of thought
does); otherwise it writes the gold rationale and label. The slips are drawn by the seed alone.

Splits, drawn from one stream of distinct problems in this order, never repeating a problem:
'labelled' (human labels; the teacher annotates them too), 'unlabeled' (the pool only the teacher
labels), 'validation', 'test'. Plain Python (no TensorFlow); dssb.data.tasks registers the seqio
tasks (`get_testbed_task_name`).
"""

import dataclasses
import functools
import re
from typing import Optional, Sequence

import numpy as np

SPLITS = ('labelled', 'unlabeled', 'validation', 'test')
NAMES = ('Ann', 'Bob', 'Cal', 'Dee', 'Eve', 'Fay', 'Gus', 'Hal')
PRONOUNS = {'Ann': 'She', 'Bob': 'He', 'Cal': 'He', 'Dee': 'She', 'Eve': 'She', 'Fay': 'She',
            'Gus': 'He', 'Hal': 'He'}
ITEMS = ('pens', 'cards', 'coins', 'eggs', 'books', 'shells')
# Operation templates ({k} is the amount): '+' adds, '-' takes away, '*' multiplies.
TEMPLATES = {
    '+': ('{p} buys {k} more .', '{p} finds {k} more .', '{p} gets {k} more .'),
    '-': ('{p} gives away {k} .', '{p} loses {k} .', '{p} sells {k} .'),
    '*': ('{p} gets {k} times as many .',),
}
MAX_START = 20       # start quantity in [1, MAX_START]
MAX_AMOUNT = 9       # amounts of '+' and '-' in [1, MAX_AMOUNT]
MULTIPLIERS = (2, 3)
MAX_VALUE = 99       # every intermediate quantity stays in [0, MAX_VALUE]
SLIPS = (-3, -2, -1, 1, 2, 3)


@dataclasses.dataclass(frozen=True)
class Problem:
  """One word problem: who, what, the start quantity and the operations ((op, amount), ...)."""
  name: str
  item: str
  start: int
  ops: tuple

  def key(self) -> tuple:
    """What makes two problems the same (no split repeats another's)."""
    return (self.name, self.item, self.start, self.ops)


def spaced(number: int) -> str:
  """12 -> '1 2'; -3 -> '- 3'."""
  return ('- ' if number < 0 else '') + ' '.join(str(abs(number)))


def apply(op: str, value: int, amount: int) -> int:
  if op == '+':
    return value + amount
  if op == '-':
    return value - amount
  if op == '*':
    return value * amount
  raise ValueError(f'unknown operation {op!r}')


def values(start: int, ops: Sequence[tuple], slip_step: Optional[int] = None,
           slip: int = 0) -> list:
  """The quantity after each step (slip added to the result of step `slip_step`)."""
  out, value = [], start
  for i, (op, amount) in enumerate(ops):
    value = apply(op, value, amount) + (slip if i == slip_step else 0)
    out.append(value)
  return out


def answer(problem: Problem) -> int:
  return values(problem.start, problem.ops)[-1]


def question(problem: Problem, template_ids: Sequence[int] = ()) -> str:
  """The input text; template_ids picks each step's wording (default the first)."""
  pronoun = PRONOUNS[problem.name]
  text = f'{problem.name} has {spaced(problem.start)} {problem.item} .'
  for i, (op, amount) in enumerate(problem.ops):
    choices = TEMPLATES[op]
    pick = template_ids[i] if i < len(template_ids) else 0
    text += ' ' + choices[pick % len(choices)].format(p=pronoun, k=spaced(amount))
  return text + f' How many {problem.item} now ?'


def rationale(start: int, ops: Sequence[tuple], slip_step: Optional[int] = None,
              slip: int = 0) -> str:
  """The equations in order: '7 + 5 = 1 2 , 1 2 - 3 = 9' (with a slip: wrong from there on)."""
  steps, value = [], start
  for after, (op, amount) in zip(values(start, ops, slip_step, slip), ops):
    steps.append(f'{spaced(value)} {op} {spaced(amount)} = {spaced(after)}')
    value = after
  return ' , '.join(steps)


def label(number: int) -> str:
  return spaced(number)


_NUMBER = re.compile(r'^-? ?\d( \d)*$')


def parse_label(text: str) -> Optional[int]:
  """'1 2' -> 12; None unless the text is exactly a spaced number (the exact checker's rule)."""
  text = text.strip()
  if not _NUMBER.match(text):
    return None
  return int(text.replace(' ', ''))


def is_correct(prediction: str, problem: Problem) -> bool:
  """Exact: the prediction is the spaced final quantity and nothing else."""
  return prediction.strip() == label(answer(problem))


def rationale_answer(text: str) -> Optional[int]:
  """The number after the last '=' of a rationale (the answer it ends in), None if malformed."""
  head, sep, tail = text.rpartition('=')
  return parse_label(tail) if sep else None


@dataclasses.dataclass(frozen=True)
class WordProblemSettings:
  """One data set of the testbed: difficulty, split sizes, the teacher's error rate, the seed.

  Attributes:
    num_steps: operations per problem (difficulty).
    num_labelled: problems with human labels (the 100% of the data-fraction experiments).
    num_unlabeled: problems only the teacher labels (the unlabeled pool).
    num_validation: validation problems (gold labels).
    num_test: test problems (gold labels).
    teacher_error: probability that the teacher's annotation of a problem is wrong.
    seed: draws the problems and the teacher's slips.
  """
  num_steps: int = 2
  num_labelled: int = 1000
  num_unlabeled: int = 1000
  num_validation: int = 200
  num_test: int = 500
  teacher_error: float = 0.25
  seed: int = 0

  def __post_init__(self):
    if not 1 <= self.num_steps <= 6:
      raise ValueError(f'num_steps must be in [1, 6], got {self.num_steps}')
    for name in ('num_labelled', 'num_unlabeled', 'num_validation', 'num_test'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
    if not 0.0 <= self.teacher_error <= 1.0:
      raise ValueError(f'teacher_error must be in [0, 1], got {self.teacher_error}')

  def sizes(self) -> dict:
    return {'labelled': self.num_labelled, 'unlabeled': self.num_unlabeled,
            'validation': self.num_validation, 'test': self.num_test}

  def data_name(self) -> str:
    """Name of the problems (the teacher's error rate aside: it does not change them)."""
    return (f'wp_n{self.num_steps}_l{self.num_labelled}_u{self.num_unlabeled}'
            f'_v{self.num_validation}_t{self.num_test}_s{self.seed}')

  def name(self) -> str:
    error = format(self.teacher_error, '.4g').replace('.', '_')
    return f'{self.data_name()}_e{error}'


def draw_problem(rng: np.random.Generator, num_steps: int) -> tuple:
  """A random problem and its template choices; every quantity stays in [0, MAX_VALUE]."""
  while True:
    name = NAMES[rng.integers(len(NAMES))]
    item = ITEMS[rng.integers(len(ITEMS))]
    start = int(rng.integers(1, MAX_START + 1))
    ops, value = [], start
    for _ in range(num_steps):
      op = ('+', '-', '*')[rng.choice(3, p=(0.4, 0.4, 0.2))]
      if op == '*':
        amount = int(MULTIPLIERS[rng.integers(len(MULTIPLIERS))])
      elif op == '-':
        if value < 1:
          op, amount = '+', int(rng.integers(1, MAX_AMOUNT + 1))
        else:
          amount = int(rng.integers(1, min(MAX_AMOUNT, value) + 1))
      else:
        amount = int(rng.integers(1, MAX_AMOUNT + 1))
      ops.append((op, amount))
      value = apply(op, value, amount)
    if value <= MAX_VALUE and all(0 <= v <= MAX_VALUE for v in values(start, ops)):
      templates = tuple(int(rng.integers(3)) for _ in range(num_steps))
      return Problem(name, item, start, tuple(ops)), templates


def capacity_note() -> str:
  return (f'{len(NAMES)} names x {len(ITEMS)} items x {MAX_START} starts x the operations: '
          'far more than any split size used here')


@functools.lru_cache(maxsize=32)
def problems(num_steps: int, sizes: tuple, seed: int) -> dict:
  """{split: [(Problem, template ids), ...]}: one stream of distinct problems, split in order."""
  rng = np.random.default_rng([seed, num_steps, 7919])
  seen, stream = set(), []
  total = sum(sizes)
  attempts = 0
  while len(stream) < total:
    attempts += 1
    if attempts > 50 * total + 1000:
      raise ValueError(f'could not draw {total} distinct {num_steps}-step problems')
    problem, templates = draw_problem(rng, num_steps)
    if problem.key() not in seen:
      seen.add(problem.key())
      stream.append((problem, templates))
  out, start = {}, 0
  for split, size in zip(SPLITS, sizes):
    out[split], start = stream[start:start + size], start + size
  return out


def teacher_slips(count: int, num_steps: int, error: float, seed: int, split: str) -> list:
  """Per problem: None (right) or (step, slip) of the teacher's one arithmetic slip."""
  rng = np.random.default_rng([seed, SPLITS.index(split), 104729])
  wrong = rng.random(count) < error
  steps = rng.integers(num_steps, size=count)
  slips = rng.integers(len(SLIPS), size=count)
  return [(int(s), SLIPS[int(k)]) if w else None for w, s, k in zip(wrong, steps, slips)]


def teacher_annotation(problem: Problem, slip: Optional[tuple]) -> tuple:
  """(rationale, label) the teacher writes; a slip that would leave a negative quantity is
  turned positive, so the wrong rationale stays a well-formed story."""
  if slip is None:
    return rationale(problem.start, problem.ops), label(answer(problem))
  step, amount = slip
  if min(values(problem.start, problem.ops, step, amount)) < 0:
    amount = abs(amount)
  final = values(problem.start, problem.ops, step, amount)[-1]
  return rationale(problem.start, problem.ops, step, amount), label(final)


def rows(settings: WordProblemSettings, split: str) -> list:
  """Rows as dssb.data.splits gives the real datasets: id, row, input, label (gold),
  teacher_rationale, teacher_label; plus the problem for exact checking."""
  if split not in SPLITS:
    raise ValueError(f'unknown word-problem split {split!r}; expected one of {SPLITS}')
  drawn = problems(settings.num_steps, tuple(settings.sizes()[s] for s in SPLITS),
                   settings.seed)[split]
  slips = teacher_slips(len(drawn), settings.num_steps, settings.teacher_error, settings.seed,
                        split)
  out = []
  for i, ((problem, templates), slip) in enumerate(zip(drawn, slips)):
    teacher_r, teacher_y = teacher_annotation(problem, slip)
    out.append({'id': f'{split}-{i}', 'row': i, 'input': question(problem, templates),
                'label': label(answer(problem)), 'teacher_rationale': teacher_r,
                'teacher_label': teacher_y, 'problem': problem})
  return out


# The vocabulary: single characters, digits and symbols with the space before them, every
# template word (with and without the space), and the recipes' prefixes and marker.
def _words() -> list:
  words = set(NAMES) | set(PRONOUNS.values()) | set(ITEMS)
  for choices in TEMPLATES.values():
    for template in choices:
      words |= set(template.replace('{p}', '').replace('{k}', '').split())
  words |= {'has', 'How', 'many', 'now', '?', '.', ',', '=', '+', '-', '*', '[label]',
            '[rationale]', 'predict:', 'explain:'}
  return sorted(words)


VOCAB_SYMBOLS = tuple(['\u2581' + d for d in '0123456789'] + ['\u2581' + w for w in _words()]
                      + ['predict:', 'explain:', '[label]', '[rationale]'])


def vocabulary_text() -> list:
  """Lines holding every character the inputs, rationales, labels and prefixes use."""
  lines = [' '.join(_words()), '0123456789', 'predict: explain: [label] [rationale]']
  return lines + [''.join(sorted(set(''.join(lines)) - {' '}))]
