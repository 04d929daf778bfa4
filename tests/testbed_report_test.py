"""results/testbed's renderer on hand-made summaries: the claims table with computed verdicts,
tables per claim, the tuning runs kept out of the claims, the same bytes twice."""

import json
import os

from dssb.testbed import report


def _run(accuracy, seed, sweep='testbed_one_eighth', seconds=12.0, **settings):
  return {'sweep': sweep, 'settings': {**settings, 'SEED': seed},
          'command': f'python -m dssb.train --gin.SEED={seed} {sorted(settings.items())}',
          'results': {'last': {'step': 600, 'test': {'accuracy': accuracy}},
                      'best_on_validation': {'score': accuracy + 1, 'step': 600}},
          'seconds': seconds}


def _summaries():
  runs = []
  for seed in range(3):
    for fraction, std, sbs in ((0.125, 10, 40), (1.0, 30, 60)):
      runs.append(_run(std + seed, seed, RECIPE='standard', FRACTION=fraction))
      runs.append(_run(sbs + 2 * seed, seed, RECIPE='step_by_step', FRACTION=fraction))
    runs.append(_run(70 - 5 * seed, seed, sweep='testbed_ablation',
                     RECIPE='single_task_rationale_first', FRACTION=1.0))
  # A tuning run: standard, no RECIPE axis; it must not enter any claim.
  runs.append(_run(99, 0, sweep='testbed_tune', LEARNING_RATE=0.003, TRAIN_STEPS=600))
  return runs


def test_render_writes_the_claims_with_verdicts(tmp_path):
  written = report.render(_summaries(), str(tmp_path))
  names = sorted(os.path.basename(p) for p in written)
  assert names == sorted(['README.md', 'report.json'] + [
      f'{c}.png' for c in ('one_eighth', 'teacher_error', 'ablation', 'sizes', 'sizes_unlabeled',
                            'unlabeled')])
  text = (tmp_path / 'README.md').read_text()
  # 12.5% step-by-step (42.0 ± 1.2) vs 100% standard (31.0 ± 0.6): +11.0 ± 1.3, holds.
  assert ('| one_eighth | step-by-step, 12.5% of the data > standard finetuning, 100% | '
          '42.0 ± 1.2 (n=3) | 31.0 ± 0.6 (n=3) | +11.0 ± 1.3 | holds |') in text
  # Single-task 65.0 ± 2.9 vs multi-task 62.0 ± 1.2: within noise.
  assert ('| ablation | multi-task (step-by-step) > single-task rationale then label | '
          '62.0 ± 1.2 (n=3) | 65.0 ± 2.9 (n=3) | -3.0 ± 3.1 | within noise |') in text
  assert ('| teacher_error | step-by-step > standard distillation, teacher 0% wrong | not run'
          in text)
  assert '| 12.5% | 11.0 ± 0.6 (n=3) | 42.0 ± 1.2 (n=3) |' in text
  assert '| 0.003 | 600 | 100.0 |' in text  # the tuning table: validation, not test
  assert 'Sweep: `python -m dssb.sweep --gin_file=gin/testbed/one_eighth.gin' in text
  assert f'fixed in commit `{report.PREREGISTRATION_COMMIT}`' in text
  data = json.loads((tmp_path / 'report.json').read_text())
  one_eighth = data['claims'][0]['comparisons'][0]
  assert one_eighth['verdict'] == 'holds' and one_eighth['b']['n'] == 3
  assert data['cost']['runs'] == 15 and data['cost']['median_seconds'] == 12.0
  for png in (p for p in written if p.endswith('.png')):
    with open(png, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_a_reversed_claim_is_reported_as_reversed(tmp_path):
  runs = [_run(50 + s, s, RECIPE='standard', FRACTION=1.0) for s in range(3)]
  runs += [_run(20 + s, s, RECIPE='step_by_step', FRACTION=0.125) for s in range(3)]
  report.render(runs, str(tmp_path))
  text = (tmp_path / 'README.md').read_text()
  assert '| -30.0 ± 0.8 | **reversed** |' in text


def test_same_summaries_same_bytes(tmp_path):
  first = report.render(_summaries(), str(tmp_path / 'a'))
  second = report.render(list(reversed(_summaries())), str(tmp_path / 'b'))
  for a, b in zip(first, second):
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
      assert fa.read() == fb.read(), os.path.basename(a)
