"""Majority votes over parsed labels: self-consistency within a teacher, agreement across teachers.

Labels are compared as answers, not strings: SVAMP equations by their value ("(3 + 4)" and
"(4 + 3)" are one answer), the other datasets by the label string. Failed parses do not vote.
Ties go to the answer that appeared first, so a vote is deterministic.
"""

import collections
import dataclasses
from typing import Optional, Sequence

from dssb.data import metrics


def answer_key(dataset: str, label: str) -> Optional[str]:
  """What two labels must share to be the same answer (None: not an answer)."""
  if dataset == 'svamp':
    value = metrics.safe_eval(label)
    return None if value is None else repr(round(value, 6) + 0.0)  # + 0.0: -0.0 is 0.0
  return label


@dataclasses.dataclass(frozen=True)
class Vote:
  winner: Optional[int]   # index of the first voter for the winning answer; None: no votes
  votes: int              # voters for the winning answer
  voters: int             # all voters, failed parses included
  counts: dict            # {answer key: votes}

  @property
  def agreement(self) -> float:
    return self.votes / self.voters if self.voters else 0.0


def majority(dataset: str, labels: Sequence[Optional[str]]) -> Vote:
  """Votes over labels (None for a failed parse)."""
  keys = [answer_key(dataset, l) if l is not None else None for l in labels]
  counts = collections.Counter(k for k in keys if k is not None)
  if not counts:
    return Vote(None, 0, len(labels), {})
  first = {k: keys.index(k) for k in counts}
  best = max(counts, key=lambda k: (counts[k], -first[k]))
  return Vote(first[best], counts[best], len(labels), dict(counts))


def is_correct(dataset: str, label: str, gold: str) -> bool:
  """The paper's metric on one example."""
  if dataset == 'svamp':
    return metrics.equations_equal(label, gold)
  return label == gold
