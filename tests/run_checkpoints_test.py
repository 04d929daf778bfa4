"""A run's orbax checkpoints resume only into the same params tree (dssb.run_checkpoints)."""

import dataclasses
import os
import sys

import jax
import numpy as np
import pytest

from dssb.model import T5Config, init_params
from dssb.run_checkpoints import RunCheckpoints, meta_for

import hosts_testlib

CONFIG = T5Config(vocab_size=32, d_model=8, num_heads=2, head_dim=4, d_ff=16,
                  num_encoder_layers=2, num_decoder_layers=2)


def test_resume_refuses_other_scan_layers_but_not_other_run_time_settings(tmp_path):
  params = init_params(CONFIG)
  ckpt = RunCheckpoints(str(tmp_path), keep=1, async_save=False)
  ckpt.save(3, {'params': params}, meta_for(CONFIG, 3))
  ckpt.wait()
  abstract = {'params': jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)}

  other_run_time = dataclasses.replace(CONFIG, dtype='bfloat16', remat_policy='full')
  state, meta = ckpt.restore(abstract, other_run_time)
  assert meta['step'] == 3
  jax.tree.map(np.testing.assert_array_equal, state['params'], params)
  with pytest.raises(ValueError, match=r"different model config.*'scan_layers': \(False, True\)"):
    ckpt.restore(abstract, dataclasses.replace(CONFIG, scan_layers=True))
  ckpt.close()


# One host of a two-process job: best and latest saved at the same steps, as the trainer does
# when an eval step that improves is also a checkpoint step.
TWO_HOST_WORKER = '''
import sys
import jax, jax.numpy as jnp, numpy as np
port, process_id, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(f'127.0.0.1:{port}', 2, process_id)
from dssb.run_checkpoints import RunCheckpoints
mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
w = jax.device_put(jnp.zeros(256), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
ckpt = RunCheckpoints(folder, keep=2)
for step in range(1, 7):
  w = w + 1
  ckpt.save(step, {'w': w}, {'step': step}, best=True)
  ckpt.save(step, {'w': w}, {'step': step}, force=True)
ckpt.wait()
print(ckpt.latest_step(), ckpt.meta('best')['step'])
ckpt.close()
'''


@pytest.mark.slow
def test_two_hosts_save_best_and_latest_at_the_same_steps(tmp_path):
  """Both managers' background saves of one step run at once on every host; their multi-host
  barriers must not collide (they did: 'already ongoing', or a host waiting out the timeout)."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  logs = [tmp_path / f'host{i}.log' for i in range(2)]
  codes = hosts_testlib.run(
      lambda i, port: [sys.executable, '-c', TWO_HOST_WORKER, str(port), str(i),
                       str(tmp_path / 'run')], logs, cwd=repo, timeout=120, linger=60)
  outs = [log.read_text() for log in logs]
  for i, (code, out) in enumerate(zip(codes, outs)):
    assert code == 0, f'host {i} exited {code}: ...{out[-3000:]}'
    assert out.strip().splitlines()[-1] == '6 6', out[-3000:]
  assert sorted(os.listdir(tmp_path / 'run' / 'checkpoints')) == ['5', '6']
  assert os.listdir(tmp_path / 'run' / 'best') == ['6']
