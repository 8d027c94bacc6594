"""Dense, DenseGeneral, Einsum and Embed against float64 NumPy einsum references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike as nn

KEY = jax.random.key(0)
TOL = dict(rtol=1e-5, atol=1e-5)
BIAS = nn.initializers.normal(1.0)


def _x(*shape, seed=0):
  return np.random.RandomState(seed).standard_normal(shape).astype(np.float32)


def _f64(a):
  return np.asarray(a, np.float64)


def test_dense_matches_einsum():
  x = _x(2, 3, 4)
  layer = nn.Dense(5, bias_init=BIAS)
  v = layer.init(KEY, x)
  p = v['params']
  want = np.einsum('abi,io->abo', _f64(x), _f64(p['kernel'])) + _f64(p['bias'])
  np.testing.assert_allclose(layer.apply(v, x), want, **TOL)


@pytest.mark.parametrize(
  'features,axis,batch_dims,eq,kshape',
  [
    ((2, 3), (-2, -1), (), 'aij,ijxy->axy', (4, 5, 2, 3)),
    (3, 1, (), 'aij,ix->ajx', (4, 3)),
    ((3, 2), -1, (0,), 'aij,ajxy->aixy', (2, 5, 3, 2)),
    (3, (2,), (0, 1), 'abij,abix->abjx', (2, 3, 4, 3)),
  ],
)
def test_dense_general_matches_einsum(features, axis, batch_dims, eq, kshape):
  x = _x(2, 4, 5) if len(kshape) != 4 or batch_dims != (0, 1) else _x(2, 3, 4, 2)
  layer = nn.DenseGeneral(features, axis=axis, batch_dims=batch_dims, bias_init=BIAS)
  v = layer.init(KEY, x)
  p = v['params']
  assert p['kernel'].shape == kshape
  y = np.einsum(eq, _f64(x), _f64(p['kernel']))
  n_batch = len(batch_dims)
  bias = _f64(p['bias'])
  bias = bias.reshape(bias.shape[:n_batch] + (1,) * (y.ndim - bias.ndim) + bias.shape[n_batch:])
  np.testing.assert_allclose(layer.apply(v, x), y + bias, **TOL)


def test_dense_general_kernel_init_sees_flattened_shape():
  seen = []

  def recording_init(key, shape, dtype=jnp.float32):
    seen.append(tuple(shape))
    return jnp.arange(np.prod(shape), dtype=dtype).reshape(shape)

  layer = nn.DenseGeneral(
    (2, 3), axis=(1, 2), batch_dims=(0,), kernel_init=recording_init, bias_init=recording_init
  )
  p = layer.init(KEY, jnp.ones((4, 5, 6, 7)))['params']
  assert seen == [(4 * 5 * 6, 6), (4 * 6,)]
  np.testing.assert_array_equal(p['kernel'], np.arange(720.0).reshape(4, 5, 6, 2, 3))
  np.testing.assert_array_equal(p['bias'], np.arange(24.0).reshape(4, 2, 3))


def test_dense_general_rejects_non_leading_batch_dims():
  with pytest.raises(ValueError, match=r"DenseGeneral at '/'.*leading axes"):
    nn.DenseGeneral(2, batch_dims=(1,)).init(KEY, jnp.ones((2, 3, 4)))


@pytest.mark.parametrize(
  'eq,kshape',
  [
    ('abc,cde->abde', (4, 5, 6)),
    ('abc,cde->eabd', (4, 5, 6)),
    ('...c,cd->...d', (4, 5)),
    ('abc,bcd->ad', (3, 4, 5)),
  ],
)
def test_einsum_matches_numpy(eq, kshape):
  x = _x(2, 3, 4)
  layer = nn.Einsum(kshape, eq, bias_init=BIAS)
  v = layer.init(KEY, x)
  p = v['params']
  y = np.einsum(eq, _f64(x), _f64(p['kernel']))
  out = eq.split('->')[1].replace('...', '')
  kin = eq.split('->')[0].split(',')[1]
  # The bias spans the output axes coming from the kernel, in output order.
  sizes = dict(zip(kin, kshape))
  assert p['bias'].shape == tuple(sizes[c] for c in out if c in sizes)
  lead = y.ndim - len(out)
  bshape = (1,) * lead + tuple(sizes.get(c, 1) for c in out)
  np.testing.assert_allclose(layer.apply(v, x), y + _f64(p['bias']).reshape(bshape), **TOL)


def test_einsum_call_time_string_and_errors():
  x = _x(2, 3)
  layer = nn.Einsum((3, 4), use_bias=False)
  v = layer.init(KEY, x, einsum_str='ab,bc->ac')
  np.testing.assert_allclose(
    layer.apply(v, x, einsum_str='ab,bc->ac'), _f64(x) @ _f64(v['params']['kernel']), **TOL
  )
  with pytest.raises(ValueError, match='passed just once'):
    nn.Einsum((3, 4), 'ab,bc->ac').init(KEY, x, einsum_str='ab,bc->ac')
  with pytest.raises(ValueError, match='must be explicit'):
    nn.Einsum((3, 4), 'ab,bc').init(KEY, x)
  with pytest.raises(ValueError, match='exactly two operands'):
    nn.Einsum((3, 4), 'ab,bc,cd->ad').init(KEY, x)


def test_einsum_preferred_element_type():
  layer = nn.Einsum(
    (3, 4), 'ab,bc->ac', dtype=jnp.bfloat16, use_bias=False, preferred_element_type=jnp.float32
  )
  v = layer.init(KEY, jnp.ones((2, 3)))
  assert layer.apply(v, jnp.ones((2, 3))).dtype == jnp.float32


def test_embed_lookup_and_attend():
  ids = np.array([[0, 3], [9, 3]], np.int32)
  layer = nn.Embed(10, 4)
  v = layer.init(KEY, ids)
  table = _f64(v['params']['embedding'])
  np.testing.assert_allclose(layer.apply(v, ids), table[ids], **TOL)
  q = _x(2, 4)
  np.testing.assert_allclose(layer.apply(v, q, method='attend'), _f64(q) @ table.T, **TOL)
  # attend alone creates the table too (it is declared in setup).
  assert nn.Embed(10, 4).init(KEY, q, method='attend')['params']['embedding'].shape == (10, 4)
  with pytest.raises(ValueError, match='integer indices'):
    layer.apply(v, q)


def test_embed_default_init_is_unit_variance_per_row():
  table = nn.Embed(2000, 3).init(KEY, jnp.zeros(1, jnp.int32))['params']['embedding']
  # variance_scaling(1, 'fan_in', 'normal', out_axis=0): fan_in is the feature axis
  # (3), so entries have variance 1/3.
  assert abs(float(jnp.var(table)) - 1 / 3) < 0.03


def test_embed_dtypes():
  ids = jnp.array([1, 2])
  v = nn.Embed(4, 2).init(KEY, ids)
  assert nn.Embed(4, 2, dtype=jnp.bfloat16).apply(v, ids).dtype == jnp.bfloat16
  assert nn.Embed(4, 2).apply(v, ids.astype(jnp.int8)).dtype == jnp.float32
  one = nn.Embed(1, 2)
  v1 = one.init(KEY, ids)
  np.testing.assert_array_equal(
    one.apply(v1, jnp.zeros((3,), jnp.int32)), np.tile(v1['params']['embedding'], (3, 1))
  )


@pytest.mark.parametrize(
  'make',
  [
    lambda **kw: nn.Dense(3, bias_init=BIAS, **kw),
    lambda **kw: nn.DenseGeneral((3, 2), axis=(-2, -1), bias_init=BIAS, **kw),
  ],
)
def test_custom_dot_general_and_precision_lists(make):
  x = _x(2, 4, 5)
  reference = make()
  v = reference.init(KEY, x)
  want = reference.apply(v, x)
  calls = []

  def counting_dot_general(lhs, rhs, dims, precision=None, **kw):
    calls.append(precision)
    return jax.lax.dot_general(lhs, rhs, dims, precision=precision, **kw)

  class CountingDotGeneral(nn.Module):
    @nn.compact
    def __call__(self, lhs, rhs, dims, precision=None, **kw):
      self.sow('intermediates', 'calls', 1)  # state of its own: must not be staged
      return jax.lax.dot_general(lhs, rhs, dims, precision=precision, **kw)

  highest = jax.lax.Precision.HIGHEST
  y = make(dot_general=counting_dot_general, precision=[highest, highest]).apply(v, x)
  np.testing.assert_allclose(y, want, **TOL)
  assert [tuple(p) for p in calls] == [(highest, highest)]
  y, state = make(dot_general_cls=CountingDotGeneral).apply(v, x, mutable=['intermediates'])
  np.testing.assert_allclose(y, want, **TOL)
  assert len(jax.tree_util.tree_leaves(state)) == 1
  # The default path with a list precision (made static as a tuple), jitted and not.
  layer = make(precision=[highest, highest])
  np.testing.assert_allclose(layer.apply(v, x), want, **TOL)
  np.testing.assert_allclose(jax.jit(layer.apply)(v, x), want, **TOL)
