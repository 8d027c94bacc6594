"""Conv, ConvTranspose and ConvLocal against direct-loop float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike as nn
from tests.layers import _reference as ref

KEY = jax.random.key(0)
TOL = dict(rtol=1e-5, atol=1e-5)


def _x(*shape, seed=0):
  return np.random.RandomState(seed).standard_normal(shape).astype(np.float32)


def _run(layer, x):
  variables = layer.init(KEY, x)
  return variables['params'], np.asarray(layer.apply(variables, x), np.float64)


CONV_CASES = [
  # (kernel_size, strides, padding, input_dilation, kernel_dilation, groups, input shape)
  ((3,), 1, 'SAME', 1, 1, 1, (2, 7, 4)),
  ((4,), 2, 'SAME', 1, 1, 1, (2, 7, 4)),
  ((3,), 1, 'VALID', 1, 1, 1, (2, 7, 4)),
  ((3,), 2, 'CIRCULAR', 1, 2, 1, (2, 7, 4)),
  ((4,), 1, 'CIRCULAR', 1, 1, 2, (2, 7, 4)),
  ((3,), 1, 'REFLECT', 1, 1, 1, (2, 7, 4)),
  ((2,), 3, 'REFLECT', 1, 2, 1, (2, 7, 4)),
  ((3,), 1, 'CAUSAL', 1, 1, 1, (2, 7, 4)),
  ((3,), 2, 'CAUSAL', 1, 2, 4, (2, 7, 4)),
  ((3,), 1, 2, 1, 1, 1, (2, 7, 4)),
  ((3,), 1, [(0, 2)], 2, 1, 1, (2, 7, 4)),
  ((3, 2), (2, 1), 'SAME', 1, (1, 2), 1, (1, 5, 6, 2)),
  ((2, 3), 1, 'VALID', 1, 1, 2, (1, 5, 6, 2)),
  ((2, 3), 1, ((0, 0), (1, 1)), (2, 1), 1, 2, (1, 5, 6, 2)),
  ((3, 3), (1, 2), 'CIRCULAR', 1, 1, 1, (1, 5, 6, 2)),
  ((3, 2), 1, 'REFLECT', 1, 1, 1, (1, 5, 6, 2)),
  ((3, 3), 2, ((1, 0), 2), 1, 1, 1, (1, 5, 6, 2)),
]


@pytest.mark.parametrize('ks,strides,padding,in_dil,k_dil,groups,shape', CONV_CASES)
def test_conv_matches_loop_reference(ks, strides, padding, in_dil, k_dil, groups, shape):
  n = len(ks)
  x = _x(*shape)
  layer = nn.Conv(
    4,
    ks,
    strides=strides,
    padding=padding,
    input_dilation=in_dil,
    kernel_dilation=k_dil,
    feature_group_count=groups,
    bias_init=nn.initializers.normal(1.0),
  )
  params, y = _run(layer, x)
  tup = lambda v: (v,) * n if isinstance(v, int) else tuple(v)
  want = ref.conv(x, params['kernel'], tup(strides), padding, tup(in_dil), tup(k_dil), groups)
  want += np.asarray(params['bias'], np.float64)
  assert params['kernel'].shape == ks + (shape[-1] // groups, 4)
  np.testing.assert_allclose(y, want, **TOL)


def test_conv_mask_no_bias_and_batch_shapes():
  x = _x(2, 3, 6, 2)
  mask = np.zeros((3, 2, 4), np.float32)
  mask[0] = 1.0
  layer = nn.Conv(4, (3,), use_bias=False, mask=mask)
  params, y = _run(layer, x)
  assert set(params) == {'kernel'}
  want = ref.conv(x.reshape(6, 6, 2), np.asarray(params['kernel']) * mask, (1,), 'SAME', (1,), (1,))
  np.testing.assert_allclose(y, want.reshape(2, 3, 6, 4), **TOL)
  # Unbatched input gives an unbatched output with the same values.
  params1, y1 = _run(layer, x[0, 0])
  np.testing.assert_allclose(y1, want[0], **TOL)


def test_conv_errors_name_the_layer():
  with pytest.raises(ValueError, match='CAUSAL.*1-D'):
    nn.Conv(2, (2, 2), padding='CAUSAL').init(KEY, jnp.ones((1, 4, 4, 1)))
  with pytest.raises(ValueError, match='mask shape'):
    nn.Conv(2, (3,), mask=jnp.ones((2, 1, 2))).init(KEY, jnp.ones((1, 4, 1)))
  with pytest.raises(ValueError, match='not divisible by feature_group_count=2'):
    nn.Conv(2, (3,), feature_group_count=2).init(KEY, jnp.ones((1, 4, 3)))
  with pytest.raises(ValueError, match='Invalid padding'):
    nn.Conv(2, (3,), padding=[(1, 2, 3)]).init(KEY, jnp.ones((1, 4, 3)))


def _lax_transpose_pads(padding, kd, s):
  """lax.conv_transpose's padding of the stride-dilated input, per axis."""
  if padding == 'VALID':
    pad_len = kd + s - 2 + max(kd - s, 0)
    lo = kd - 1
  else:  # SAME
    pad_len = kd + s - 2
    lo = kd - 1 if s > kd - 1 else -(-pad_len // 2)
  return lo, pad_len - lo


def _transpose_reference(x, kernel, strides, padding, k_dil, transpose_kernel):
  full = ref.conv_transpose_full(x, kernel, strides, k_dil, transpose_kernel)
  ks = kernel.shape[:-2]
  in_sp = x.shape[1:-1]
  kd = [(k - 1) * d + 1 for k, d in zip(ks, k_dil)]
  if padding == 'CIRCULAR':
    # The VALID output folded onto a period of in*stride, aligned so the input's
    # origin sits on a period boundary.
    y = full
    for ax, (n, s, k) in enumerate(zip(in_sp, strides, kd), start=1):
      period = n * s
      valid_len = n * s + max(k - s, 0)
      pad_hi = valid_len - y.shape[ax]
      y = np.pad(y, [(0, 0)] * ax + [(0, pad_hi)] + [(0, 0)] * (y.ndim - ax - 1))
      extra = -(valid_len - period) % (2 * period)
      left = extra // 2 if transpose_kernel else (extra + 1) // 2
      folded = np.zeros(y.shape[:ax] + (period,) + y.shape[ax + 1 :])
      for q in range(valid_len):
        idx = (slice(None),) * ax + ((q + left) % period,)
        folded[idx] += y[(slice(None),) * ax + (q,)]
      y = folded
    return y
  if isinstance(padding, str):
    pads = [_lax_transpose_pads(padding, k, s) for k, s in zip(kd, strides)]
  elif isinstance(padding, int):
    pads = [(padding, padding)] * len(ks)
  else:
    pads = [(p, p) if isinstance(p, int) else p for p in padding]
  y = full
  for ax, ((lo, hi), n, s, k) in enumerate(zip(pads, in_sp, strides, kd), start=1):
    out_len = (n - 1) * s + 1 + lo + hi - k + 1
    idx = np.arange(out_len) + k - 1 - lo
    ok = (idx >= 0) & (idx < y.shape[ax])
    taken = np.take(y, np.clip(idx, 0, y.shape[ax] - 1), axis=ax)
    shape = [1] * y.ndim
    shape[ax] = out_len
    y = taken * ok.reshape(shape)
  return y


TRANSPOSE_CASES = [
  ((3,), (1,), 'SAME', (1,), False, (2, 5, 3)),
  ((3,), (2,), 'SAME', (1,), True, (2, 5, 3)),
  ((4,), (3,), 'SAME', (1,), False, (2, 5, 3)),
  ((3,), (2,), 'VALID', (2,), False, (2, 5, 3)),
  ((2,), (3,), 'VALID', (1,), True, (2, 5, 3)),
  ((3,), (2,), 'CIRCULAR', (1,), False, (2, 5, 3)),
  ((4,), (1,), 'CIRCULAR', (1,), True, (2, 5, 3)),
  ((4,), (3,), 'CIRCULAR', (1,), False, (2, 5, 3)),
  ((3,), (2,), [(2, 1)], (1,), False, (2, 5, 3)),
  ((3,), (1,), 1, (2,), True, (2, 5, 3)),
  ((3, 2), (2, 1), 'SAME', (1, 1), True, (1, 4, 3, 2)),
  ((2, 3), (2, 2), 'CIRCULAR', (1, 1), False, (1, 4, 3, 2)),
]


@pytest.mark.parametrize('ks,strides,padding,k_dil,tk,shape', TRANSPOSE_CASES)
def test_conv_transpose_matches_scatter_reference(ks, strides, padding, k_dil, tk, shape):
  x = _x(*shape, seed=2)
  layer = nn.ConvTranspose(
    3,
    ks,
    strides=strides,
    padding=padding,
    kernel_dilation=k_dil,
    transpose_kernel=tk,
    bias_init=nn.initializers.normal(1.0),
  )
  params, y = _run(layer, x)
  in_f = shape[-1]
  assert params['kernel'].shape == ks + ((3, in_f) if tk else (in_f, 3))
  want = _transpose_reference(x, params['kernel'], strides, padding, k_dil, tk)
  want += np.asarray(params['bias'], np.float64)
  np.testing.assert_allclose(y, want, **TOL)


def test_conv_transpose_is_gradient_of_conv():
  # transpose_kernel=True with Conv's kernel computes the VJP of Conv w.r.t. its input.
  x = _x(1, 6, 2)
  conv = nn.Conv(3, (3,), strides=(2,), padding='VALID', use_bias=False)
  cv = conv.init(KEY, x)
  y, vjp = jax.vjp(lambda v: conv.apply(cv, v), x)
  g = _x(*y.shape, seed=3)
  convt = nn.ConvTranspose(
    2, (3,), strides=(2,), padding='VALID', use_bias=False, transpose_kernel=True
  )
  out = convt.apply(cv, g)
  # The last input position is outside every VALID window, so its gradient is 0 and
  # the transposed output stops before it.
  grad = vjp(g)[0]
  np.testing.assert_allclose(out, grad[:, :5], **TOL)
  np.testing.assert_array_equal(grad[:, 5], 0.0)


def test_conv_transpose_rejects_unsupported_padding():
  with pytest.raises(ValueError, match="'REFLECT' is not supported by ConvTranspose"):
    nn.ConvTranspose(2, (3,), padding='REFLECT').init(KEY, jnp.ones((1, 4, 1)))


LOCAL_CASES = [
  ((3,), (1,), 'SAME', (1,), (2, 6, 3)),
  ((3,), (2,), 'VALID', (1,), (2, 6, 3)),
  ((2,), (1,), 'CIRCULAR', (2,), (2, 6, 3)),
  ((3,), (1,), 'REFLECT', (1,), (2, 6, 3)),
  ((3,), (2,), 'CAUSAL', (1,), (2, 6, 3)),
  ((2, 3), (1, 2), 'SAME', (1, 1), (1, 4, 5, 2)),
]


@pytest.mark.parametrize('ks,strides,padding,k_dil,shape', LOCAL_CASES)
def test_conv_local_matches_loop_reference(ks, strides, padding, k_dil, shape):
  x = _x(*shape, seed=4)
  layer = nn.ConvLocal(
    2,
    ks,
    strides=strides,
    padding=padding,
    kernel_dilation=k_dil,
    bias_init=nn.initializers.normal(1.0),
  )
  params, y = _run(layer, x)
  assert params['kernel'].shape[-2:] == (np.prod(ks) * shape[-1], 2)
  assert params['bias'].shape == params['kernel'].shape[:-2] + (2,)
  want = ref.conv_local(x, params['kernel'], ks, strides, padding, k_dil)
  want += np.asarray(params['bias'], np.float64)
  np.testing.assert_allclose(y, want, **TOL)


def test_conv_local_rejects_groups():
  with pytest.raises(ValueError, match='feature_group_count=1'):
    nn.ConvLocal(2, (3,), feature_group_count=2).init(KEY, jnp.ones((1, 4, 2)))
