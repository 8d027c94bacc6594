"""Normalization layers against independent float64 numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike as nn


def _x(*shape, seed=0, shift=0.0):
  return (np.random.RandomState(seed).standard_normal(shape) + shift).astype(np.float32)


def _np_norm(x, axes, eps, mask=None, center=True):
  x = x.astype(np.float64)
  w = np.ones_like(x) if mask is None else mask.astype(np.float64)
  n = w.sum(axis=axes, keepdims=True)
  mu = (x * w).sum(axis=axes, keepdims=True) / n if center else 0.0
  var = (((x - mu) ** 2) * w).sum(axis=axes, keepdims=True) / n
  return (x - mu) / np.sqrt(var + eps)


def _close(got, want, tol=2e-5):
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol)


@pytest.mark.parametrize('fast', [True, False])
def test_layernorm_matches_numpy(fast):
  x = _x(2, 3, 5, shift=1.0)
  scale = _x(5, seed=1)
  bias = _x(5, seed=2)
  layer = nn.LayerNorm(use_fast_variance=fast)
  variables = {'params': {'scale': scale, 'bias': bias}}
  _close(layer.apply(variables, x), _np_norm(x, (-1,), 1e-6) * scale + bias)


def test_layernorm_multi_axes_and_mask():
  x = _x(2, 3, 4, shift=0.5)
  mask = np.random.RandomState(3).rand(2, 3, 4) > 0.4
  mask[..., 0] = True
  layer = nn.LayerNorm(reduction_axes=(1, 2), feature_axes=(1, 2), epsilon=1e-3)
  variables = layer.init(jax.random.key(0), x)
  assert variables['params']['scale'].shape == (3, 4)
  _close(layer.apply(variables, x, mask=mask), _np_norm(x, (1, 2), 1e-3, mask=mask))


def test_rmsnorm_matches_numpy():
  x = _x(3, 6, shift=2.0)
  scale = _x(6, seed=4)
  got = nn.RMSNorm().apply({'params': {'scale': scale}}, x)
  _close(got, _np_norm(x, (-1,), 1e-6, center=False) * scale)


def test_batchnorm_train_and_eval_match_numpy():
  x = _x(4, 3, 2, shift=1.0)
  layer = nn.BatchNorm(momentum=0.8, epsilon=1e-4)
  variables = layer.init(jax.random.key(0), x, use_running_average=False)
  assert list(variables) == ['batch_stats', 'params']
  assert list(variables['params']) == ['scale', 'bias']
  # Init does not touch the statistics.
  np.testing.assert_array_equal(variables['batch_stats']['mean'], np.zeros(2))
  np.testing.assert_array_equal(variables['batch_stats']['var'], np.ones(2))
  y, upd = layer.apply(variables, x, use_running_average=False, mutable=['batch_stats'])
  x64 = x.astype(np.float64)
  _close(y, _np_norm(x, (0, 1), 1e-4))
  _close(upd['batch_stats']['mean'], 0.2 * x64.mean((0, 1)))
  _close(upd['batch_stats']['var'], 0.8 + 0.2 * x64.var((0, 1)))
  ra = {'batch_stats': upd['batch_stats'], 'params': variables['params']}
  y_eval = layer.apply(ra, x, use_running_average=True)
  mean, var = 0.2 * x64.mean((0, 1)), 0.8 + 0.2 * x64.var((0, 1))
  _close(y_eval, (x64 - mean) / np.sqrt(var + 1e-4))


def test_batchnorm_use_running_average_given_once():
  x = _x(2, 3)
  layer = nn.BatchNorm(use_running_average=True)
  variables = layer.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='just once'):
    layer.apply(variables, x, use_running_average=True)
  with pytest.raises(ValueError, match='constructor or at call time'):
    nn.BatchNorm().init(jax.random.key(0), x)


def test_batchnorm_masked_statistics():
  x = _x(5, 3)
  mask = np.array([1, 1, 0, 1, 0], bool)[:, None].repeat(3, 1)
  layer = nn.BatchNorm(use_running_average=False)
  variables = layer.init(jax.random.key(0), x)
  y, _ = layer.apply(variables, x, mask=mask, mutable=['batch_stats'])
  _close(y, _np_norm(x, (0,), 1e-5, mask=mask))


def _vmapped(layer_fn, x):
  return jax.vmap(layer_fn, axis_name='batch')(x)


def test_batchnorm_axis_name_matches_whole_batch():
  x = _x(6, 4, shift=0.3)
  layer = nn.BatchNorm(use_running_average=False, axis_name='batch', momentum=0.5)
  variables = layer.init(jax.random.key(0), x)

  def one(xi):
    return layer.apply(variables, xi, mutable=['batch_stats'])

  y, upd = _vmapped(one, x)
  _close(y, _np_norm(x, (0,), 1e-5))
  # Every replica holds the same, whole-batch statistics.
  _close(upd['batch_stats']['mean'], np.tile(0.5 * x.astype(np.float64).mean(0), (6, 1)))


@pytest.mark.parametrize('fast', [True, False])
def test_layernorm_axis_name_and_groups(fast):
  # Per-example features split over a mapped axis: statistics span all shards.
  x = _x(4, 3, shift=0.7)
  layer = nn.LayerNorm(axis_name='batch', use_scale=False, use_bias=False, use_fast_variance=fast)
  # LayerNorm reduces across the axis in init too, so init outside the map unsharded.
  variables = nn.LayerNorm(use_scale=False, use_bias=False).init(jax.random.key(0), x[0])
  y = _vmapped(lambda xi: layer.apply(variables, xi), x)
  _close(y, _np_norm(x, (0, 1), 1e-6))
  grouped = nn.LayerNorm(
    axis_name='batch',
    axis_index_groups=[[0, 1], [2, 3]],
    use_scale=False,
    use_bias=False,
    use_fast_variance=fast,
  )
  # vmap collectives do not take axis_index_groups; pmap over 4 host devices does.
  y = jax.pmap(lambda xi: grouped.apply(variables, xi), axis_name='batch')(x)
  want = np.concatenate([_np_norm(x[:2], (0, 1), 1e-6), _np_norm(x[2:], (0, 1), 1e-6)])
  _close(y, want)


@pytest.mark.parametrize('kwargs', [dict(num_groups=3), dict(num_groups=None, group_size=2)])
def test_groupnorm_matches_numpy(kwargs):
  x = _x(2, 3, 6, shift=0.5)
  layer = nn.GroupNorm(**kwargs)
  variables = layer.init(jax.random.key(0), x)
  got = layer.apply(variables, x)
  g = x.reshape(2, 3, 3, 2)
  want = _np_norm(g, (1, 3), 1e-6).reshape(2, 3, 6)
  _close(got, want)


def test_groupnorm_mask_and_errors():
  x = _x(2, 4, 4)
  mask = np.random.RandomState(1).rand(2, 4, 4) > 0.3
  mask[:, 0] = True
  got = nn.GroupNorm(num_groups=2).apply(
    {'params': {'scale': np.ones(4), 'bias': np.zeros(4)}}, x, mask=mask
  )
  want = _np_norm(x.reshape(2, 4, 2, 2), (1, 3), 1e-6, mask=mask.reshape(2, 4, 2, 2))
  _close(got, want.reshape(2, 4, 4))
  with pytest.raises(ValueError, match='does not divide'):
    nn.GroupNorm(num_groups=3).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='Either `num_groups` or `group_size`'):
    nn.GroupNorm(group_size=2).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='final dimension'):
    nn.GroupNorm(num_groups=2, reduction_axes=(1,)).init(jax.random.key(0), x)


def test_instancenorm_matches_numpy():
  x = _x(2, 3, 4, 5, shift=-0.4)
  layer = nn.InstanceNorm(use_fast_variance=False)
  variables = layer.init(jax.random.key(0), x)
  _close(layer.apply(variables, x), _np_norm(x, (1, 2), 1e-6))
  with pytest.raises(ValueError, match='leading dimension'):
    nn.InstanceNorm(feature_axes=0).init(jax.random.key(0), x)


def test_low_precision_inputs_keep_float32_statistics():
  x = jnp.asarray(_x(3, 8, shift=100.0), jnp.bfloat16)
  layer = nn.LayerNorm(use_fast_variance=False)
  variables = layer.init(jax.random.key(0), x)
  y = layer.apply(variables, x)
  assert y.dtype == jnp.float32  # params are float32, so the result promotes
  _close(y, _np_norm(np.asarray(x, np.float64), (-1,), 1e-6), tol=1e-2)
  bn = nn.BatchNorm(
    use_running_average=False,
    param_dtype=jnp.bfloat16,
    dtype=jnp.bfloat16,
    force_float32_reductions=False,
  )
  v = bn.init(jax.random.key(0), x)
  assert v['batch_stats']['mean'].dtype == jnp.bfloat16
  assert bn.apply(v, x, mutable=['batch_stats'])[0].dtype == jnp.bfloat16


def test_spectralnorm_divides_by_top_singular_value():
  x = _x(2, 4)
  layer = nn.SpectralNorm(nn.Dense(3, use_bias=False), n_steps=50)
  variables = layer.init(jax.random.key(0), x, update_stats=False)
  stats = variables['batch_stats']
  assert list(stats) == ['layer_instance/kernel/u', 'layer_instance/kernel/sigma']
  assert stats['layer_instance/kernel/u'].shape == (1, 3)
  # Init stores the re-parametrized kernel (as Linen's map_variables publishes it).
  raw = np.asarray(_x(4, 3, seed=9), np.float64)
  variables = {
    'params': {'layer_instance': {'kernel': raw.astype(np.float32)}},
    'batch_stats': stats,
  }
  y, upd = layer.apply(variables, x, update_stats=True, mutable=['batch_stats'])
  top = np.linalg.svd(raw, compute_uv=False)[0]
  _close(y, x.astype(np.float64) @ raw / top, tol=1e-4)
  _close(upd['batch_stats']['layer_instance/kernel/sigma'], top, tol=1e-4)
  # Without update_stats nothing changes.
  _, same = layer.apply(variables, x, update_stats=False, mutable=['batch_stats'])
  np.testing.assert_array_equal(
    same['batch_stats']['layer_instance/kernel/u'], stats['layer_instance/kernel/u']
  )
  with pytest.raises(ValueError, match='error_on_non_matrix'):
    nn.SpectralNorm(nn.DenseGeneral((2, 2)), error_on_non_matrix=True).init(
      jax.random.key(0), x, update_stats=False
    )


def test_weightnorm_matches_numpy():
  x = _x(2, 4)
  layer = nn.WeightNorm(nn.Dense(3))
  variables = layer.init(jax.random.key(0), x)
  assert list(variables['params']) == ['layer_instance/kernel/scale', 'layer_instance']
  raw = _x(4, 3, seed=7)
  scale = _x(3, seed=8)
  bias = _x(3, seed=9)
  variables = {
    'params': {
      'layer_instance/kernel/scale': scale,
      'layer_instance': {'kernel': raw, 'bias': bias},
    }
  }
  w = raw.astype(np.float64)
  w = w / np.linalg.norm(w, axis=0, keepdims=True) * scale
  _close(layer.apply(variables, x), x.astype(np.float64) @ w + bias)


def test_spectralnorm_and_weightnorm_under_jit_and_grad():
  x = _x(2, 4)
  sn = nn.SpectralNorm(nn.Dense(3))
  v = sn.init(jax.random.key(1), x, update_stats=False)
  eager = sn.apply(v, x, update_stats=True, mutable=['batch_stats'])
  jitted = jax.jit(lambda v, x: sn.apply(v, x, update_stats=True, mutable=['batch_stats']))(v, x)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), eager, jitted)
  wn = nn.WeightNorm(nn.Dense(3))
  wv = wn.init(jax.random.key(1), x)
  grads = jax.grad(lambda p: wn.apply({'params': p}, x).sum())(wv['params'])
  assert set(grads) == {'layer_instance/kernel/scale', 'layer_instance'}
  assert np.all(np.isfinite(grads['layer_instance']['kernel']))
