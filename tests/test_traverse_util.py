"""traverse_util's Traversal lenses and empty_node, beyond the round trips in test_core_meta_struct."""

import collections
import copy
import dataclasses
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flaxlike as nn
from flaxlike import struct, traverse_util
from flaxlike.core import FrozenDict
from flaxlike.traverse_util import t_identity

Point = collections.namedtuple('Point', ['x', 'y'])


@dataclasses.dataclass(frozen=True)
class Frozen:
  a: int
  b: int = 0


@struct.dataclass
class Node:
  value: float
  label: str = struct.field(pytree_node=False, default='n')


class Plain:
  def __init__(self, foo):
    self.foo = foo


def test_updates_copy_and_never_mutate():
  data = {'layers': [{'w': 1, 'b': 2}, {'w': 3, 'b': 4}], 'head': Point(5, 6)}
  snapshot = copy.deepcopy(data)
  t = t_identity['layers'].each()['w']
  assert list(t.iterate(data)) == [1, 3]
  out = t.update(lambda w: -w, data)
  assert out == {'layers': [{'w': -1, 'b': 2}, {'w': -3, 'b': 4}], 'head': Point(5, 6)}
  assert data == snapshot
  assert out['head'] is data['head']  # untouched parts are shared, not copied


@pytest.mark.parametrize(
  'container,expected',
  [
    (Point(1, 2), Point(1, 20)),
    (Frozen(1, 2), Frozen(1, 20)),
    (Node(1.0, 'x'), None),
  ],
)
def test_attr_on_namedtuples_and_dataclasses(container, expected):
  if isinstance(container, Node):
    out = t_identity.value.update(lambda v: v * 10, container)
    assert out == Node(10.0, 'x') and isinstance(out, Node)
    return
  attr = 'y' if isinstance(container, Point) else 'b'
  out = traverse_util.TraverseAttr(attr).update(lambda v: v * 10, container)
  assert out == expected and type(out) is type(container)


def test_attr_on_plain_objects_copies():
  obj = Plain(1)
  out = t_identity.foo.update(lambda v: v + 1, obj)
  assert (obj.foo, out.foo) == (1, 2)


def test_items_slices_and_negative_indices():
  assert t_identity[-1].update(lambda v: 0, (1, 2, 3)) == (1, 2, 0)
  assert t_identity[::2].update(lambda v: 0, [1, 2, 3, 4]) == [0, 2, 0, 4]
  assert list(t_identity[1:].iterate(Point(1, 2))) == [2]
  assert t_identity[0].update(lambda v: 9, Point(1, 2)) == Point(9, 2)
  frozen = FrozenDict({'a': 1, 'b': 2})
  out = t_identity['a'].update(lambda v: 7, frozen)
  assert isinstance(out, FrozenDict) and out == FrozenDict({'a': 7, 'b': 2})
  with pytest.raises(IndexError):
    t_identity[3].update(lambda v: v, (1, 2))


def test_each_tree_filter_merge_set():
  assert t_identity.each().update(str, (1, 2)) == ('1', '2')
  assert t_identity.each().update(str, Point(1, 2)) == Point('1', '2')
  frozen = t_identity.each().update(lambda v: v + 1, FrozenDict({'a': 1}))
  assert isinstance(frozen, FrozenDict) and frozen['a'] == 2
  with pytest.raises(ValueError, match=r'got int\. Use \.tree\(\)'):
    t_identity.each().update(str, 3)
  nested = {'a': [1, (2, 3)], 'b': Node(4.0)}
  assert list(t_identity.tree().iterate(nested)) == [1, 2, 3, 4.0]
  assert t_identity.tree().update(lambda v: v * 2, nested) == {'a': [2, (4, 6)], 'b': Node(8.0)}
  positive = t_identity.each().filter(lambda v: v > 0)
  assert positive.set([10, 20], [1, -1, 2]) == [10, -1, 20]
  with pytest.raises(ValueError, match='Not enough values provided'):
    positive.set([10], [1, -1, 2])
  with pytest.raises(ValueError, match='Too many values provided: the traversal selects 2'):
    positive.set([10, 20, 30], [1, -1, 2])
  both = t_identity.each().merge(traverse_util.TraverseItem('w'), traverse_util.TraverseItem('b'))
  assert list(both.iterate([{'w': 1, 'b': 2}, {'w': 3, 'b': 4}])) == [1, 2, 3, 4]


def test_traversals_copy_and_pickle():
  t = t_identity['a'].each()
  for clone in (copy.deepcopy(t), pickle.loads(pickle.dumps(t))):
    assert list(clone.iterate({'a': [1, 2]})) == [1, 2]


def test_model_param_traversal_scales_a_dense_layer():
  x = jnp.ones((1, 3))
  model = nn.Dense(2)
  params = model.init(jax.random.key(0), x)['params']
  seen = []

  def kernels(path, value):
    seen.append(path)
    return path.endswith('/kernel')

  t = traverse_util.ModelParamTraversal(kernels)
  assert [v.shape for v in t.iterate(params)] == [(3, 2)]
  assert sorted(seen) == ['/bias', '/kernel']
  doubled = t.update(lambda w: 2 * w, params)
  np.testing.assert_allclose(
    model.apply({'params': doubled}, x),
    x @ (2 * params['kernel']) + params['bias'][None],
    rtol=1e-6,
  )
  frozen = t.update(lambda w: 2 * w, FrozenDict({'kernel': 1.0, 'sub': {}}))
  assert isinstance(frozen, FrozenDict) and frozen.unfreeze() == {'kernel': 2.0, 'sub': {}}
  with pytest.raises(ValueError, match='Can only traverse a flax Model instance or a nested dict'):
    list(t.iterate([params]))


def test_model_param_traversal_masks_like_optax():
  params = {'Dense_0': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}}
  mask = traverse_util.ModelParamTraversal(lambda p, _: 'kernel' in p).update(
    lambda _: True, jax.tree_util.tree_map(lambda _: False, params)
  )
  tx = optax.masked(optax.sgd(1.0), mask)
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params))
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new['Dense_0']['kernel'], jnp.zeros((2, 2)))
  np.testing.assert_array_equal(new['Dense_0']['bias'], 2 * jnp.ones(2))  # masked: unchanged


def test_empty_node_is_a_leafless_pytree_singleton():
  flat = traverse_util.flatten_dict({'a': {}, 'b': 1}, keep_empty_nodes=True)
  mapped = jax.tree_util.tree_map(lambda v: v + 1, flat)
  assert mapped == {('a',): traverse_util.empty_node, ('b',): 2}
  assert mapped[('a',)] is traverse_util.empty_node
  assert pickle.loads(pickle.dumps(traverse_util.empty_node)) is traverse_util.empty_node
  assert traverse_util.unflatten_dict(mapped) == {'a': {}, 'b': 2}
