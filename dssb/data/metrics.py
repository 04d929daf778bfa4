"""Metrics of the paper (Sec. 4): label accuracy as seqio metric functions.

CQA, e-SNLI and ANLI: exact string match of the predicted label. SVAMP: the predicted and gold
equations are equal when their VALUES are equal. The official code calls Python eval() on model
output; here `safe_eval` parses only numbers, + - * /, unary signs and parentheses, and never
executes anything: any other string, a division by zero or a non-finite value counts as wrong.

Metric functions follow seqio: `fn(targets, predictions) -> {'accuracy': pct}`, in percent like the
paper's tables (the official code prints fractions).
"""

import math
import re
from typing import Sequence

_TOKEN = re.compile(r'\s*(?:(\d+(?:\.\d*)?|\.\d+)|([-+*/()]))')
_MAX_CHARS = 1000
_MAX_DEPTH = 100
# Values closer than this (relative) are equal; the official `==` on floats differs only for
# round-off (e.g. 0.1 + 0.2 vs 0.3).
_REL_TOL = 1e-9
_ABS_TOL = 1e-9


class _Parser:
  """Recursive descent over expr := term (('+'|'-') term)*, etc."""

  def __init__(self, tokens):
    self.tokens, self.i, self.depth = tokens, 0, 0

  def peek(self):
    return self.tokens[self.i] if self.i < len(self.tokens) else None

  def take(self):
    tok = self.peek()
    self.i += 1
    return tok

  def expr(self):
    value = self.term()
    while self.peek() in ('+', '-'):
      value = value + self.term() if self.take() == '+' else value - self.term()
    return value

  def term(self):
    value = self.factor()
    while self.peek() in ('*', '/'):
      if self.take() == '*':
        value *= self.factor()
      else:
        value /= self.factor()  # ZeroDivisionError is caught by safe_eval.
    return value

  def factor(self):
    self.depth += 1
    if self.depth > _MAX_DEPTH:
      raise ValueError('too deep')
    tok = self.take()
    if tok in ('+', '-'):
      value = self.factor()
      value = -value if tok == '-' else value
    elif tok == '(':
      value = self.expr()
      if self.take() != ')':
        raise ValueError('unbalanced')
    elif isinstance(tok, float):
      value = tok
    else:
      raise ValueError(f'unexpected {tok!r}')
    self.depth -= 1
    return value


def safe_eval(expression: str) -> float | None:
  """Value of an arithmetic expression, or None if it is not one."""
  if not isinstance(expression, str) or len(expression) > _MAX_CHARS:
    return None
  tokens, pos, text = [], 0, expression.rstrip()
  while pos < len(text):
    m = _TOKEN.match(text, pos)
    if not m:
      return None
    tokens.append(float(m.group(1)) if m.group(1) else m.group(2))
    pos = m.end()
  if not tokens:
    return None
  parser = _Parser(tokens)
  try:
    value = parser.expr()
  except (ValueError, ZeroDivisionError, OverflowError):
    return None
  if parser.i != len(tokens) or not math.isfinite(value):
    return None
  return value


def equations_equal(a: str, b: str) -> bool:
  """True iff both are arithmetic expressions with (nearly) equal values."""
  va, vb = safe_eval(a), safe_eval(b)
  if va is None or vb is None:
    return False
  return math.isclose(va, vb, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)


def _percent(hits: Sequence[bool]) -> dict[str, float]:
  return {'accuracy': 100.0 * sum(hits) / len(hits) if hits else float('nan')}


def exact_match(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  """Percent of predictions equal to their target string (CQA, e-SNLI, ANLI)."""
  _check(targets, predictions)
  return _percent([t == p for t, p in zip(targets, predictions)])


def equation_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  """Percent of predicted equations whose value equals the target's (SVAMP)."""
  _check(targets, predictions)
  return _percent([equations_equal(t, p) for t, p in zip(targets, predictions)])


def _check(targets, predictions):
  if len(targets) != len(predictions):
    raise ValueError(f'{len(targets)} targets but {len(predictions)} predictions.')


def metric_fns(dataset: str):
  """The paper's metric for a dataset, as a list of seqio metric functions."""
  if dataset == 'svamp':
    return [equation_accuracy]
  if dataset in ('cqa', 'esnli', 'anli1'):
    return [exact_match]
  raise ValueError(f'Unknown dataset {dataset!r}.')
