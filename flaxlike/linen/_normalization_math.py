"""The pure math behind the normalization layers: statistics, scaling and shifting.

No Module here: ``flaxlike.linen.normalization`` declares the variables and calls these.
The multi-step parts are ``staged`` (see ``flaxlike.linen._staging``): JAX traces them
once per shapes and static arguments instead of operation by operation on every call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax.numpy as jnp
from jax import lax

from flaxlike.linen import dtypes
from flaxlike.linen._staging import as_array, staged
from flaxlike.typing import Array, Axes, Dtype


def _canonicalize_axes(rank: int, axes: Axes) -> tuple[int, ...]:
  if not isinstance(axes, Iterable):
    axes = (axes,)
  return tuple(sorted({a + rank if a < 0 else a for a in axes}))


def _abs_sq(x: Array) -> Array:
  if jnp.iscomplexobj(x):
    return lax.square(lax.real(x)) + lax.square(lax.imag(x))
  return lax.square(x)


def _compute_stats(
  x: Array,
  axes: Axes,
  dtype: Dtype | None,
  axis_name: str | None = None,
  axis_index_groups: Any = None,
  use_mean: bool = True,
  use_fast_variance: bool = True,
  mask: Array | None = None,
  force_float32_reductions: bool = True,
) -> tuple[Array, Array]:
  """Mean and variance of ``x`` over ``axes`` (optionally masked and across devices).

  With ``use_fast_variance`` the variance is ``E[x^2] - E[x]^2`` (one pass, and one
  ``pmean`` for both moments); otherwise ``E[(x - E[x])^2]``. ``use_mean=False`` gives
  a zero mean and ``E[x^2]`` (RMSNorm).
  """
  x = as_array(x)
  if axis_index_groups is not None:
    axis_index_groups = tuple(tuple(group) for group in axis_index_groups)
  return _compute_stats_staged(
    x,
    None if mask is None else as_array(mask),
    axes=_canonicalize_axes(x.ndim, axes),
    dtype=dtype,
    axis_name=axis_name,
    axis_index_groups=axis_index_groups,
    use_mean=use_mean,
    use_fast_variance=use_fast_variance,
    force_float32_reductions=force_float32_reductions,
  )


@staged(
  'axes',
  'dtype',
  'axis_name',
  'axis_index_groups',
  'use_mean',
  'use_fast_variance',
  'force_float32_reductions',
)
def _compute_stats_staged(
  x: Array,
  mask: Array | None,
  *,
  axes: tuple[int, ...],
  dtype: Dtype | None,
  axis_name: Any,
  axis_index_groups: Any,
  use_mean: bool,
  use_fast_variance: bool,
  force_float32_reductions: bool,
) -> tuple[Array, Array]:
  if dtype is None:
    dtype = jnp.result_type(x)
  if force_float32_reductions:
    dtype = jnp.promote_types(dtype, jnp.float32)
  x = dtypes._as_dtype(x, dtype)
  if mask is not None:
    mask = jnp.asarray(mask, bool)

  def mean(*xs):
    mus = [v.mean(axes, where=mask) for v in xs]
    if axis_name is None:
      return mus
    if len(mus) == 1:
      return [lax.pmean(mus[0], axis_name, axis_index_groups=axis_index_groups)]
    # One collective for both moments.
    stacked = lax.pmean(jnp.stack(mus), axis_name, axis_index_groups=axis_index_groups)
    return [stacked[i] for i in range(len(mus))]

  if not use_mean:
    (var,) = mean(_abs_sq(x))
    return jnp.zeros_like(var), var
  if use_fast_variance:
    mu, mu2 = mean(x, _abs_sq(x))
    return mu, jnp.maximum(0.0, mu2 - _abs_sq(mu))
  (mu,) = mean(x)
  (var,) = mean(_abs_sq(x - jnp.expand_dims(mu, axes)))
  return mu, var


@staged(
  'reduction_axes', 'feature_axes', 'dtype', 'param_dtype', 'epsilon', 'force_float32_reductions'
)
def _scale_and_shift(
  x: Array,
  mean: Array,
  var: Array,
  scale: Array | None,
  bias: Array | None,
  *,
  reduction_axes: tuple[int, ...],
  feature_axes: tuple[int, ...],
  dtype: Dtype | None,
  param_dtype: Dtype,
  epsilon: float,
  force_float32_reductions: bool,
) -> Array:
  feature_shape = [1] * x.ndim
  for ax in feature_axes:
    feature_shape[ax] = x.shape[ax]
  feature_shape = tuple(feature_shape)
  mean = lax.expand_dims(mean, reduction_axes)
  var = lax.expand_dims(var, reduction_axes)
  y = x - mean
  mul = lax.rsqrt(var + epsilon)
  args = [x]
  if scale is not None:
    scale = jnp.reshape(scale, feature_shape)
    if not force_float32_reductions:
      scale = jnp.asarray(scale, param_dtype)
    mul = mul * scale
    args.append(scale)
  y = y * mul
  if bias is not None:
    bias = jnp.reshape(bias, feature_shape)
    if not force_float32_reductions:
      bias = jnp.asarray(bias, param_dtype)
    y = y + bias
    args.append(bias)
  return dtypes._as_dtype(y, dtypes.canonicalize_dtype(*args, dtype=dtype))


def _l2_normalize(x: Array, axis: Axes | None = None, eps: float = 1e-12) -> Array:
  return x * lax.rsqrt((x * x).sum(axis=axis, keepdims=True) + eps)
