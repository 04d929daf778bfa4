"""Heuristic labeling functions: plain Python over one example, registered by name per dataset.

A labeling function reads the dict dssb.review.sources.example_view makes (input, candidates,
rationale, and question for CQA or premise and hypothesis for NLI) and returns one of the
candidates, or None to abstain. It is cheap, noisy and narrow on purpose: Snorkel's label model
(dssb.review.combine) learns how far to trust each from their agreements, without gold.

Register one with `@labeling_function('cqa')`; `registered(dataset)` lists them. The NLI cues
are the annotation artifacts SNLI is known for (Gururangan et al. 2018: negation and "sleeping"
for contradiction; purpose and sentiment words for neutral; near-copies for entailment).
"""

import re
from typing import Callable, Optional

from dssb.data import sources as data_sources

# dataset -> {name: fn(example) -> label or None}
LABELING_FUNCTIONS: dict = {}

_STOP = frozenset(
    'a an the of to in on at for with by from and or but is are was were be been being do does '
    'did what which who whom where when why how that this these those it its they them their you '
    'your he she his her we our i me my as if than then so such can could would should will may '
    'might must have has had not no there here into out up down over under about some any'.split())
_NEGATION = frozenset('not no never nobody nothing none nowhere cannot'.split())
_CONTRADICTION_CUES = frozenset('sleeping asleep sleeps nobody alone naked cat'.split())
_NEUTRAL_CUES = frozenset('because first friends vacation tall sad competition favorite '
                          'trying wants waiting birthday married brothers sisters win'.split())


def labeling_function(*datasets: str):
  """Registers fn(example) -> label | None for `datasets` under fn's name."""
  def register(fn: Callable):
    for dataset in datasets:
      data_sources.check_dataset(dataset)
      table = LABELING_FUNCTIONS.setdefault(dataset, {})
      if fn.__name__ in table and table[fn.__name__] is not fn:
        raise ValueError(f'labeling function {fn.__name__!r} is already registered for {dataset}')
      table[fn.__name__] = fn
    return fn
  return register


def registered(dataset: str) -> dict:
  """{name: fn} of the labeling functions of `dataset`, in registration order."""
  data_sources.check_dataset(dataset)
  return dict(LABELING_FUNCTIONS.get(dataset, {}))


def words(text: str) -> list:
  return re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower())


def _stem(word: str) -> str:
  return word[:5]  # crude: "arrival"/"arrive", "cards"/"card" share a stem


def content_stems(text: str) -> set:
  return {_stem(w) for w in words(text) if w not in _STOP and len(w) > 2}


def _unique_best(scores: dict) -> Optional[str]:
  """The key with the highest positive score, if no other shares it."""
  if not scores:
    return None
  best = max(scores.values())
  winners = [k for k, v in scores.items() if v == best]
  return winners[0] if best > 0 and len(winners) == 1 else None


# --- CommonsenseQA ----------------------------------------------------------------------------


@labeling_function('cqa')
def question_overlap(ex: dict) -> Optional[str]:
  """The choice sharing the most content words with the question (abstains on a tie or none)."""
  question = content_stems(ex['question'])
  return _unique_best({c: len(content_stems(c) & question) for c in ex['candidates']})


def _mentions(rationale: Optional[str], candidates) -> dict:
  text = ' ' + ' '.join(words(rationale or '')) + ' '
  return {c: text.count(' ' + ' '.join(words(c)) + ' ') for c in candidates if words(c)}


@labeling_function('cqa')
def rationale_names_one_choice(ex: dict) -> Optional[str]:
  """The only choice the teacher's rationale names (rationale-label consistency)."""
  named = [c for c, n in _mentions(ex.get('rationale'), ex['candidates']).items() if n]
  return named[0] if len(named) == 1 else None


@labeling_function('cqa')
def rationale_most_mentions(ex: dict) -> Optional[str]:
  """The choice the teacher's rationale names most often (abstains on a tie or none)."""
  return _unique_best(_mentions(ex.get('rationale'), ex['candidates']))


# --- NLI (e-SNLI, ANLI) -----------------------------------------------------------------------


def _hypothesis_overlap(ex: dict) -> float:
  hypothesis = content_stems(ex['hypothesis'])
  return len(hypothesis & content_stems(ex['premise'])) / len(hypothesis) if hypothesis else 0.0


def _negated(text: str) -> bool:
  return any(w in _NEGATION or w.endswith("n't") for w in words(text))


@labeling_function('esnli', 'anli1')
def negation_contradiction(ex: dict) -> Optional[str]:
  """A negation in the hypothesis that the premise lacks -> contradiction."""
  if _negated(ex['hypothesis']) and not _negated(ex['premise']):
    return 'contradiction'
  return None


@labeling_function('esnli', 'anli1')
def high_overlap_entailment(ex: dict) -> Optional[str]:
  """Nearly every content word of the hypothesis is in the premise -> entailment."""
  if not _negated(ex['hypothesis']) and _hypothesis_overlap(ex) >= 0.9:
    return 'entailment'
  return None


@labeling_function('esnli', 'anli1')
def contradiction_cue_words(ex: dict) -> Optional[str]:
  """Hypothesis words SNLI annotators used to contradict ("sleeping", "nobody") -> contradiction."""
  hypothesis, premise = set(words(ex['hypothesis'])), set(words(ex['premise']))
  return 'contradiction' if (hypothesis - premise) & _CONTRADICTION_CUES else None


@labeling_function('esnli', 'anli1')
def neutral_cue_words(ex: dict) -> Optional[str]:
  """Purpose and sentiment words new in the hypothesis ("because", "friends") -> neutral."""
  hypothesis, premise = set(words(ex['hypothesis'])), set(words(ex['premise']))
  return 'neutral' if (hypothesis - premise) & _NEUTRAL_CUES else None


@labeling_function('esnli', 'anli1')
def low_overlap_neutral(ex: dict) -> Optional[str]:
  """A hypothesis sharing almost nothing with the premise adds facts -> neutral."""
  hypothesis = content_stems(ex['hypothesis'])
  if len(hypothesis) >= 3 and _hypothesis_overlap(ex) <= 0.2 and not _negated(ex['hypothesis']):
    return 'neutral'
  return None
