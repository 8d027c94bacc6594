"""Attention: dot-product attention functions, masks and multi-head attention modules.

Decoding cache
--------------
With ``decode=True``, ``MultiHeadDotProductAttention`` keeps the projected keys and
values in the ``cache`` collection: ``cached_key`` and ``cached_value`` of shape
``(*batch, max_length, num_heads, head_dim)`` and ``cache_index``, an int32 scalar
holding the number of positions written so far. ``init`` with an input of the full
length ``max_length`` creates the (zero) cache; then each ``apply(...,
mutable=['cache'])`` writes its keys/values at ``cache_index`` and advances it.

Linen accepts exactly one token per decoding call. flaxlike also accepts a *chunk* of
``L`` tokens (``1 <= L <= max_length``), e.g. to prefill a whole prompt in one call and
then continue token by token. Query ``j`` of a chunk written at index ``i`` sits at
absolute position ``i + j`` and attends causally to cache positions ``<= i + j``: to
the earlier chunks and to the chunk's own tokens up to itself. Positions past
``i + L - 1`` (still zero, or stale) are always masked out. A user ``mask`` is combined
(logical and) with this causal mask, so it must have shape
``(*batch, num_heads or 1, L, max_length)``. For ``L == 1`` this is exactly Linen's
behaviour. Writing past ``max_length`` cannot be detected under ``jit``; as in Linen,
``lax.dynamic_update_slice`` then clamps the write position.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax, random

from flaxlike.linen import initializers
from flaxlike.linen.dtypes import promote_dtype
from flaxlike.linen.linear import DenseGeneral, default_kernel_init
from flaxlike.linen.module import Module, compact, merge_param
from flaxlike.linen.normalization import LayerNorm

Array = Any
PRNGKey = Any
Dtype = Any
PrecisionLike = Any
Initializer = Callable[..., Any]


def _einsum_fn(
  precision: PrecisionLike, einsum_dot_general: Callable[..., Any] | None
) -> Callable[..., Any]:
  if einsum_dot_general is None:
    return functools.partial(jnp.einsum, precision=precision)
  return functools.partial(jnp.einsum, precision=precision, _dot_general=einsum_dot_general)


def dot_product_attention_weights(
  query: Array,
  key: Array,
  bias: Array | None = None,
  mask: Array | None = None,
  broadcast_dropout: bool = True,
  dropout_rng: PRNGKey | None = None,
  dropout_rate: float = 0.0,
  deterministic: bool = False,
  dtype: Dtype | None = None,
  precision: PrecisionLike = None,
  module: Module | None = None,
  force_fp32_for_softmax: bool = False,
  einsum_dot_general: Callable[..., Array] | None = None,
  einsum: Callable[..., Array] | None = None,
) -> Array:
  """Attention weights ``softmax(q k^T / sqrt(depth) + bias)`` of shape ``(..., heads, q, kv)``.

  Args:
    query: ``(..., q_length, num_heads, depth)``.
    key: ``(..., kv_length, num_heads, depth)``.
    bias: added to the logits; broadcastable to ``(..., num_heads, q_length, kv_length)``.
    mask: False (or 0) where attention is not allowed; same broadcasting as ``bias``.
    broadcast_dropout: share the dropout mask across the batch and head axes.
    dropout_rng: the key for dropout.
    dropout_rate: the probability of dropping a weight.
    deterministic: disable dropout.
    dtype: the computation dtype (None: promoted from ``query`` and ``key``).
    precision: the ``lax`` precision of the einsum.
    module: if given, the weights are sown into its ``intermediates`` collection as
      ``attention_weights``.
    force_fp32_for_softmax: run the softmax in float32 (and return float32 weights).
    einsum_dot_general: a replacement ``dot_general`` for the einsum.
    einsum: a replacement for the whole einsum (exclusive with the two above).

  Returns:
    The weights.

  Example:

  >>> import jax.numpy as jnp
  >>> import flaxlike as nn
  >>> q = k = jnp.ones((1, 3, 2, 4))
  >>> nn.dot_product_attention_weights(q, k).shape
  (1, 2, 3, 3)
  """
  if (precision or einsum_dot_general) and einsum:
    raise ValueError(
      'precision/einsum_dot_general and einsum are mutually exclusive. Please specify '
      'only one of them.'
    )
  if not einsum:
    einsum = _einsum_fn(precision, einsum_dot_general)
  query, key = promote_dtype(query, key, dtype=dtype)
  dtype = query.dtype
  if query.ndim != key.ndim:
    raise ValueError(f'q, k must have same rank, got {query.ndim} and {key.ndim}.')
  if query.shape[:-3] != key.shape[:-3]:
    raise ValueError(f'q, k batch dims must match, got {query.shape} and {key.shape}.')
  if query.shape[-2] != key.shape[-2]:
    raise ValueError(f'q, k num_heads must match, got {query.shape} and {key.shape}.')
  if query.shape[-1] != key.shape[-1]:
    raise ValueError(f'q, k depths must match, got {query.shape} and {key.shape}.')
  depth = query.shape[-1]
  query = query / jnp.sqrt(depth).astype(dtype)
  logits = einsum('...qhd,...khd->...hqk', query, key)
  if bias is not None:
    logits = logits + bias
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(dtype).min)
  if force_fp32_for_softmax and dtype != jnp.float32:
    weights = jax.nn.softmax(logits.astype(jnp.float32))
  else:
    weights = jax.nn.softmax(logits).astype(dtype)
  if module:
    module.sow('intermediates', 'attention_weights', weights)
  if not deterministic and dropout_rate > 0.0:
    keep_prob = 1.0 - dropout_rate
    if broadcast_dropout:
      shape = (1,) * (key.ndim - 2) + weights.shape[-2:]
    else:
      shape = weights.shape
    keep = random.bernoulli(dropout_rng, keep_prob, shape)
    weights = weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype=dtype))
  return weights


def dot_product_attention(
  query: Array,
  key: Array,
  value: Array,
  bias: Array | None = None,
  mask: Array | None = None,
  broadcast_dropout: bool = True,
  dropout_rng: PRNGKey | None = None,
  dropout_rate: float = 0.0,
  deterministic: bool = False,
  dtype: Dtype | None = None,
  precision: PrecisionLike = None,
  module: Module | None = None,
  force_fp32_for_softmax: bool = False,
  einsum_dot_general: Callable[..., Array] | None = None,
  qk_attn_weights_einsum: Callable[..., Array] | None = None,
  attn_weights_value_einsum: Callable[..., Array] | None = None,
) -> Array:
  """Multi-head dot-product attention: ``weights @ value`` per head.

  Args:
    query: ``(..., q_length, num_heads, depth)``.
    key: ``(..., kv_length, num_heads, depth)``.
    value: ``(..., kv_length, num_heads, v_depth)``.
    bias, mask, broadcast_dropout, dropout_rng, dropout_rate, deterministic, dtype,
      precision, module, force_fp32_for_softmax, einsum_dot_general: as in
      ``dot_product_attention_weights``.
    qk_attn_weights_einsum: a replacement einsum for the logits.
    attn_weights_value_einsum: a replacement einsum for ``weights @ value``; give both
      replacements or neither.

  Returns:
    ``(..., q_length, num_heads, v_depth)``.

  Example:

  >>> import jax.numpy as jnp
  >>> import flaxlike as nn
  >>> q = k = v = jnp.ones((1, 3, 2, 4))
  >>> nn.dot_product_attention(q, k, v).shape
  (1, 3, 2, 4)
  """
  if (qk_attn_weights_einsum is None) != (attn_weights_value_einsum is None):
    raise ValueError(
      'qk_attn_weights_einsum and attn_weights_value_einsum must be specified together.'
    )
  if (precision or einsum_dot_general) and (qk_attn_weights_einsum or attn_weights_value_einsum):
    raise ValueError(
      'precision/einsum_dot_general and qk_attn_weights_einsum/attn_weights_value_einsum '
      'are mutually exclusive. Please specify only one of them.'
    )
  query, key, value = promote_dtype(query, key, value, dtype=dtype)
  if not key.ndim == query.ndim == value.ndim:
    raise ValueError('q, k, v must have same rank.')
  if not query.shape[:-3] == key.shape[:-3] == value.shape[:-3]:
    raise ValueError('q, k, v batch dims must match.')
  if not query.shape[-2] == key.shape[-2] == value.shape[-2]:
    raise ValueError('q, k, v num_heads must match.')
  if key.shape[-3] != value.shape[-3]:
    raise ValueError('k, v lengths must match.')
  weights = dot_product_attention_weights(
    query,
    key,
    bias,
    mask,
    broadcast_dropout,
    dropout_rng,
    dropout_rate,
    deterministic,
    query.dtype,
    precision,
    module,
    force_fp32_for_softmax,
    einsum_dot_general=einsum_dot_general,
    einsum=qk_attn_weights_einsum,
  )
  if not attn_weights_value_einsum:
    attn_weights_value_einsum = _einsum_fn(precision, einsum_dot_general)
  return attn_weights_value_einsum('...hqk,...khd->...qhd', weights, value)


_ATTENTION_KWARGS = (
  'mask',
  'dropout_rng',
  'dropout_rate',
  'broadcast_dropout',
  'deterministic',
  'dtype',
  'precision',
  'force_fp32_for_softmax',
  'qk_attn_weights_einsum',
  'attn_weights_value_einsum',
)


@functools.lru_cache(maxsize=256)
def _accepted_kwargs(fn: Callable[..., Any]) -> frozenset[str]:
  """Which of the optional attention arguments ``fn`` takes (inspected once per function)."""
  params = inspect.signature(fn).parameters
  return frozenset(k for k in _ATTENTION_KWARGS if k in params)


def _accepted(fn: Callable[..., Any]) -> frozenset[str]:
  try:
    return _accepted_kwargs(fn)
  except TypeError:  # unhashable callable
    return _accepted_kwargs.__wrapped__(fn)


def _causal_chunk_mask(cur_index: Array, chunk: int, max_length: int) -> Array:
  """``(chunk, max_length)``: query ``j`` of a chunk at ``cur_index`` sees positions ``<= cur_index + j``."""
  query_pos = cur_index + jnp.arange(chunk, dtype=cur_index.dtype)
  return jnp.arange(max_length, dtype=cur_index.dtype)[None, :] <= query_pos[:, None]


class MultiHeadDotProductAttention(Module):
  """Multi-head dot-product attention with optional dropout and a decoding cache.

  Queries, keys and values are projected by ``DenseGeneral`` submodules ``query``,
  ``key`` and ``value`` (kernels ``(in, num_heads, head_dim)``), combined by
  ``attention_fn``, and projected back by ``out`` (kernel ``(num_heads, head_dim,
  out_features)``). See the module docstring for the decoding cache, which in flaxlike
  also accepts multi-token chunks.

  Attributes:
    num_heads: the number of attention heads; must divide ``qkv_features``.
    dtype: the computation dtype (None: promoted from inputs and params).
    param_dtype: the dtype of the parameters.
    qkv_features: the total size of the projected queries/keys/values (default: the
      last axis of ``inputs_q``).
    out_features: the output size (default: the last axis of ``inputs_q``).
    broadcast_dropout: share the attention-dropout mask across batch and heads.
    dropout_rate: the attention-dropout rate.
    deterministic: disable dropout; may instead be passed at call time.
    precision: the ``lax`` precision of the projections and einsums.
    kernel_init: initializer of the projection kernels.
    out_kernel_init: initializer of the ``out`` kernel (default: ``kernel_init``).
    bias_init: initializer of the projection biases.
    out_bias_init: initializer of the ``out`` bias (default: ``bias_init``).
    use_bias: whether the projections have biases.
    attention_fn: ``fn(query, key, value, **kwargs)``, e.g. ``dot_product_attention``;
      only the keyword arguments it declares are passed.
    decode: keep a cache of keys and values for autoregressive decoding.
    normalize_qk: apply a ``LayerNorm`` without bias (``query_ln``, ``key_ln``) to the
      projected queries and keys.
    force_fp32_for_softmax: run the softmax in float32.
    qkv_dot_general: a ``dot_general`` for the ``query``/``key``/``value`` projections.
    out_dot_general: a ``dot_general`` for the ``out`` projection.
    qkv_dot_general_cls: a class whose instances serve as ``qkv_dot_general``.
    out_dot_general_cls: a class whose instances serve as ``out_dot_general``.
    qk_attn_weights_einsum_cls: a class whose instances replace the logits einsum.
    attn_weights_value_einsum_cls: a class whose instances replace the weights-value
      einsum.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=4)
  >>> x = jnp.ones((2, 6, 4))
  >>> variables = layer.init(jax.random.key(0), x)
  >>> jax.tree_util.tree_map(jnp.shape, variables['params']['query'])
  {'bias': (2, 2), 'kernel': (4, 2, 2)}
  >>> layer.apply(variables, x, mask=nn.make_causal_mask(jnp.ones((2, 6)))).shape
  (2, 6, 4)
  """

  num_heads: int
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  qkv_features: int | None = None
  out_features: int | None = None
  broadcast_dropout: bool = True
  dropout_rate: float = 0.0
  deterministic: bool | None = None
  precision: PrecisionLike = None
  kernel_init: Initializer = default_kernel_init
  out_kernel_init: Initializer | None = None
  bias_init: Initializer = initializers.zeros_init()
  out_bias_init: Initializer | None = None
  use_bias: bool = True
  attention_fn: Callable[..., Array] = dot_product_attention
  decode: bool = False
  normalize_qk: bool = False
  force_fp32_for_softmax: bool = False
  qkv_dot_general: Callable[..., Any] | None = None
  out_dot_general: Callable[..., Any] | None = None
  qkv_dot_general_cls: Any = None
  out_dot_general_cls: Any = None
  qk_attn_weights_einsum_cls: Callable[..., Callable[..., Array]] | None = None
  attn_weights_value_einsum_cls: Callable[..., Callable[..., Array]] | None = None

  @compact
  def __call__(
    self,
    inputs_q: Array,
    inputs_k: Array | None = None,
    inputs_v: Array | None = None,
    *,
    inputs_kv: Array | None = None,
    mask: Array | None = None,
    deterministic: bool | None = None,
    dropout_rng: PRNGKey | None = None,
    sow_weights: bool = False,
  ) -> Array:
    """Attends from ``inputs_q`` to ``inputs_k``/``inputs_v``.

    Args:
      inputs_q: ``(*batch, q_length, features)``.
      inputs_k: ``(*batch, kv_length, features)``; default ``inputs_q``.
      inputs_v: ``(*batch, kv_length, features)``; default ``inputs_k``.
      inputs_kv: deprecated: keys and values at once.
      mask: ``(*batch, num_heads or 1, q_length, kv_length)``, False where attention is
        not allowed.
      deterministic: disable dropout (or give it as the attribute).
      dropout_rng: a key for dropout instead of ``make_rng('dropout')``.
      sow_weights: store the attention weights in ``intermediates``.

    Returns:
      ``(*batch, q_length, out_features)``.
    """
    if inputs_kv is not None:
      if inputs_k is not None or inputs_v is not None:
        raise ValueError(
          'If either `inputs_k` or `inputs_v` is not None, `inputs_kv` must be None. If '
          '`inputs_kv` is not None, both `inputs_k` and `inputs_v` must be None. We '
          'recommend using `inputs_k` and `inputs_v` args, since `inputs_kv` will be '
          'deprecated soon.'
        )
      inputs_k = inputs_v = inputs_kv
      warnings.warn(
        'The inputs_kv arg will be deprecated soon. Use inputs_k and inputs_v instead.',
        DeprecationWarning,
        stacklevel=2,
      )
    else:
      if inputs_k is None:
        if inputs_v is not None:
          raise ValueError(
            '`inputs_k` cannot be None if `inputs_v` is not None. To have both `inputs_k` '
            'and `inputs_v` be the same value, pass in the value to `inputs_k` and leave '
            '`inputs_v` as None.'
          )
        inputs_k = inputs_q
      if inputs_v is None:
        inputs_v = inputs_k
      elif inputs_v.shape[-1] == inputs_v.shape[-2]:
        warnings.warn(
          f'You are passing an array of shape {inputs_v.shape} to the `inputs_v` arg, when '
          'you may have intended to pass it to the `mask` arg. Since Flax 0.7.4 '
          "the function signature of MultiHeadDotProductAttention's `__call__` method has "
          'changed to `__call__(inputs_q, inputs_k=None, inputs_v=None, *, inputs_kv=None, '
          'mask=None, deterministic=None)`; pass the mask as the keyword `mask=`.',
          DeprecationWarning,
          stacklevel=2,
        )
    features = self.out_features or inputs_q.shape[-1]
    qkv_features = self.qkv_features or inputs_q.shape[-1]
    if qkv_features % self.num_heads != 0:
      raise ValueError(
        f'Memory dimension ({qkv_features}) must be divisible by number of heads '
        f'({self.num_heads}).'
      )
    head_dim = qkv_features // self.num_heads

    def projection(name: str) -> DenseGeneral:
      return DenseGeneral(
        features=(self.num_heads, head_dim),
        axis=-1,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=self.kernel_init,
        bias_init=self.bias_init,
        use_bias=self.use_bias,
        precision=self.precision,
        dot_general=self.qkv_dot_general,
        dot_general_cls=self.qkv_dot_general_cls,
        name=name,
      )

    query = projection('query')(inputs_q)
    key = projection('key')(inputs_k)
    value = projection('value')(inputs_v)
    if self.normalize_qk:
      query = LayerNorm(
        name='query_ln', use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype
      )(query)
      key = LayerNorm(
        name='key_ln', use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype
      )(key)

    if self.decode:
      key, value, mask = _update_cache(self, query, key, value, mask)

    if self.dropout_rate > 0.0:
      m_deterministic = merge_param('deterministic', self.deterministic, deterministic)
      if not m_deterministic and dropout_rng is None:
        dropout_rng = self.make_rng('dropout')
    else:
      m_deterministic = True

    attn_kwargs = dict(
      mask=mask,
      dropout_rng=dropout_rng,
      dropout_rate=self.dropout_rate,
      broadcast_dropout=self.broadcast_dropout,
      deterministic=m_deterministic,
      dtype=self.dtype,
      precision=self.precision,
      force_fp32_for_softmax=self.force_fp32_for_softmax,
      qk_attn_weights_einsum=(
        self.qk_attn_weights_einsum_cls() if self.qk_attn_weights_einsum_cls else None
      ),
      attn_weights_value_einsum=(
        self.attn_weights_value_einsum_cls() if self.attn_weights_value_einsum_cls else None
      ),
    )
    accepted = _accepted(self.attention_fn)
    attn_kwargs = {k: v for k, v in attn_kwargs.items() if k in accepted}
    if sow_weights:
      x = self.attention_fn(query, key, value, **attn_kwargs, module=self)
    else:
      x = self.attention_fn(query, key, value, **attn_kwargs)
    return DenseGeneral(
      features=features,
      axis=(-2, -1),
      kernel_init=self.out_kernel_init or self.kernel_init,
      bias_init=self.out_bias_init or self.bias_init,
      use_bias=self.use_bias,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      precision=self.precision,
      dot_general=self.out_dot_general,
      dot_general_cls=self.out_dot_general_cls,
      name='out',
    )(x)


def _zero_index() -> Array:
  return jnp.array(0, dtype=jnp.int32)


def _update_cache(module: Module, query: Array, key: Array, value: Array, mask: Array | None):
  """Writes this call's keys/values into the cache; returns the whole cache and mask."""
  is_initialized = module.has_variable('cache', 'cached_key')
  cached_key = module.variable('cache', 'cached_key', jnp.zeros, key.shape, key.dtype)
  cached_value = module.variable('cache', 'cached_value', jnp.zeros, value.shape, value.dtype)
  cache_index = module.variable('cache', 'cache_index', _zero_index)
  if not is_initialized:
    return key, value, mask
  *batch_dims, max_length, num_heads, depth = cached_key.value.shape
  batch_dims = tuple(batch_dims)
  chunk = query.shape[-3] if query.ndim == len(batch_dims) + 3 else -1
  if (
    query.shape[:-3] != batch_dims
    or query.shape[-2:] != (num_heads, depth)
    or not 1 <= chunk <= max_length
  ):
    raise ValueError(
      'Autoregressive cache shape error, expected query shape '
      f'{batch_dims + (1, num_heads, depth)} (or a chunk of up to {max_length} tokens: '
      f'{batch_dims + (max_length, num_heads, depth)}) instead got {query.shape}.'
    )
  cur_index = cache_index.value
  zero = jnp.zeros((), cur_index.dtype)
  indices = (zero,) * len(batch_dims) + (cur_index, zero, zero)
  key = lax.dynamic_update_slice(cached_key.value, key, indices)
  value = lax.dynamic_update_slice(cached_value.value, value, indices)
  cached_key.value = key
  cached_value.value = value
  cache_index.value = cur_index + chunk
  causal = jnp.broadcast_to(
    _causal_chunk_mask(cur_index, chunk, max_length), batch_dims + (1, chunk, max_length)
  )
  return key, value, combine_masks(mask, causal)


class MultiHeadAttention(MultiHeadDotProductAttention):
  """An alias of ``MultiHeadDotProductAttention`` (same attributes, same parameters).

  Attributes:
    num_heads: the number of attention heads.
    dtype: the computation dtype.
    param_dtype: the dtype of the parameters.
    qkv_features: the total size of the projected queries/keys/values.
    out_features: the output size.
    broadcast_dropout: share the attention-dropout mask across batch and heads.
    dropout_rate: the attention-dropout rate.
    deterministic: disable dropout; may instead be passed at call time.
    precision: the ``lax`` precision.
    kernel_init: initializer of the projection kernels.
    out_kernel_init: initializer of the ``out`` kernel.
    bias_init: initializer of the projection biases.
    out_bias_init: initializer of the ``out`` bias.
    use_bias: whether the projections have biases.
    attention_fn: the attention function.
    decode: keep a decoding cache.
    normalize_qk: layer-normalize queries and keys.
    force_fp32_for_softmax: run the softmax in float32.
    qkv_dot_general: a ``dot_general`` for the input projections.
    out_dot_general: a ``dot_general`` for the output projection.
    qkv_dot_general_cls: a class whose instances serve as ``qkv_dot_general``.
    out_dot_general_cls: a class whose instances serve as ``out_dot_general``.
    qk_attn_weights_einsum_cls: a class whose instances replace the logits einsum.
    attn_weights_value_einsum_cls: a class whose instances replace the weights-value
      einsum.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.MultiHeadAttention(num_heads=2)
  >>> q, kv = jnp.ones((1, 3, 4)), jnp.ones((1, 5, 4))
  >>> variables = layer.init(jax.random.key(0), q, kv)
  >>> layer.apply(variables, q, kv).shape
  (1, 3, 4)
  """


class SelfAttention(MultiHeadDotProductAttention):
  """Self-attention: ``MultiHeadDotProductAttention`` with keys and values from ``inputs_q``.

  Deprecated in Linen (it warns), kept for compatibility.

  Attributes:
    num_heads: the number of attention heads.
    dtype: the computation dtype.
    param_dtype: the dtype of the parameters.
    qkv_features: the total size of the projected queries/keys/values.
    out_features: the output size.
    broadcast_dropout: share the attention-dropout mask across batch and heads.
    dropout_rate: the attention-dropout rate.
    deterministic: disable dropout; may instead be passed at call time.
    precision: the ``lax`` precision.
    kernel_init: initializer of the projection kernels.
    out_kernel_init: initializer of the ``out`` kernel.
    bias_init: initializer of the projection biases.
    out_bias_init: initializer of the ``out`` bias.
    use_bias: whether the projections have biases.
    attention_fn: the attention function.
    decode: keep a decoding cache.
    normalize_qk: layer-normalize queries and keys.
    force_fp32_for_softmax: run the softmax in float32.
    qkv_dot_general: a ``dot_general`` for the input projections.
    out_dot_general: a ``dot_general`` for the output projection.
    qkv_dot_general_cls: a class whose instances serve as ``qkv_dot_general``.
    out_dot_general_cls: a class whose instances serve as ``out_dot_general``.
    qk_attn_weights_einsum_cls: a class whose instances replace the logits einsum.
    attn_weights_value_einsum_cls: a class whose instances replace the weights-value
      einsum.

  Example:

  >>> import warnings
  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.SelfAttention(num_heads=2)
  >>> x = jnp.ones((1, 3, 4))
  >>> with warnings.catch_warnings():
  ...   warnings.simplefilter('ignore', DeprecationWarning)
  ...   variables = layer.init(jax.random.key(0), x)
  ...   y = layer.apply(variables, x)
  >>> y.shape
  (1, 3, 4)
  """

  @compact
  def __call__(  # type: ignore[override]
    self,
    inputs_q: Array,
    mask: Array | None = None,
    deterministic: bool | None = None,
    dropout_rng: PRNGKey | None = None,
    sow_weights: bool = False,
  ) -> Array:
    """Attends from ``inputs_q`` to itself; arguments as in ``MultiHeadDotProductAttention``."""
    warnings.warn(
      'SelfAttention will be deprecated soon. Use '
      '`MultiHeadDotProductAttention.__call__(inputs_q)` instead.',
      DeprecationWarning,
      stacklevel=2,
    )
    return super().__call__(
      inputs_q,
      mask=mask,
      deterministic=deterministic,
      dropout_rng=dropout_rng,
      sow_weights=sow_weights,
    )


#################################################
# Masks
#################################################


def make_attention_mask(
  query_input: Array,
  key_input: Array,
  pairwise_fn: Callable[..., Any] = jnp.multiply,
  extra_batch_dims: int = 0,
  dtype: Dtype = jnp.float32,
) -> Array:
  """A mask ``pairwise_fn(query_input[..., q, None], key_input[..., None, k])``.

  Args:
    query_input: ``(*batch, q_length)``.
    key_input: ``(*batch, kv_length)``.
    pairwise_fn: how a query entry and a key entry combine.
    extra_batch_dims: leading size-1 axes to add.
    dtype: the mask dtype.

  Returns:
    ``(*extra, *batch, 1, q_length, kv_length)``.

  Example:

  >>> import jax.numpy as jnp
  >>> import flaxlike as nn
  >>> valid = jnp.array([[1, 1, 0]])
  >>> nn.make_attention_mask(valid, valid)[0, 0]
  Array([[1., 1., 0.],
         [1., 1., 0.],
         [0., 0., 0.]], dtype=float32)
  """
  mask = pairwise_fn(jnp.expand_dims(query_input, -1), jnp.expand_dims(key_input, -2))
  mask = jnp.expand_dims(mask, -3)
  mask = jnp.expand_dims(mask, tuple(range(extra_batch_dims)))
  return mask.astype(dtype)


def make_causal_mask(x: Array, extra_batch_dims: int = 0, dtype: Dtype = jnp.float32) -> Array:
  """A causal mask ``(*extra, *batch, 1, length, length)`` for ``x`` of shape ``(*batch, length)``.

  Example:

  >>> import jax.numpy as jnp
  >>> import flaxlike as nn
  >>> nn.make_causal_mask(jnp.ones((1, 3)))[0, 0]
  Array([[1., 0., 0.],
         [1., 1., 0.],
         [1., 1., 1.]], dtype=float32)
  """
  idxs = jnp.broadcast_to(jnp.arange(x.shape[-1], dtype=jnp.int32), x.shape)
  return make_attention_mask(
    idxs, idxs, jnp.greater_equal, extra_batch_dims=extra_batch_dims, dtype=dtype
  )


def combine_masks(*masks: Array | None, dtype: Dtype = jnp.float32) -> Array | None:
  """The logical and of the given masks (``None`` entries ignored), or None if none given.

  Example:

  >>> import jax.numpy as jnp
  >>> import flaxlike as nn
  >>> nn.combine_masks(jnp.array([1, 1, 0]), None, jnp.array([0, 1, 1]))
  Array([0., 1., 0.], dtype=float32)
  """
  present = [m for m in masks if m is not None]
  if not present:
    return None
  if any(m.ndim != present[0].ndim for m in present):
    raise ValueError(f'masks must have same rank: {tuple(m.ndim for m in present)}')
  mask = present[0]
  for other in present[1:]:
    mask = jnp.logical_and(mask, other)
  return mask.astype(dtype)


__all__ = [
  'dot_product_attention_weights',
  'dot_product_attention',
  'MultiHeadDotProductAttention',
  'MultiHeadAttention',
  'SelfAttention',
  'make_attention_mask',
  'make_causal_mask',
  'combine_masks',
]
