"""experiments/bench_paper_settings.py's bookkeeping of its processes: the per-round figures that
each child writes become medians, ratios and per-process peak RSS; the committed result renders.

The children themselves run T5 v1.1-small at 1024/256 tokens (minutes each), so no test starts
one; the figures here stand in for what they write (the keys of train_contender's result).
"""

import json
import os
import statistics
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'experiments'))

bench = pytest.importorskip('bench_paper_settings')


def _rounds():
  """Three rounds; contender i's round r takes (i + 1) * (r + 2) seconds for 64 examples and
  peaks at 1000 * (i + 1) + r MiB."""
  rounds = []
  for r in range(3):
    figures = {}
    for i, name in enumerate(bench.TRAIN_CONTENDERS):
      seconds = (i + 1) * (r + 2)
      figures[name] = {
          'examples': 64, 'non_pad_tokens': 6400, 'seconds': seconds,
          'examples_per_s': 64 / seconds, 'tokens_per_s': 6400 / seconds,
          'token_share_of_slots': 0.5, 'warmup_seconds': 10.0 + r,
          'peak_rss_mib': 1000.0 * (i + 1) + r,
          'packed_shape': {'rows': 16, 'lengths': {}, 'steps': 1}}
      if name != 'official':
        figures[name].update(compiled_shapes=1, compile_seconds=50.0 / (r + 1))
    rounds.append(figures)
  return rounds


def test_train_summary_takes_medians_and_each_round_s_peak():
  rounds = _rounds()
  out = bench.summarize_train(rounds)
  official = len(bench.TRAIN_CONTENDERS)  # the last contender, so the slowest
  for i, name in enumerate(bench.TRAIN_CONTENDERS):
    c = out['contenders'][name]
    assert c['median_examples_per_s'] == statistics.median(64 / ((i + 1) * (r + 2))
                                                           for r in range(3))
    assert c['median_ratio_to_official'] == pytest.approx(official / (i + 1))
    assert c['peak_rss_mib_per_round'] == [1000.0 * (i + 1) + r for r in range(3)]
    assert c['warmup_seconds_per_round'] == [10.0, 11.0, 12.0]
    assert ('compile_seconds_per_round' in c) == (name != 'official')
  assert out['contenders']['dssb_fixed']['compile_seconds'] == 50.0  # round 0's, a cold cache


def test_largest_process_is_the_largest_round_of_any_part():
  result = {'train': bench.summarize_train(_rounds()), 'evaluation': {'peak_rss_mib': 4500.0}}
  mem = bench.peak_rss_by_process(result, {'peak_rss_mib': 3000.0})
  assert mem['largest_child'] == 'train official'
  assert mem['children']['train official'] == 5002.0  # its third round
  assert mem['children']['evaluation'] == 4500.0 and mem['children']['setup'] == 3000.0
  assert mem['largest_process'] == max(mem['parent'], 5002.0)
  assert mem['parent_plus_largest_child'] == mem['parent'] + 5002.0


def test_the_committed_result_renders_with_its_processes_peaks():
  with open(os.path.join(REPO, 'results', 'perf', 'paper_settings.json')) as f:
    result = json.load(f)
  lines = bench.summary_lines(result)
  assert any(line.startswith('dssb_packed') for line in lines)
  largest = result['peak_rss_mib']['largest_child']
  assert any(line.startswith('Largest process') and largest in line for line in lines)


@pytest.mark.parametrize('name', ['paper_settings', 'paper_settings_default_malloc'])
def test_committed_results_render_to_their_markdown(name, tmp_path, monkeypatch, capsys):
  """--render writes each committed JSON's .md again, byte for byte: the older record (one
  process, one batch decoding at a time) too."""
  src = os.path.join(REPO, 'results', 'perf', name)
  out = tmp_path / f'{name}.json'
  out.write_bytes(open(src + '.json', 'rb').read())
  monkeypatch.setattr(sys, 'argv', ['bench_paper_settings.py', '--render', '--out', str(out)])
  bench.main()
  capsys.readouterr()
  assert (tmp_path / f'{name}.md').read_text() == open(src + '.md').read()
