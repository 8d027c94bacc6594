"""Dropout: mask derivation, scaling, broadcasting, rate edge cases, field vs call flags."""

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike as nn


def _fold(key, *data):
  """Linen's static fold-in of a scope path and counter (rng-and-naming.md section 3)."""
  h = hashlib.sha1()
  for d in data:
    h.update(d.encode() if isinstance(d, str) else d.to_bytes((d.bit_length() + 7) // 8, 'big'))
  return jax.random.fold_in(key, np.uint32(int.from_bytes(h.digest()[:4], 'big')))


def test_mask_comes_from_dropout_stream_at_module_path():
  x = jnp.arange(1.0, 13.0).reshape(3, 4)

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dropout(0.4, deterministic=False)(x)

  root = jax.random.key(7)
  y = Net().apply({}, x, rngs={'dropout': root})
  keep = jax.random.bernoulli(_fold(root, 'Dropout_0', 1), 0.6, (3, 4))
  np.testing.assert_allclose(y, np.where(keep, x / 0.6, 0.0), rtol=1e-6)


def test_broadcast_dims_share_the_mask():
  x = jnp.ones((4, 5, 3))
  y = nn.Dropout(0.5, broadcast_dims=(0, -1)).apply(
    {}, x, deterministic=False, rng=jax.random.key(1)
  )
  kept = np.asarray(y != 0)
  assert (kept == kept[:1, :, :1]).all()
  assert 0 < kept[0, :, 0].sum() < 5
  key = jax.random.key(1)
  np.testing.assert_array_equal(kept[0, :, 0], jax.random.bernoulli(key, 0.5, (1, 5, 1))[0, :, 0])


def test_explicit_rng_argument_wins():
  x = jnp.ones(16)
  a = nn.Dropout(0.5).apply({}, x, deterministic=False, rng=jax.random.key(3))
  b = nn.Dropout(0.5).apply(
    {}, x, deterministic=False, rng=jax.random.key(3), rngs={'dropout': jax.random.key(99)}
  )
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(
    a, np.where(jax.random.bernoulli(jax.random.key(3), 0.5, (16,)), 2.0, 0.0)
  )


def test_rate_edges_and_determinism():
  x = jnp.arange(1.0, 5.0)
  np.testing.assert_array_equal(nn.Dropout(0.0).apply({}, x, deterministic=False), x)
  np.testing.assert_array_equal(nn.Dropout(1.0).apply({}, x, deterministic=False), 0.0)
  np.testing.assert_array_equal(nn.Dropout(0.5, deterministic=True).apply({}, x), x)
  # rate 1 has a finite (zero) gradient instead of 0/0.
  g = jax.grad(lambda v: nn.Dropout(1.0).apply({}, v, deterministic=False).sum())(x)
  np.testing.assert_array_equal(g, 0.0)


def test_deterministic_must_be_given_exactly_once():
  x = jnp.ones(3)
  with pytest.raises(ValueError, match='"deterministic" must be passed'):
    nn.Dropout(0.5).apply({}, x)
  with pytest.raises(ValueError, match='passed just once'):
    nn.Dropout(0.5, deterministic=True).apply({}, x, deterministic=True)


def test_missing_rng_stream_is_an_error():
  with pytest.raises(Exception, match='dropout'):
    nn.Dropout(0.5).apply({}, jnp.ones(3), deterministic=False)


def test_custom_rng_collection():
  x = jnp.ones(32)
  y = nn.Dropout(0.5, rng_collection='noise').apply(
    {}, x, deterministic=False, rngs={'noise': jax.random.key(2)}
  )
  keep = jax.random.bernoulli(_fold(jax.random.key(2), 1), 0.5, (32,))
  np.testing.assert_array_equal(y, np.where(keep, 2.0, 0.0))
