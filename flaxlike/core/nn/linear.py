"""Linear layers as functions of a scope: ``dense``, ``dense_general``, ``conv``, ...

Each layer is ``fn(scope, inputs, ...)``: it declares its params on ``scope`` (``kernel``
then ``bias``, named and shaped as the Linen layers name and shape them) and returns the
output. The computation runs in ``dtype`` (float32 by default), like Linen's layers with
``dtype=param_dtype=float32``.

Example:

>>> import jax, jax.numpy as jnp
>>> from flaxlike.core import init, nn
>>> y, variables = init(nn.dense)(jax.random.key(0), jnp.ones((1, 3)), 4)
>>> jax.tree_util.tree_map(jnp.shape, variables['params'])
{'bias': (4,), 'kernel': (3, 4)}
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from flaxlike import struct
from flaxlike.core.nn import initializers
from flaxlike.core.scope import Scope
from flaxlike.core.staged_init import pure_initializer

Array = Any
Dtype = Any
Initializer = Callable[..., Any]

default_kernel_init = initializers.lecun_normal()
default_embed_init = initializers.variance_scaling(1.0, 'fan_in', 'normal', out_axis=0)


def _as_tuple(x: Any) -> tuple[Any, ...]:
  return tuple(x) if isinstance(x, Iterable) else (x,)


def _absolute_axes(axes: tuple[int, ...], ndim: int) -> tuple[int, ...]:
  return tuple(a + ndim if a < 0 else a for a in axes)


def _add_bias(y: Array, bias: Array, dtype: Dtype) -> Array:
  """``y`` plus ``bias`` broadcast along the last axis."""
  bias = jnp.asarray(bias, dtype)
  return y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))


@functools.lru_cache(maxsize=256)
@pure_initializer
def _repeat_over_batch(init_fn: Initializer, n_batch: int, n_in: int | None) -> Initializer:
  """An initializer of ``(*batch, *rest)`` arrays: ``init_fn`` once per batch member, all
  from the same key (as Flax's functional ``dense_general`` does), on ``rest`` flattened
  to ``(in, out)`` (its first ``n_in`` axes, the others) or, with ``n_in=None``, to 1-D."""

  def init(key: Any, shape: Sequence[int], dtype: Dtype = jnp.float32) -> Array:
    batch_size = int(np.prod(shape[:n_batch], dtype=np.int64))
    rest = tuple(shape[n_batch:])
    if n_in is None:
      flat: tuple[int, ...] = (int(np.prod(rest, dtype=np.int64)),)
    else:
      flat = (
        int(np.prod(rest[:n_in], dtype=np.int64)),
        int(np.prod(rest[n_in:], dtype=np.int64)),
      )
    parts = [init_fn(key, flat, dtype) for _ in range(batch_size)]
    return jnp.reshape(jnp.concatenate(parts, axis=0), shape)

  # Cached per (init_fn, layout), so the param shape check of ``apply`` finds the same
  # initializer object every call and reuses its cached output shape.
  return init


def dense_general(
  scope: Scope,
  inputs: Array,
  features: int | Sequence[int],
  axis: int | Sequence[int] = -1,
  batch_dims: int | Sequence[int] = (),
  bias: bool = True,
  dtype: Dtype = jnp.float32,
  kernel_init: Initializer = default_kernel_init,
  bias_init: Initializer = initializers.zeros,
  precision: Any = None,
) -> Array:
  """A linear map contracting ``axis`` of ``inputs`` into ``features``.

  Args:
    scope: the scope holding ``kernel`` and ``bias``.
    inputs: the input array.
    features: the output feature size(s).
    axis: the input axis or axes contracted.
    batch_dims: leading axes ``0..k`` with one kernel per index (batched matmul).
    bias: whether to add a ``bias``.
    dtype: the dtype of the computation.
    kernel_init: initializer of the kernel (called on the flattened kernel shape).
    bias_init: initializer of the bias.
    precision: ``jax.lax.Precision`` of the contraction.

  Returns:
    ``inputs`` with ``axis`` replaced by ``features``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import init, nn
  >>> y, v = init(nn.dense_general)(jax.random.key(0), jnp.ones((2, 3, 4)), (5, 6), axis=(1, 2))
  >>> y.shape, v['params']['kernel'].shape
  ((2, 5, 6), (3, 4, 5, 6))
  """
  inputs = jnp.asarray(inputs, dtype)
  features = _as_tuple(features)
  axis = _as_tuple(axis)
  batch_dims = _as_tuple(batch_dims)
  if batch_dims and set(batch_dims) != set(range(max(batch_dims) + 1)):
    raise ValueError(
      f'batch_dims {batch_dims} must be consecutive leading dimensions starting from 0 '
      f'(in {scope.path_text}); e.g. batch_dims=(0, 1).'
    )
  axis = _absolute_axes(axis, inputs.ndim)
  batch_dims = _absolute_axes(batch_dims, inputs.ndim)
  n_batch = len(batch_dims)
  batch_shape = tuple(inputs.shape[a] for a in batch_dims)
  kernel_shape = batch_shape + tuple(inputs.shape[a] for a in axis) + features
  kernel = scope.param('kernel', _repeat_over_batch(kernel_init, n_batch, len(axis)), kernel_shape)
  kernel = jnp.asarray(kernel, dtype)
  kernel_batch = tuple(range(n_batch))
  kernel_contract = tuple(range(n_batch, n_batch + len(axis)))
  y = lax.dot_general(
    inputs, kernel, ((axis, kernel_contract), (batch_dims, kernel_batch)), precision=precision
  )
  if bias:
    b = scope.param('bias', _repeat_over_batch(bias_init, n_batch, None), batch_shape + features)
    # The bias follows the output layout: batch axes, kept input axes, then features.
    kept = sorted(set(range(inputs.ndim)) - set(axis) - set(batch_dims))
    for ax in kept:
      b = jnp.expand_dims(b, ax)
    y = y + jnp.asarray(b, dtype)
  return y


def dense(
  scope: Scope,
  inputs: Array,
  features: int,
  bias: bool = True,
  dtype: Dtype = jnp.float32,
  precision: Any = None,
  kernel_init: Initializer = default_kernel_init,
  bias_init: Initializer = initializers.zeros,
) -> Array:
  """A linear map of the last axis: ``inputs @ kernel + bias`` (Linen's ``Dense``).

  Args:
    scope: the scope holding ``kernel`` ``(in, features)`` and ``bias`` ``(features,)``.
    inputs: the input array.
    features: the output size.
    bias: whether to add a ``bias``.
    dtype: the dtype of the computation.
    precision: ``jax.lax.Precision`` of the contraction.
    kernel_init: initializer of the kernel.
    bias_init: initializer of the bias.

  Returns:
    The output, ``inputs.shape[:-1] + (features,)``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import init, nn
  >>> y, _ = init(nn.dense)(jax.random.key(0), jnp.ones((2, 3)), 4,
  ...                       kernel_init=nn.initializers.ones)
  >>> y
  Array([[3., 3., 3., 3.],
         [3., 3., 3., 3.]], dtype=float32)
  """
  inputs = jnp.asarray(inputs, dtype)
  kernel = scope.param('kernel', kernel_init, (inputs.shape[-1], features))
  kernel = jnp.asarray(kernel, dtype)
  y = lax.dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())), precision=precision)
  if bias:
    y = _add_bias(y, scope.param('bias', bias_init, (features,)), dtype)
  return y


def _conv_dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
  """Channels-last inputs and outputs, ``(*window, in, out)`` kernels."""
  io = (0, ndim - 1) + tuple(range(1, ndim - 1))
  kernel = (ndim - 1, ndim - 2) + tuple(range(ndim - 2))
  return lax.ConvDimensionNumbers(io, kernel, io)


def conv(
  scope: Scope,
  inputs: Array,
  features: int,
  kernel_size: Sequence[int],
  strides: Sequence[int] | None = None,
  padding: Any = 'SAME',
  input_dilation: Sequence[int] | None = None,
  kernel_dilation: Sequence[int] | None = None,
  feature_group_count: int = 1,
  bias: bool = True,
  dtype: Dtype = jnp.float32,
  precision: Any = None,
  kernel_init: Initializer = default_kernel_init,
  bias_init: Initializer = initializers.zeros,
) -> Array:
  """A convolution over the spatial axes of ``(batch, *spatial, features)`` inputs.

  Args:
    scope: the scope holding ``kernel`` ``(*kernel_size, in // groups, features)`` and
      ``bias``.
    inputs: the input array ``(batch, *spatial, in)``.
    features: the number of filters.
    kernel_size: the window shape.
    strides: the window strides (default 1).
    padding: ``'SAME'``, ``'VALID'`` or one ``(low, high)`` pair per spatial axis.
    input_dilation: dilation of the inputs (a transposed convolution's stride).
    kernel_dilation: dilation of the kernel (atrous convolution).
    feature_group_count: the number of feature groups.
    bias: whether to add a ``bias``.
    dtype: the dtype of the computation.
    precision: ``jax.lax.Precision`` of the convolution.
    kernel_init: initializer of the kernel.
    bias_init: initializer of the bias.

  Returns:
    The convolved array ``(batch, *out_spatial, features)``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import init, nn
  >>> y, v = init(nn.conv)(jax.random.key(0), jnp.ones((1, 8, 8, 3)), 4, (3, 3))
  >>> y.shape, v['params']['kernel'].shape
  ((1, 8, 8, 4), (3, 3, 3, 4))
  """
  inputs = jnp.asarray(inputs, dtype)
  kernel_size = tuple(kernel_size)
  if strides is None:
    n_spatial: int = inputs.ndim - 2
    strides = (1,) * n_spatial
  in_features = inputs.shape[-1]
  if in_features % feature_group_count:
    raise ValueError(
      f'conv in {scope.path_text}: the {in_features} input features are not divisible by '
      f'feature_group_count={feature_group_count}.'
    )
  kernel_shape = kernel_size + (in_features // feature_group_count, features)
  kernel = jnp.asarray(scope.param('kernel', kernel_init, kernel_shape), dtype)
  y = lax.conv_general_dilated(
    inputs,
    kernel,
    tuple(strides),
    padding,
    lhs_dilation=input_dilation,
    rhs_dilation=kernel_dilation,
    dimension_numbers=_conv_dimension_numbers(inputs.ndim),
    feature_group_count=feature_group_count,
    precision=precision,
  )
  if bias:
    y = _add_bias(y, scope.param('bias', bias_init, (features,)), dtype)
  return y


def conv_transpose(
  scope: Scope,
  inputs: Array,
  features: int,
  kernel_size: Sequence[int],
  strides: Sequence[int] | None = None,
  padding: Any = 'SAME',
  kernel_dilation: Sequence[int] | None = None,
  bias: bool = True,
  dtype: Dtype = jnp.float32,
  precision: Any = None,
  kernel_init: Initializer = default_kernel_init,
  bias_init: Initializer = initializers.zeros,
) -> Array:
  """A transposed convolution (``jax.lax.conv_transpose``), channels-last.

  Args:
    scope: the scope holding ``kernel`` ``(*kernel_size, in, features)`` and ``bias``.
    inputs: the input array ``(batch, *spatial, in)``.
    features: the number of filters.
    kernel_size: the window shape.
    strides: the strides (default 1): the upsampling factor.
    padding: ``'SAME'``, ``'VALID'`` or one ``(low, high)`` pair per spatial axis.
    kernel_dilation: dilation of the kernel.
    bias: whether to add a ``bias``.
    dtype: the dtype of the computation.
    precision: ``jax.lax.Precision`` of the convolution.
    kernel_init: initializer of the kernel.
    bias_init: initializer of the bias.

  Returns:
    The output ``(batch, *out_spatial, features)``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import init, nn
  >>> y, _ = init(nn.conv_transpose)(jax.random.key(0), jnp.ones((1, 4, 4, 3)), 2, (3, 3),
  ...                                strides=(2, 2))
  >>> y.shape
  (1, 8, 8, 2)
  """
  inputs = jnp.asarray(inputs, dtype)
  kernel_size = tuple(kernel_size)
  strides = tuple(strides or (1,) * (inputs.ndim - 2))
  kernel_shape = kernel_size + (inputs.shape[-1], features)
  kernel = jnp.asarray(scope.param('kernel', kernel_init, kernel_shape), dtype)
  y = lax.conv_transpose(
    inputs, kernel, strides, padding, rhs_dilation=kernel_dilation, precision=precision
  )
  if bias:
    y = _add_bias(y, scope.param('bias', bias_init, (features,)), dtype)
  return y


@struct.dataclass
class Embedding:
  """An embedding table with ``lookup`` (ids to vectors) and ``attend`` (vectors to logits).

  Attributes:
    table: the ``(num_embeddings, features)`` table.

  Example:

  >>> import jax.numpy as jnp
  >>> from flaxlike.core.nn import Embedding
  >>> table = Embedding(jnp.eye(3))
  >>> table.lookup(jnp.array([2])), table.attend(jnp.ones((1, 3))).shape
  (Array([[0., 0., 1.]], dtype=float32), (1, 3))
  """

  table: Array

  def lookup(self, indices: Array) -> Array:
    """The rows of ``table`` at integer ``indices`` (output: ``indices.shape + (features,)``)."""
    if not jnp.issubdtype(indices.dtype, jnp.integer):
      raise ValueError(
        f'Input type must be an integer or unsigned integer, got {indices.dtype}; cast the '
        'indices, e.g. indices.astype(jnp.int32).'
      )
    return self.table[indices]

  def attend(self, query: Array) -> Array:
    """Inner products of ``query`` (last axis ``features``) with every embedding."""
    return jnp.dot(query, self.table.T)


def embedding(
  scope: Scope,
  num_embeddings: int,
  features: int,
  init_fn: Initializer = default_embed_init,
) -> Embedding:
  """Declares a ``table`` param ``(num_embeddings, features)`` and returns an ``Embedding``.

  Args:
    scope: the scope holding ``table``.
    num_embeddings: the number of rows.
    features: the size of each embedding.
    init_fn: initializer of the table.

  Returns:
    An ``Embedding`` over the table.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import init, nn
  >>> def model(scope, ids):
  ...   return nn.embedding(scope, 10, 4).lookup(ids)
  >>> y, v = init(model)(jax.random.key(0), jnp.array([1, 2]))
  >>> y.shape, v['params']['table'].shape
  ((2, 4), (10, 4))
  """
  return Embedding(scope.param('table', init_fn, (num_embeddings, features)))
