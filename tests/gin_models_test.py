"""The gin model files give the published architectures (parameter counts of the releases)."""

import gin
import jax
import numpy as np
import pytest

from dssb import gin_utils
from dssb.model import init_params

# Parameter counts of the released checkpoints (t5-small ... t5-11b, google/t5-v1_1-*; the
# google/flan-t5-* releases have the v1.1 architectures and counts, so they use the t5_1_1 files);
# v1.1 base is also checked in ../shared/reference/ENVIRONMENT.md.
PUBLISHED = {
    't5_1_0_small': 60_506_624, 't5_1_0_base': 222_903_552, 't5_1_0_large': 737_668_096,
    't5_1_0_xl': 2_851_598_336, 't5_1_0_xxl': 11_307_321_344,
    't5_1_1_small': 76_961_152, 't5_1_1_base': 247_577_856, 't5_1_1_large': 783_150_080,
    't5_1_1_xl': 2_849_757_184, 't5_1_1_xxl': 11_135_332_352,
}


def _config(name, bindings=()):
  gin.clear_config()
  gin_utils.parse_gin([f'models/{name}.gin'], list(bindings))
  config = gin.query_parameter('%MODEL_CONFIG').scoped_configurable_fn()
  gin.clear_config()
  return config


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_size_file_has_the_published_parameter_count(name):
  config = _config(name)
  shapes = jax.eval_shape(lambda: init_params(config))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == PUBLISHED[name]
  assert config.tie_embeddings == name.startswith('t5_1_0')
  assert config.mlp_activations == (('relu',) if name.startswith('t5_1_0')
                                    else ('gelu', 'linear'))


@pytest.mark.parametrize('name', ['t5_1_0_small', 't5_1_1_xxl'])
def test_scale_settings_are_gin_macros(name):
  """Every model family file exposes the large-model settings; defaults change nothing."""
  default = _config(name)
  assert (default.dtype, default.remat_policy, default.scan_layers) == ('float32', 'none', False)
  config = _config(name, ["ACTIVATION_DTYPE = 'bfloat16'", "REMAT_POLICY = 'minimal'",
                          'SCAN_LAYERS = True'])
  assert (config.dtype, config.remat_policy, config.scan_layers) == ('bfloat16', 'minimal', True)
  assert default.architecture_diff(config) == {'scan_layers': (False, True)}
