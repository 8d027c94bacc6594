"""Attention against float64 numpy references, and cached decoding (token by token and
in chunks) against the full causal forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike as nn


def _x(*shape, seed=0):
  return np.random.RandomState(seed).standard_normal(shape).astype(np.float32)


def _np_softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _np_attention(q, k, v, mask=None, bias=None):
  q, k, v = (a.astype(np.float64) for a in (q, k, v))
  logits = np.einsum('...qhd,...khd->...hqk', q / np.sqrt(q.shape[-1]), k)
  if bias is not None:
    logits = logits + bias
  if mask is not None:
    logits = np.where(mask, logits, np.finfo(np.float32).min)
  return np.einsum('...hqk,...khd->...qhd', _np_softmax(logits), v)


def _close(got, want, tol=2e-5):
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol)


def test_dot_product_attention_with_mask_and_bias():
  q, k, v = _x(2, 3, 2, 4), _x(2, 5, 2, 4, seed=1), _x(2, 5, 2, 3, seed=2)
  mask = np.random.RandomState(3).rand(2, 1, 3, 5) > 0.3
  mask[..., 0] = True
  bias = _x(1, 2, 3, 5, seed=4)
  got = nn.dot_product_attention(q, k, v, bias=bias, mask=mask)
  _close(got, _np_attention(q, k, v, mask, bias))
  weights = nn.dot_product_attention_weights(q, k, mask=mask)
  assert weights.shape == (2, 2, 3, 5)
  _close(weights.sum(-1), np.ones((2, 2, 3)))
  assert np.all(np.asarray(weights)[~np.broadcast_to(mask, (2, 2, 3, 5))] == 0)


def test_attention_dropout_scales_kept_weights():
  q = k = _x(1, 4, 2, 3)
  base = nn.dot_product_attention_weights(q, k)
  rng = jax.random.key(0)
  dropped = nn.dot_product_attention_weights(q, k, dropout_rng=rng, dropout_rate=0.5)
  kept = np.asarray(dropped) != 0
  _close(np.asarray(dropped)[kept], 2 * np.asarray(base, np.float64)[kept], tol=1e-5)
  # Broadcast dropout: one mask for all heads.
  np.testing.assert_array_equal(kept[:, 0], kept[:, 1])
  per_head = nn.dot_product_attention_weights(
    q, k, dropout_rng=rng, dropout_rate=0.5, broadcast_dropout=False
  )
  assert per_head.shape == base.shape
  off = nn.dot_product_attention_weights(
    q, k, dropout_rng=rng, dropout_rate=0.5, deterministic=True
  )
  np.testing.assert_array_equal(off, base)


def test_masks():
  x = np.array([[1, 1, 0]])
  m = nn.make_attention_mask(x, x)
  assert m.shape == (1, 1, 3, 3)
  np.testing.assert_array_equal(m[0, 0], np.outer(x[0], x[0]))
  c = nn.make_causal_mask(np.ones((2, 4)), extra_batch_dims=1)
  assert c.shape == (1, 2, 1, 4, 4)
  np.testing.assert_array_equal(c[0, 1, 0], np.tril(np.ones((4, 4))))
  assert nn.combine_masks(None, None) is None
  both = nn.combine_masks(m, nn.make_causal_mask(np.ones((1, 3))))
  np.testing.assert_array_equal(both[0, 0], np.tril(np.outer(x[0], x[0])))
  with pytest.raises(ValueError, match='same rank'):
    nn.combine_masks(m, m[0])


def _np_mha(params, xq, xkv, mask=None):
  def proj(p, x):
    return np.einsum('...i,ihd->...hd', x, p['kernel']) + p['bias']

  q, k, v = proj(params['query'], xq), proj(params['key'], xkv), proj(params['value'], xkv)
  o = _np_attention(q, k, v, mask)
  return np.einsum('...hd,hdo->...o', o, params['out']['kernel']) + params['out']['bias']


def _f64(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def test_mha_matches_numpy_cross_attention_with_mask():
  xq, xkv = _x(2, 3, 4), _x(2, 5, 6, seed=1)
  layer = nn.MultiHeadDotProductAttention(
    num_heads=2, qkv_features=6, out_features=3, bias_init=nn.initializers.normal(0.5)
  )
  variables = layer.init(jax.random.key(0), xq, xkv)
  params = variables['params']
  assert list(params) == ['query', 'key', 'value', 'out']
  assert params['query']['kernel'].shape == (4, 2, 3)
  assert params['key']['kernel'].shape == (6, 2, 3)
  assert params['out']['kernel'].shape == (2, 3, 3)
  mask = nn.make_attention_mask(np.ones((2, 3)), np.array([[1, 1, 1, 0, 0]] * 2))
  got = layer.apply(variables, xq, xkv, mask=mask)
  _close(got, _np_mha(_f64(params), xq, xkv, np.asarray(mask, bool)))


def test_mha_normalize_qk_and_sow_weights():
  x = _x(1, 4, 4)
  layer = nn.MultiHeadDotProductAttention(num_heads=2, normalize_qk=True)
  variables = layer.init(jax.random.key(0), x)
  assert list(variables['params']) == ['query', 'key', 'value', 'query_ln', 'key_ln', 'out']
  assert list(variables['params']['query_ln']) == ['scale']
  _, state = layer.apply(variables, x, sow_weights=True, mutable=['intermediates'])
  (weights,) = state['intermediates']['attention_weights']
  assert weights.shape == (1, 2, 4, 4)
  _close(weights.sum(-1), np.ones((1, 2, 4)))


def test_mha_dropout_needs_rng_and_deterministic():
  x = _x(1, 4, 4)
  layer = nn.MultiHeadDotProductAttention(num_heads=2, dropout_rate=0.5)
  variables = layer.init(jax.random.key(0), x, deterministic=True)
  with pytest.raises(ValueError, match='deterministic'):
    layer.apply(variables, x)
  a = layer.apply(variables, x, deterministic=False, rngs={'dropout': jax.random.key(1)})
  b = layer.apply(variables, x, deterministic=False, dropout_rng=jax.random.key(2))
  c = layer.apply(variables, x, deterministic=True)
  assert not np.allclose(a, c) and not np.allclose(a, b)


def test_mha_argument_errors_and_warnings():
  x = _x(1, 4, 4)
  layer = nn.MultiHeadDotProductAttention(num_heads=3)
  with pytest.raises(ValueError, match='divisible by number of heads'):
    layer.init(jax.random.key(0), x)
  layer = nn.MultiHeadDotProductAttention(num_heads=2)
  with pytest.raises(ValueError, match='`inputs_k` cannot be None'):
    layer.init(jax.random.key(0), x, inputs_v=x)
  with pytest.warns(DeprecationWarning, match='inputs_kv'):
    v = layer.init(jax.random.key(0), x, inputs_kv=x)
  with pytest.warns(DeprecationWarning, match='SelfAttention'):
    y = nn.SelfAttention(num_heads=2).apply(v, x)
  _close(y, np.asarray(layer.apply(v, x), np.float64))


# -- decoding ---------------------------------------------------------------------


class _TinyLM(nn.Module):
  """Embedding-free causal LM block: one attention layer, then a logits projection."""

  decode: bool = False

  @nn.compact
  def __call__(self, x):
    mask = None if self.decode else nn.make_causal_mask(x[..., 0])
    h = nn.MultiHeadDotProductAttention(
      num_heads=2, qkv_features=8, decode=self.decode, normalize_qk=True
    )(x, mask=mask)
    return nn.Dense(5)(nn.LayerNorm()(x + h))


def _full_and_cache(seq_len=7):
  x = _x(2, seq_len, 4, seed=11)
  params = _TinyLM().init(jax.random.key(0), x)['params']
  full = _TinyLM().apply({'params': params}, x)
  cache = _TinyLM(decode=True).init(jax.random.key(0), x)['cache']
  return x, params, full, cache


def _decode(params, cache, x, chunks):
  model = _TinyLM(decode=True)
  step = jax.jit(lambda c, xc: model.apply({'params': params, 'cache': c}, xc, mutable=['cache']))
  outs, start = [], 0
  for n in chunks:
    y, updated = step(cache, x[:, start : start + n])
    cache = updated['cache']
    outs.append(y)
    start += n
  assert int(cache['MultiHeadDotProductAttention_0']['cache_index']) == start
  return jnp.concatenate(outs, axis=1)


def test_decode_cache_layout():
  x, params, _, cache = _full_and_cache()
  c = cache['MultiHeadDotProductAttention_0']
  assert list(c) == ['cached_key', 'cached_value', 'cache_index']
  assert c['cached_key'].shape == (2, 7, 2, 4)
  assert c['cache_index'].dtype == jnp.int32 and c['cache_index'].shape == ()


@pytest.mark.parametrize(
  'chunks',
  [
    [1] * 7,  # Linen-style, one token per step
    [7],  # the whole sequence at once
    [4, 1, 1, 1],  # prefill a prompt, then one token at a time
    [2, 3, 2],
    [3, 4],
  ],
)
def test_decode_matches_full_causal_pass(chunks):
  x, params, full, cache = _full_and_cache()
  _close(_decode(params, cache, x, chunks), np.asarray(full, np.float64), tol=1e-5)


def test_decode_rejects_bad_chunks():
  x, params, _, cache = _full_and_cache()
  model = _TinyLM(decode=True)
  with pytest.raises(ValueError, match='Autoregressive cache shape error'):
    model.apply({'params': params, 'cache': cache}, _x(2, 8, 4), mutable=['cache'])
  with pytest.raises(ValueError, match='Autoregressive cache shape error'):
    model.apply({'params': params, 'cache': cache}, _x(3, 1, 4), mutable=['cache'])


def test_decode_chunk_mask_combines_with_user_mask():
  # A user mask hiding position 0 from every query, given for a 3-token chunk.
  x = _x(1, 5, 4, seed=3)
  layer = nn.MultiHeadDotProductAttention(num_heads=1, decode=True)
  v = layer.init(jax.random.key(0), x)
  user = np.ones((1, 1, 3, 5), bool)
  user[..., 0] = False
  y, _ = layer.apply(v, x[:, :3], mask=user, mutable=['cache'])
  ref_layer = nn.MultiHeadDotProductAttention(num_heads=1)
  full_mask = np.tril(np.ones((3, 3), bool))[None, None] & user[..., :3]
  want = ref_layer.apply({'params': v['params']}, x[:, :3], mask=full_mask)
  # Query 0 sees no position at all: both give a uniform average over masked logits,
  # so compare the other queries only.
  _close(y[:, 1:], np.asarray(want[:, 1:], np.float64))
