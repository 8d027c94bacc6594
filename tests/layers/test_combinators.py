"""Sequential and BatchApply."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike as nn

KEY = jax.random.key(0)


def test_sequential_names_and_values():
  model = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(2)])
  x = np.random.RandomState(0).standard_normal((3, 5)).astype(np.float32)
  v = model.init(KEY, x)
  assert list(v['params']) == ['layers_0', 'layers_2']
  p = jax.tree_util.tree_map(np.asarray, v['params'])
  h = np.maximum(x @ p['layers_0']['kernel'] + p['layers_0']['bias'], 0)
  want = h @ p['layers_2']['kernel'] + p['layers_2']['bias']
  np.testing.assert_allclose(model.apply(v, x), want, rtol=1e-5, atol=1e-6)


def test_sequential_splats_tuples_and_dicts():
  calls = []

  def two(x):
    return x, x + 1

  def named(a, b):
    calls.append(('named', a, b))
    return {'p': a, 'q': b}

  def kw(*, p, q):
    return p * 10 + q

  assert nn.Sequential([two, named, kw]).apply({}, 1) == 12
  assert calls == [('named', 1, 2)]
  # The first layer receives all call arguments, positional and keyword.
  assert nn.Sequential([lambda a, *, b: a - b, abs]).apply({}, 1, b=3) == 2


def test_sequential_errors():
  with pytest.raises(ValueError, match="'layers' must be a sequence"):
    nn.Sequential(nn.Dense(2))
  with pytest.raises(ValueError, match='Empty Sequential module'):
    nn.Sequential([]).init(KEY, jnp.ones(2))


def test_batch_apply_merges_and_splits():
  seen = []

  def f(x, y, scale):
    seen.append((x.shape, y.shape, scale))
    return {'s': x.sum(-1) * scale + y[:, 0]}, x

  out = nn.BatchApply(f)(jnp.ones((2, 3, 4)), jnp.ones((2, 3, 5)), 2.0)
  assert seen == [((6, 4), (6, 5), 2.0)]
  assert out[0]['s'].shape == (2, 3) and out[1].shape == (2, 3, 4)
  np.testing.assert_array_equal(out[0]['s'], 9.0)


def test_batch_apply_with_module_and_low_rank_args():
  dense = nn.Dense(3)
  x = jnp.arange(24.0).reshape(2, 4, 3)
  v = dense.init(KEY, x[0])

  def f(x, bias):
    y = dense.apply(v, x)
    return y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))

  y = nn.BatchApply(f)(x, jnp.ones(3))  # the 1-D bias is passed through unchanged
  np.testing.assert_allclose(y, np.asarray(dense.apply(v, x)) + 1.0, rtol=1e-6)
  np.testing.assert_allclose(nn.BatchApply(f, num_dims=1)(x, jnp.ones(3)), y, rtol=1e-6)


def test_batch_apply_errors():
  with pytest.raises(ValueError, match='requires at least one input with ndim >= 2'):
    nn.BatchApply(lambda x: x)(jnp.ones(3))
  with pytest.raises(ValueError, match='num_dims must be at least 1'):
    nn.BatchApply(lambda x: x, num_dims=0)
  with pytest.raises(ValueError, match='merged batch axis of size 6 first'):
    nn.BatchApply(lambda x: x.sum())(jnp.ones((2, 3, 4)))
