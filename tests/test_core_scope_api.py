"""Flax's functional-engine API on flaxlike scopes: hand-made scopes, child/rewound/temporary,
the filter algebra's exact results, aliasing scopes in lifted transforms, and key order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike.linen as linen
from flaxlike import errors
from flaxlike.core import Scope, init, lift, nn, scope
from flaxlike.core.scope import DenyList, LazyRng

KEY = jax.random.key(0)


@pytest.mark.parametrize('key', [jax.random.key(3), jax.random.PRNGKey(3)])
def test_hand_made_scope_wraps_raw_and_typed_keys(key):
  root = Scope({}, {'params': key}, mutable='params')
  w = root.param('w', nn.initializers.normal(), (2,))
  _, variables = init(lambda s: s.param('w', nn.initializers.normal(), (2,)))(key)
  np.testing.assert_array_equal(w, variables['params']['w'])
  assert isinstance(root.rngs['params'], LazyRng)


def test_valid_rng_accepts_single_keys_only():
  assert scope._is_valid_rng(jax.random.key(0))
  assert scope._is_valid_rng(jax.random.PRNGKey(0))
  assert scope._is_valid_rng(LazyRng.create(jax.random.key(0), 1))
  assert not scope._is_valid_rng(jax.random.split(jax.random.key(0)))
  assert not scope._is_valid_rng(jax.random.split(jax.random.PRNGKey(0)))


def test_child_rewound_continues_rng_counters():
  root = Scope({}, {'dropout': KEY})

  def draw(s):
    return s.make_rng('dropout')

  a = root.child(draw, 'c')()
  b = root.rewound().child(draw, 'c')()
  assert not np.array_equal(jax.random.key_data(a), jax.random.key_data(b))
  restarted = root.rewound(rewind_rngs=True)
  assert restarted.rng_counters is not root.rng_counters
  assert restarted == restarted.rewound()


def test_child_binds_partial_kwargs_and_names_from_prefix():
  def layer(s, x, features):
    return nn.dense(s, x, features)

  def model(s, x):
    return s.child(layer, features=2)(x)

  _, variables = init(model)(KEY, jnp.ones((1, 3)))
  assert list(variables['params']) == ['layer_0']


def test_temporary_invalidates_scope():
  with Scope({}, mutable=True).temporary() as root:
    root.put_variable('state', 'x', 1)
  assert root.invalid
  with pytest.raises(errors.InvalidScopeError):
    root.put_variable('state', 'x', 2)


def test_subtree_write_keeps_child_view_live():
  root = Scope({}, mutable='state')
  child = root.push('a')
  child.put_variable('state', 'x', 0.0)
  root.put_variable('state', 'a', {'x': 1.0})
  assert child.get_variable('state', 'x') == 1.0
  root.put_variable('state', 'a', 5.0)  # a leaf over the subtree: the child sees it gone
  assert not child.has_variable('state', 'x')


# Linen's results, object for object (Flax's own tests compare them with ==).
@pytest.mark.parametrize(
  'op, a, b, expected',
  [
    (scope.union_filters, False, False, set()),
    (scope.union_filters, DenyList(['a', 'b']), ['b', 'c'], DenyList({'a'})),
    (scope.intersect_filters, True, False, False),
    (
      scope.intersect_filters,
      DenyList(['a', 'b']),
      DenyList(['b', 'c']),
      DenyList({'a', 'b', 'c'}),
    ),
    (scope.intersect_filters, DenyList(['a', 'b']), ['b', 'c'], {'c'}),
    (scope.subtract_filters, True, False, DenyList(False)),
    (scope.subtract_filters, True, True, False),
    (scope.subtract_filters, DenyList(['a', 'b']), DenyList(['b', 'c']), {'c'}),
    (scope.subtract_filters, DenyList(['a', 'b']), ['b', 'c'], DenyList({'a', 'b', 'c'})),
  ],
)
def test_filter_algebra_results(op, a, b, expected):
  assert op(a, b) == expected


def test_is_filter_empty():
  assert scope.is_filter_empty(set()) and scope.is_filter_empty(False)
  assert scope.is_filter_empty(DenyList(True))
  assert not scope.is_filter_empty(DenyList('a')) and not scope.is_filter_empty('a')


def test_lifted_scopes_keep_their_aliasing():
  def f(s):
    a = s.push('a')

    def g(scopes, x):
      outer, inner = scopes
      assert inner.parent == outer
      inner.param('w', nn.initializers.ones, ())
      return x

    lift.vmap(g, variable_axes={'params': None}, split_rngs={'params': False})(
      (s, a), jnp.ones((1,))
    )

  _, variables = init(f)(KEY)
  assert variables['params'] == {'a': {'w': 1.0}}


def test_lifted_error_names_the_transform_in_the_path():
  def f(s):
    dense = lift.vmap(
      nn.dense, in_axes=(0, None), variable_axes={'params': 0}, split_rngs={'params': True}
    )
    dense(s.push('dense'), np.ones((3, 2)), 2)

  from flaxlike.core import apply

  with pytest.raises(errors.ScopeParamNotFoundError, match=r'scope "/vmap\(dense\)"'):
    apply(f)({'params': {'dense': {'abc': np.ones((3, 3))}}})


class _CustomGrad(linen.Module):
  @linen.compact
  def __call__(self, x):
    def f(mdl, x):
      return mdl(x)

    def fwd(mdl, x):
      return linen.vjp(f, mdl, x)

    def bwd(vjp_fn, y_t):
      return vjp_fn(y_t)

    return linen.custom_vjp(f, forward_fn=fwd, backward_fn=bwd)(linen.Dense(2), x)


class _Switch(linen.Module):
  @linen.compact
  def __call__(self, x):
    branches = [lambda m, x: linen.Dense(2, parent=m)(x), lambda m, x: -linen.Dense(2, parent=m)(x)]
    return linen.switch(0, branches, self, x)


class _Mapped(linen.Module):
  @linen.compact
  def __call__(self, x):
    ident = lambda v: v  # noqa: E731
    return linen.map_variables(linen.Dense, 'params', ident, ident, init=True)(2)(x)


@pytest.mark.parametrize('module', [_CustomGrad(), _Switch(), _Mapped()])
def test_lifted_params_come_out_in_linen_key_order(module):
  # Linen 0.12.8 hands these out key-sorted (they cross a JAX transform or a pytree copy),
  # so a Dense under them has bias before kernel; a plain Dense has kernel first.
  variables = module.init(KEY, jnp.ones((1, 3)))
  (dense_params,) = variables['params'].values()
  assert list(dense_params) == ['bias', 'kernel']
  plain = linen.Dense(2).init(KEY, jnp.ones((1, 3)))
  assert list(plain['params']) == ['kernel', 'bias']


def test_axis_metadata_subclass_that_is_also_a_pytree_node():
  # As in Linen, AxisMetadata is not itself a pytree, so a box may derive from both.
  from typing import Any

  from flaxlike import struct
  from flaxlike.core import meta

  class Boxed(struct.PyTreeNode, meta.AxisMetadata):
    value: Any
    added: tuple = struct.field(pytree_node=False, default=())

    def unbox(self):
      return self.value

    def replace_boxed(self, val):
      return self.replace(value=val)

    def add_axis(self, index, params):
      return self.replace(added=(index, *self.added))

    def remove_axis(self, index, params):
      return self.replace(added=self.added[1:])

  def f(s, x):
    return s.param('w', lambda k, shape: Boxed(jnp.ones(shape)), (2,)) * x

  stacked = lift.vmap(f, variable_axes={'params': 0}, split_rngs={'params': True})
  y, variables = init(stacked)(KEY, jnp.ones((3, 2)))
  box = variables['params']['w']
  assert isinstance(box, Boxed) and box.added == (0,) and box.value.shape == (3, 2)
  np.testing.assert_array_equal(y, np.ones((3, 2)))


def test_hand_made_scope_never_writes_into_frozen_input():
  from flaxlike.core import freeze

  frozen = freeze({'state': {'a': {'x': 1}}})
  root = Scope(frozen, mutable='state')
  root.push('a').put_variable('state', 'x', 2)
  assert frozen['state']['a']['x'] == 1
  assert root.variables()['state']['a']['x'] == 2
