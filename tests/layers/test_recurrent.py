"""Recurrent cells: each step against its equations written in float64 numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike as nn


def _x(*shape, seed=0):
  return np.random.RandomState(seed).standard_normal(shape).astype(np.float32)


def _sig(z):
  return 1.0 / (1.0 + np.exp(-z))


def _close(got, want, tol=2e-5):
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol)


def _f64(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def _dense(p, x):
  y = x @ p['kernel']
  return y + p['bias'] if 'bias' in p else y


def _init(cell, x, carry_seed=1):
  carry = cell.initialize_carry(jax.random.key(carry_seed), x.shape)
  params = cell.init(jax.random.key(0), carry, x)['params']
  return carry, params


NORMAL = nn.initializers.normal(1.0)


@pytest.mark.parametrize('cls', [nn.LSTMCell, nn.OptimizedLSTMCell])
def test_lstm_step(cls):
  x = _x(2, 4)
  cell = cls(3, carry_init=NORMAL, bias_init=NORMAL)
  carry, params = _init(cell, x)
  assert [k for k in params] == ['ii', 'hi', 'if', 'hf', 'ig', 'hg', 'io', 'ho']
  assert set(params['ii']) == {'kernel'} and set(params['hi']) == {'kernel', 'bias'}
  (c2, h2), y = cell.apply({'params': params}, carry, x)
  p = _f64(params)
  c, h = _f64(carry)
  xx = x.astype(np.float64)
  i = _sig(_dense(p['ii'], xx) + _dense(p['hi'], h))
  f = _sig(_dense(p['if'], xx) + _dense(p['hf'], h))
  g = np.tanh(_dense(p['ig'], xx) + _dense(p['hg'], h))
  o = _sig(_dense(p['io'], xx) + _dense(p['ho'], h))
  want_c = f * c + i * g
  want_h = o * np.tanh(want_c)
  _close(c2, want_c)
  _close(h2, want_h)
  _close(y, want_h)


def test_lstm_and_optimized_lstm_share_params_and_outputs():
  x = _x(3, 5)
  a, b = nn.LSTMCell(4), nn.OptimizedLSTMCell(4)
  carry, params = _init(a, x)
  _, params_b = _init(b, x)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, params_b)
  ya = a.apply({'params': params}, carry, x)
  yb = b.apply({'params': params}, carry, x)
  jax.tree_util.tree_map(lambda u, v: np.testing.assert_allclose(u, v, atol=1e-6), ya, yb)


def test_gru_step():
  x = _x(2, 4)
  cell = nn.GRUCell(3, carry_init=NORMAL, bias_init=NORMAL)
  h, params = _init(cell, x)
  assert list(params) == ['ir', 'hr', 'iz', 'hz', 'in', 'hn']
  assert 'bias' not in params['hr'] and 'bias' not in params['hz'] and 'bias' in params['hn']
  h2, y = cell.apply({'params': params}, h, x)
  p = _f64(params)
  h = np.asarray(h, np.float64)
  xx = x.astype(np.float64)
  r = _sig(_dense(p['ir'], xx) + _dense(p['hr'], h))
  z = _sig(_dense(p['iz'], xx) + _dense(p['hz'], h))
  n = np.tanh(_dense(p['in'], xx) + r * _dense(p['hn'], h))
  _close(h2, (1 - z) * n + z * h)
  _close(y, (1 - z) * n + z * h)


@pytest.mark.parametrize('reset_gate', [True, False])
def test_mgu_step(reset_gate):
  x = _x(2, 4)
  cell = nn.MGUCell(3, carry_init=NORMAL, reset_gate=reset_gate, activation_bias_init=NORMAL)
  h, params = _init(cell, x)
  assert list(params) == ['if', 'hf', 'hn', 'in']
  assert ('bias' in params['hn']) == reset_gate
  np.testing.assert_array_equal(params['if']['bias'], np.ones(3))
  h2, _ = cell.apply({'params': params}, h, x)
  p = _f64(params)
  h = np.asarray(h, np.float64)
  xx = x.astype(np.float64)
  f = _sig(_dense(p['if'], xx) + _dense(p['hf'], h))
  hn = _dense(p['hn'], h)
  if reset_gate:
    hn = hn * f
  n = np.tanh(_dense(p['in'], xx) + hn)
  _close(h2, (1 - f) * n + f * h)


@pytest.mark.parametrize('residual', [False, True])
def test_simple_cell_step(residual):
  x = _x(2, 4)
  cell = nn.SimpleCell(3, carry_init=NORMAL, residual=residual, activation_fn=nn.relu)
  h, params = _init(cell, x)
  assert list(params) == ['i', 'h'] and 'bias' not in params['h']
  h2, y = cell.apply({'params': params}, h, x)
  p = _f64(params)
  h = np.asarray(h, np.float64)
  pre = _dense(p['i'], x.astype(np.float64)) + _dense(p['h'], h) + (h if residual else 0)
  _close(h2, np.maximum(pre, 0))


def _np_conv_same(x, k, b):
  # x (N, H, W, C), k (kh, kw, C, F), stride 1, SAME padding.
  kh, kw = k.shape[:2]
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  xp = np.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
  out = np.zeros(x.shape[:3] + (k.shape[-1],))
  for i in range(x.shape[1]):
    for j in range(x.shape[2]):
      out[:, i, j] = np.einsum('nhwc,hwcf->nf', xp[:, i : i + kh, j : j + kw], k)
  return out + b


def test_conv_lstm_step():
  x = _x(1, 4, 4, 3)
  cell = nn.ConvLSTMCell(2, kernel_size=(3, 3), carry_init=NORMAL)
  assert cell.num_feature_axes == 3
  carry, params = _init(cell, x)
  assert carry[0].shape == (1, 4, 4, 2)
  assert params['ih']['kernel'].shape == (3, 3, 3, 8)
  assert params['hh']['kernel'].shape == (3, 3, 2, 8)
  (c2, h2), _ = cell.apply({'params': params}, carry, x)
  p = _f64(params)
  c, h = _f64(carry)
  gates = _np_conv_same(x.astype(np.float64), p['ih']['kernel'], p['ih']['bias']) + _np_conv_same(
    h, p['hh']['kernel'], p['hh']['bias']
  )
  i, g, f, o = np.split(gates, 4, axis=-1)
  want_c = _sig(f + 1) * c + _sig(i) * np.tanh(g)
  _close(c2, want_c)
  _close(h2, _sig(o) * np.tanh(want_c))


def test_initialize_carry_shapes_and_defaults():
  shape = (5, 2, 7)
  for cell in [nn.LSTMCell(3), nn.OptimizedLSTMCell(3)]:
    c, h = cell.initialize_carry(jax.random.key(0), shape)
    assert c.shape == h.shape == (5, 2, 3)
    assert not np.any(c) and not np.any(h)  # zeros by default
    assert cell.num_feature_axes == 1
  for cell in [nn.GRUCell(3), nn.MGUCell(3), nn.SimpleCell(3)]:
    carry = cell.initialize_carry(jax.random.key(0), shape)
    assert carry.shape == (5, 2, 3) and carry.dtype == jnp.float32
  # c and h come from independent keys.
  c, h = nn.LSTMCell(3, carry_init=NORMAL).initialize_carry(jax.random.key(0), (2, 4))
  assert not np.allclose(c, h)
  bf = nn.GRUCell(3, param_dtype=jnp.bfloat16).initialize_carry(jax.random.key(0), (2, 4))
  assert bf.dtype == jnp.bfloat16


def test_recurrent_kernel_default_is_orthogonal():
  x = _x(2, 4)
  _, params = _init(nn.GRUCell(5), x)
  k = np.asarray(params['hr']['kernel'], np.float64)
  _close(k.T @ k, np.eye(5), tol=1e-5)


def test_cell_in_a_python_loop_and_lax_scan_agree():
  xs = _x(2, 6, 3)
  cell = nn.LSTMCell(4)
  carry, params = _init(cell, xs[:, 0])

  def step(carry, x):
    return cell.apply({'params': params}, carry, x)

  c = carry
  ys = []
  for t in range(xs.shape[1]):
    c, y = step(c, xs[:, t])
    ys.append(y)
  c_scan, ys_scan = jax.lax.scan(step, carry, jnp.swapaxes(xs, 0, 1))
  _close(jnp.stack(ys, 1), np.asarray(jnp.swapaxes(ys_scan, 0, 1), np.float64), tol=1e-6)
  _close(c[1], np.asarray(c_scan[1], np.float64), tol=1e-6)
