"""Lifted transforms with Linen's semantics: nn.jit's cache key and static arguments, and
the scopes a transformed call reaches besides its module's own (bound modules held in
fields or passed as arguments, Variables)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike as nn
from flaxlike import errors


def _counter():
  return {'n': 0}


# -- nn.jit: what retraces ------------------------------------------------------------


def test_jit_siblings_with_equal_fields_share_one_trace():
  traces = _counter()

  class Foo(nn.Module):
    key: int

    @nn.jit
    @nn.compact
    def __call__(self, x):
      traces['n'] += 1
      count = self.variable('counts', 'count', lambda: 0)
      if not self.is_initializing():
        count.value += 1
      return x

  class Parent(nn.Module):
    keys: tuple = (0, 0, 0)

    @nn.compact
    def __call__(self, x):
      for k in self.keys:
        x = Foo(k)(x)
      return x

  x = jnp.ones(())
  counts = Parent().init({}, x)['counts']
  assert traces['n'] == 1  # Foo_0, Foo_1, Foo_2: one trace (names and paths are not keys)
  _, upd = Parent().apply({'counts': counts}, x, mutable=['counts'])
  assert traces['n'] == 2  # mutability is part of the key
  _, upd = Parent().apply(upd, x, mutable=['counts'])
  assert traces['n'] == 2
  assert [int(c['count']) for c in upd['counts'].values()] == [2, 2, 2]
  # A different field value is a different trace (Foo(0)'s init trace is reused).
  Parent(keys=(0, 1)).init({}, x)
  assert traces['n'] == 3


def test_jit_fields_holding_modules_key_by_their_fields():
  traces = _counter()

  class Leaf(nn.Module):
    k: int

    def __call__(self, x):
      return x + self.k

  class Parent(nn.Module):
    subs: tuple

    @nn.jit
    @nn.compact
    def __call__(self, x):
      traces['n'] += 1
      for m in self.subs:
        x = m(x)
      return x

  x = jnp.ones(())
  assert Parent((Leaf(1), Leaf(2))).apply({}, x) == 4.0
  Parent((Leaf(1), Leaf(2))).apply({}, x)
  assert traces['n'] == 1
  assert Parent((Leaf(3), Leaf(4))).apply({}, x) == 8.0
  assert traces['n'] == 2


def test_jit_serializable_field_is_keyed_by_its_state_not_its_hash():
  class Node:
    def __init__(self, a):
      self.a = a

    def __hash__(self):
      raise AssertionError('nn.jit must not hash a registered serializable type')

  nn.serialization.register_serialization_state(
    Node, lambda n: {'a': n.a}, lambda n, d: Node(d['a'])
  )
  traces = _counter()

  class Foo(nn.Module):
    node: Node

    @nn.jit
    def __call__(self, x):
      traces['n'] += 1
      return x + self.node.a

  x = jnp.ones(())
  assert Foo(Node(1)).apply({}, x) == 2.0
  assert Foo(Node(1)).apply({}, x) == 2.0
  assert Foo(Node(5)).apply({}, x) == 6.0
  assert traces['n'] == 2


def test_jit_static_argnames_argnums_and_kwargs():
  seen = []

  class Foo(nn.Module):
    @functools.partial(nn.jit, static_argnums=2, static_argnames='mode')
    def __call__(self, a, scale, *, b, mode='add'):
      seen.append((scale, mode))
      return (a + b if mode == 'add' else a - b) * scale

  a, b = jnp.array(3.0), jnp.array(1.0)
  assert Foo().apply({}, a, 2, b=b) == 8.0
  assert Foo().apply({}, a, 2, b=b, mode='sub') == 4.0
  assert Foo().apply({}, a, 2, b=b + 1) == 10.0  # only a dynamic argument changed
  assert Foo().apply({}, a, 3, b=b) == 12.0
  assert seen == [(2, 'add'), (2, 'sub'), (3, 'add')]


def test_jit_unhashable_static_argument_is_named():
  class Foo(nn.Module):
    @functools.partial(nn.jit, static_argnames='opts')
    def __call__(self, x, opts):
      return x

  with pytest.raises(ValueError, match="argument 'opts' is static but not hashable"):
    Foo().apply({}, jnp.ones(()), opts=[1, 2])


def test_jit_recursion_traces_once_per_static_value():
  traces = _counter()

  class Foo(nn.Module):
    @functools.partial(nn.jit, static_argnames='again')
    def __call__(self, x, *, again=True):
      traces['n'] += 1
      if again:
        x = self(x, again=False)
      return x + 1

  assert Foo().apply({}, jnp.array(1.0)) == 3.0
  assert Foo().apply({}, jnp.array(1.0)) == 3.0
  assert traces['n'] == 2


def test_jit_of_an_unbound_method():
  class Foo(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(x)

    @nn.jit
    def init_with_output(self, rngs, *args, **kwargs):
      return super().init_with_output(rngs, *args, **kwargs)

  y, variables = Foo().init_with_output(jax.random.key(0), jnp.ones((1, 3)))
  assert y.shape == (1, 2)
  assert variables['params']['Dense_0']['kernel'].shape == (3, 2)


def test_jit_rng_keys_do_not_depend_on_the_cache():
  class Block(nn.Module):
    @nn.jit
    @nn.compact
    def __call__(self, carry, _):
      return carry, self.make_rng('params')

  class Top(nn.Module):
    @nn.compact
    def __call__(self):
      scan = nn.scan(Block, variable_axes={'params': 0}, split_rngs={'params': True})
      return scan()(None, jnp.arange(3))[1]

  first, _ = Top().init_with_output(jax.random.key(1))  # traces
  second, _ = Top().init_with_output(jax.random.key(1))  # cached
  np.testing.assert_array_equal(jax.random.key_data(first), jax.random.key_data(second))
  assert len({tuple(k) for k in np.asarray(jax.random.key_data(first))}) == 3


# -- scopes reached through fields and arguments ----------------------------------------


def test_module_owned_elsewhere_in_a_field_is_lifted():
  class Counter(nn.Module):
    @nn.compact
    def __call__(self):
      v = self.variable('counter', 'n', lambda: jnp.zeros((), jnp.int32))
      v.value += 1
      return v.value

  class User(nn.Module):
    shared: nn.Module

    @nn.jit
    @nn.compact
    def __call__(self):
      return self.shared()

  class Top(nn.Module):
    @nn.compact
    def __call__(self):
      shared = Counter(name='shared')
      return User(shared, name='a')() + User(shared, name='b')()

  variables = Top().init({})
  assert int(variables['counter']['shared']['n']) == 2
  assert set(variables['counter']) == {'shared'}  # not copied under a/ or b/
  _, upd = Top().apply(variables, mutable='counter')
  assert int(upd['counter']['shared']['n']) == 4


def test_vmap_over_a_module_chain_held_in_fields():
  class A(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(3)(x)

  class B(nn.Module):
    inner: nn.Module

    def __call__(self, x):
      return self.inner(x)

  class C(nn.Module):
    b: nn.Module

    @functools.partial(nn.vmap, variable_axes={'params': 0}, split_rngs={'params': True})
    def __call__(self, x):
      return self.b(x)

  class D(nn.Module):
    @nn.compact
    def __call__(self, x):
      return C(B(A()))(x)

  params = D().init(jax.random.key(0), jnp.ones((4, 2)))['params']
  shapes = jax.tree_util.tree_map(jnp.shape, params)
  assert shapes == {'A_0': {'Dense_0': {'kernel': (4, 2, 3), 'bias': (4, 3)}}}


def test_module_and_variable_arguments_through_jit():
  class Inner(nn.Module):
    @nn.compact
    def __call__(self, x):
      v = self.variable('state', 'v', jnp.zeros, x.shape)
      v.value += x
      return v.value

  class Top(nn.Module):
    @nn.jit
    @nn.compact
    def __call__(self, x):
      total = self.variable('state', 'total', jnp.zeros, x.shape)
      y = self.use(x, Inner(name='inner'), total)
      return y

    @nn.jit
    def use(self, x, inner, total):
      y = inner(x)
      total.value += 2 * y
      return y

  x = jnp.ones((1,))
  variables = Top().init(jax.random.key(0), x)
  assert float(variables['state']['inner']['v'][0]) == 1.0
  assert float(variables['state']['total'][0]) == 2.0
  _, upd = Top().apply(variables, x, mutable='state')
  assert float(upd['state']['inner']['v'][0]) == 2.0
  assert float(upd['state']['total'][0]) == 6.0


def test_bound_module_inside_a_pytree_argument_of_vmap():
  class Top(nn.Module):
    @nn.compact
    def __call__(self, x):
      dense = nn.Dense(2, name='dense')
      dense(x[0])  # create its params outside the vmap

      def apply_all(mdl, fn, x):
        return fn(x)

      fn = jax.tree_util.Partial(lambda mods, x: mods[0](x), [dense])
      return nn.vmap(apply_all, in_axes=(None, 0), variable_axes={'params': None})(self, fn, x)

  x = jnp.ones((3, 4))
  variables = Top().init(jax.random.key(0), x)
  y = Top().apply(variables, x)
  p = variables['params']['dense']
  np.testing.assert_allclose(y, x @ p['kernel'] + p['bias'][None], rtol=1e-6)


def test_argument_below_the_module_keeps_its_name_reserved():
  class Foo(nn.Module):
    @nn.jit
    def helper(self, x, m):
      nn.Dense(2, name='a')
      return m(x)

    @nn.jit
    @nn.compact
    def __call__(self, x):
      return self.helper(x, nn.Dense(2, name='a'))

  with pytest.raises(errors.NameInUseError):
    Foo().init(jax.random.key(0), jnp.ones((2,)))


def test_bound_methods_as_cond_branches():
  class Model(nn.Module):
    def setup(self):
      self.dense = nn.Dense(3)

    def double(self, x):
      return 2 * self.dense(x)

    def single(self, x):
      return self.dense(x)

    def __call__(self, x, pred):
      return nn.cond(pred, self.double, self.single, self, x)

  x = jnp.ones((3,))
  variables = Model().init(jax.random.key(0), x, True)
  y2 = Model().apply(variables, x, True)
  y1 = Model().apply(variables, x, False)
  np.testing.assert_allclose(y2, 2 * y1, rtol=1e-6)


def test_partially_applied_constructor_as_target():
  VDense = nn.vmap(
    functools.partial(nn.Dense, 2),
    variable_axes={'params': 0},
    split_rngs={'params': True},
    in_axes=None,
    axis_size=3,
  )
  params = VDense().init(jax.random.key(0), jnp.ones((1, 4)))['params']
  assert params['kernel'].shape == (3, 4, 2)


# -- multi-scope differentiation, against jax on plain functions ---------------------------


def _two_scope_model():
  class Foo(nn.Module):
    bar: nn.Module

    @nn.compact
    def __call__(self, x, y):
      def loss(mdl, x, y):
        return jnp.sum((y - mdl.bar(nn.Dense(3, name='own')(x))) ** 2)

      value_grads = nn.value_and_grad(loss, self, x, y)
      out, vjp_fn = nn.vjp(loss, self, x, y, multi_scope=True)
      return value_grads, out, vjp_fn(jnp.ones(()))

  class Top(nn.Module):
    @nn.compact
    def __call__(self, x, y):
      return Foo(nn.Dense(2, name='bar'))(x, y)

  return Top()


def test_value_and_grad_and_vjp_over_two_scopes_match_jax():
  x = jax.random.uniform(jax.random.key(1), (4,))
  y = jax.random.uniform(jax.random.key(2), (2,))
  model = _two_scope_model()
  variables = model.init(jax.random.key(0), x, y)
  (value, (gx, gy)), out, (var_grads, vx, vy) = model.apply(variables, x, y)
  own = variables['params']['Foo_0']['own']
  bar = variables['params']['bar']

  def plain(own, bar, x, y):
    h = x @ own['kernel'] + own['bias']
    return jnp.sum((y - (h @ bar['kernel'] + bar['bias'])) ** 2)

  ref, ref_vjp = jax.vjp(plain, own, bar, x, y)
  g_own, g_bar, g_x, g_y = ref_vjp(jnp.ones(()))
  np.testing.assert_allclose(value, ref, rtol=1e-5)
  np.testing.assert_allclose(out, ref, rtol=1e-5)
  for got, want in [(gx, g_x), (gy, g_y), (vx, g_x), (vy, g_y)]:
    np.testing.assert_allclose(got, want, rtol=1e-5)
  # Linen's order: the field module's scope first, the module's own last.
  bar_grads, own_grads = var_grads
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), bar_grads['params'], g_bar
  )
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), own_grads['params']['own'], g_own
  )


def test_vjp_over_several_scopes_needs_multi_scope():
  class Foo(nn.Module):
    bar: nn.Module

    @nn.compact
    def __call__(self, x):
      return nn.vjp(lambda mdl, x: mdl.bar(x), self, x)[0]

  class Top(nn.Module):
    @nn.compact
    def __call__(self, x):
      return Foo(nn.Dense(2))(x)

  with pytest.raises(ValueError, match='does not yet support Modules that include other'):
    Top().init(jax.random.key(0), jnp.ones((3,)))


# -- boxed metadata -----------------------------------------------------------------------


def test_axis_metadata_subclass_that_lists_pytreenode_first():
  from flaxlike import struct
  from flaxlike.core import meta

  class MeanBox(struct.PyTreeNode, meta.AxisMetadata):
    """Stores the mean over the mapped axis; hands out a broadcast copy inside."""

    value: jax.Array

    def unbox(self):
      return self.value

    def add_axis(self, index, params):
      return self.replace(value=jnp.mean(self.value, axis=index))

    def remove_axis(self, index, params):
      shape = list(self.value.shape)
      shape.insert(index, params['axis_size'])
      return self.replace(value=jnp.broadcast_to(self.value, shape))

  class Foo(nn.Module):
    @nn.compact
    def __call__(self, x):
      v = self.variable('aux', 'v', lambda: MeanBox(jnp.full((), 2.0)))
      return x * v.value

  class Top(nn.Module):
    @nn.compact
    def __call__(self, x):
      vfoo = nn.vmap(Foo, variable_axes={'aux': 0}, metadata_params={'axis_size': x.shape[0]})(
        name='vfoo'
      )
      return vfoo(x)

  x = jnp.ones((3, 2))
  y, variables = Top().init_with_output(jax.random.key(0), x)
  box = variables['aux']['vfoo']['v']
  assert isinstance(box, MeanBox) and box.value.shape == ()
  np.testing.assert_allclose(y, 2 * x)
  np.testing.assert_allclose(Top().apply(variables, x), 2 * x)
