"""flaxlike.core.nn: functional layers on scopes, against numpy float64 and the Linen layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike.linen as linen
from flaxlike.core import apply, init, nn

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)


def f64(x):
  return np.asarray(x, np.float64)


def test_dense_matches_numpy_and_linen_dense():
  x = RNG.normal(size=(2, 3)).astype(np.float32)
  y, variables = init(nn.dense)(KEY, x, 4)
  p = variables['params']
  assert list(p) == ['kernel', 'bias']
  np.testing.assert_allclose(y, f64(x) @ f64(p['kernel']) + f64(p['bias']), rtol=1e-5, atol=1e-6)
  # Same key, same path: the same params and outputs as Linen's Dense.
  y_linen, v_linen = linen.Dense(4).init_with_output(KEY, x)
  np.testing.assert_array_equal(p['kernel'], v_linen['params']['kernel'])
  np.testing.assert_allclose(y, y_linen, rtol=1e-6, atol=1e-6)


def test_dense_without_bias_and_apply():
  x = np.ones((1, 3), np.float32)
  _, variables = init(nn.dense)(KEY, x, 2, bias=False, kernel_init=nn.initializers.ones)
  assert list(variables['params']) == ['kernel']
  np.testing.assert_array_equal(apply(nn.dense)(variables, x, 2, bias=False), [[3.0, 3.0]])


def test_dense_general_batch_dims_matches_numpy():
  x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
  y, variables = init(nn.dense_general)(KEY, x, (5,), axis=-1, batch_dims=0)
  k, b = (f64(variables['params'][n]) for n in ('kernel', 'bias'))
  assert k.shape == (2, 4, 5) and b.shape == (2, 5)
  expected = np.einsum('bsi,bio->bso', f64(x), k) + b[:, None, :]
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  # One kernel per batch index, all drawn from the same key.
  np.testing.assert_array_equal(k[0], k[1])


def test_dense_general_rejects_non_leading_batch_dims():
  with pytest.raises(ValueError, match='consecutive leading'):
    init(nn.dense_general)(KEY, np.ones((2, 3, 4)), 5, batch_dims=1)


def test_conv_matches_numpy():
  x = RNG.normal(size=(1, 5, 5, 2)).astype(np.float32)
  y, variables = init(nn.conv)(KEY, x, 3, (3, 3), padding='VALID')
  k, b = f64(variables['params']['kernel']), f64(variables['params']['bias'])
  expected = np.zeros((1, 3, 3, 3))
  for i in range(3):
    for j in range(3):
      expected[0, i, j] = np.einsum('hwc,hwco->o', f64(x)[0, i : i + 3, j : j + 3], k) + b
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  _, v_linen = linen.Conv(3, (3, 3), padding='VALID').init_with_output(KEY, x)
  np.testing.assert_array_equal(variables['params']['kernel'], v_linen['params']['kernel'])


def test_conv_transpose_matches_linen():
  x = RNG.normal(size=(1, 4, 4, 2)).astype(np.float32)
  y, variables = init(nn.conv_transpose)(KEY, x, 3, (3, 3), strides=(2, 2))
  y_linen = linen.ConvTranspose(3, (3, 3), strides=(2, 2)).apply(variables, x)
  assert y.shape == (1, 8, 8, 3)
  np.testing.assert_allclose(y, y_linen, rtol=1e-5, atol=1e-5)


def test_embedding_lookup_and_attend():
  def model(scope, ids, query):
    table = nn.embedding(scope, 5, 3)
    return table.lookup(ids), table.attend(query)

  ids = np.array([4, 0])
  query = np.ones((1, 3), np.float32)
  (rows, logits), variables = init(model)(KEY, ids, query)
  table = f64(variables['params']['table'])
  np.testing.assert_allclose(rows, table[ids], rtol=1e-6)
  np.testing.assert_allclose(logits, f64(query) @ table.T, rtol=1e-5)
  with pytest.raises(ValueError, match='integer'):
    nn.Embedding(jnp.ones((2, 2))).lookup(jnp.ones((1,)))


def test_batch_norm_train_update_and_eval():
  x = RNG.normal(size=(6, 3)).astype(np.float32)
  y, variables = init(nn.batch_norm)(KEY, x)
  mu, var = f64(x).mean(0), f64(x).var(0)
  np.testing.assert_allclose(y, (f64(x) - mu) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
  # init creates the statistics but does not move them.
  np.testing.assert_array_equal(variables['batch_stats']['mean'], np.zeros(3))
  _, updated = apply(nn.batch_norm, mutable='batch_stats')(variables, x)
  np.testing.assert_allclose(updated['batch_stats']['mean'], 0.01 * mu, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(updated['batch_stats']['var'], 0.99 + 0.01 * var, rtol=1e-5, atol=1e-6)
  y_eval = apply(nn.batch_norm)(variables, x, use_running_average=True)
  np.testing.assert_allclose(y_eval, f64(x) / np.sqrt(1 + 1e-5), rtol=1e-5, atol=1e-6)


def test_layer_norm_matches_numpy_and_linen():
  x = RNG.normal(size=(2, 5)).astype(np.float32)
  y, variables = init(nn.layer_norm)(KEY, x)
  mu, var = f64(x).mean(-1, keepdims=True), f64(x).var(-1, keepdims=True)
  np.testing.assert_allclose(y, (f64(x) - mu) / np.sqrt(var + 1e-6), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(y, linen.LayerNorm().apply(variables, x), rtol=1e-5, atol=1e-6)


def test_group_norm_matches_numpy():
  x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
  y, variables = init(nn.group_norm)(KEY, x, num_groups=2)
  assert variables['params']['scale'].shape == (1, 1, 4)
  g = f64(x).reshape(2, 3, 2, 2)
  mu, var = g.mean((1, 3), keepdims=True), g.var((1, 3), keepdims=True)
  expected = ((g - mu) / np.sqrt(var + 1e-6)).reshape(2, 3, 4)
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match='not both'):
    init(nn.group_norm)(KEY, x, num_groups=2, group_size=2)


def test_dropout_masks_and_scales():
  x = np.ones((1000,), np.float32)
  y = apply(nn.dropout)({}, x, 0.5, rngs={'dropout': KEY})
  assert set(np.unique(np.asarray(y)).tolist()) <= {0.0, 2.0}
  assert 400 < int((np.asarray(y) == 0).sum()) < 600
  np.testing.assert_array_equal(apply(nn.dropout)({}, x, 0.5, deterministic=True), x)


def test_layers_compose_with_child_and_lift_vmap():
  from flaxlike.core import lift

  def mlp(scope, x):
    h = nn.relu(scope.child(nn.dense, 'hidden')(x, 4))
    return scope.child(nn.dense, 'out')(h, 1)

  ensemble = lift.vmap(
    mlp, variable_axes={'params': 0}, split_rngs={'params': True}, in_axes=None, axis_size=3
  )
  y, variables = init(ensemble)(KEY, np.ones((2, 3), np.float32))
  assert y.shape == (3, 2, 1)
  assert variables['params']['hidden']['kernel'].shape == (3, 3, 4)


def test_dot_product_attention_matches_numpy_softmax():
  from flaxlike.core import Scope

  q, k, v = (RNG.normal(size=(2, 3, 1, 4)).astype(np.float32) for _ in range(3))
  y = nn.dot_product_attention(Scope({}), q, k, v)
  logits = np.einsum('bqhd,bkhd->bhqk', f64(q), f64(k)) / np.sqrt(4)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  np.testing.assert_allclose(y, np.einsum('bhqk,bkhd->bqhd', w, f64(v)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('causal', [False, True])
def test_multi_head_attention_matches_linen(causal):
  x = RNG.normal(size=(2, 5, 8)).astype(np.float32)
  y, variables = init(nn.multi_head_dot_product_attention)(
    KEY, x, x, num_heads=2, causal_mask=causal
  )
  shapes = jax.tree_util.tree_map(jnp.shape, variables['params'])
  assert shapes['query'] == {'kernel': (8, 2, 4), 'bias': (2, 4)}
  assert shapes['out'] == {'kernel': (2, 4, 8), 'bias': (8,)}
  mask = linen.make_causal_mask(jnp.ones((2, 5))) if causal else None
  y_linen = linen.MultiHeadDotProductAttention(num_heads=2).apply(variables, x, x, mask=mask)
  np.testing.assert_allclose(y, y_linen, rtol=1e-5, atol=1e-5)


def test_multi_head_attention_padding_mask_ignores_padded_keys():
  x = RNG.normal(size=(1, 4, 4)).astype(np.float32)
  pad = np.array([[True, True, False, False]])
  y, variables = init(nn.multi_head_dot_product_attention)(KEY, x, x, 1, padding_mask=pad)
  changed = x.copy()
  changed[0, 2:] += 10.0  # only padded positions change
  y2 = apply(nn.multi_head_dot_product_attention)(variables, changed, changed, 1, padding_mask=pad)
  np.testing.assert_allclose(y[0, :2], y2[0, :2], rtol=1e-5, atol=1e-5)
