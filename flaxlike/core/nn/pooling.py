"""Pooling functions over the spatial axes of channels-last inputs.

Inputs are ``(*batch, *window_axes, features)``; with no batch axis the input is
treated as a single example.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
from jax import lax

Array = Any
PaddingLike = str | Sequence[tuple[int, int]]


def pool(
  inputs: Array,
  init: Any,
  reduce_fn: Callable[[Any, Any], Any],
  window_shape: Sequence[int],
  strides: Sequence[int] | None,
  padding: PaddingLike,
) -> Array:
  """Reduces each window of ``inputs`` with ``reduce_fn``, starting from ``init``.

  Args:
    inputs: an array of shape ``(*batch, *window axes, features)``.
    init: the reduction's identity (e.g. ``0.`` for a sum, ``-inf`` for a max).
    reduce_fn: a binary ``lax`` reduction such as ``lax.add`` or ``lax.max``.
    window_shape: the window size along each pooled axis.
    strides: the window strides (None: 1 on every axis).
    padding: ``'SAME'``, ``'VALID'`` or one ``(low, high)`` pair per pooled axis.

  Returns:
    The pooled array; batch and feature axes are unchanged.

  Example:

  >>> import jax.numpy as jnp
  >>> from jax import lax
  >>> import flaxlike as nn
  >>> x = jnp.arange(4.).reshape(1, 4, 1)
  >>> nn.pooling.pool(x, 0., lax.add, (2,), (2,), 'VALID')[0, :, 0]
  Array([1., 5.], dtype=float32)
  """
  window_shape = tuple(window_shape)
  n_window = len(window_shape)
  strides = tuple(strides) if strides else (1,) * n_window
  if len(strides) != n_window:
    raise ValueError(
      f'pool: strides {strides} must have one entry per window axis (window_shape {window_shape}).'
    )
  n_batch = jnp.ndim(inputs) - n_window - 1
  if n_batch < 0:
    raise ValueError(
      f'pool: input of shape {jnp.shape(inputs)} has too few axes for window_shape '
      f'{window_shape}; expected (*batch, *{n_window} window axes, features).'
    )
  unbatched = n_batch == 0
  if unbatched:
    # lax.reduce_window needs the batch axis that the padding/strides below assume.
    inputs = inputs[None]
    n_batch = 1
  dims = (1,) * n_batch + window_shape + (1,)
  all_strides = (1,) * n_batch + strides + (1,)
  if not isinstance(padding, str):
    pairs = tuple(tuple(p) for p in padding)
    if len(pairs) != n_window or any(len(p) != 2 for p in pairs):
      raise ValueError(
        f'pool: padding {padding!r} must be "SAME", "VALID" or {n_window} (low, high) '
        'pairs, one per window axis.'
      )
    # Each pair has two entries (checked above); as (low, high) tuples for lax.
    padding = ((0, 0),) * n_batch + tuple((low, high) for low, high in pairs) + ((0, 0),)
  y = lax.reduce_window(inputs, init, reduce_fn, dims, all_strides, padding)
  return y[0] if unbatched else y


def avg_pool(
  inputs: Array,
  window_shape: Sequence[int],
  strides: Sequence[int] | None = None,
  padding: PaddingLike = 'VALID',
  count_include_pad: bool = True,
) -> Array:
  """Averages over windows.

  Args:
    inputs: an array of shape ``(*batch, *window axes, features)``.
    window_shape: the window size along each pooled axis.
    strides: the window strides (None: 1 on every axis).
    padding: ``'SAME'``, ``'VALID'`` or one ``(low, high)`` pair per pooled axis.
    count_include_pad: divide by the full window size (True) or by the number of
      non-padding elements in each window (False).

  Example:

  >>> import jax.numpy as jnp
  >>> import flaxlike as nn
  >>> x = jnp.ones((1, 3, 1))
  >>> nn.avg_pool(x, (3,), padding='SAME')[0, :, 0]
  Array([0.6666667, 1.       , 0.6666667], dtype=float32)
  >>> nn.avg_pool(x, (3,), padding='SAME', count_include_pad=False)[0, :, 0]
  Array([1., 1., 1.], dtype=float32)
  """
  y = pool(inputs, 0.0, lax.add, window_shape, strides, padding)
  if count_include_pad:
    return y / math.prod(window_shape)
  n_window = len(tuple(window_shape))
  # Window element counts depend only on the window axes: pool a ones array that is
  # 1 along every batch and feature axis and let the division broadcast.
  shape = jnp.shape(inputs)
  n_batch = len(shape) - n_window - 1
  ones_shape = (1,) * max(n_batch, 1) + tuple(shape[n_batch:-1]) + (1,)
  counts = pool(jnp.ones(ones_shape, y.dtype), 0.0, lax.add, window_shape, strides, padding)
  if n_batch == 0:
    counts = counts[0]
  return y / counts


def max_pool(
  inputs: Array,
  window_shape: Sequence[int],
  strides: Sequence[int] | None = None,
  padding: PaddingLike = 'VALID',
) -> Array:
  """Takes the maximum over windows (padding never wins).

  Example:

  >>> import jax.numpy as jnp
  >>> import flaxlike as nn
  >>> nn.max_pool(jnp.arange(4.).reshape(1, 4, 1), (2,), (2,))[0, :, 0]
  Array([1., 3.], dtype=float32)
  """
  return pool(inputs, -jnp.inf, lax.max, window_shape, strides, padding)


def min_pool(
  inputs: Array,
  window_shape: Sequence[int],
  strides: Sequence[int] | None = None,
  padding: PaddingLike = 'VALID',
) -> Array:
  """Takes the minimum over windows (padding never wins).

  Example:

  >>> import jax.numpy as jnp
  >>> import flaxlike as nn
  >>> nn.min_pool(jnp.arange(4.).reshape(1, 4, 1), (2,), (2,))[0, :, 0]
  Array([0., 2.], dtype=float32)
  """
  return pool(inputs, jnp.inf, lax.min, window_shape, strides, padding)
