"""Logical axis rules: which mesh axis each T5 parameter and activation dimension lands on."""

import dataclasses

import flax.linen as nn
import jax
import pytest
from jax.sharding import PartitionSpec as P

from dssb import sharding
from dssb.model import T5, T5Config

CONFIG = T5Config(vocab_size=64, d_model=16, num_heads=2, head_dim=8, d_ff=32,
                  num_encoder_layers=1, num_decoder_layers=1)


def _specs(fsdp, config=CONFIG):
  tokens = jax.numpy.ones((1, 4), jax.numpy.int32)
  boxed = jax.eval_shape(lambda: T5(config).init(jax.random.PRNGKey(0), tokens, tokens))
  names = nn.get_partition_spec(boxed['params'])
  rules = sharding.logical_axis_rules(fsdp=fsdp)
  return jax.tree.map(lambda n: nn.logical_to_mesh_axes(n, rules), names,
                      is_leaf=lambda x: isinstance(x, P))


@pytest.mark.parametrize('fsdp', [False, True])
def test_params_split_over_model_and_optionally_data(fsdp):
  specs = _specs(fsdp)
  embed = 'data' if fsdp else None
  enc = specs['encoder']['layers_0']
  assert enc['attention']['query']['kernel'] == P(embed, 'model')
  assert enc['attention']['out']['kernel'] == P('model', embed)
  assert enc['mlp']['wi_0']['kernel'] == P(embed, 'model')
  assert enc['mlp']['wo']['kernel'] == P('model', embed)
  assert specs['token_embedder']['embedding'] == P('model', embed)
  assert specs['decoder']['logits_dense']['kernel'] == P(embed, 'model')
  assert specs['encoder']['relpos_bias']['rel_embedding'] == P('model', None)
  assert enc['pre_attention_layer_norm']['scale'] == P(embed)


def test_scanned_layers_axis_is_replicated():
  """Under scan_layers each layer param gains a leading stacked axis that no mesh axis takes:
  every device holds its share of every layer, as without scan."""
  config = dataclasses.replace(CONFIG, num_encoder_layers=3, scan_layers=True)
  specs = _specs(True, config)
  enc = specs['encoder']['layers']
  assert enc['attention']['query']['kernel'] == P(None, 'data', 'model')
  assert enc['mlp']['wo']['kernel'] == P(None, 'model', 'data')
  assert enc['pre_attention_layer_norm']['scale'] == P(None, 'data')
  assert specs['decoder']['layers']['encoder_decoder_attention']['out']['kernel'] == P(
      None, 'model', 'data')
  assert specs['encoder']['relpos_bias']['rel_embedding'] == P('model', None)


def test_activations_keep_batch_on_data_even_with_fsdp():
  rules = sharding.logical_axis_rules(fsdp=True)
  assert nn.logical_to_mesh_axes(('batch', 'length', 'embed'), rules) == P('data', None, None)
  assert nn.logical_to_mesh_axes(('batch', 'length', 'mlp'), rules) == P('data', None, 'model')


def test_extra_rules_override_and_mesh_checks_device_count():
  rules = sharding.logical_axis_rules(extra_rules=[('mlp', None)])
  assert nn.logical_to_mesh_axes(('embed', 'mlp'), rules) == P(None, None)
  with pytest.raises(ValueError, match='devices'):
    sharding.make_mesh(data=3, model=5)
  assert dict(sharding.make_mesh().shape) == {'data': jax.device_count(), 'model': 1}
