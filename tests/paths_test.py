"""Every file of a run goes through one path layer: a run on gs:// writes (and reads) it there.

The gs:// folder is a real GCS API server on 127.0.0.1 (tests/fake_gcs.py) reached by the same
clients a pod job uses: TensorFlow's GCS file system (epath, TensorBoard), tensorstore and
google-cloud-storage (orbax). The data, the vocabulary cache and MODEL_DIR are all there; the
local disk gets nothing of the run.
"""

import glob
import json
import os
import subprocess
import sys

import pytest

import fake_gcs  # tests/fake_gcs.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def gcs(tmp_path):
  fake = fake_gcs.FakeGcs('dssb-test', str(tmp_path / 'certs'))
  yield fake
  fake.stop()


def test_local_paths_are_absolute_and_remote_ones_kept():
  from dssb import paths  # pylint: disable=g-import-not-at-top
  assert str(paths.absolute('gs://b/run')) == str(paths.path('gs://b', 'run')) == 'gs://b/run'
  assert paths.is_remote('gs://b/run') and not paths.is_remote('/tmp/run')
  assert str(paths.path('relative', 'run')) == 'relative/run'
  assert str(paths.absolute('relative/run')) == os.path.join(os.getcwd(), 'relative/run')


@pytest.mark.slow
def test_a_run_on_gcs_writes_everything_there_and_resumes_from_it(gcs, dss_data_dir, tmp_path):
  svamp = os.path.join(dss_data_dir, 'datasets', 'svamp')
  for path in glob.glob(os.path.join(svamp, '*.json')) + glob.glob(os.path.join(svamp, 'llm', '*')):
    with open(path, 'rb') as f:
      gcs.upload(f'data/datasets/svamp/{os.path.relpath(path, svamp)}', f.read())
  local = tmp_path / 'local'  # the run's working directory: nothing of the run may land here
  local.mkdir()
  env = dict(os.environ, **gcs.env, DSSB_DATA_DIR='gs://dssb-test/data',
             DSSB_CACHE_DIR='gs://dssb-test/cache', PYTHONPATH=REPO, HOME=str(local))
  cmd = [sys.executable, '-m', 'dssb.train', f'--gin_file={REPO}/gin/cpu/svamp_step_by_step.gin',
         "--gin.MODEL_DIR='gs://dssb-test/run'", '--gin.BATCH_SIZE=4', '--gin.EVAL_EVERY=2',
         '--gin.train.eval_limit=4', '--gin.train.eval_batch_size=4',
         '--gin.train.max_decode_length=4', '--gin.train.log_every=1']
  for steps in (2, 4):  # the second command resumes from the checkpoint on gs://
    proc = subprocess.run(cmd + [f'--gin.TRAIN_STEPS={steps}'], cwd=str(local), env=env,
                          text=True, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
  assert 'resumed from gs://dssb-test/run at step 2' in proc.stderr

  written = gcs.list('run/')
  for name in ('config.gin', 'operative_config.gin', 'metrics.jsonl', 'results.json'):
    assert f'run/{name}' in written, written
  assert any(n.startswith('run/tb/events.out.tfevents') for n in written)
  assert any(n.startswith('run/checkpoints/4/') for n in written)
  assert any(n.startswith('run/best/') for n in written)
  assert any(n.startswith('cache/vocab/svamp_palm_1000.model') for n in gcs.list('cache/'))
  records = [json.loads(line) for line in gcs.read('run/metrics.jsonl').decode().splitlines()]
  assert [r['step'] for r in records if 'split' not in r] == [1, 2, 3, 4]
  assert json.loads(gcs.read('run/results.json'))['last']['step'] == 4
  assert glob.glob(str(local / '**' / '*'), recursive=True) == []
