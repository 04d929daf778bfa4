"""Tests of dssb.data.metrics: exact match and the safe SVAMP equation metric."""

import builtins
import math

import pytest

from dssb.data import metrics


def test_equation_values():
  assert metrics.equations_equal('( 84.0 / 2.0 )', '(84/2)')
  assert metrics.equations_equal('( 10.0 - ( 6.0 + 3.0 ) )', '10 - 6 - 3')
  assert metrics.equations_equal('-3 + 5', '(2)')
  assert metrics.equations_equal('0.1 + 0.2', '0.3')  # Round-off only.
  assert not metrics.equations_equal('( 84.0 / 2.0 )', '(84*2)')
  assert metrics.safe_eval('( ( 17.0 + 15.0 ) + 2.0 )') == 34.0
  assert metrics.safe_eval('7 / 2') == 3.5


@pytest.mark.parametrize('bad', [
    '(1 / 0)', '( 5.0 / ( 2.0 - 2.0 ) )', '2 ** 3', '1e3', '(1 + 2', '1 + 2)',
    '', ' ', 'x + 1', '(175, 5)', '1 2', 'abs(-1)', '3 % 2', '1 // 2',
    "__import__('os').system('touch /tmp/dssb_pwned')",
    '(' * 5000 + '1' + ')' * 5000, '9' * 400 + '.0 * ' + '9' * 400,
])
def test_not_arithmetic_is_wrong(bad):
  assert metrics.safe_eval(bad) is None
  assert metrics.equation_accuracy(['( 1.0 + 1.0 )'], [bad]) == {'accuracy': 0}


def test_nothing_is_executed(monkeypatch):
  def forbidden(*args, **kwargs):
    raise AssertionError('code was executed')
  for name in ('eval', 'exec', 'compile'):
    monkeypatch.setattr(builtins, name, forbidden)
  preds = ["__import__('os').system('echo hi')", '(2 + 2)', 'open("/etc/x")']
  assert metrics.equation_accuracy(['4', '4', '4'], preds) == {'accuracy': pytest.approx(100 / 3)}


def test_equation_accuracy_in_percent():
  targets = ['( 84.0 / 2.0 )', '( 1.0 / 0.0 )', '( 3.0 * 2.0 )', '( 1.0 )']
  preds = ['(84/2)', '(1/0)', '(6)', 'one']
  # A gold division by zero matches nothing, not even itself.
  assert metrics.equation_accuracy(targets, preds) == {'accuracy': 50.0}


def test_exact_match():
  assert metrics.exact_match(['a', 'b', 'c', 'd'], ['a', 'b ', 'C', 'd']) == {'accuracy': 50.0}
  assert math.isnan(metrics.exact_match([], [])['accuracy'])
  with pytest.raises(ValueError):
    metrics.exact_match(['a'], [])


def test_metric_fns():
  assert metrics.metric_fns('svamp') == [metrics.equation_accuracy]
  for d in ('cqa', 'esnli', 'anli1'):
    assert metrics.metric_fns(d) == [metrics.exact_match]
