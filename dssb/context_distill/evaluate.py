"""Answers of a checkpoint on any split with either template, for what the trainer's eval does
not report: accuracy per operand digit count, accuracy on the distillation inputs, and how often
a student without the context agrees with the teacher with it (internalisation, measurable even
where both are near chance).
"""

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import numpy as np

from dssb import run_checkpoints, sharding
from dssb.context_distill import distill_set
from dssb.context_distill import sources
from dssb.model import EOS_ID, generate


@dataclasses.dataclass(frozen=True)
class Answer:
  id: str
  output: str          # the decoded completion
  key: str             # what is compared: the answer read out of it
  gold: str            # the gold answer's key
  tokens: int          # decoded tokens, EOS included
  input_tokens: int    # the prompt's tokens, EOS included (a context makes it longer)

  @property
  def correct(self) -> bool:
    return self.key == self.gold


def answers(checkpoint: str, data: sources.CDSettings, split: str, template: str,
            max_length: int = 64, batch_size: int = 200,
            vocab_path: Optional[str] = None) -> list:
  """Greedy answers of `checkpoint` to `split`'s inputs under the 'teacher' or 'student' template.

  Args:
    checkpoint: a trainer MODEL_DIR (or its best/ folder), a T5X or a Hugging Face checkpoint.
    data: the data settings.
    split: 'labelled', 'validation', 'test' or 'unlabeled'.
    template: 'teacher' (its context; the answer is read out of the completion) or 'student'.
    max_length: decoded tokens at most.
    batch_size: rows per decoding call.
    vocab_path: SentencePiece model; default: the one the run recorded.

  Returns:
    One Answer per row, in split order.
  """
  if template not in ('teacher', 'student'):
    raise ValueError(f"template must be 'teacher' or 'student', got {template!r}")
  mesh, rules = sharding.make_mesh(), sharding.logical_axis_rules()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    config, params, meta = run_checkpoints.load_frozen(checkpoint, mesh, rules)
  vocab_path = vocab_path or meta.get('vocab_path')
  if not vocab_path:
    raise ValueError(f'{checkpoint} records no vocabulary; pass vocab_path')
  sp = distill_set.Tokenizer(vocab_path)
  ctx, rows = data.context(), data.rows(split)
  make_input = ctx.teacher_input if template == 'teacher' else ctx.student_input
  key = ctx.teacher_answer_key if template == 'teacher' else ctx.student_answer_key
  inputs = [sp.encode(make_input(r['input'])) + [EOS_ID] for r in rows]
  length = -(-max(map(len, inputs)) // 8) * 8
  out = []
  for first in range(0, len(rows), batch_size):
    enc = np.zeros((batch_size, length), np.int32)
    for i, ids in enumerate(inputs[first:first + batch_size]):
      enc[i, :len(ids)] = ids
    tokens = np.asarray(generate(config, params, enc, max_length))
    for i, (row, ids) in enumerate(zip(rows[first:first + batch_size], tokens.tolist())):
      count = ids.index(EOS_ID) + 1 if EOS_ID in ids else len(ids)
      text = sp.decode(ids)
      out.append(Answer(row['id'], text, key(text), ctx.student_answer_key(row['answer']),
                        count, len(inputs[first + i])))
  return out


def accuracy(results: list) -> float:
  """Percent correct."""
  return 100.0 * sum(a.correct for a in results) / max(len(results), 1)


def agreement(first: list, second: list) -> float:
  """Percent of rows where two sets of answers to the same rows give the same answer."""
  if [a.id for a in first] != [a.id for a in second]:
    raise ValueError('agreement: the two answer lists are not for the same rows')
  return 100.0 * sum(a.key == b.key for a, b in zip(first, second)) / max(len(first), 1)
