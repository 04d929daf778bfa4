"""Teacher completions -> (rationale, label), as the official code parses them.

Paper Sec. 3.1: the teacher LLM answers each input with few-shot chain of thought; its output is
split into a rationale and a label. The released PaLM completions run on past the answer into
invented next examples ("Q: ..." for CQA/SVAMP, "Premise: ..." for the NLI sets), which the parsers
cut off:

  CQA    "{rationale} So the answer is (c) {choice}." [+ "Q: ..."]
  SVAMP  "{rationale} The answer is ({equation})."    [+ "Q: ..."]
  e-SNLI "{rationale}\\nAnswer: {label}"             [+ "Premise: ..."]
  ANLI   "{rationale} So the answer is {label}."      [+ "Premise: ..."]

On every completion where the official parser succeeds these parsers return the same strings,
including its failure values (label ' ' or '', and SVAMP's rationale ' ' when the answer marker is
missing or repeated; ANLI drops the last character of the label). Where the official CQA parser
would crash (no marker, or several), the text before the first marker is the rationale and the
label is ' '.

Every parse is also classified, so failures can be counted and, if asked, dropped (the official
policy keeps them):
  empty_label       the label is empty or blank (no answer found);
  label_not_in_set  a non-blank label outside the label set (CQA: the example's five choices;
                    SVAMP: a valid arithmetic expression; NLI: entailment / neutral /
                    contradiction);
  truncated         a failed parse of a completion that never reached an invented next example:
                    the output stopped before a full answer (token budget), e.g. "... The answer
                    is (9 + 6";
  no_answer_marker  the answer marker is missing (truncated, or off-format such as ANLI "..., so
                    the answer is entailment").
The same parsers serve any teacher laid out like the PaLM files (see sources).
"""

import dataclasses
import re
from typing import Iterable, Sequence

from dssb.data import metrics
from dssb.data import sources

FAILURE_KINDS = ('empty_label', 'label_not_in_set')
PARSE_FAILURE_POLICIES = ('keep', 'drop')


@dataclasses.dataclass(frozen=True)
class Parsed:
  rationale: str
  label: str
  failure: str = ''  # '' (ok) or one of FAILURE_KINDS.
  truncated: bool = False
  no_answer_marker: bool = False


def _cqa(text: str) -> tuple[str, str, bool, bool]:
  head = text.split('Q:')[0].rstrip()
  parts = head.split('So the answer is', 1)
  if len(parts) < 2:
    return head, ' ', False, 'Q:' in text
  rationale, rest = parts[0].rstrip(), parts[1]
  pieces = re.split(r'\(.\)', rest)
  label = pieces[1].strip() if len(pieces) > 1 else ''
  if not label:
    label = ' '
  elif label[-1] == '.':
    label = label[:-1]
  return rationale, label, True, 'Q:' in text


def _svamp(text: str) -> tuple[str, str, bool, bool]:
  head = text.split('Q:')[0].rstrip()
  parts = head.split('The answer is')
  if len(parts) != 2:
    return ' ', ' ', len(parts) > 1, 'Q:' in text
  m = re.search(r'\(.*\)', parts[1])
  return parts[0].rstrip(), m.group(0) if m else ' ', True, 'Q:' in text


def _esnli(text: str) -> tuple[str, str, bool, bool]:
  rationale = text.split('Answer:')[0].rstrip()
  parts = text.split('Answer: ')
  label = parts[1].split('Premise')[0].rstrip() if len(parts) > 1 else ' '
  return rationale, label, 'Answer:' in text, 'Premise' in text


def _anli(text: str) -> tuple[str, str, bool, bool]:
  parts = text.split('Premise:')[0].rstrip().split('So the answer is')
  rationale, label = parts if len(parts) == 2 else ('', '')
  return (rationale.rstrip(), label.lstrip()[:-1], len(parts) > 1, 'Premise:' in text)


_PARSERS = {'cqa': _cqa, 'svamp': _svamp, 'esnli': _esnli, 'anli1': _anli}
# Where an invented next example starts (what the parsers cut at).
RUN_ON_MARKERS = {'cqa': 'Q:', 'svamp': 'Q:', 'esnli': 'Premise', 'anli1': 'Premise:'}


def answer_part(dataset: str, text: str) -> str:
  """The completion up to its invented next example: rationale and answer sentence."""
  sources.check_dataset(dataset)
  return text.split(RUN_ON_MARKERS[dataset])[0].strip()


def _in_label_set(dataset: str, label: str, choices: Sequence[str] | None) -> bool:
  if dataset == 'cqa':
    return choices is None or label in choices
  if dataset == 'svamp':
    return metrics.safe_eval(label) is not None
  return label in sources.NLI_LABELS


def parse(dataset: str, text: str, choices: Sequence[str] | None = None) -> Parsed:
  """Parses one completion; `choices` is the CQA label set (None: unchecked)."""
  sources.check_dataset(dataset)
  rationale, label, marker, run_on = _PARSERS[dataset](text)
  if not label.strip():
    failure = 'empty_label'
  elif not _in_label_set(dataset, label, choices):
    failure = 'label_not_in_set'
  else:
    failure = ''
  return Parsed(rationale, label, failure, truncated=bool(failure) and not run_on,
                no_answer_marker=not marker)


def parse_all(dataset: str, texts: Sequence[str],
              choices: Iterable[Sequence[str] | None] | None = None) -> list[Parsed]:
  """Parses a list of completions (`choices` aligned with `texts` for CQA)."""
  choices = list(choices) if choices is not None else [None] * len(texts)
  return [parse(dataset, t, c) for t, c in zip(texts, choices)]


def failure_report(parsed: Sequence[Parsed]) -> dict[str, int]:
  """Counts: n, ok, empty_label, label_not_in_set, truncated, no_answer_marker."""
  report = {'n': len(parsed), 'ok': sum(not p.failure for p in parsed)}
  for kind in FAILURE_KINDS:
    report[kind] = sum(p.failure == kind for p in parsed)
  report['truncated'] = sum(p.truncated for p in parsed)
  report['no_answer_marker'] = sum(p.no_answer_marker for p in parsed)
  return report
