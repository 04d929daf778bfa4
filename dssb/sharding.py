"""The device mesh and the logical-to-mesh axis rules: the one place that knows mesh axes.

Model code names logical axes only (batch, length, embed, mlp, heads, kv, joined_kv, vocab,
relpos_buckets, and layers: the stacked axis of scanned layer params, always replicated so
each device holds its share of every layer). These rules map them to the mesh axes
('data', 'model'):
- data parallel: batch -> data; everything else replicated when the model axis has size 1;
- model parallel (Megatron-style): mlp, heads, joined_kv, vocab -> model;
- FSDP: additionally embed -> data, so params and optimizer state are split over data too.
  An activation already sharded on 'data' through 'batch' keeps embed replicated (flax gives a
  mesh axis to the first logical axis that asks for it).
"""

from typing import Optional, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dssb.model import T5Config, init_params

MESH_AXES = ('data', 'model')


@gin.configurable
def logical_axis_rules(fsdp: bool = False, extra_rules: Sequence = ()):
  """Rules as (logical axis, mesh axis or None) pairs, first match wins.

  Args:
    fsdp: also shard the embed dimension of params and optimizer state over 'data'.
    extra_rules: rules placed first, to override any of the defaults.

  Returns:
    A tuple of (logical_name, mesh_axis) pairs for flax's logical partitioning.
  """
  rules = [
      ('batch', 'data'),
      ('vocab', 'model'),
      ('mlp', 'model'),
      ('heads', 'model'),
      ('joined_kv', 'model'),
      ('kv', None),
      ('length', None),
      ('relpos_buckets', None),
      ('layers', None),
  ]
  rules += [('embed', 'data'), ('embed', None)] if fsdp else [('embed', None)]
  return tuple(tuple(r) for r in extra_rules) + tuple(rules)


@gin.configurable
def make_mesh(data: int = -1, model: int = 1, devices: Optional[Sequence] = None) -> Mesh:
  """A ('data', 'model') mesh over all devices; data=-1 takes what model leaves.

  Args:
    data: size of the data axis, -1 for all devices / model.
    model: size of the model axis.
    devices: the devices to use (default: jax.devices(), i.e. every host's).

  Returns:
    The jax.sharding.Mesh.
  """
  devices = list(jax.devices() if devices is None else devices)
  if data == -1:
    if len(devices) % model:
      raise ValueError(f'make_mesh: {len(devices)} devices do not split into model={model}')
    data = len(devices) // model
  if data * model != len(devices):
    raise ValueError(f'make_mesh: data={data} x model={model} != {len(devices)} devices; '
                     'set make_mesh.data / make_mesh.model in gin')
  try:  # an ICI/DCN-aware layout on TPU and GPU; plain reshape elsewhere
    from jax.experimental import mesh_utils
    device_array = mesh_utils.create_device_mesh((data, model), devices)
  except Exception:  # pylint: disable=broad-except
    device_array = np.asarray(devices).reshape(data, model)
  return Mesh(device_array, MESH_AXES)


def logical_sharding(boxed_tree, mesh: Mesh, rules) -> object:
  """NamedShardings for a tree of flax LogicalPartitioned boxes (unboxed leaves: replicated)."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batch arrays [B, ...]: rows split over 'data'."""
  return NamedSharding(mesh, PartitionSpec('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def params_shardings(config: T5Config, mesh: Mesh, rules):
  """(abstract params, their NamedShardings from the logical axis names); nothing allocated."""
  boxed = jax.eval_shape(lambda: init_params(config, boxed=True))
  param_sharding = logical_sharding(boxed, mesh, rules)
  abstract_params = jax.tree.map(lambda b: b.unbox(apply_constraint=False), boxed,
                                 is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
  return abstract_params, param_sharding


def params_and_optimizer_shardings(config: T5Config, tx: optax.GradientTransformation,
                                   mesh: Mesh, rules):
  """Abstract params and optimizer state, and their NamedShardings, without allocating either.

  Params follow their logical axis names. Optimizer leaves shaped like their param share its
  sharding (Adam moments); the rest (Adafactor's factored rows/columns, counts) are small and
  replicated.

  Returns:
    ((abstract_params, abstract_opt_state), (param_shardings, opt_state_shardings)).
  """
  abstract_params, param_sharding = params_shardings(config, mesh, rules)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  rep = replicated(mesh)
  opt_sharding = optax.tree_map_params(
      tx, lambda leaf, p, s: s if leaf.shape == p.shape else rep, abstract_opt, abstract_params,
      param_sharding, transform_non_params=lambda _: rep)
  return (abstract_params, abstract_opt), (param_sharding, opt_sharding)


def sharded_abstract_params(config: T5Config, mesh: Mesh, rules):
  """ShapeDtypeStructs of the params, each with its NamedSharding (what a restore reads into)."""
  (params, _), (param_sharding, _) = params_and_optimizer_shardings(
      config, optax.identity(), mesh, rules)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      params, param_sharding)


def host_to_global(tree, mesh: Mesh):
  """Each host's rows [b, ...] -> global jax.Arrays [b * process_count, ...] split over 'data'.

  Host i holds rows [i*b, (i+1)*b) of the global batch (input_pipeline's contract).
  """
  rows = batch_sharding(mesh)

  def to_global(x):
    global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    return jax.make_array_from_process_local_data(rows, x, global_shape)

  return jax.tree.map(to_global, tree)
