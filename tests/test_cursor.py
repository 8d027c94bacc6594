"""``flaxlike.cursor``: copies with changes, over every container it walks through."""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flaxlike as nn
from flaxlike import struct
from flaxlike.core import freeze
from flaxlike.core.frozen_dict import FrozenDict
from flaxlike.cursor import AccessType, Cursor, _traverse_tree, cursor
from flaxlike.errors import CursorFindError, TraverseTreeError
from flaxlike.training import train_state


class Triple(NamedTuple):
  x: Any
  y: Any = None
  z: Any = None


@dataclasses.dataclass
class Box:
  x: Any
  y: Any = None


@struct.dataclass
class Frozen:
  a: Any
  b: Any = None


def test_set_on_every_container_type_leaves_the_original_unchanged():
  obj = {
    'd': {'k': 1},
    'f': freeze({'k': 1}),
    'l': [1, 2],
    't': (1, 2),
    'n': Triple(1, 2, 3),
    'dc': Box(1, [2]),
    's': Frozen(1, (2,)),
  }
  snapshot = repr(obj)
  assert cursor(obj)['d']['k'].set(9)['d'] == {'k': 9}
  out = cursor(obj)['f']['k'].set(9)
  assert isinstance(out['f'], FrozenDict) and out['f']['k'] == 9
  assert cursor(obj)['l'][1].set(9)['l'] == [1, 9]
  assert cursor(obj)['t'][0].set(9)['t'] == (9, 2)
  assert cursor(obj)['n'].z.set(9)['n'] == Triple(1, 2, 9)
  assert cursor(obj)['n'][1].set(9)['n'] == Triple(1, 9, 3)  # named tuples by index too
  assert cursor(obj)['dc'].y[0].set(9)['dc'] == Box(1, [9])
  assert cursor(obj)['s'].b[0].set(9)['s'] == Frozen(1, (9,))
  assert cursor(obj).set('root') == 'root'
  assert repr(obj) == snapshot


def test_build_applies_every_recorded_change_and_the_last_write_wins():
  c = cursor({'a': {'b': [1, 2, 3]}, 'z': -1})
  c['z'] = -2
  c['z'] = -3
  c['a']['b'][0] = 10
  c['a']['b'][2] += 5  # reads the old value through the operators
  assert c.build() == {'a': {'b': [10, 2, 8]}, 'z': -3}
  c['a']['b'] = None  # replacing a parent drops the changes recorded below it
  assert c.build() == {'a': {'b': None}, 'z': -3}


def test_train_state_fields_and_params():
  state = train_state.TrainState.create(
    apply_fn=lambda x: x, params={'a': 1, 'b': (2, 3)}, tx=optax.adam(1e-3)
  )
  new_fn = lambda x: x + 1
  c = cursor(state)
  c.params['b'][1] = 10
  c.apply_fn = new_fn
  new_state = c.build()
  assert new_state.params == {'a': 1, 'b': (2, 10)} and new_state.apply_fn is new_fn
  assert state.params == {'a': 1, 'b': (2, 3)}
  assert cursor(state).params['a'].set(5).params == {'a': 5, 'b': (2, 3)}


def _dense_stack_params():
  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      for _ in range(3):
        x = nn.relu(nn.Dense(3)(x))
      return x

  return Model().init(jax.random.key(0), jnp.ones((1, 2)))['params']


def test_apply_update_matches_a_tree_map_reference():
  params = _dense_stack_params()
  paths = []

  def update_fn(path, value):
    paths.append(path)
    if 'kernel' in path:
      return value * 2 + 1
    if 'Dense_1' in path and 'bias' in path:
      return value - 1
    return value

  new = cursor(params).apply_update(update_fn).build()
  reference = jax.tree_util.tree_map_with_path(
    lambda path, v: update_fn('/'.join(k.key for k in path), v), params
  )
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(reference)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Parents before children, root excluded, and no descent below a changed value.
  assert paths[:3] == ['Dense_0', 'Dense_0/kernel', 'Dense_0/bias'] and '' not in paths
  replaced = cursor({'params': {'w': 1}, 'n': 2}).apply_update(
    lambda path, v: {} if path == 'params' else v
  )
  assert replaced.build() == {'params': {}, 'n': 2}


def test_find_and_find_all():
  params = _dense_stack_params()
  c = cursor(params)
  found = c.find(lambda path, value: 'Dense_1' in path)
  assert found._path == "['Dense_1']"
  found['bias'] += 2
  found['kernel'] = jnp.zeros((3, 3))
  new = c.build()
  np.testing.assert_array_equal(
    np.asarray(new['Dense_1']['bias']), np.asarray(params['Dense_1']['bias']) + 2
  )
  np.testing.assert_array_equal(np.asarray(new['Dense_1']['kernel']), np.zeros((3, 3)))
  np.testing.assert_array_equal(
    np.asarray(new['Dense_2']['kernel']), np.asarray(params['Dense_2']['kernel'])
  )

  c = cursor(params)
  for layer in c.find_all(lambda path, value: 'Dense' in path):
    layer['bias'] += 1
  for name in ('Dense_0', 'Dense_1', 'Dense_2'):
    np.testing.assert_array_equal(
      np.asarray(c.build()[name]['bias']), np.asarray(params[name]['bias']) + 1
    )

  with pytest.raises(CursorFindError, match='No object found given the conditions'):
    cursor(params).find(lambda path, value: 'Dense_9' in path)
  with pytest.raises(
    CursorFindError,
    match=r"More than one object found.*\['Dense_0'\] and \['Dense_1'\] \(make cond_fn",
  ):
    cursor(params).find(lambda path, value: 'Dense' in path)


def test_traverse_needs_exactly_one_function():
  with pytest.raises(TraverseTreeError, match='Both update_fn and cond_fn are None'):
    list(_traverse_tree((), {'a': 1}))
  with pytest.raises(TraverseTreeError, match='Both update_fn and cond_fn are not None'):
    list(_traverse_tree((), {'a': 1}, update_fn=lambda p, v: v, cond_fn=lambda p, v: True))
  paths = list(_traverse_tree((), {'a': Box(1)}, cond_fn=lambda p, v: p == 'a/x'))
  assert paths == [(('a', AccessType.ITEM), ('x', AccessType.ATTR))]


def test_iteration_len_and_operators():
  c = cursor(((1, 2), [3, 4]))
  for pair in c:
    pair[1] *= -1
  assert c.build() == ((1, -2), [3, -4])
  assert [child._obj for child in reversed(cursor([1, 2, 3]))] == [3, 2, 1]
  assert len(cursor({'a': 1, 'b': 2})) == 2
  with pytest.raises(
    TypeError,
    match="__iter__ method only implemented for tuples and lists, not type <class 'dict'>",
  ):
    iter(cursor({'a': 1}))
  with pytest.raises(NotImplementedError, match='__reversed__ method only implemented'):
    reversed(cursor({'a': 1}))
  v = cursor(7)
  assert (v + 1, 1 + v, v - 2, 10 - v, v * 2, v // 2, v % 4, v**2, -v, abs(v)) == (
    8,
    8,
    5,
    3,
    14,
    3,
    3,
    49,
    -7,
    7,
  )
  assert (v < 8, v <= 7, v == 7, v != 7, v > 8, v >= 7) == (True, True, True, False, False, True)
  assert (v & 3, v | 8, v ^ 1, v << 1, v >> 1, ~v) == (3, 15, 6, 14, 3, -8)
  assert str(v) == '7'


def test_bad_access_raises_clear_errors():
  with pytest.raises(KeyError, match='Key missing not found'):
    cursor({'a': 1})['missing']
  with pytest.raises(AttributeError, match='Attribute nope not found'):
    cursor(Box(1)).nope  # noqa: B018
  with pytest.raises(TypeError, match='Cannot index into 5'):
    cursor(5)[0]


def test_repr_shows_the_object_and_the_recorded_changes():
  c = cursor({'a': {'b': [1, 2]}, 'z': -1})
  assert repr(c) == "Cursor(\n  _obj={'a': {'b': [1, 2]}, 'z': -1},\n  _changes={}\n)"
  c['z'] = -3
  c['a']['b'][0] = 5
  assert repr(c) == (
    'Cursor(\n'
    "  _obj={'a': {'b': [1, 2]}, 'z': -1},\n"
    '  _changes={\n'
    "    'z': Cursor(\n"
    '           _obj=-3,\n'
    '           _changes={}\n'
    '         ),\n'
    "    'a': Cursor(\n"
    "           _obj={'b': [1, 2]},\n"
    '           _changes={\n'
    "             'b': Cursor(\n"
    '                    _obj=[1, 2],\n'
    '                    _changes={\n'
    '                      0: Cursor(\n'
    '                           _obj=5,\n'
    '                           _changes={}\n'
    '                         )\n'
    '                    }\n'
    '                  )\n'
    '           }\n'
    '         )\n'
    '  }\n'
    ')'
  )
  assert isinstance(c['a'], Cursor) and c['a']['b']._path == "['a']['b']"
  assert cursor(Box(Triple(1))).x.y._path == '.x.y'
