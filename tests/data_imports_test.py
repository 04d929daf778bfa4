"""What importing the data modules costs: the pure ones load no TensorFlow, the others load it
quietly. Each import runs in a fresh interpreter, since this one may have TensorFlow loaded."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PURE = ('dssb.data', 'dssb.data.metrics', 'dssb.data.splits', 'dssb.data.teacher_outputs',
        'dssb.data.sources')
# The usual entry (gin/runs/train.gin imports it; it imports the other TF modules after TF). One
# fresh interpreter per module costs about 6 s, so the others are not checked one by one.
WITH_TF = ('dssb.data.tasks',)


def _run_all(codes, env=None):
  """Runs each snippet in its own interpreter, all at once; returns the finished processes."""
  procs = [subprocess.Popen([sys.executable, '-c', code], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for code in codes]
  return [(p, *p.communicate()) for p in procs]


def test_pure_modules_import_neither_tensorflow_nor_seqio():
  check = ('import sys, {m}; '
           "print(sorted(k for k in ('tensorflow', 'seqio') if k in sys.modules))")
  for module, (proc, out, err) in zip(PURE, _run_all([check.format(m=m) for m in PURE])):
    assert proc.returncode == 0, f'import {module} failed:\n{err}'
    assert out.strip() == '[]', f'import {module} loaded {out.strip()}'


@pytest.mark.parametrize('module', WITH_TF)
def test_modules_that_need_tensorflow_load_it_quietly_and_register_nothing(module):
  """Without the quiet import first, TensorFlow prints its oneDNN and CUDA lines on stderr. Tasks
  are registered by get_task_name only, even when $DSSB_VOCAB names a vocabulary."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('TF_CPP_MIN_LOG_LEVEL', 'TF_ENABLE_ONEDNN_OPTS')}
  env['DSSB_VOCAB'] = '/nonexistent/spm.model'  # Registration does not read it.
  code = (f'import sys, {module}, seqio; '
          "print(sys.modules['tensorflow'].config.get_visible_devices('GPU'), [n for r in "
          "(seqio.TaskRegistry, seqio.MixtureRegistry) for n in r.names() if 'dssb' in n])")
  [(proc, out, err)] = _run_all([code], env)
  assert proc.returncode == 0, f'import {module} failed:\n{err}'
  assert out.strip() == '[] []'  # Kept off accelerators; no task registered.
  assert err == '', f'import {module} printed:\n{err}'
