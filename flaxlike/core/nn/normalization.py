"""Normalization layers as functions of a scope: ``batch_norm``, ``layer_norm``, ``group_norm``.

Statistics are computed in float32 as ``var = E[x^2] - E[x]^2`` (clamped at 0), the
formula of Linen's norms with their default ``use_fast_variance=True``; params are named
``scale`` and ``bias`` and the running statistics of ``batch_norm`` ``mean`` and ``var``.

Example:

>>> import jax, jax.numpy as jnp
>>> from flaxlike.core import init, nn
>>> y, variables = init(nn.batch_norm)(jax.random.key(0), jnp.arange(6.).reshape(3, 2))
>>> sorted(variables), jax.tree_util.tree_map(jnp.shape, variables['batch_stats'])
(['batch_stats', 'params'], {'mean': (2,), 'var': (2,)})
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jax import lax

from flaxlike.core.nn import initializers
from flaxlike.core.scope import Scope

Array = Any
Dtype = Any
Initializer = Callable[..., Any]


def _absolute_axes(ndim: int, axes: tuple[int, ...]) -> tuple[int, ...]:
  return tuple(a + ndim if a < 0 else a for a in axes)


def _variance(mean: Array, mean_of_squares: Array) -> Array:
  # One-pass variance; rounding can make it slightly negative, which rsqrt would turn
  # into NaN, so it is clamped as Linen's norms clamp it.
  return jnp.maximum(0.0, mean_of_squares - lax.square(mean))


def batch_norm(
  scope: Scope,
  x: Array,
  use_running_average: bool = False,
  axis: int | tuple[int, ...] = -1,
  momentum: float = 0.99,
  epsilon: float = 1e-5,
  dtype: Dtype = jnp.float32,
  bias: bool = True,
  scale: bool = True,
  bias_init: Initializer = initializers.zeros,
  scale_init: Initializer = initializers.ones,
  axis_name: str | None = None,
  axis_index_groups: Any = None,
  kind: str = 'batch_stats',
) -> Array:
  """Normalizes ``x`` with statistics over every axis but ``axis`` (the features).

  Training (``use_running_average=False``) uses the batch statistics and, outside
  ``init``, moves the running ``mean``/``var`` in collection ``kind`` towards them by
  ``1 - momentum``; evaluation uses the running statistics.

  Args:
    scope: the scope holding ``scale``/``bias`` and the running statistics.
    x: the input.
    use_running_average: normalize with the running statistics.
    axis: the feature axis or axes.
    momentum: decay of the running statistics.
    epsilon: added to the variance.
    dtype: dtype of the output.
    bias: whether to add a learned ``bias``.
    scale: whether to multiply by a learned ``scale``.
    bias_init: initializer of ``bias``.
    scale_init: initializer of ``scale``.
    axis_name: a mapped axis (``pmap``/``vmap``) to average the statistics over.
    axis_index_groups: device groups for that average.
    kind: the collection of the running statistics.

  Returns:
    The normalized ``x``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import init, nn
  >>> y, _ = init(nn.batch_norm)(jax.random.key(0), jnp.array([[0.], [2.]]))
  >>> y.round(3)
  Array([[-1.],
         [ 1.]], dtype=float32)
  """
  x = jnp.asarray(x, jnp.float32)
  axes = _absolute_axes(x.ndim, axis if isinstance(axis, tuple) else (axis,))
  reduction = tuple(i for i in range(x.ndim) if i not in axes)

  def batch_mean(v: Array) -> Array:
    m = jnp.mean(v, reduction, keepdims=True)
    if axis_name is not None:
      m = lax.pmean(m, axis_name=axis_name, axis_index_groups=axis_index_groups)
    return m

  mean = batch_mean(x)
  var = _variance(mean, batch_mean(lax.square(x)))
  stats_shape = tuple(x.shape[a] for a in axes)

  # Before init has created them, there is nothing to update.
  creating = not scope.has_variable(kind, 'mean')
  ra_mean = scope.variable(kind, 'mean', jnp.zeros, stats_shape)
  ra_var = scope.variable(kind, 'var', jnp.ones, stats_shape)
  if use_running_average:
    mean = jnp.reshape(ra_mean.value, mean.shape)
    var = jnp.reshape(ra_var.value, var.shape)
  elif not creating:
    decay = 1.0 - momentum
    ra_mean.value += decay * (jnp.reshape(mean, stats_shape) - ra_mean.value)
    ra_var.value += decay * (jnp.reshape(var, stats_shape) - ra_var.value)

  mul = lax.rsqrt(var + epsilon)
  if scale:
    mul = mul * jnp.reshape(scope.param('scale', scale_init, stats_shape), mean.shape)
  y = (x - mean) * mul
  if bias:
    y = y + jnp.reshape(scope.param('bias', bias_init, stats_shape), mean.shape)
  return jnp.asarray(y, dtype)


def layer_norm(
  scope: Scope,
  x: Array,
  epsilon: float = 1e-6,
  dtype: Dtype = jnp.float32,
  bias: bool = True,
  scale: bool = True,
  bias_init: Initializer = initializers.zeros,
  scale_init: Initializer = initializers.ones,
) -> Array:
  """Normalizes each example over its last axis, then scales and shifts per feature.

  Args:
    scope: the scope holding ``scale`` and ``bias`` (shape ``(features,)``).
    x: the input.
    epsilon: added to the variance.
    dtype: dtype of ``scale`` and ``bias`` in the computation.
    bias: whether to add a learned ``bias``.
    scale: whether to multiply by a learned ``scale``.
    bias_init: initializer of ``bias``.
    scale_init: initializer of ``scale``.

  Returns:
    The normalized ``x``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import init, nn
  >>> y, _ = init(nn.layer_norm)(jax.random.key(0), jnp.array([[1., 3.]]))
  >>> y.round(3)
  Array([[-1.,  1.]], dtype=float32)
  """
  features = x.shape[-1]
  # Params are (features,); they are broadcast at full rank, so the layer also runs with
  # jax_numpy_rank_promotion='raise'.
  broadcast_shape = (1,) * (x.ndim - 1) + (features,)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = _variance(mean, jnp.mean(lax.square(x), axis=-1, keepdims=True))
  mul = lax.rsqrt(var + epsilon)
  if scale:
    gamma = jnp.asarray(scope.param('scale', scale_init, (features,)), dtype)
    mul = mul * gamma.reshape(broadcast_shape)
  y = (x - mean) * mul
  if bias:
    beta = jnp.asarray(scope.param('bias', bias_init, (features,)), dtype)
    y = y + beta.reshape(broadcast_shape)
  return y


def group_norm(
  scope: Scope,
  x: Array,
  num_groups: int | None = 32,
  group_size: int | None = None,
  epsilon: float = 1e-6,
  dtype: Dtype = jnp.float32,
  bias: bool = True,
  scale: bool = True,
  bias_init: Initializer = initializers.zeros,
  scale_init: Initializer = initializers.ones,
) -> Array:
  """Normalizes groups of channels over every axis but the first (the batch).

  Give either ``num_groups`` or ``group_size``. ``x`` is ``(batch, ..., channels)``;
  ``scale`` and ``bias`` have shape ``(1, ..., 1, channels)``.

  Args:
    scope: the scope holding ``scale`` and ``bias``.
    x: the input.
    num_groups: the number of channel groups.
    group_size: the number of channels per group.
    epsilon: added to the variance.
    dtype: dtype of the output.
    bias: whether to add a learned ``bias``.
    scale: whether to multiply by a learned ``scale``.
    bias_init: initializer of ``bias``.
    scale_init: initializer of ``scale``.

  Returns:
    The normalized ``x``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import init, nn
  >>> y, v = init(nn.group_norm)(jax.random.key(0), jnp.ones((2, 3, 4)), num_groups=2)
  >>> y.shape, v['params']['scale'].shape
  ((2, 3, 4), (1, 1, 4))
  """
  x = jnp.asarray(x, jnp.float32)
  if (num_groups is None) == (group_size is None):
    raise ValueError(
      'Either `num_groups` or `group_size` should be specified, but not both of them '
      f'(got num_groups={num_groups}, group_size={group_size} in {scope.path_text}).'
    )
  channels = x.shape[-1]
  if group_size is not None:
    if channels % group_size:
      raise ValueError(
        f'Number of channels ({channels}) is not multiple of the group size ({group_size}) '
        f'in {scope.path_text}.'
      )
    num_groups = channels // group_size
  assert num_groups is not None
  if channels % num_groups:
    raise ValueError(
      f'Number of channels ({channels}) is not divisible by num_groups={num_groups} in '
      f'{scope.path_text}.'
    )
  grouped = x.reshape(x.shape[:-1] + (num_groups, channels // num_groups))
  reduction = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
  mean = jnp.mean(grouped, axis=reduction, keepdims=True)
  var = _variance(mean, jnp.mean(lax.square(grouped), axis=reduction, keepdims=True))
  y = ((grouped - mean) * lax.rsqrt(var + epsilon)).reshape(x.shape)
  feature_shape = (1,) * (x.ndim - 1) + (channels,)
  if scale:
    y = y * scope.param('scale', scale_init, feature_shape)
  if bias:
    y = y + scope.param('bias', bias_init, feature_shape)
  return y.astype(dtype)
