"""DynamicScale: unscaled values and grads, growth, backoff, jit, pmean, pytree fields."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlike import serialization
from flaxlike.training import dynamic_scale
from flaxlike.training.dynamic_scale import DynamicScale, DynamicScaleResult


def _loss(params, x):
  h = jnp.tanh(x @ params['w'] + params['b'][None, :])
  return jnp.mean(h**2)


def _inputs(dtype):
  key_w, key_x = jax.random.split(jax.random.key(0))
  params = {
    'w': (0.1 * jax.random.normal(key_w, (4, 3))).astype(dtype),
    'b': jnp.full((3,), 0.05, dtype),
  }
  x = jax.random.normal(key_x, (5, 4)).astype(dtype)
  return params, x


def test_exported_and_defaults():
  assert dynamic_scale.DynamicScale is DynamicScale
  ds = DynamicScale()
  assert (ds.growth_factor, ds.backoff_factor, ds.growth_interval) == (2.0, 0.5, 2000)
  assert ds.fin_steps == 0 and ds.scale == 65536.0
  assert ds.minimum_scale == float(np.finfo(np.float32).tiny)
  # fin_steps and scale are the leaves; the rest is static tree structure.
  assert jax.tree_util.tree_leaves(ds) == [0, 65536.0]
  other = DynamicScale(growth_interval=10)
  assert jax.tree_util.tree_structure(ds) != jax.tree_util.tree_structure(other)


def test_float16_values_and_grads_match_float32_reference():
  params16, x16 = _inputs(jnp.float16)
  params32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params16)
  x32 = x16.astype(jnp.float32)
  ref_loss, ref_grad = jax.value_and_grad(_loss)(params32, x32)

  ds = DynamicScale(scale=2.0**10)
  result = ds.value_and_grad(_loss)(params16, x16)
  assert isinstance(result, DynamicScaleResult)
  assert bool(result.finite)
  assert result.aux.dtype == jnp.float16
  np.testing.assert_allclose(float(result.aux), float(ref_loss), rtol=2e-3)
  for name in ('w', 'b'):
    assert result.grad[name].dtype == jnp.float32
    np.testing.assert_allclose(result.grad[name], ref_grad[name], rtol=2e-2, atol=2e-4)
  assert int(result.dynamic_scale.fin_steps) == 1
  assert float(result.dynamic_scale.scale) == 2.0**10


def test_scaling_rescues_float16_gradients_that_underflow():
  # d/dw (w * 1e-4) ** 2 = 2e-8 * w underflows to 0 in float16 without scaling.
  def tiny(w):
    return jnp.sum((w * jnp.float16(1e-4)) ** 2)

  w = jnp.ones(3, jnp.float16)
  assert jax.grad(tiny)(w).tolist() == [0.0, 0.0, 0.0]
  result = DynamicScale(scale=2.0**15).value_and_grad(tiny)(w)
  np.testing.assert_allclose(result.grad, np.full(3, 2e-8), rtol=0.1)


def test_has_aux_and_argnums():
  def fun(a, b):
    return jnp.sum(a * b), {'n': a.shape[0]}

  a, b = jnp.arange(3.0), jnp.array([1.0, 2.0, 3.0])
  ds = DynamicScale(scale=8.0)
  _, finite, (value, aux), grads = ds.value_and_grad(fun, argnums=(0, 1), has_aux=True)(a, b)
  assert bool(finite) and float(value) == 8.0 and aux == {'n': 3}
  np.testing.assert_array_equal(grads[0], b)
  np.testing.assert_array_equal(grads[1], a)


def _square_sum(w):
  return jnp.sum(w**2)


def test_scale_grows_after_growth_interval_finite_steps():
  ds = DynamicScale(growth_interval=3, scale=4.0)
  w = jnp.ones(2)
  history = []
  for _ in range(8):
    ds, finite, _, _ = ds.value_and_grad(_square_sum)(w)
    assert bool(finite)
    history.append((int(ds.fin_steps), float(ds.scale)))
  # Three finite steps in a row arm the growth; the next finite step applies it.
  assert history == [
    (1, 4.0),
    (2, 4.0),
    (3, 4.0),
    (0, 8.0),
    (1, 8.0),
    (2, 8.0),
    (3, 8.0),
    (0, 16.0),
  ]


def test_growth_is_capped_at_float32_max():
  ds = DynamicScale(growth_interval=0, scale=float(np.finfo(np.float32).max))
  ds, finite, _, _ = ds.value_and_grad(lambda w: jnp.sum(w * 0.0))(jnp.ones(2))
  assert bool(finite) and float(ds.scale) == float(np.finfo(np.float32).max)


def test_backoff_on_inf_gradient():
  def fun(w, x):
    return jnp.sum(w * x)

  w = jnp.ones(2)
  ds = DynamicScale(growth_interval=3, scale=64.0, fin_steps=2)
  ds, finite, _, grad = ds.value_and_grad(fun)(w, jnp.array([1.0, jnp.inf]))
  assert not bool(finite)
  assert not np.all(np.isfinite(grad))
  assert int(ds.fin_steps) == 0 and float(ds.scale) == 32.0
  # A nan gradient backs off too, and the scale never drops below minimum_scale.
  ds = DynamicScale(scale=3.0, minimum_scale=2.0)
  ds, finite, _, _ = ds.value_and_grad(fun)(w, jnp.array([jnp.nan, 1.0]))
  assert not bool(finite) and float(ds.scale) == 2.0
  ds, _, _, _ = ds.value_and_grad(fun)(w, jnp.array([jnp.nan, 1.0]))
  assert float(ds.scale) == 2.0


def test_float16_overflow_backs_off_until_finite():
  params, x = _inputs(jnp.float16)
  ds = DynamicScale(scale=2.0**40)  # far too large for float16 cotangents
  steps = 0
  finite = False
  while not finite:
    ds, finite, _, _ = ds.value_and_grad(_loss)(params, x)
    finite = bool(finite)
    steps += 1
    assert steps < 40
  assert float(ds.scale) < 2.0**16


def test_works_under_jit():
  def fun(w, x):
    return jnp.sum(w * x)

  @jax.jit
  def step(ds, w, x):
    ds, finite, value, grad = ds.value_and_grad(fun)(w, x)
    # Skip the update on a non-finite step, as a training loop would.
    new_w = jnp.where(finite, w - 0.1 * grad, w)
    return ds, finite, value, new_w

  ds = DynamicScale(growth_interval=1, scale=16.0)
  w = jnp.ones(2)
  ds, finite, value, w = step(ds, w, jnp.array([1.0, 2.0]))
  assert bool(finite) and float(value) == 3.0
  np.testing.assert_allclose(w, [0.9, 0.8], rtol=1e-6)
  ds, _, _, w = step(ds, w, jnp.array([1.0, 2.0]))
  assert (int(ds.fin_steps), float(ds.scale)) == (0, 32.0)
  ds, finite, _, w2 = step(ds, w, jnp.array([jnp.inf, 2.0]))
  assert not bool(finite) and float(ds.scale) == 16.0
  np.testing.assert_array_equal(w2, w)
  # One trace for the Python-scalar fields of a fresh DynamicScale, one for arrays.
  assert step._cache_size() == 2


def test_axis_name_pmeans_grads():
  n = 4
  ds = DynamicScale(scale=4.0)

  def per_device(ds, w, x):
    return ds.value_and_grad(lambda w, x: jnp.sum(w * x), axis_name='batch')(w, x)

  w = jnp.ones((n, 2))
  x = jnp.arange(2.0 * n).reshape(n, 2)
  ds_rep = jax.tree_util.tree_map(lambda v: jnp.broadcast_to(jnp.asarray(v), (n,)), ds)
  out = jax.pmap(per_device, axis_name='batch', devices=jax.devices()[:n])(ds_rep, w, x)
  expected = np.asarray(x).mean(axis=0)
  for i in range(n):
    np.testing.assert_allclose(out.grad[i], expected)
  assert np.all(np.asarray(out.finite))


def test_round_trips_through_serialization():
  ds = DynamicScale(growth_interval=5)
  ds, _, _, _ = ds.value_and_grad(_square_sum)(jnp.ones(2))
  restored = serialization.from_bytes(DynamicScale(growth_interval=5), serialization.to_bytes(ds))
  assert int(restored.fin_steps) == 1 and float(restored.scale) == 65536.0


@pytest.mark.parametrize('bad', [jnp.inf, -jnp.inf, jnp.nan])
def test_finite_flag_covers_every_leaf(bad):
  def fun(p):
    return jnp.sum(p['a']) + jnp.sum(p['b'] * p['c'])

  params = {'a': jnp.ones(2), 'b': jnp.ones(2), 'c': jnp.array([1.0, bad])}
  _, finite, _, _ = DynamicScale(scale=1.0).value_and_grad(fun)(params)
  assert not bool(finite)
