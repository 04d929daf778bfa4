"""experiments/bench_paper_settings.py's bookkeeping of its processes: the per-round figures that
each child writes become medians, ratios and per-process peak RSS; the committed result renders;
and the pure parts of its evaluation module and of profile_decode_step.py.

The children themselves run T5 v1.1-small at 1024/256 tokens (minutes each), so no test starts
one; the figures here stand in for what they write (the keys of train_contender's result).
"""

import json
import os
import statistics
import sys

import numpy as np
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


def test_eval_slots_sort_into_buckets_and_official_pads_in_order():
  """paper_settings_eval.eval_input_slots: dssb's batches are the inputs sorted longest first,
  each padded to its bucket; the official batches keep the order and pad to their longest row."""
  evaluation = pytest.importorskip('paper_settings_eval')
  from dssb import input_pipeline  # pylint: disable=g-import-not-at-top
  batch = evaluation.BATCH
  # Batch 0 in order: one 100-token row among 3-token rows; batch 1: 3-token rows and one of 9.
  lengths = [100] + [3] * (batch - 1) + [9] + [3] * (batch - 1)
  examples = input_pipeline.Examples({'inputs': [np.ones(n, np.int32) for n in lengths]}, {}, {})
  slots = evaluation.eval_input_slots(examples)
  bucket_100 = input_pipeline.bucket_length(100, 1024, input_pipeline.DEFAULT_LENGTH_BUCKETS)
  assert bucket_100 >= 100
  # Sorted: the 100 and the 9 come first together; the second batch holds only 3-token rows.
  assert slots['dssb_bucket_lengths'] == [bucket_100, 8]
  assert slots['dssb_slots'] == batch * (bucket_100 + 8)
  assert slots['official_slots'] == batch * (100 + 9)
  assert slots['fixed_slots'] == 2 * batch * 1024
  assert slots['tokens'] == sum(lengths)


def test_decode_profile_splits_thread_time_by_kind():
  """profile_decode_step.by_kind: the largest YNNPACK fusion is the logits projection, the other
  matmuls, the attention's dots and the rest apart; no millisecond lost or counted twice."""
  profile = pytest.importorskip('profile_decode_step')
  step_ms = {'ynn_fusion.3': 12.0, 'ynn_fusion.7': 2.0, 'onednn_matmul': 1.5, 'dot.2': 3.0,
             'dot_general': 0.5, 'fusion.11': 0.75, 'reduce': 0.25}
  kinds = profile.by_kind(step_ms)
  assert kinds == {'logits projection': 12.0, 'other matmuls': 3.5, 'attention dots': 3.5,
                   'rest': 1.0}
  assert list(kinds.values()) == sorted(kinds.values(), reverse=True)  # largest first


def test_malloc_benchmark_refuses_too_few_steps_before_any_run(monkeypatch, capsys):
  """bench_malloc_settings.py times the passes after the first (which compiles): --steps 1 would
  run every setting's process for minutes and then fail on no timed step; it is refused first."""
  malloc = pytest.importorskip('bench_malloc_settings')
  monkeypatch.setattr(sys, 'argv', ['bench_malloc_settings.py', '--vocab', 'v.model',
                                    '--steps', '1'])
  with pytest.raises(SystemExit) as exit_info:
    malloc.parse_args()
  assert exit_info.value.code == 2
  assert '--steps 1: at least 2' in capsys.readouterr().err
  monkeypatch.setattr(sys, 'argv', ['bench_malloc_settings.py', '--vocab', 'v.model',
                                    '--steps', '2'])
  assert malloc.parse_args().steps == 2
