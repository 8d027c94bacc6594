"""Design tests of core.lift on bare scopes: no Module anywhere."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlike import core, errors
from flaxlike.core import lift, meta
from flaxlike.core.scope import fold_static

lecun = jax.nn.initializers.lecun_normal()


def dense(scope, x, features=3):
  kernel = scope.param('kernel', lecun, (x.shape[-1], features))
  bias = scope.param('bias', jax.nn.initializers.zeros, (features,))
  y = x @ kernel
  return y + bias.reshape((1,) * (y.ndim - 1) + (-1,))


def test_vmap_ensemble_splits_params_per_member():
  def model(scope, x):
    return lift.vmap(
      dense, variable_axes={'params': 0}, split_rngs={'params': True}, in_axes=None, axis_size=4
    )(scope.push('ens'), x)

  x = jnp.ones((2, 5))
  y, variables = core.init(model)(jax.random.PRNGKey(0), x)
  kernel = variables['params']['ens']['kernel']
  assert kernel.shape == (4, 5, 3) and y.shape == (4, 2, 3)
  # Member i draws from split(root)[i] with the unchanged static suffix ('ens', 1).
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  for i in range(4):
    want = lecun(fold_static(keys[i], ('ens', 1)), (5, 3))
    np.testing.assert_array_equal(kernel[i], want)
  np.testing.assert_allclose(core.apply(model)(variables, x), y, rtol=1e-6)


def test_vmap_without_split_shares_the_key():
  def model(scope, x):
    return lift.vmap(
      dense, variable_axes={'params': 0}, split_rngs={'params': False}, in_axes=None, axis_size=3
    )(scope, x)

  _, variables = core.init(model)(jax.random.PRNGKey(1), jnp.ones((1, 2)))
  kernel = variables['params']['kernel']
  np.testing.assert_array_equal(kernel[0], kernel[2])


def _stack(scope, h):
  def layer(scope, h):
    return jnp.tanh(dense(scope.push('Dense_0'), h, h.shape[-1])), h.sum()

  return lift.scan(layer, variable_axes={'params': 0}, split_rngs={'params': True}, length=4)(
    scope, h
  )


def test_scan_over_layers_equals_unrolled_loop():
  h0 = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)
  (h, sums), variables = core.init(_stack)(jax.random.PRNGKey(2), h0)
  params = variables['params']['Dense_0']
  assert params['kernel'].shape == (4, 3, 3) and sums.shape == (4,)
  ref = h0
  for i in range(4):
    ref = jnp.tanh(ref @ params['kernel'][i] + params['bias'][i][None])
  np.testing.assert_allclose(h, ref, rtol=1e-5, atol=1e-6)
  (h2, _) = core.apply(_stack)(variables, h0)
  np.testing.assert_allclose(h2, ref, rtol=1e-5, atol=1e-6)


def test_scan_counter_offset_of_the_constancy_trace():
  def model(check):
    def layer(scope, h):
      return dense(scope.push('Dense_0'), h, h.shape[-1]), None

    def fn(scope, h):
      return lift.scan(
        layer,
        variable_axes={'params': 0},
        split_rngs={'params': True},
        length=2,
        check_constancy_invariants=check,
      )(scope.push('S'), h)

    return fn

  root = jax.random.PRNGKey(3)
  step_keys = jax.random.split(root, 2)
  for check, counter in ((True, 3), (False, 1)):
    _, variables = core.init(model(check))(root, jnp.ones((1, 2)))
    kernel = variables['params']['S']['Dense_0']['kernel']
    want = lecun(fold_static(step_keys[1], ('S', 'Dense_0', counter)), (2, 2))
    np.testing.assert_array_equal(kernel[1], want)


def test_scan_broadcast_variables_are_created_once_before_the_loop():
  def cell(scope, c, x):
    return jnp.tanh(dense(scope, jnp.concatenate([c, x], -1))), None

  fn = lift.scan(cell, variable_broadcast='params', split_rngs={'params': False})
  (c, _), variables = core.init(fn)(jax.random.PRNGKey(4), jnp.zeros((1, 3)), jnp.ones((5, 1, 2)))
  assert variables['params']['kernel'].shape == (5, 3)
  want = lecun(fold_static(jax.random.PRNGKey(4), (1,)), (5, 3))
  np.testing.assert_array_equal(variables['params']['kernel'], want)


def test_scan_rejects_broadcast_variable_depending_on_carry():
  def cell(scope, c, x):
    scope.variable('state', 'last', lambda: jnp.zeros(()))
    scope.put_variable('state', 'last', c.sum())
    return c + x, None

  fn = lift.scan(cell, variable_broadcast='state')
  with pytest.raises(ValueError, match='depends on the carry'):
    core.init(fn)(jax.random.PRNGKey(0), jnp.zeros(()), jnp.ones((3,)))


def test_immutable_collections_cannot_be_written_inside():
  def counting(scope, x):
    n = scope.variable('counter', 'n', jnp.zeros, ())
    n.value += 1
    return x

  fn = lift.vmap(counting, variable_axes={'counter': 0}, split_rngs={}, in_axes=0)
  _, variables = core.init(fn)(jax.random.PRNGKey(0), jnp.ones((2, 1)))
  np.testing.assert_array_equal(variables['counter']['n'], [1.0, 1.0])
  with pytest.raises(errors.ModifyScopeVariableError):
    core.apply(fn)(variables, jnp.ones((2, 1)))
  _, updated = core.apply(fn, mutable='counter')(variables, jnp.ones((2, 1)))
  np.testing.assert_array_equal(updated['counter']['n'], [2.0, 2.0])


def test_collections_outside_the_filters_are_invisible_and_untouched():
  seen = []

  def fn(scope, x):
    seen.append(sorted(scope.root._call.variables))
    return dense(scope, x)

  def model(scope, x):
    scope.variable('other', 'v', lambda: jnp.ones(()))
    return lift.vmap(fn, variable_axes={'params': 0}, split_rngs={'params': True}, in_axes=0)(
      scope.push('m'), x
    )

  _, variables = core.init(model)(jax.random.PRNGKey(0), jnp.ones((2, 1, 2)))
  assert list(variables) == ['other', 'params']
  assert all(cols in ([], ['params']) for cols in seen)


def test_inner_scopes_are_invalid_after_the_transform():
  leaked = []

  def fn(scope, x):
    leaked.append(scope)
    return x

  core.init(lambda s, x: lift.checkpoint(fn)(s, x))(jax.random.PRNGKey(0), jnp.ones(()))
  with pytest.raises(errors.InvalidScopeError):
    leaked[0].make_rng('params')


def test_jit_traces_once_and_forks_rngs():
  traces = []

  def noisy(scope, x):
    traces.append(1)
    return x + jax.random.normal(scope.make_rng('dropout'), x.shape)

  def model(scope, x):
    jitted = lift.jit(noisy)
    return jitted(scope, x), jitted(scope, x)

  # Second call is a cache hit, and its fork draws a new root key from the outer scope.
  (a, b), _ = core.init(model)(
    {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}, jnp.zeros((3,))
  )
  assert not np.allclose(a, b)
  k1 = fold_static(jax.random.PRNGKey(1), (1,))
  np.testing.assert_allclose(a, jax.random.normal(fold_static(k1, (2,)), (3,)), rtol=1e-6)


def test_jit_cache_is_reused_across_apply_calls():
  traces = []

  def body(scope, x):
    traces.append(1)
    return dense(scope, x)

  jitted = lift.jit(body)
  _, variables = core.init(jitted)(jax.random.PRNGKey(0), jnp.ones((1, 2)))
  count = len(traces)
  core.apply(jitted)(variables, jnp.ones((1, 2)))
  core.apply(jitted)(variables, jnp.ones((1, 2)))
  assert len(traces) == count + 1


def test_vmap_adds_and_removes_the_partition_axis():
  def boxed(scope, x):
    k = scope.param('kernel', meta.with_partitioning(lecun, ('in', 'out')), (x.shape[-1], 2))
    return x @ k

  fn = lift.vmap(
    boxed,
    variable_axes={'params': 0},
    split_rngs={'params': True},
    in_axes=None,
    axis_size=3,
    metadata_params={meta.PARTITION_NAME: 'layers'},
  )
  _, variables = core.init(fn)(jax.random.PRNGKey(0), jnp.ones((1, 4)))
  box = variables['params']['kernel']
  assert isinstance(box, meta.Partitioned)
  assert box.names == ('layers', 'in', 'out') and box.value.shape == (3, 4, 2)
  core.apply(fn)(variables, jnp.ones((1, 4)))


def test_cond_and_while_on_bare_scopes():
  def model(scope, x, pred):
    n = scope.variable('state', 'n', jnp.zeros, (), jnp.int32)

    def yes(s, x):
      return dense(s.push('d'), x)

    def no(s, x):
      return -dense(s.push('d'), x)

    y = lift.cond(pred, yes, no, scope, x)

    def body(s, c):
      s.put_variable('state', 'n', s.get_variable('state', 'n') + 1)
      return c * 2

    c = lift.while_loop(
      lambda s, c: s.get_variable('state', 'n') < 3, body, scope, 1.0, carry_variables='state'
    )
    return y, n.value, c

  (y, n, c), variables = core.init(model)(jax.random.PRNGKey(0), jnp.ones((1, 2)), True)
  assert int(n) == 3 and float(c) == 8.0
  y_false, _ = core.apply(model, mutable='state')(variables, jnp.ones((1, 2)), False)
  np.testing.assert_allclose(y_false[0], -y, rtol=1e-6)


def test_core_is_module_free():
  code = (
    'import sys\n'
    'class Block:\n'
    '  def find_spec(self, name, path=None, target=None):\n'
    '    if name.startswith("flaxlike.linen"):\n'
    '      raise ImportError("blocked " + name)\n'
    'sys.meta_path.insert(0, Block())\n'
    'import importlib\n'
    'sys.modules["flaxlike"] = type(sys)("flaxlike")\n'
    'import os\n'
    'sys.modules["flaxlike"].__path__ = [os.path.join(os.getcwd(), "flaxlike")]\n'
    'import flaxlike.core.lift, flaxlike.core.scope\n'
    'assert not any(m.startswith("flaxlike.linen") for m in sys.modules)\n'
  )
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
