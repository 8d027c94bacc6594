"""The scope engine on bare ``fn(scope, ...)`` models: variables, RNG, errors, design."""

import hashlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlike import config, core, errors
from flaxlike.core import rng as rng_lib
from flaxlike.core import scope as scope_lib

KEY = jax.random.PRNGKey(42)
lecun = jax.nn.initializers.lecun_normal()
zeros = jax.nn.initializers.zeros


def dense(scope, x, features):
  kernel = scope.param('kernel', lecun, (x.shape[-1], features))
  bias = scope.param('bias', zeros, (features,))
  return x @ kernel + bias[None, :]


def mlp(scope, x, widths=(8, 4)):
  for i, width in enumerate(widths):
    x = dense(scope.push(f'Dense_{i}'), x, width)
    if i < len(widths) - 1:
      x = jax.nn.relu(x)
  return x


def residual_net(scope, x, depth=3):
  width = x.shape[-1]
  for i in range(depth):
    block = scope.push(f'block_{i}')
    h = jax.nn.relu(dense(block.push('Dense_0'), x, width))
    x = x + dense(block.push('Dense_1'), h, width)
  return x


# -- RNG derivation ---------------------------------------------------------------------


@pytest.mark.parametrize(
  'data, expected_hex',
  [
    (('Dense_0', 1), 'b2b71315'),
    (('Dense_0', 2), '8916588a'),
    (('Inner_0', 'Dense_0', 1), '53a19d4b'),
    ((1,), 'bf8b4530'),
    ((2,), 'c4ea21bb'),
  ],
)
def test_suffix_hash_matches_spec_vectors(data, expected_hex):
  assert rng_lib._hash_suffix(data) == int(expected_hex, 16)


def test_int_encoding_is_minimal_big_endian():
  def reference(data):
    digest = hashlib.sha1()
    for x in data:
      digest.update(
        x.encode() if isinstance(x, str) else x.to_bytes((x.bit_length() + 7) // 8, 'big')
      )
    return int.from_bytes(digest.digest()[:4], 'big')

  for n in (0, 1, 255, 256, 300, 2**31, 2**40):
    assert rng_lib._hash_suffix(('a', n)) == reference(('a', n))
  # 0 contributes no bytes at all.
  assert rng_lib._hash_suffix(('a', 0)) == rng_lib._hash_suffix(('a',))


def test_separator_flag_changes_hash():
  with config.temp_flip_flag('flax_fix_rng_separator', True):
    assert rng_lib._hash_suffix(('Dense_0', 1)) == 0xFFA3CA5F
  assert rng_lib._hash_suffix(('Dense_0', 1)) == 0xB2B71315


def test_folded_keys_match_spec():
  expected = {
    ('Dense_0', 1): [1266288034, 1328509655],
    ('Dense_0', 2): [1726139582, 411378831],
    ('Inner_0', 'Dense_0', 1): [3590673497, 3586029326],
    (1,): [2508904396, 67982358],
    (2,): [548509436, 1444970535],
  }
  for data, key in expected.items():
    np.testing.assert_array_equal(scope_lib.fold_static(KEY, data), np.array(key, np.uint32))


def test_init_values_match_linen_vectors():
  _, top = core.init(dense)(KEY, jnp.ones((1, 5)), 4)
  np.testing.assert_allclose(
    top['params']['kernel'][0], [-0.09098843, 0.76460475, -0.12360812, -0.21793514], rtol=1e-6
  )
  _, nested = core.init(mlp)(KEY, jnp.ones((1, 5)), (4,))
  np.testing.assert_allclose(
    nested['params']['Dense_0']['kernel'][0],
    [-0.23345783, -0.56835914, 0.5695558, 0.89690644],
    rtol=1e-6,
  )


def test_typed_and_raw_keys_give_identical_params():
  _, raw = core.init(mlp)(jax.random.PRNGKey(3), jnp.ones((2, 5)))
  _, typed = core.init(mlp)(jax.random.key(3), jnp.ones((2, 5)))
  jax.tree_util.tree_map(np.testing.assert_array_equal, raw, typed)


def test_make_rng_counters_and_params_fallback():
  def draw(scope):
    return scope.make_rng('params'), scope.make_rng('dropout'), scope.make_rng('params')

  first, fallback, third = core.init(draw)(KEY)[0]
  np.testing.assert_array_equal(first, scope_lib.fold_static(KEY, (1,)))
  # The missing stream falls back to 'params' and advances its counter.
  np.testing.assert_array_equal(fallback, scope_lib.fold_static(KEY, (2,)))
  np.testing.assert_array_equal(third, scope_lib.fold_static(KEY, (3,)))


def test_missing_stream_error_names_path_and_fix():
  def needs_dropout(scope):
    return scope.push('Dropout_0').make_rng('dropout')

  with pytest.raises(
    errors.InvalidRngError, match=r'Dropout_0 needs PRNG for "dropout" \(scope /Dropout_0\).*rngs='
  ):
    core.apply(needs_dropout)({})


def test_repushed_child_continues_counters():
  def twice(scope):
    child = scope.push('c')
    a = child.make_rng('params')
    scope.rewind()
    child_again = scope.push('c')
    return a, child_again.make_rng('params')

  a, b = core.init(twice)(KEY)[0]
  np.testing.assert_array_equal(a, scope_lib.fold_static(KEY, ('c', 1)))
  np.testing.assert_array_equal(b, scope_lib.fold_static(KEY, ('c', 2)))


@pytest.mark.parametrize(
  'bad', [jnp.ones(2), {'params': 3}, {'params': np.zeros((2,), np.float32)}, 'key']
)
def test_invalid_rngs_rejected(bad):
  with pytest.raises(errors.InvalidRngError):
    core.init(dense)(bad, jnp.ones((1, 2)), 2)


# -- variables and mutability -------------------------------------------------------------


def test_tree_layout_and_creation_order():
  def model(scope, x):
    stats = scope.push('Norm_0').variable('batch_stats', 'mean', jnp.zeros, (3,))
    y = dense(scope.push('Dense_0'), x, 3)
    scope.param('a', zeros, ())
    return y + stats.value[None, :]

  _, variables = core.init(model)(KEY, jnp.ones((1, 2)))
  assert list(variables) == ['batch_stats', 'params']
  assert list(variables['params']) == ['Dense_0', 'a']
  assert list(variables['params']['Dense_0']) == ['kernel', 'bias']


def test_apply_with_mutable_collection_returns_updates_and_copies_input():
  def counter(scope):
    count = scope.variable('counter', 'n', jnp.zeros, ())
    count.value = count.value + 1
    return count.value

  given = {'counter': {'n': jnp.array(5.0)}}
  out, updated = core.apply(counter, mutable=['counter'])(given)
  assert float(out) == 6.0 and float(updated['counter']['n']) == 6.0
  assert float(given['counter']['n']) == 5.0  # the caller's dict is never written


def test_writing_immutable_collection_raises():
  def counter(scope):
    count = scope.variable('counter', 'n', jnp.zeros, ())
    count.value = count.value + 1

  with pytest.raises(errors.ModifyScopeVariableError, match='mutable=\\["counter"\\]'):
    core.apply(counter)({'counter': {'n': jnp.array(0.0)}})


def test_missing_param_and_collection_errors():
  _, variables = core.init(mlp)(KEY, jnp.ones((1, 3)))
  del variables['params']['Dense_1']['bias']
  with pytest.raises(errors.ScopeParamNotFoundError, match='"bias" in scope "/Dense_1"'):
    core.apply(mlp)(variables, jnp.ones((1, 3)))
  with pytest.raises(errors.ScopeCollectionNotFound, match='collection "params"'):
    core.apply(mlp)({}, jnp.ones((1, 3)))


def test_param_shape_mismatch_names_both_shapes():
  _, variables = core.init(dense)(KEY, jnp.ones((1, 3)), 4)
  with pytest.raises(errors.ScopeParamShapeError) as info:
    core.apply(dense)(variables, jnp.ones((1, 3)), 5)
  message = str(info.value)
  assert '"kernel" in "/"' in message and '(3, 5)' in message and '(3, 4)' in message


def test_initializer_not_retraced_on_every_apply():
  calls = []

  def counting_init(key, shape):
    calls.append(shape)
    return jnp.zeros(shape)

  def model(scope, x):
    return x * scope.param('w', counting_init, (3,))[None, :]

  _, variables = core.init(model)(KEY, jnp.ones((1, 3)))
  assert len(calls) == 1
  for _ in range(5):
    core.apply(model)(variables, jnp.ones((1, 3)))
  # One abstract evaluation for the shape check, cached for every later apply.
  assert len(calls) == 2


def test_invalid_variables_structure():
  with pytest.raises(errors.ApplyScopeInvalidVariablesTypeError):
    core.apply(dense)((1, 2), jnp.ones((1, 2)), 2)
  with pytest.raises(errors.ApplyScopeInvalidVariablesTypeError, match='"params" is a list'):
    core.apply(dense)({'params': [1]}, jnp.ones((1, 2)), 2)
  _, variables = core.init(dense)(KEY, jnp.ones((1, 2)), 2)
  with pytest.raises(errors.ApplyScopeInvalidVariablesStructureError):
    core.apply(dense)({'params': variables}, jnp.ones((1, 2)), 2)


def test_scope_invalid_after_call():
  kept = []

  def model(scope):
    kept.append(scope)

  core.init(model)(KEY)
  with pytest.raises(errors.InvalidScopeError):
    kept[0].make_rng('params')


def test_name_collisions():
  def model(scope):
    scope.push('a')
    scope.param('a', zeros, ())

  with pytest.raises(errors.NameInUseError, match='param "a"'):
    core.init(model)(KEY)

  def shared_name_across_collections(scope):
    scope.variable('batch_stats', 'x', jnp.zeros, ())
    scope.param('x', zeros, ())

  _, variables = core.init(shared_name_across_collections)(KEY)
  assert set(variables) == {'batch_stats', 'params'}


def test_raw_jax_transform_mixed_with_scope_raises():
  def model(scope, x):
    return jax.jit(lambda y: y * scope.param('w', zeros, ()))(x)

  with pytest.raises(errors.JaxTransformError):
    core.init(model)(KEY, jnp.ones(()))


def test_frozen_dict_variables_are_accepted():
  _, variables = core.init(mlp)(KEY, jnp.ones((1, 3)))
  expected = core.apply(mlp)(variables, jnp.ones((1, 3)))
  np.testing.assert_array_equal(core.apply(mlp)(core.freeze(variables), jnp.ones((1, 3))), expected)


def test_return_frozendict_flag():
  with config.temp_flip_flag('flax_return_frozendict', True):
    _, variables = core.init(dense)(KEY, jnp.ones((1, 2)), 2)
  assert isinstance(variables, core.FrozenDict)


# -- lazy init -------------------------------------------------------------------------


def test_lazy_init_matches_init_from_shapes_only():
  abstract = jax.ShapeDtypeStruct((2, 5), jnp.float32)
  lazy = core.lazy_init(mlp)(KEY, abstract)
  _, eager = core.init(mlp)(KEY, jnp.ones((2, 5)))
  jax.tree_util.tree_map(np.testing.assert_array_equal, lazy, eager)


def test_lazy_init_rejects_data_dependent_variables():
  def data_dependent(scope, x):
    scope.variable('stats', 'mean', lambda: x.mean(0))
    return x

  with pytest.raises(errors.LazyInitError, match='variable stats/mean \\(shape \\(3,\\)\\)'):
    core.lazy_init(data_dependent)(KEY, jax.ShapeDtypeStruct((2, 3), jnp.float32))


def test_lazy_init_computes_variables_from_inputs_given_as_arrays():
  # Only inputs given by shape are unknown, as in Linen: a variable computed from an array
  # argument gets its value, and a flag argument reaches the function as a Python value.
  def normalizer(scope, x, y, center):
    assert center is True
    mean = scope.variable('stats', 'mean', lambda: x.mean(0))
    return (y - mean.value[None]) if center else y

  x = jnp.arange(6.0).reshape(2, 3)
  variables = core.lazy_init(normalizer)(KEY, x, jax.ShapeDtypeStruct((4, 3), jnp.float32), True)
  np.testing.assert_array_equal(variables['stats']['mean'], np.array([1.5, 2.5, 3.5]))


# -- design tests: plain models written against the engine alone ---------------------------------


def _jitted_mean_square_loss(model, x):
  apply = core.apply(model)

  @jax.jit
  def loss(params):
    return jnp.mean(apply({'params': params}, x) ** 2)

  return loss


def test_design_mlp_and_residual_net_train_with_jit():
  x = jnp.linspace(-1, 1, 24).reshape(8, 3)
  for model in (mlp, residual_net):
    _, variables = core.init(model)(KEY, x)
    params = variables['params']
    loss = _jitted_mean_square_loss(model, x)

    grads = jax.grad(loss)(params)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
    stepped = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
    assert float(loss(stepped)) < float(loss(params))


def test_residual_net_matches_numpy_reference():
  x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
  _, variables = core.init(residual_net)(KEY, x)
  h = x.astype(np.float64)
  for i in range(3):
    block = variables['params'][f'block_{i}']
    k0, b0 = (np.asarray(block['Dense_0'][n], np.float64) for n in ('kernel', 'bias'))
    k1, b1 = (np.asarray(block['Dense_1'][n], np.float64) for n in ('kernel', 'bias'))
    h = h + (np.maximum(h @ k0 + b0, 0) @ k1 + b1)
  np.testing.assert_allclose(core.apply(residual_net)(variables, x), h, rtol=1e-5, atol=1e-6)


def test_core_imports_without_linen():
  code = (
    'import sys, importlib, pkgutil\n'
    'class Block:\n'
    '  def find_spec(self, name, path=None, target=None):\n'
    "    if name == 'flaxlike.linen' or name.startswith('flaxlike.linen.'):\n"
    "      raise ImportError('flaxlike.linen is blocked')\n"
    'sys.meta_path.insert(0, Block())\n'
    'import flaxlike.core as core\n'
    'for m in pkgutil.iter_modules(core.__path__):\n'
    "  importlib.import_module('flaxlike.core.' + m.name)\n"
    "assert 'flaxlike.linen' not in sys.modules\n"
    "print('ok')\n"
  )
  # Importing the package root would pull in linen, so load core's modules directly.
  code = code.replace(
    'import flaxlike.core as core',
    'import importlib.util, types\n'
    "spec = importlib.util.find_spec('flaxlike')\n"
    "pkg = types.ModuleType('flaxlike'); pkg.__path__ = spec.submodule_search_locations\n"
    "sys.modules['flaxlike'] = pkg\n"
    'import flaxlike.core as core',
  )
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == 'ok'
