"""Pooling functions against direct-loop float64 references."""

import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike as nn
from tests.layers import _reference as ref

TOL = dict(rtol=1e-6, atol=1e-6)


def _x(*shape, seed=0):
  return np.random.RandomState(seed).standard_normal(shape).astype(np.float32)


def _pads(padding, in_sp, window, strides):
  if padding == 'VALID':
    return [(0, 0)] * len(window)
  if padding == 'SAME':
    return [ref.same_pads(n, w, s) for n, w, s in zip(in_sp, window, strides)]
  return list(padding)


CASES = [
  ((2,), (1,), 'VALID'),
  ((3,), (2,), 'SAME'),
  ((2, 2), (2, 2), 'VALID'),
  ((3, 2), (1, 1), 'SAME'),
  ((3, 3), (2, 1), ((1, 1), (2, 0))),
  ((2, 3), (1, 2), ((0, 1), (1, 1))),
]


@pytest.mark.parametrize('window,strides,padding', CASES)
@pytest.mark.parametrize('count_include_pad', [True, False])
def test_avg_pool(window, strides, padding, count_include_pad):
  x = _x(2, 5, 4, 3)[..., 0, :] if len(window) == 1 else _x(2, 5, 4, 3)
  y = nn.avg_pool(x, window, strides, padding, count_include_pad=count_include_pad)
  want = ref.avg_pool(
    x, window, strides, _pads(padding, x.shape[1:-1], window, strides), count_include_pad
  )
  np.testing.assert_allclose(y, want, **TOL)


@pytest.mark.parametrize('window,strides,padding', CASES)
def test_max_and_min_pool(window, strides, padding):
  x = _x(2, 5, 4, 3, seed=1)[..., 0, :] if len(window) == 1 else _x(2, 5, 4, 3, seed=1)
  pads = _pads(padding, x.shape[1:-1], window, strides)
  np.testing.assert_allclose(
    nn.max_pool(x, window, strides, padding), ref.reduce_pool(x, window, strides, pads, np.max)
  )
  np.testing.assert_allclose(
    nn.pooling.min_pool(x, window, strides, padding),
    ref.reduce_pool(x, window, strides, pads, np.min),
  )


def test_unbatched_and_multi_batch_inputs():
  x = _x(2, 3, 5, 4, 2)
  for batch_x in (x[0, 0], x):
    flat = batch_x.reshape((-1,) + batch_x.shape[-3:]) if batch_x.ndim > 3 else batch_x[None]
    for incl in (True, False):
      y = nn.avg_pool(batch_x, (2, 3), padding='SAME', count_include_pad=incl)
      want = ref.avg_pool(flat, (2, 3), (1, 1), [(0, 1), (1, 1)], incl)
      np.testing.assert_allclose(y, want.reshape(batch_x.shape[:-3] + want.shape[1:]), **TOL)


def test_pool_generic_and_errors():
  x = jnp.arange(6.0).reshape(1, 6, 1)
  np.testing.assert_array_equal(
    nn.pool(x, 1.0, jnp.multiply, (2,), (2,), 'VALID')[0, :, 0], [0.0, 6.0, 20.0]
  )
  with pytest.raises(ValueError, match='one entry per window axis'):
    nn.max_pool(x, (2,), (1, 1))
  with pytest.raises(ValueError, match='pairs, one per window axis'):
    nn.max_pool(x, (2,), padding=((1, 1), (1, 1)))
  with pytest.raises(ValueError, match='too few axes'):
    nn.max_pool(jnp.ones(3), (2, 2))


def test_avg_pool_keeps_low_precision_dtype():
  x = jnp.ones((1, 4, 4, 1), jnp.bfloat16)
  assert nn.avg_pool(x, (2, 2), padding='SAME', count_include_pad=False).dtype == jnp.bfloat16
