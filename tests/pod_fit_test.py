"""experiments/pod_fit.py on 8 simulated devices with a small T5: the compiled train step's
per-device memory falls with FSDP, and again with remat, in a model whose layers are scanned."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A small v1.1 with a small vocabulary, so that activations (what remat saves) and params
# (what FSDP splits) both matter; 8 devices as 4 data x 2 model.
BINDINGS = ['model.T5Config.vocab_size = 512', 'model.T5Config.d_model = 256',
            'model.T5Config.d_ff = 1024', 'model.T5Config.num_heads = 4',
            'model.T5Config.head_dim = 64']
BASE = 'model=2,opt=adamw,dtype=float32,layers=2,scan=1'
# Scanned layers: XLA:CPU's scheduler undoes remat in unrolled ones (results/perf/pod_fit.md).
SETTINGS = {'replicated': BASE + ',fsdp=0,remat=none', 'fsdp': BASE + ',fsdp=1,remat=none',
            'fsdp+remat': BASE + ',fsdp=1,remat=full'}


def test_memory_falls_with_fsdp_and_with_remat(tmp_path):
  out = tmp_path / 'fit.json'
  cmd = [sys.executable, os.path.join(REPO, 'experiments', 'pod_fit.py'),
         '--model_gin', 'models/tiny.gin', '--batch', '16', '--lengths', '64,16',
         '--slices', '8', '--timeout', '300', '--out', str(out)]
  for binding in BINDINGS:
    cmd += ['--gin', binding]
  for setting in SETTINGS.values():
    cmd += ['--setting', setting]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads(out.read_text())['rows']
  assert [r['status'] for r in rows] == ['ok'] * len(SETTINGS), [r['status'] for r in rows]
  by_name = dict(zip(SETTINGS, rows))
  assert all((r['data'], r['model']) == (4, 2) for r in rows)
  total = {name: r['total'] for name, r in by_name.items()}
  print(json.dumps({name: r['memory'] for name, r in by_name.items()}, indent=1))

  # memory_analysis is per device: the arguments are the sharded state plus the batch shard.
  for r in rows:
    assert abs(r['memory']['argument'] - r['state_bytes_by_sharding']
               - r['batch_bytes_by_sharding']) < 1024
  replicated, fsdp = by_name['replicated'], by_name['fsdp']
  assert fsdp['params_bytes_by_sharding'] < replicated['params_bytes_by_sharding'] / 3
  assert total['fsdp'] < 0.8 * total['replicated']
  # Remat keeps only each layer's input for the backward pass: fewer temporaries.
  assert by_name['fsdp+remat']['memory']['temp'] < 0.8 * fsdp['memory']['temp']
  assert total['fsdp+remat'] < total['fsdp']
