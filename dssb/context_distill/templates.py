"""Teacher and student templates over raw inputs, and the answer extractor f (Snell et al. 2022,
Sec. 2): the teacher sees T_teacher(x), the student T_student(x), and the student learns f(y) for
the teacher's completion y.

  addition  T_teacher(x) = "Let's think step by step." + x,  T_student(x) = x,
            f = the scratchpad's final answer (the public code's "#(.+)#" rule), canonicalised.
  cqa       T_teacher(x) = instructions + k solved exemplars + x,  T_student(x) = x,
            f = the completion itself (stripped): internalising the instructions and exemplars.
"""

import dataclasses
from typing import Callable, Optional, Sequence

from dssb.data import addition


@dataclasses.dataclass(frozen=True)
class Context:
  """An engineered context and how to read an answer out of a completion made with it.

  Attributes:
    name: what the context is, for names and logs.
    teacher_prefix: text the teacher sees before the raw input.
    student_prefix: text the student sees before the raw input (often empty).
    extract: completion -> the answer the student learns, or None when the completion has none
      (a malformed or truncated scratchpad); such samples are dropped and counted.
    teacher_answer_key: a completion under the teacher's template -> the string evaluation
      compares (the scratchpad's answer digits).
    student_answer_key: a completion under the student's template, or a gold answer -> the
      same kind of string.
  """
  name: str
  teacher_prefix: str
  student_prefix: str
  extract: Callable[[str], Optional[str]]
  teacher_answer_key: Callable[[str], str]
  student_answer_key: Callable[[str], str]

  def teacher_input(self, x: str) -> str:
    return self.teacher_prefix + x

  def student_input(self, x: str) -> str:
    return self.student_prefix + x


def _addition_extract(completion: str) -> Optional[str]:
  digits = addition.extract_answer(completion)
  return None if digits is None else addition.canonical_answer(digits)


ADDITION = Context(
    name='addition_scratchpad',
    teacher_prefix=addition.TEACHER_PROMPT,
    student_prefix=addition.STUDENT_PROMPT,
    extract=_addition_extract,
    teacher_answer_key=lambda text: addition.extract_answer(text) or '',
    student_answer_key=addition.direct_answer)

CQA_INSTRUCTIONS = ('Read the question and its five answer choices, and answer with the text of '
                    'the one correct choice, copied exactly.')


def _strip(text: str) -> Optional[str]:
  text = text.strip()
  return text or None


def cqa_context(exemplars: Sequence[dict]) -> Context:
  """Instructions and solved exemplars (rows with 'input' and 'label') before the question."""
  shots = ''.join(f'{row["input"]}\nAnswer: {row["label"]}\n\n' for row in exemplars)
  return Context(
      name=f'cqa_instructions_{len(exemplars)}shot',
      teacher_prefix=f'{CQA_INSTRUCTIONS}\n\n{shots}',
      student_prefix='',
      extract=_strip,
      teacher_answer_key=str.strip,
      student_answer_key=str.strip)
