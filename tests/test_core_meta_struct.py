"""Boxed metadata, struct dataclasses, traverse_util and config flags."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

import flaxlike as nn
from flaxlike import config, errors, serialization, struct, traverse_util
from flaxlike.core import meta


def test_partitioned_box_is_a_pytree_and_unboxes():
  box = meta.Partitioned(jnp.ones((2, 3)), ('data', None))
  leaves, treedef = jax.tree_util.tree_flatten(box)
  assert len(leaves) == 1 and leaves[0].shape == (2, 3)
  doubled = jax.tree_util.tree_map(lambda x: 2 * x, box)
  assert isinstance(doubled, meta.Partitioned) and doubled.names == ('data', None)
  assert meta.unbox({'w': box})['w'].shape == (2, 3)
  assert meta.get_partition_spec({'w': box, 'b': jnp.ones(2)}) == {
    'w': PartitionSpec('data', None),
    'b': PartitionSpec(),
  }


def test_add_and_remove_axis():
  box = meta.Partitioned(jnp.ones((2, 3)), ('data', 'model'))
  added = box.add_axis(0, {meta.PARTITION_NAME: 'layers'})
  assert added.names == ('layers', 'data', 'model')
  assert added.remove_axis(0, {meta.PARTITION_NAME: 'layers'}).names == ('data', 'model')
  # No partition name: the new axis is replicated (Linen raises; flaxlike P18).
  assert box.add_axis(0, {}).names == (None, 'data', 'model')
  with pytest.raises(errors.PartitioningUnspecifiedError, match="axis 0 is named 'layers'"):
    added.remove_axis(0, {})


def test_unbox_applies_sharding_constraint_with_mesh():
  devices = np.array(jax.devices()[:2])
  mesh = Mesh(devices, ('data',))
  box = meta.Partitioned(jnp.arange(4.0), ('data',), mesh=mesh)
  out = jax.jit(lambda b: b.unbox() * 1)(box)
  assert out.sharding.spec == PartitionSpec('data')
  assert box.get_sharding(mesh).spec == PartitionSpec('data')


def test_module_param_with_partitioning_keeps_box_in_variables():
  class Layer(nn.Module):
    @nn.compact
    def __call__(self, x):
      kernel_init = nn.with_partitioning(nn.initializers.ones, (None, 'model'))
      w = self.param('w', kernel_init, (x.shape[-1], 2))
      assert not isinstance(w, meta.AxisMetadata)  # unboxed for the computation
      return x @ w

  variables = Layer().init(jax.random.key(0), jnp.ones((1, 3)))
  box = variables['params']['w']
  assert isinstance(box, meta.Partitioned) and box.names == (None, 'model')
  np.testing.assert_array_equal(Layer().apply(variables, jnp.ones((1, 3))), 3 * np.ones((1, 2)))


def test_struct_dataclass_pytree_replace_and_state_dict():
  @struct.dataclass
  class State:
    step: int
    params: dict
    name: str = struct.field(pytree_node=False, default='s')

  state = State(1, {'w': jnp.ones(2)})
  assert len(jax.tree_util.tree_leaves(state)) == 2
  assert state.replace(step=2).step == 2 and state.step == 1
  with pytest.raises(dataclasses.FrozenInstanceError):
    state.step = 3  # type: ignore[misc]
  assert list(serialization.to_state_dict(state)) == ['step', 'params']
  restored = serialization.from_state_dict(state, {'step': 5, 'params': {'w': jnp.zeros(2)}})
  assert restored.step == 5 and restored.name == 's'
  with pytest.raises(ValueError, match='Missing field params'):
    serialization.from_state_dict(state, {'step': 5})

  class Node(struct.PyTreeNode):
    a: int
    b: int = struct.field(pytree_node=False, default=0)

  node = jax.tree_util.tree_map(lambda x: x + 1, Node(1, 7))
  assert node == Node(2, 7)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(node)[0]]
  assert paths == ['.a']


def test_state_dict_registry_rules():
  assert serialization.to_state_dict({'a': [1, (2, 3)], 4: ()}) == {
    'a': {'0': 1, '1': {'0': 2, '1': 3}},
    '4': {},
  }
  with pytest.raises(ValueError, match='unique string representation'):
    serialization.to_state_dict({1: 0, '1': 0})
  with pytest.raises(ValueError, match='registered'):
    serialization.register_serialization_state(dict, lambda x: x, lambda t, s: s)
  with pytest.raises(ValueError, match=r'\./params'):
    serialization.from_state_dict({'params': {'w': 0}}, {'other': 1})


def test_traverse_util_round_trip():
  tree = {'a': {'b': 1, 'c': {}}, 'd': 2}
  flat = traverse_util.flatten_dict(tree, keep_empty_nodes=True)
  assert flat == {('a', 'b'): 1, ('a', 'c'): traverse_util.empty_node, ('d',): 2}
  assert traverse_util.unflatten_dict(flat) == tree
  assert traverse_util.flatten_dict(tree, sep='/') == {'a/b': 1, 'd': 2}
  assert traverse_util.unflatten_dict({'a/b': 1}, sep='/') == {'a': {'b': 1}}
  labels = traverse_util.path_aware_map(lambda path, _: path[-1] == 'b', tree)
  assert labels == {'a': {'b': True, 'c': {}}, 'd': False}


def test_config_update_and_unknown_flag():
  with config.temp_flip_flag('flax_profile', False):
    assert config.flax_profile is False
  assert config.flax_profile is True  # Linen's default
  with pytest.raises(LookupError, match='known flags'):
    config.update('flax_no_such_flag', 1)
