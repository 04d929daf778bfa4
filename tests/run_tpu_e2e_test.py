"""A pod job survives a preemption, end to end: `run_tpu.sh launch --watch` starts the tiny CPU
training detached on a fake TPU VM (tests/fake_gcloud.py: its worker is a folder here, the bucket
a local folder), the VM is preempted mid-run (the trainer SIGKILLed, the VM PREEMPTED), the
watcher deletes, recreates, sets up and relaunches it, and the run resumes from its checkpoint
and ends with the same losses and test metrics as an uninterrupted run of the same command."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import fake_gcloud

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINDINGS = ['TASK_FEATURE_LENGTHS={"inputs": 64, "targets": 16, "rationale_inputs": 64, '
            '"rationale_targets": 48}', 'BATCH_SIZE=8', 'train.log_every=1', 'train.eval_limit=8',
            'train.eval_batch_size=8', 'train.max_decode_length=8', 'TRAIN_STEPS=20',
            'EVAL_EVERY=20', 'train.checkpoint_every=5']
MODEL_DIR = 'gs://bkt/runs/e2e'


def _flags(model_dir):
  return ['--gin_file=gin/cpu/svamp_step_by_step.gin', f"--gin.MODEL_DIR='{model_dir}'",
          *[f'--gin.{b}' for b in BINDINGS]]


def _train_records(model_dir):
  """{step: train record}; a step logged twice would be a resume that repeated work."""
  out = {}
  with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      if 'split' not in record:
        assert record['step'] not in out, f"step {record['step']} logged twice"
        out[record['step']] = record
  return out


def _logged_step(model_dir):
  try:
    return max(_train_records(model_dir), default=0)
  except (OSError, ValueError):
    return 0


def _checkpoint_step(model_dir):
  """The newest finished checkpoint's step (unfinished orbax saves carry a suffix), or 0."""
  folder = os.path.join(model_dir, 'checkpoints')
  steps = [int(n) for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []
  return max(steps, default=0)


def _without_timings(value):
  if isinstance(value, dict):
    return {k: _without_timings(v) for k, v in value.items() if 'second' not in k}
  return value


@pytest.mark.slow
def test_a_preempted_pod_run_is_relaunched_and_ends_as_an_uninterrupted_one(dss_data_dir,
                                                                             tmp_path):
  root = tmp_path / 'cloud'
  env = fake_gcloud.install(root, workers=1, creating_polls=1,
                            venv=os.path.join(REPO, '.venv'))
  env.update(HOME=str(tmp_path / 'home'), PYTHONUNBUFFERED='1',
             DSSB_CACHE_DIR=str(tmp_path / 'cache'))  # the vocabulary, trained once
  os.makedirs(fake_gcloud.gcs(root, 'bkt'))
  os.symlink(dss_data_dir, fake_gcloud.gcs(root, 'gs://bkt/dss_data'))
  # The uninterrupted run of the same command, here (it also trains the cached vocabulary).
  baseline = str(tmp_path / 'baseline')
  proc = subprocess.run([sys.executable, '-m', 'dssb.train', *_flags(baseline)], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]

  model_dir = fake_gcloud.gcs(root, MODEL_DIR)
  with open(tmp_path / 'watch.log', 'w') as out:
    watcher = subprocess.Popen(
        ['bash', 'run_tpu.sh', 'launch', '--tpu', 'e2e', '--zone', 'us-central2-b',
         '--accelerator_type', 'v4-8', '--data', 'gs://bkt/dss_data', '--spot', '--watch',
         '--poll_seconds', '0.5', '--max_relaunches', '2', '--backoff_seconds', '1',
         '--log_copy_seconds', '2', '--', *_flags(MODEL_DIR)],
        cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
  try:
    deadline = time.time() + 600
    # Preempted past a finished checkpoint (an orbax step folder: all digits), with steps after
    # it logged (the work a preemption loses): SIGKILL, the VM PREEMPTED.
    while (_logged_step(model_dir) <= _checkpoint_step(model_dir) or
           _checkpoint_step(model_dir) < 5) and watcher.poll() is None:
      assert time.time() < deadline, 'the pod run did not reach a checkpoint'
      time.sleep(0.1)
    fake_gcloud.preempt(root)
    checkpoint_at = _checkpoint_step(model_dir)
    preempted_at = _logged_step(model_dir)
    assert watcher.wait(timeout=600) == 0, (tmp_path / 'watch.log').read_text()[-5000:]
  finally:
    if watcher.poll() is None:
      os.killpg(watcher.pid, signal.SIGKILL)
    fake_gcloud.kill_vm(root)
  events = (tmp_path / 'watch.log').read_text()
  assert events.count('the VM is PREEMPTED: deleting it') == 1 and 'relaunch 2/' not in events
  assert f'{MODEL_DIR}/results.json exists: the run is done' in events
  assert 5 <= checkpoint_at < preempted_at < 20
  with open(fake_gcloud.gcs(root, f'{MODEL_DIR}/logs/worker-0.log')) as f:
    worker_log = f.read()
  assert f'resumed from {fake_gcloud.gcs(root, MODEL_DIR)} at step' in worker_log, worker_log
  want, got = _train_records(baseline), _train_records(model_dir)
  assert sorted(got) == sorted(want) == list(range(1, 21))
  for step in want:
    for key in ('loss', 'label_loss', 'rationale_loss', 'grad_norm', 'learning_rate'):
      assert got[step][key] == want[step][key], (step, key)  # bitwise
  results = {}
  for name, folder in (('baseline', baseline), ('pod', model_dir)):
    with open(os.path.join(folder, 'results.json')) as f:
      summary = json.load(f)  # its metrics (machine measurements such as RSS aside)
      results[name] = _without_timings({k: summary.get(k) for k in (
          'last', 'best_on_validation', 'max_over_evals', 'reported', 'fidelity')})
  assert results['pod'] == results['baseline']
  assert results['pod']['last']['step'] == 20
