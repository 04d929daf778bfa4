"""Synthetic addition with a scratchpad: the task of Snell et al. 2022, Sec. 4.3 and Table 3.

The format is the one of the paper's public code (its `scratchpads.py`), written here anew:

  question     " Question: 2 9 + 5 7"                 (digits separated by spaces)
  teacher      "Let's think step by step." + question  -> scratchpad + final answer
  student      "" + question                           -> "8 6"
  scratchpad   "2 9 + 5 7 , C: 0 => 2 + 5 , 6  C: 1 => , 8 6  C: 0 => 0 8 6"
               + " Final answer: #8 6#"

Both operands of a problem have the same digit count, drawn uniformly from `digits` (a 1-digit
operand may be 0, a longer one has no leading zero), and no problem repeats within a data set.
The answer of a completion is what the public code's regex "#(.+)#" finds, with '#', spaces and
'-' removed; `extract_answer` returns None where there is no match or the match holds anything
but digits (the public code would crash on int() there). Correctness is string-exact on the
digits: "0 8 6" is not "8 6", as in the public evaluation.

Plain Python (no TensorFlow); dssb.data.tasks registers the seqio tasks built from these rows.
"""

import dataclasses
import functools
import re
from typing import Iterable, Optional, Sequence

import numpy as np

TEACHER_PROMPT = "Let's think step by step."
STUDENT_PROMPT = ''
ANSWER_RE = re.compile(r'#(.+)#')
SPLITS = ('labelled', 'validation', 'test', 'unlabeled')


def spaced(number: int) -> str:
  """29 -> '2 9': digits separated by single spaces."""
  return ' '.join(str(number))


def _spaced_digits(digits: Sequence[int]) -> str:
  return ' '.join(str(d) for d in digits)


def question(a: int, b: int) -> str:
  """The raw input x, shared by teacher and student (the templates add their prompts)."""
  return f' Question: {spaced(a)} + {spaced(b)}'


def scratchpad(a: int, b: int) -> str:
  """Column addition from the right, one step per digit, as the public code writes it.

  Each step shows the next column's digits, the digits of the sum found so far and the carry;
  the last step shows the whole sum with the final carry in front (possibly a leading 0).
  """
  width = max(len(str(a)), len(str(b)))
  a_digits = [int(c) for c in str(a).zfill(width)]
  b_digits = [int(c) for c in str(b).zfill(width)]
  text = f'{_spaced_digits(a_digits)} + {_spaced_digits(b_digits)} , C: 0 => '
  carry, done = divmod(a_digits[-1] + b_digits[-1], 10)
  done = [done]
  for x, y in zip(reversed(a_digits[:-1]), reversed(b_digits[:-1])):
    text += f'{x} + {y} , {_spaced_digits(done)}  C: {carry} => '
    carry, digit = divmod(x + y + carry, 10)
    done.insert(0, digit)
  text += f', {_spaced_digits(done)}  C: {carry} => '
  return text + _spaced_digits([carry] + done)


def teacher_target(a: int, b: int) -> str:
  """The gold scratchpad completion: scratchpad, then the answer between '#'."""
  return f'{scratchpad(a, b)} Final answer: #{spaced(a + b)}#'


def direct_target(a: int, b: int) -> str:
  """The gold direct answer: '8 6'."""
  return spaced(a + b)


def extract_answer(completion: str) -> Optional[str]:
  """The digits between the first and the last '#' ('8 6' -> '86'), None if malformed.

  The public code's rule: regex "#(.+)#" (greedy, one line), then '#', ' ' and '-' removed.
  A truncated completion (no closing '#') and one whose marked text is not all digits give None.
  """
  match = ANSWER_RE.search(completion)
  if not match:
    return None
  digits = re.sub(r'[# -]', '', match.group(0))
  return digits if digits.isdigit() and digits.isascii() else None


def direct_answer(completion: str) -> str:
  """A direct completion as the public evaluation compares it: lower case, stripped of
  newlines, spaces and dots at the ends, inner spaces removed ('8 6' -> '86')."""
  return completion.lower().strip('\n .').replace(' ', '')


def canonical_answer(digits: str) -> str:
  """The student's target for an extracted answer: '086' -> '8 6' (the public code's
  int_to_str(int(x)) on what it extracted)."""
  if not digits.isdigit():
    raise ValueError(f'not an answer: {digits!r}')
  return spaced(int(digits))


def is_correct(answer_digits: Optional[str], a: int, b: int) -> bool:
  """Exact: the answer's digits are those of a + b, no leading zero, no other character."""
  return answer_digits is not None and answer_digits == str(a + b)


@dataclasses.dataclass(frozen=True)
class AdditionSettings:
  """One synthetic data set: digit counts, split sizes and the seed that draws them.

  The splits are disjoint: one stream of distinct problems fills labelled, validation, test and
  unlabeled in that order. With few possible 1-digit problems (100), the later splits hold few of
  them; `digit_counts` reports what each split holds.
  """
  digits: tuple = (1, 2, 3)
  num_labelled: int = 500
  num_validation: int = 200
  num_test: int = 1000
  num_unlabeled: int = 10_000
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, 'digits', tuple(int(d) for d in self.digits))
    if not self.digits or any(not 1 <= d <= 30 for d in self.digits):
      raise ValueError(f'digits must be digit counts in [1, 30], got {self.digits}')
    for name in ('num_labelled', 'num_validation', 'num_test', 'num_unlabeled'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
    total = sum(self.sizes().values())
    if total > capacity(self.digits):
      raise ValueError(f'{total} distinct problems requested but only {capacity(self.digits)} '
                       f'exist with digit counts {self.digits}')

  def sizes(self) -> dict:
    return {'labelled': self.num_labelled, 'validation': self.num_validation,
            'test': self.num_test, 'unlabeled': self.num_unlabeled}

  def name(self) -> str:
    digits = ''.join(str(d) for d in self.digits) if max(self.digits) < 10 else '_'.join(
        str(d) for d in self.digits)
    return (f'add_d{digits}_l{self.num_labelled}_v{self.num_validation}_t{self.num_test}'
            f'_u{self.num_unlabeled}_s{self.seed}')


def _operand_range(num_digits: int) -> tuple:
  return (0 if num_digits == 1 else 10 ** (num_digits - 1), 10 ** num_digits - 1)


def capacity(digits: Iterable[int]) -> int:
  """How many distinct problems exist with these digit counts."""
  return sum((hi - lo + 1) ** 2 for lo, hi in map(_operand_range, set(digits)))


def sample_problems(digits: Sequence[int], count: int, seed: int,
                    exclude: Iterable[tuple] = ()) -> list:
  """`count` distinct (a, b) pairs not in `exclude`, reproducible by seed.

  Each draw picks a digit count uniformly from `digits`, then both operands with that many
  digits; a repeated or excluded pair is drawn again.
  """
  seen = set(exclude)
  room = capacity(digits) - len({p for p in seen if _num_digits(p) in set(digits)})
  if count > room:
    raise ValueError(f'{count} new problems requested but only {room} remain for digit counts '
                     f'{tuple(digits)}')
  rng = np.random.default_rng(seed)
  out = []
  while len(out) < count:
    num_digits = int(rng.choice(digits))
    lo, hi = _operand_range(num_digits)
    pair = (int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)))
    if pair not in seen:
      seen.add(pair)
      out.append(pair)
  return out


def _num_digits(pair: tuple) -> int:
  return len(str(max(pair)))


@functools.lru_cache(maxsize=16)
def problems(settings: AdditionSettings) -> dict:
  """{split: [(a, b), ...]} for the four disjoint splits (see AdditionSettings)."""
  out, taken = {}, set()
  for i, split in enumerate(SPLITS):
    out[split] = sample_problems(settings.digits, settings.sizes()[split],
                                 seed=settings.seed * 1000 + i, exclude=taken)
    taken.update(out[split])
  return out


def digit_counts(pairs: Sequence[tuple]) -> dict:
  """{operand digit count: number of problems}."""
  counts = {}
  for pair in pairs:
    counts[_num_digits(pair)] = counts.get(_num_digits(pair), 0) + 1
  return dict(sorted(counts.items()))


def row(a: int, b: int, index: int) -> dict:
  """A data row: the raw input, both gold targets, and the operands for exact checking."""
  return {'id': f'{a}+{b}', 'row': index, 'a': a, 'b': b, 'input': question(a, b),
          'scratchpad': teacher_target(a, b), 'answer': direct_target(a, b)}


def rows(settings: AdditionSettings, split: str) -> list:
  if split not in SPLITS:
    raise ValueError(f'unknown addition split {split!r}; expected one of {SPLITS}')
  return [row(a, b, i) for i, (a, b) in enumerate(problems(settings)[split])]


# Pieces of the addition vocabulary besides single characters ('\u2581' is SentencePiece's space):
# a digit or symbol with the space before it, and the template words. A digit is one token in
# the teacher's scratchpad, in its answer and in the student's answer alike ('8', '\u25816').
VOCAB_SYMBOLS = tuple('\u2581' + p for p in list('0123456789') + [
    '+', ',', 'C:', '=>', 'Final', 'answer:', '#', 'Question:', 'think', 'step', 'by', 'step.']
                      ) + ("Let's",)


def vocabulary_text() -> list:
  """Lines holding every character the templates, scratchpads and answers use, each character
  also alone (for the vocabulary's single-character pieces)."""
  lines = [TEACHER_PROMPT + question(1234567890, 9876543210), teacher_target(95, 17),
           'Final answer: #0 1 2 3 4 5 6 7 8 9#', '=> , C: - .']
  return lines + [''.join(sorted(set(''.join(lines)) - {' '}))]
