"""RNN and Bidirectional: padding, seq_lengths and reversal against per-example loops."""

import jax
import jax.numpy as jnp
import numpy as np

import flaxlike as nn


class TinyCell(nn.Module):
  """A minimal cell of our own: h' = tanh(W [h, x])."""

  features: int = 3

  @nn.compact
  def __call__(self, carry, x):
    h = jnp.tanh(nn.Dense(self.features)(jnp.concatenate([carry, x], -1)))
    return h, 2.0 * h

  @nn.nowrap
  def initialize_carry(self, rng, input_shape):
    return jnp.zeros(input_shape[:-1] + (self.features,))

  @property
  def num_feature_axes(self):
    return 1


LENGTHS = np.array([5, 2, 3])


def _inputs():
  x = np.random.RandomState(0).standard_normal((3, 5, 2)).astype(np.float32)
  for b, n in enumerate(LENGTHS):
    x[b, n:] = 100.0  # padding that would dominate if it leaked into valid results
  return jnp.asarray(x)


def _loop(cell, variables, xs):
  """One example, valid steps only: the reference."""
  h = jnp.zeros((cell.features,))
  outs = []
  for x in xs:
    h, y = cell.apply(variables, h, x)
    outs.append(y)
  return h, jnp.stack(outs)


def test_rnn_with_seq_lengths_matches_python_loop():
  x = _inputs()
  rnn = nn.RNN(TinyCell(), return_carry=True)
  variables = rnn.init(jax.random.key(0), x, seq_lengths=LENGTHS)
  assert list(variables['params']) == ['cell']
  carry, ys = rnn.apply(variables, x, seq_lengths=LENGTHS)
  cell_vars = {'params': variables['params']['cell']}
  for b, n in enumerate(LENGTHS):
    h, outs = _loop(TinyCell(), cell_vars, x[b, :n])
    np.testing.assert_allclose(carry[b], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys[b, :n], outs, rtol=1e-5, atol=1e-6)


def test_reverse_rnn_starts_at_the_last_valid_step():
  x = _inputs()
  rnn = nn.RNN(TinyCell(), return_carry=True, reverse=True, keep_order=True)
  variables = rnn.init(jax.random.key(1), x, seq_lengths=LENGTHS)
  carry, ys = rnn.apply(variables, x, seq_lengths=LENGTHS)
  cell_vars = {'params': variables['params']['cell']}
  for b, n in enumerate(LENGTHS):
    h, outs = _loop(TinyCell(), cell_vars, x[b, :n][::-1])
    np.testing.assert_allclose(carry[b], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys[b, :n], outs[::-1], rtol=1e-5, atol=1e-6)


def test_time_major_matches_batch_major():
  x = _inputs()
  rnn = nn.RNN(TinyCell())
  variables = rnn.init(jax.random.key(2), x)
  ys = rnn.apply(variables, x)
  ys_tm = nn.RNN(TinyCell(), time_major=True).apply(variables, jnp.swapaxes(x, 0, 1))
  np.testing.assert_allclose(jnp.swapaxes(ys_tm, 0, 1), ys, rtol=1e-6)


def test_bidirectional_respects_padding():
  x = _inputs()

  class Model(nn.Module):
    # Cells created in a compact method belong to that method's module (as in Linen),
    # so their params sit at TinyCell_0/TinyCell_1 of this module.
    @nn.compact
    def __call__(self, x, seq_lengths):
      bi = nn.Bidirectional(nn.RNN(TinyCell()), nn.RNN(TinyCell(4)), return_carry=True, name='bi')
      return bi(x, seq_lengths=seq_lengths)

  bi = Model()
  variables = bi.init(jax.random.key(3), x, LENGTHS)
  assert list(variables['params']) == ['TinyCell_0', 'TinyCell_1']
  variables = {'params': variables['params']}
  (c_fwd, c_bwd), ys = bi.apply(variables, x, LENGTHS)
  assert ys.shape == (3, 5, 3 + 4)
  # Changing the padding changes nothing inside the valid steps or in the carries.
  x2 = jnp.where(jnp.arange(5)[None, :, None] < LENGTHS[:, None, None], x, -7.0)
  (c_fwd2, c_bwd2), ys2 = bi.apply(variables, x2, LENGTHS)
  for b, n in enumerate(LENGTHS):
    np.testing.assert_allclose(ys2[b, :n], ys[b, :n], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c_fwd2, c_fwd, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c_bwd2, c_bwd, rtol=1e-5, atol=1e-6)
  bwd_vars = {'params': variables['params']['TinyCell_1']}
  for b, n in enumerate(LENGTHS):
    h, outs = _loop(TinyCell(4), bwd_vars, x[b, :n][::-1])
    np.testing.assert_allclose(ys[b, :n, 3:], outs[::-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_bwd[b], h, rtol=1e-5, atol=1e-6)


def test_rnn_with_library_lstm_cell():
  x = jnp.ones((2, 4, 3))
  rnn = nn.RNN(nn.LSTMCell(5), return_carry=True)
  variables = rnn.init(jax.random.key(0), x)
  (c, h), ys = rnn.apply(variables, x)
  assert ys.shape == (2, 4, 5) and c.shape == h.shape == (2, 5)
  np.testing.assert_allclose(ys[:, -1], h, rtol=1e-6)
