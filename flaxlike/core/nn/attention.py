"""Dot-product attention as functions of a scope.

``multi_head_dot_product_attention`` projects its inputs with ``dense_general`` children
``query``, ``key``, ``value`` (kernels ``(features, heads, head_dim)``) and ``out``
(kernel ``(heads, head_dim, features)``), the params of Linen's
``MultiHeadDotProductAttention``, and attends with ``dot_product_attention``, which
supports several attention axes (``(batch, *attention_axes, heads, channels)`` inputs).

Example:

>>> import jax, jax.numpy as jnp
>>> from flaxlike.core import init, nn
>>> x = jnp.ones((2, 5, 8))
>>> y, v = init(nn.multi_head_dot_product_attention)(jax.random.key(0), x, x, num_heads=2)
>>> y.shape, v['params']['query']['kernel'].shape
((2, 5, 8), (8, 2, 4))
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax, random

from flaxlike.core.nn import initializers
from flaxlike.core.nn.linear import default_kernel_init, dense_general
from flaxlike.core.scope import Scope

Array = Any
Dtype = Any


def _inverse_permutation(perm: Sequence[int]) -> tuple[int, ...]:
  inverse = [0] * len(perm)
  for i, p in enumerate(perm):
    inverse[p] = i
  return tuple(inverse)


def dot_product_attention(
  scope: Scope,
  query: Array,
  key: Array,
  value: Array,
  dtype: Dtype = jnp.float32,
  bias: Array | None = None,
  axis: int | Sequence[int] | None = None,
  broadcast_dropout: bool = True,
  dropout_rng: Any = None,
  dropout_rate: float = 0.0,
  deterministic: bool = False,
  precision: Any = None,
) -> Array:
  """``softmax(q k^T / sqrt(depth) + bias) v`` over the attention axes.

  Args:
    scope: the scope whose ``'dropout'`` stream drives attention dropout.
    query: ``(batch, *attention_dims, heads, depth)``.
    key: like ``query``.
    value: ``(batch, *attention_dims, heads, value_depth)``.
    dtype: the dtype of the attention weights.
    bias: added to the attention logits ``(batch, heads, *q_dims, *kv_dims)``.
    axis: the attention axes (default: every axis between batch and heads).
    broadcast_dropout: one dropout mask for the whole batch.
    dropout_rng: key for the dropout mask (default: ``scope.make_rng('dropout')``).
    dropout_rate: the dropout probability of the attention weights.
    deterministic: disable dropout.
    precision: ``jax.lax.Precision`` of the contractions.

  Returns:
    ``(batch, *attention_dims, heads, value_depth)``.

  Example:

  >>> import jax.numpy as jnp
  >>> from flaxlike.core import Scope, nn
  >>> q = jnp.ones((1, 3, 2, 4))
  >>> nn.dot_product_attention(Scope({}), q, q, q).shape
  (1, 3, 2, 4)
  """
  if key.shape[:-1] != value.shape[:-1] or query.shape[-1] != key.shape[-1]:
    raise ValueError(
      f'dot_product_attention in {scope.path_text}: key {key.shape} and value {value.shape} '
      f'must agree on every axis but the last, and query {query.shape} and key on the last.'
    )
  if not query.ndim == key.ndim == value.ndim:
    raise ValueError(
      f'dot_product_attention in {scope.path_text}: query, key and value must have the same '
      f'rank, got {query.ndim}, {key.ndim}, {value.ndim}.'
    )
  n = key.ndim
  if axis is None:
    axis = tuple(range(1, n - 2))
  axis = tuple(axis) if isinstance(axis, Iterable) else (axis,)
  for ax in axis:
    if not (n >= 3 and 1 <= ax < n - 2):
      raise ValueError('Attention axis must be between the batch axis and the last-two axes.')
  depth = query.shape[-1]
  batch_dims = tuple(np.delete(np.arange(n), axis + (n - 1,)).tolist())
  # Batch dims (batch and heads) first, then the attention axes, then the channels.
  qk_perm = batch_dims + axis + (n - 1,)
  query = query.transpose(qk_perm) / jnp.sqrt(depth).astype(dtype)
  key = key.transpose(qk_perm)
  value = value.transpose(batch_dims + (n - 1,) + axis)
  batch = tuple(range(len(batch_dims)))
  logits = lax.dot_general(query, key, (((n - 1,), (n - 1,)), (batch, batch)), precision=precision)
  if bias is not None:
    logits = logits + bias
  norm_dims = tuple(range(logits.ndim - len(axis), logits.ndim))
  weights = jnp.exp(logits - jax.scipy.special.logsumexp(logits, axis=norm_dims, keepdims=True))
  weights = weights.astype(dtype)
  if not deterministic and dropout_rate > 0.0:
    if dropout_rng is None:
      dropout_rng = scope.make_rng('dropout')
    keep_prob = 1.0 - dropout_rate
    if broadcast_dropout:
      mask_shape = (1,) * len(batch) + weights.shape[-(2 * len(axis)) :]
    else:
      mask_shape = weights.shape
    keep = random.bernoulli(dropout_rng, keep_prob, mask_shape)
    weights = weights * (keep.astype(weights.dtype) / jnp.asarray(keep_prob, dtype))
  value_dims = tuple(range(value.ndim - len(axis), value.ndim))
  y = lax.dot_general(
    weights, value, ((norm_dims, value_dims), (batch, batch)), precision=precision
  )
  return y.transpose(_inverse_permutation(qk_perm))


def _causal_mask(key: Array, attention_axis: tuple[int, ...]) -> Array:
  """A mask ``(1, ..., 1, *attention_shape, *attention_shape)``: position i may attend j <= i
  (positions flattened row-major over the attention axes)."""
  attention_shape = tuple(key.shape[a] for a in attention_axis)
  size = int(np.prod(attention_shape))
  mask = jnp.tril(jnp.ones((size, size), bool))
  return mask.reshape((1,) * (key.ndim - len(attention_axis) - 1) + attention_shape * 2)


def _padding_mask(
  query_mask: Array, key_mask: Array, attention_axis: tuple[int, ...], equal: bool
) -> Array:
  """``(batch, 1, *q_dims, *kv_dims)``: query and key positions both valid (``equal``:
  in the same segment). The masks are ``(batch, *attention_dims[, 1])``."""
  if query_mask.ndim == len(attention_axis) + 2:
    query_mask, key_mask = query_mask[..., 0], key_mask[..., 0]
  n = len(attention_axis)
  q = query_mask.reshape(query_mask.shape + (1,) * n)
  k = key_mask.reshape(key_mask.shape[:1] + (1,) * n + key_mask.shape[1:])
  mask = (q == k) if equal else jnp.logical_and(q, k)
  return mask[:, None]


def multi_head_dot_product_attention(
  scope: Scope,
  inputs_q: Array,
  inputs_kv: Array | None,
  num_heads: int,
  dtype: Dtype = jnp.float32,
  qkv_features: int | None = None,
  out_features: int | None = None,
  attention_axis: Sequence[int] | None = None,
  causal_mask: bool = False,
  padding_mask: Array | None = None,
  key_padding_mask: Array | None = None,
  segmentation: Array | None = None,
  key_segmentation: Array | None = None,
  broadcast_dropout: bool = True,
  dropout_rng: Any = None,
  dropout_rate: float = 0.0,
  deterministic: bool = False,
  precision: Any = None,
  kernel_init: Callable[..., Any] = default_kernel_init,
  bias_init: Callable[..., Any] = initializers.zeros,
  bias: bool = True,
  attention_fn: Callable[..., Array] = dot_product_attention,
) -> Array:
  """Multi-head attention of ``inputs_q`` over ``inputs_kv`` (self-attention if None).

  Args:
    scope: the scope holding the ``query``, ``key``, ``value`` and ``out`` projections.
    inputs_q: ``(batch, *attention_dims, features)``.
    inputs_kv: like ``inputs_q``, or None to attend over ``inputs_q``.
    num_heads: the number of heads; must divide ``qkv_features``.
    dtype: the dtype of the computation.
    qkv_features: the size of the query/key/value projections (default: features).
    out_features: the output size (default: features).
    attention_axis: the attention axes (default: every axis between batch and features).
    causal_mask: position i attends only to positions j <= i.
    padding_mask: ``(batch, *attention_dims[, 1])`` booleans, True for real query tokens.
    key_padding_mask: the same for the keys (default: ``padding_mask``).
    segmentation: segment ids of the queries; tokens attend within their segment.
    key_segmentation: segment ids of the keys (default: ``segmentation``).
    broadcast_dropout: one dropout mask for the whole batch.
    dropout_rng: key for dropout (default: ``scope.make_rng('dropout')``).
    dropout_rate: the dropout probability of the attention weights.
    deterministic: disable dropout.
    precision: ``jax.lax.Precision`` of the contractions.
    kernel_init: initializer of the projection kernels.
    bias_init: initializer of the projection biases.
    bias: whether the projections have biases.
    attention_fn: ``fn(scope, query, key, value, **kwargs)``, like ``dot_product_attention``.

  Returns:
    ``(batch, *attention_dims, out_features)``.
  """
  if inputs_kv is None:
    inputs_kv = inputs_q
  if attention_axis is None:
    attention_axis = tuple(range(1, inputs_q.ndim - 1))
  attention_axis = tuple(attention_axis)
  features = out_features or inputs_q.shape[-1]
  in_features: int = inputs_q.shape[-1]
  qkv_features = qkv_features or in_features
  if qkv_features % num_heads:
    raise ValueError(
      f'Memory dimension must be divisible by number of heads: qkv_features={qkv_features}, '
      f'num_heads={num_heads} in {scope.path_text}.'
    )
  project = functools.partial(
    dense_general,
    axis=-1,
    features=(num_heads, qkv_features // num_heads),
    bias=bias,
    dtype=dtype,
    kernel_init=kernel_init,
    bias_init=bias_init,
    precision=precision,
  )
  query = scope.child(project, 'query')(inputs_q)
  key = scope.child(project, 'key')(inputs_kv)
  value = scope.child(project, 'value')(inputs_kv)

  masks = []
  if causal_mask:
    masks.append(_causal_mask(key, attention_axis))
  if padding_mask is not None:
    kv_mask = padding_mask if key_padding_mask is None else key_padding_mask
    masks.append(_padding_mask(padding_mask, kv_mask, attention_axis, equal=False))
  if segmentation is not None:
    kv_segments = segmentation if key_segmentation is None else key_segmentation
    masks.append(_padding_mask(segmentation, kv_segments, attention_axis, equal=True))
  attention_bias = None
  if masks:
    mask = functools.reduce(jnp.logical_and, masks)
    attention_bias = jnp.where(mask, 0.0, -1e10).astype(dtype)

  x = scope.child(attention_fn)(
    query,
    key,
    value,
    dtype=dtype,
    axis=attention_axis,
    bias=attention_bias,
    precision=precision,
    dropout_rng=dropout_rng,
    dropout_rate=dropout_rate,
    broadcast_dropout=broadcast_dropout,
    deterministic=deterministic,
  )
  return scope.child(dense_general, 'out')(
    x,
    features=features,
    axis=(-2, -1),
    kernel_init=kernel_init,
    bias_init=bias_init,
    bias=bias,
    dtype=dtype,
    precision=precision,
  )
