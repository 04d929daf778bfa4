"""The distillation set on disk, and the student's examples made from it.

A distillation set is a JSON-lines file, one line per unlabeled input in input order, written by
`dssb.context_distill.sample` (the teacher answering with its context), and a meta file beside it
(`PATH.meta.json`: teacher, sampling settings, counts) that says how it was made:

  {"id": "29+57", "input": " Question: 2 9 + 5 7", "gold": "8 6",
   "samples": [{"text": "2 9 + 5 7 , C: 0 => ... Final answer: #8 6#", "ids": [...],
                "answer": "8 6"}, ...]}

`ids` are the teacher's sampled tokens, EOS included when it was reached; `answer` is f(text), or
null when the completion has no answer (dropped from training and counted, as the public code
skips samples its regex cannot read). `gold` is kept for reporting only (how often the teacher is
right); training never reads it.

Soft targets need, for each token of the student's target f(y), the position in y where the
teacher predicted that token: `answer_positions` finds the answer's tokens in the teacher's
tokens (their last occurrence). The student's EOS is matched to the teacher's EOS when the
answer ends the completion, and left without a teacher position otherwise (it is then trained
on the hard EOS target).
"""

import json
from typing import Callable, Iterator, Optional

from dssb import paths

EOS_ID = 1


class Tokenizer:
  """SentencePiece as the tasks use it: ids the model has beyond the vocabulary (a model's
  vocab_size is rounded up) decode as unknown, as seqio decodes them."""

  def __init__(self, vocab_path: str):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    self.sp = spm.SentencePieceProcessor(model_proto=paths.path(vocab_path).read_bytes())
    self.size, self.unk_id = self.sp.get_piece_size(), self.sp.unk_id()

  def encode(self, text: str) -> list:
    return self.sp.encode(text)

  def decode(self, ids) -> str:
    """Text of ids up to the first EOS (excluded)."""
    ids = list(ids)
    ids = ids[:ids.index(EOS_ID)] if EOS_ID in ids else ids
    return self.sp.decode([i if i < self.size else self.unk_id for i in ids])


def meta_path(path: str) -> str:
  return str(path) + '.meta.json'


def read_meta(path: str) -> Optional[dict]:
  meta = paths.path(meta_path(path))
  return json.loads(meta.read_text()) if meta.exists() else None


def read_records(path: str) -> Iterator[dict]:
  """The records of a distillation set; a malformed line is an error naming file and line."""
  with paths.path(path).open() as f:
    for number, line in enumerate(f, 1):
      if not line.endswith('\n'):
        raise ValueError(f'{path}:{number}: incomplete last line (the sampling was stopped '
                         'while writing); rerun the sampling command to finish the set')
      try:
        record = json.loads(line)
        for sample in record['samples']:
          sample['ids'], sample['text'], sample['answer']  # pylint: disable=pointless-statement
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f'{path}:{number}: not a distillation record ({e})') from None
      yield record


def answer_positions(teacher_ids: list, answer_ids: list) -> list:
  """1-based positions in `teacher_ids` of each answer token, then of EOS; 0 where none.

  The answer is looked for from the end (a scratchpad may repeat its digits earlier). If the
  tokens do not appear (a sample whose tokens are not the canonical tokenisation of its answer),
  every position is 0 and the example trains on hard targets only.
  """
  n = len(answer_ids)
  for start in range(len(teacher_ids) - n, -1, -1):
    if list(teacher_ids[start:start + n]) == list(answer_ids):
      after = start + n
      eos = after + 1 if after < len(teacher_ids) and teacher_ids[after] == EOS_ID else 0
      return [start + 1 + i for i in range(n)] + [eos]
  return [0] * (n + 1)


def training_examples(path: str, encode: Callable[[str], list], context) -> list:
  """The student's train features: one example per teacher sample that has an answer.

  Args:
    path: the distillation set (JSON lines).
    encode: text -> token ids without EOS, in the student task's vocabulary.
    context: the templates.Context the set was sampled with (the student's template).

  Returns:
    Dicts with inputs (student template), targets (the extracted answer), teacher_inputs
    (teacher template), teacher_targets (the sampled ids) and teacher_positions (see
    answer_positions; one per target token, EOS included).
  """
  meta = read_meta(path) or {}
  if meta.get('context') not in (None, context.name):
    raise ValueError(f'{path} was sampled with context {meta["context"]!r}, not '
                     f'{context.name!r}')
  out = []
  for record in read_records(path):
    for sample in record['samples']:
      if sample['answer'] is None:
        continue
      out.append({'inputs': context.student_input(record['input']),
                  'targets': sample['answer'],
                  'teacher_inputs': context.teacher_input(record['input']),
                  'teacher_targets': list(sample['ids']),
                  'teacher_positions': answer_positions(sample['ids'],
                                                        encode(sample['answer']))})
  if not out:
    raise ValueError(f'{path}: no teacher sample has an answer; nothing to distil')
  return out


def summarize(path: str, encode: Optional[Callable[[str], list]] = None) -> dict:
  """Counts of a distillation set: inputs, samples, answers, teacher accuracy against gold,
  and (with `encode`) how many answers align token by token with the teacher's sample."""
  inputs = samples = answered = correct = aligned = 0
  for record in read_records(path):
    inputs += 1
    for sample in record['samples']:
      samples += 1
      if sample['answer'] is None:
        continue
      answered += 1
      correct += sample['answer'] == record.get('gold')
      if encode is not None:
        aligned += answer_positions(sample['ids'], encode(sample['answer']))[0] > 0
  out = {'inputs': inputs, 'samples': samples, 'answered': answered,
         'unanswered': samples - answered,
         'teacher_accuracy_on_samples': 100.0 * correct / max(samples, 1)}
  if encode is not None:
    out['aligned_for_soft_targets'] = aligned
  return out
