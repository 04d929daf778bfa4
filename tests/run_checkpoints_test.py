"""A run's orbax checkpoints resume only into the same params tree (dssb.run_checkpoints)."""

import dataclasses

import jax
import numpy as np
import pytest

from dssb.model import T5Config, init_params
from dssb.run_checkpoints import RunCheckpoints, meta_for

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
