"""The legacy axis-rule API (``flaxlike.linen.partitioning``) over ``spmd``.

Runs on the 8 fake CPU devices the root conftest sets up.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import flaxlike as nn
from flaxlike.linen import partitioning

RULES = (('batch', 'data'), ('embed', None), ('mlp', 'model'), ('layers', None))
MESH = jax.make_mesh((2, 4), ('data', 'model'), axis_types=(AxisType.Auto,) * 2)


def _laid_out(array, spec):
  """Whether ``array`` is sharded as ``spec`` on MESH (trailing Nones do not matter)."""
  return array.sharding.is_equivalent_to(NamedSharding(MESH, spec), array.ndim)


class Mlp(nn.Module):
  hidden: int = 8

  @nn.compact
  def __call__(self, x):
    w1 = partitioning.param_with_axes(
      'w1', nn.initializers.lecun_normal(), (x.shape[-1], self.hidden), axes=('embed', 'mlp')
    )
    w2 = partitioning.param_with_axes(
      'w2', nn.initializers.lecun_normal(), (self.hidden, x.shape[-1]), axes=('mlp', 'embed')
    )
    return jnp.tanh(x @ w1) @ w2


class PlainMlp(nn.Module):
  """Mlp with self.param: same names, so the same keys and values."""

  hidden: int = 8

  @nn.compact
  def __call__(self, x):
    w1 = self.param('w1', nn.initializers.lecun_normal(), (x.shape[-1], self.hidden))
    w2 = self.param('w2', nn.initializers.lecun_normal(), (self.hidden, x.shape[-1]))
    return jnp.tanh(x @ w1) @ w2


def test_legacy_rules_are_the_spmd_rules():
  assert partitioning.axis_rules is nn.logical_axis_rules
  assert partitioning.with_sharding_constraint is nn.with_logical_constraint
  with partitioning.axis_rules(RULES):
    assert nn.get_logical_axis_rules() == RULES
    assert nn.logical_to_mesh_axes(('batch', 'mlp')) == P('data', 'model')
  with nn.logical_axis_rules(RULES):
    assert partitioning.get_axis_rules() == RULES
  partitioning.set_axis_rules(RULES)
  try:
    assert nn.get_logical_axis_rules() == RULES
  finally:
    partitioning.set_axis_rules(())


def test_param_with_axes_values_and_metadata():
  x = jnp.arange(12.0).reshape(3, 4) / 10
  key = jax.random.key(3)
  with partitioning.axis_rules(RULES):
    variables = Mlp().init(key, x)
  plain = PlainMlp().init(key, x)
  # The parameters are exactly those self.param makes; the names live beside them.
  for name in ('w1', 'w2'):
    np.testing.assert_array_equal(variables['params'][name], plain['params'][name])
  np.testing.assert_array_equal(
    Mlp().apply({'params': variables['params']}, x), PlainMlp().apply(plain, x)
  )
  assert variables['params_axes'] == {
    'w1_axes': partitioning.AxisMetadata(('embed', 'mlp')),
    'w2_axes': partitioning.AxisMetadata(('mlp', 'embed')),
  }
  names = partitioning.get_axis_names(variables['params_axes'])
  assert names == {'w1': P('embed', 'mlp'), 'w2': P('mlp', 'embed')}
  assert nn.logical_to_mesh(names.unfreeze(), RULES) == {
    'w1': P(None, 'model'),
    'w2': P('model', None),
  }


def test_param_with_axes_lays_params_out_on_the_mesh():
  x = jnp.ones((8, 4))
  with jax.set_mesh(MESH), partitioning.axis_rules(RULES):
    variables = jax.jit(Mlp().init)(jax.random.key(0), x)
  assert _laid_out(variables['params']['w1'], P(None, 'model'))
  assert _laid_out(variables['params']['w2'], P('model', None))
  # Without rules nothing is constrained: the params stay whole on one device.
  with jax.set_mesh(MESH):
    jaxpr = str(jax.make_jaxpr(Mlp().init)(jax.random.key(0), x))
  assert 'sharding_constraint' not in jaxpr


def test_get_axis_names_drives_a_sharded_train_step():
  x = jnp.ones((8, 4))
  with partitioning.axis_rules(RULES):
    variables = Mlp().init(jax.random.key(0), x)
    specs = nn.logical_to_mesh(partitioning.get_axis_names(variables['params_axes']).unfreeze())
  shardings = jax.tree_util.tree_map(lambda s: NamedSharding(MESH, s), specs)
  params = jax.device_put(variables['params'], shardings)
  step = jax.jit(
    lambda p: jax.tree_util.tree_map(
      lambda w, g: w - 0.1 * g,
      p,
      jax.grad(lambda p: jnp.sum(Mlp().apply({'params': p}, x) ** 2))(p),
    ),
    out_shardings=shardings,
  )
  new = step(params)
  assert _laid_out(new['w1'], P(None, 'model'))
  expected = jax.tree_util.tree_map(
    lambda w, g: w - 0.1 * g,
    variables['params'],
    jax.grad(lambda p: jnp.sum(Mlp().apply({'params': p}, x) ** 2))(variables['params']),
  )
  for name in ('w1', 'w2'):
    np.testing.assert_allclose(new[name], expected[name], rtol=1e-6, atol=1e-6)


def test_variable_with_axes_reads_and_writes_through_constraints():
  class Cache(nn.Module):
    @nn.compact
    def __call__(self, x):
      cache = partitioning.variable_with_axes(
        'cache', 'k', jnp.zeros, x.shape, axes=('batch', 'mlp')
      )
      assert isinstance(cache, partitioning.PartitionedVariable)
      cache.value = cache.value + x
      return cache.value

  x = jnp.arange(32.0).reshape(8, 4)
  with partitioning.axis_rules(RULES):
    y, state = Cache().init_with_output(jax.random.key(0), x)
  np.testing.assert_array_equal(y, x)
  assert state['cache_axes'] == {'k_axes': partitioning.AxisMetadata(('batch', 'mlp'))}
  with jax.set_mesh(MESH), partitioning.axis_rules(RULES):
    y, state = jax.jit(lambda s, x: Cache().apply(s, x, mutable='cache'))(state, x)
  np.testing.assert_array_equal(y, 2 * x)
  assert _laid_out(state['cache']['k'], P('data', 'model'))


def test_variable_with_axes_fallback_raise_names_the_axis():
  class Strict(nn.Module):
    @nn.compact
    def __call__(self, x):
      v = partitioning.variable_with_axes(
        'stats',
        'mean',
        jnp.zeros,
        x.shape,
        axes=('batch', 'unknown'),
        fallback=partitioning.RulesFallback.RAISE_ERROR,
      )
      return v.value

  with partitioning.axis_rules(RULES), pytest.raises(ValueError, match=r"\['unknown'\]"):
    Strict().init(jax.random.key(0), jnp.ones((2, 3)))


def test_pytree_axes():
  def init_fn(key, shape):
    return {'a': jnp.ones(shape), 'b': (jnp.zeros(shape), jnp.zeros(shape[::-1]))}

  axes = {'a': ('embed', 'mlp'), 'b': (('embed', 'mlp'), ('mlp', 'embed'))}

  class Tree(nn.Module):
    @nn.compact
    def __call__(self, x):
      return x @ partitioning.param_with_axes('t', init_fn, (4, 8), axes=axes)['a']

  with jax.set_mesh(MESH), partitioning.axis_rules(RULES):
    variables = jax.jit(Tree().init)(jax.random.key(0), jnp.ones((2, 4)))
  assert _laid_out(variables['params']['t']['b'][1], P('model', None))
  assert partitioning.get_axis_names(variables['params_axes'])['t'] == {
    'a': P('embed', 'mlp'),
    'b': (P('embed', 'mlp'), P('mlp', 'embed')),
  }


def test_errors():
  with pytest.raises(ValueError, match='no Module method is running'):
    partitioning.param_with_axes('w', nn.initializers.zeros, (2,), axes=('embed',))

  class TooMany(nn.Module):
    @nn.compact
    def __call__(self, x):
      return partitioning.param_with_axes('w', nn.initializers.zeros, (2,), axes=('embed', 'mlp'))

  with pytest.raises(ValueError, match=r"'w' of TooMany: 2 logical axis names"):
    TooMany().init(jax.random.key(0), None)

  class Cache(nn.Module):
    @nn.compact
    def __call__(self, axes):
      return partitioning.variable_with_axes('c', 'v', jnp.zeros, (2,), axes=axes).value

  class Changing(nn.Module):
    @nn.compact
    def __call__(self, x):
      cache = Cache()
      cache(('embed',))
      cache(('mlp',))  # the same variable, other names
      return x

  with pytest.raises(ValueError, match='If axis names are sown twice, expected them to match'):
    Changing().init(jax.random.key(0), None)
  with pytest.raises(TypeError, match='Dense_0/kernel holds'):
    partitioning.get_axis_names({'Dense_0': {'kernel': jnp.ones(2)}})


class SinDot(nn.Module):
  @nn.compact
  def __call__(self, x):
    w = partitioning.param_with_axes(
      'w', nn.initializers.lecun_normal(), (x.shape[-1], x.shape[-1]), axes=('embed', 'mlp')
    )
    y = jnp.sin(x @ w)
    partitioning.variable_with_axes('stats', 'y', lambda: y, axes=('batch', 'mlp'))
    return y, None


def test_scan_with_axes_stacks_names_and_matches_a_loop():
  x = jnp.linspace(-1, 1, 12).reshape(3, 4)
  Stack = partitioning.scan_with_axes(
    SinDot,
    variable_axes={'params': 0, 'stats': 1},
    split_rngs={'params': True},
    in_axes=(),
    length=5,
    axis_name='layers',
    axes_collections=('params', 'stats'),
  )
  with partitioning.axis_rules(RULES):
    (y, _), variables = Stack().init_with_output(jax.random.key(0), x)
  assert variables['params']['w'].shape == (5, 4, 4)
  assert variables['stats']['y'].shape == (3, 5, 4)
  assert partitioning.get_axis_names(variables['params_axes']) == {'w': P('layers', 'embed', 'mlp')}
  assert partitioning.get_axis_names(variables['stats_axes']) == {'y': P('batch', 'layers', 'mlp')}
  h = x
  for i in range(5):
    h = jnp.sin(h @ variables['params']['w'][i])
  np.testing.assert_allclose(y, h, rtol=1e-6)
  # apply with the metadata passed in (immutable): names are checked, outputs unchanged.
  y2, _ = Stack().apply(variables, x)
  np.testing.assert_array_equal(y2, y)
  bad = dict(variables, params_axes={'w_axes': partitioning.AxisMetadata(('embed', 'mlp', 'x'))})
  with pytest.raises(ValueError, match='Expected axis layers at position 0 in axis metadata'):
    Stack().apply(bad, x)


def test_scan_with_axes_negative_axis_names_the_last_dimension():
  Stack = partitioning.scan_with_axes(
    SinDot,
    variable_axes={'params': -1, 'stats': -1},
    split_rngs={'params': True},
    in_axes=(),
    length=2,
    axis_name='layers',
    axes_collections=('params', 'stats'),
  )
  variables = Stack().init(jax.random.key(0), jnp.ones((3, 4)))
  assert variables['params']['w'].shape == (4, 4, 2)
  assert variables['params_axes']['w_axes'].names == ('embed', 'mlp', 'layers')
  assert variables['stats']['y'].shape == (3, 4, 2)
  assert variables['stats_axes']['y_axes'].names == ('batch', 'mlp', 'layers')
  Stack().apply(variables, jnp.ones((3, 4)))


def test_vmap_with_axes_inserts_the_mapped_axis():
  class Foo(nn.Module):
    @nn.compact
    def __call__(self, x):
      w = partitioning.param_with_axes(
        'w', nn.initializers.uniform(), (4, 3), axes=('embed', 'mlp')
      )
      return w @ x

  Vmapped = partitioning.vmap_with_axes(
    Foo,
    variable_axes={'params': 1},
    split_rngs={'params': True},
    partitioning_axis_names={'params': 'ensemble'},
  )
  x = jnp.arange(6.0).reshape(2, 3)
  y, variables = Vmapped().init_with_output(jax.random.key(0), x)
  w = variables['params']['w']
  assert w.shape == (4, 2, 3)
  assert variables['params_axes']['w_axes'].names == ('embed', 'ensemble', 'mlp')
  np.testing.assert_allclose(y, jnp.stack([w[:, i] @ x[i] for i in range(2)]), rtol=1e-6)


def test_remat_static_argnums_count_after_self():
  class Block(nn.Module):
    @nn.compact
    def __call__(self, x, power, scale):
      return scale * nn.Dense(3)(x) ** power

  x = jnp.linspace(0.1, 1.0, 6).reshape(2, 3)
  RematBlock = partitioning.remat(Block, static_argnums=(1,))
  assert RematBlock.__name__ == 'Core_remat_staticBlock'
  variables = RematBlock().init(jax.random.key(0), x, 2, jnp.float32(0.5))
  plain = Block().init(jax.random.key(0), x, 2, jnp.float32(0.5))
  np.testing.assert_array_equal(
    variables['params']['Dense_0']['kernel'], plain['params']['Dense_0']['kernel']
  )

  def loss(model):
    return lambda p: jnp.sum(model.apply(p, x, 3, jnp.float32(0.5)))

  np.testing.assert_allclose(
    jax.grad(loss(RematBlock()))(variables)['params']['Dense_0']['kernel'],
    jax.grad(loss(Block()))(plain)['params']['Dense_0']['kernel'],
    rtol=1e-6,
  )
  jaxpr = str(jax.make_jaxpr(jax.grad(loss(RematBlock())))(variables))
  assert 'checkpoint' in jaxpr or 'remat' in jaxpr

  class Parent(nn.Module):
    @nn.compact
    def __call__(self, x):
      return partitioning.remat(Block, static_argnums=(1,))()(x, 2, 1.0)

  params = Parent().init(jax.random.key(0), x)['params']
  assert list(params) == ['Core_remat_staticBlock_0']  # Linen's autoname
  with pytest.raises(ValueError, match='static_argnums instead'):
    partitioning.remat(Block, concrete=True)().init(jax.random.key(0), x, 2, 1.0)
