"""Normalization layers: ``LayerNorm``, ``RMSNorm``, ``BatchNorm``, ``GroupNorm``,
``InstanceNorm``, and the weight re-parametrizations ``SpectralNorm`` and ``WeightNorm``.

Statistics are computed in float32 or wider unless ``force_float32_reductions=False``.
With ``axis_name`` the means are averaged across the named mapped axis (``lax.pmean``),
so statistics cover the whole batch under ``jax.vmap``/``pmap``/``shard_map``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flaxlike.core.scope import Scope
from flaxlike.linen import dtypes, initializers
from flaxlike.linen._normalization_math import (
  _canonicalize_axes,
  _compute_stats,
  _l2_normalize,
  _scale_and_shift,
)
from flaxlike.linen._staging import as_array
from flaxlike.linen.module import Module, compact, merge_param
from flaxlike.typing import Array, Axes, Dtype, Initializer


def _normalize(
  mdl: Module,
  x: Array,
  mean: Array,
  var: Array,
  reduction_axes: Axes,
  feature_axes: Axes,
  dtype: Dtype | None,
  param_dtype: Dtype,
  epsilon: float,
  use_bias: bool,
  use_scale: bool,
  bias_init: Initializer,
  scale_init: Initializer,
  force_float32_reductions: bool = True,
) -> Array:
  """``(x - mean) * rsqrt(var + eps) * scale + bias``, declaring ``scale``/``bias``."""
  x = as_array(x)
  reduction_axes = _canonicalize_axes(x.ndim, reduction_axes)
  feature_axes = _canonicalize_axes(x.ndim, feature_axes)
  param_shape = tuple(x.shape[ax] for ax in feature_axes)
  scale = mdl.param('scale', scale_init, param_shape, param_dtype) if use_scale else None
  bias = mdl.param('bias', bias_init, param_shape, param_dtype) if use_bias else None
  return _scale_and_shift(
    x,
    mean,
    var,
    scale,
    bias,
    reduction_axes=reduction_axes,
    feature_axes=feature_axes,
    dtype=dtype,
    param_dtype=param_dtype,
    epsilon=epsilon,
    force_float32_reductions=force_float32_reductions,
  )


class BatchNorm(Module):
  """Batch normalization: normalizes each feature with statistics over the batch.

  In training (``use_running_average=False``) it normalizes with the batch statistics
  and, outside ``init``, updates the running averages in ``batch_stats`` (pass
  ``mutable=['batch_stats']`` to ``apply``). In evaluation it uses the running averages.

  Attributes:
    use_running_average: use the stored statistics instead of the batch's; may instead
      be passed to the call (exactly one of the two).
    axis: the feature axis (or axes).
    momentum: decay of the running averages: ``ra = momentum * ra + (1 - momentum) * x``.
    epsilon: added to the variance before the square root.
    dtype: the output dtype (None: promoted from input and params).
    param_dtype: the dtype of ``scale`` and ``bias``.
    use_bias: whether to add the learned ``bias``.
    use_scale: whether to multiply by the learned ``scale``.
    bias_init: initializer of ``bias``.
    scale_init: initializer of ``scale``.
    axis_name: a mapped axis name over which statistics are averaged (``lax.pmean``).
    axis_index_groups: groups of device indices within ``axis_name`` to average over.
    use_fast_variance: compute the variance as ``E[x^2] - E[x]^2`` (faster, less
      accurate for large means).
    force_float32_reductions: compute statistics (and keep running averages) in
      float32 even for low-precision inputs.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.BatchNorm(use_running_average=False)
  >>> x = jnp.arange(6.0).reshape(3, 2)
  >>> variables = layer.init(jax.random.key(0), x)
  >>> list(variables)
  ['batch_stats', 'params']
  >>> y, updates = layer.apply(variables, x, mutable=['batch_stats'])
  >>> updates['batch_stats']['mean']
  Array([0.02, 0.03], dtype=float32)
  """

  use_running_average: bool | None = None
  axis: int = -1
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Initializer = initializers.zeros
  scale_init: Initializer = initializers.ones
  axis_name: str | None = None
  axis_index_groups: Any = None
  use_fast_variance: bool = True
  force_float32_reductions: bool = True

  @compact
  def __call__(
    self, x: Array, use_running_average: bool | None = None, *, mask: Array | None = None
  ) -> Array:
    """Normalizes ``x``.

    Args:
      x: the input.
      use_running_average: as the attribute (give it in exactly one place).
      mask: True where entries count towards the statistics (shape of ``x``).
    """
    use_running_average = merge_param(
      'use_running_average', self.use_running_average, use_running_average
    )
    feature_axes = _canonicalize_axes(x.ndim, self.axis)
    reduction_axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
    feature_shape = tuple(x.shape[ax] for ax in feature_axes)
    stats_dtype = jnp.float32 if self.force_float32_reductions else self.param_dtype
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, feature_shape, stats_dtype)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, feature_shape, stats_dtype)
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
      if not self.force_float32_reductions:
        mean, var = jnp.asarray(mean, self.param_dtype), jnp.asarray(var, self.param_dtype)
    else:
      initializing = self.is_initializing()
      mean, var = _compute_stats(
        x,
        reduction_axes,
        self.dtype,
        # Init runs outside the mapped context, so no collective there.
        axis_name=None if initializing else self.axis_name,
        axis_index_groups=self.axis_index_groups,
        use_fast_variance=self.use_fast_variance,
        mask=mask,
        force_float32_reductions=self.force_float32_reductions,
      )
      if not initializing:
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return _normalize(
      self,
      x,
      mean,
      var,
      reduction_axes,
      feature_axes,
      self.dtype,
      self.param_dtype,
      self.epsilon,
      self.use_bias,
      self.use_scale,
      self.bias_init,
      self.scale_init,
      self.force_float32_reductions,
    )


class LayerNorm(Module):
  """Layer normalization: normalizes each example over its feature axes.

  Attributes:
    epsilon: added to the variance before the square root.
    dtype: the output dtype (None: promoted from input and params).
    param_dtype: the dtype of ``scale`` and ``bias``.
    use_bias: whether to add the learned ``bias``.
    use_scale: whether to multiply by the learned ``scale``.
    bias_init: initializer of ``bias``.
    scale_init: initializer of ``scale``.
    reduction_axes: the axes statistics are computed over.
    feature_axes: the axes that get their own ``scale``/``bias`` entries.
    axis_name: a mapped axis name over which statistics are averaged.
    axis_index_groups: groups of device indices within ``axis_name``.
    use_fast_variance: compute the variance as ``E[x^2] - E[x]^2``.
    force_float32_reductions: compute statistics in at least float32.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.LayerNorm()
  >>> x = jnp.array([[1.0, 2.0, 3.0]])
  >>> variables = layer.init(jax.random.key(0), x)
  >>> jax.tree_util.tree_map(jnp.shape, variables['params'])
  {'bias': (3,), 'scale': (3,)}
  >>> jnp.round(layer.apply(variables, x), 3)
  Array([[-1.225,  0.   ,  1.225]], dtype=float32)
  """

  epsilon: float = 1e-6
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Initializer = initializers.zeros
  scale_init: Initializer = initializers.ones
  reduction_axes: Axes = -1
  feature_axes: Axes = -1
  axis_name: str | None = None
  axis_index_groups: Any = None
  use_fast_variance: bool = True
  force_float32_reductions: bool = True

  @compact
  def __call__(self, x: Array, *, mask: Array | None = None) -> Array:
    """Normalizes ``x``; ``mask`` (shape of ``x``) selects the entries in the statistics."""
    mean, var = _compute_stats(
      x,
      self.reduction_axes,
      self.dtype,
      self.axis_name,
      self.axis_index_groups,
      use_fast_variance=self.use_fast_variance,
      mask=mask,
      force_float32_reductions=self.force_float32_reductions,
    )
    return _normalize(
      self,
      x,
      mean,
      var,
      self.reduction_axes,
      self.feature_axes,
      self.dtype,
      self.param_dtype,
      self.epsilon,
      self.use_bias,
      self.use_scale,
      self.bias_init,
      self.scale_init,
      self.force_float32_reductions,
    )


class RMSNorm(Module):
  """Root-mean-square normalization: ``x * rsqrt(mean(x^2) + eps) * scale`` (no centring).

  Attributes:
    epsilon: added to the mean square before the square root.
    dtype: the output dtype (None: promoted from input and params).
    param_dtype: the dtype of ``scale``.
    use_scale: whether to multiply by the learned ``scale``.
    scale_init: initializer of ``scale``.
    reduction_axes: the axes statistics are computed over.
    feature_axes: the axes that get their own ``scale`` entries.
    axis_name: a mapped axis name over which statistics are averaged.
    axis_index_groups: groups of device indices within ``axis_name``.
    use_fast_variance: accepted for symmetry with ``LayerNorm``; no effect here.
    force_float32_reductions: compute statistics in at least float32.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.RMSNorm()
  >>> x = jnp.array([[3.0, 4.0]])
  >>> variables = layer.init(jax.random.key(0), x)
  >>> list(variables['params'])
  ['scale']
  >>> layer.apply(variables, x)
  Array([[0.8485, 1.1314]], dtype=float32)
  """

  epsilon: float = 1e-6
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  use_scale: bool = True
  scale_init: Initializer = initializers.ones
  reduction_axes: Axes = -1
  feature_axes: Axes = -1
  axis_name: str | None = None
  axis_index_groups: Any = None
  use_fast_variance: bool = True
  force_float32_reductions: bool = True

  @compact
  def __call__(self, x: Array, *, mask: Array | None = None) -> Array:
    """Normalizes ``x``; ``mask`` (shape of ``x``) selects the entries in the statistics."""
    mean, var = _compute_stats(
      x,
      self.reduction_axes,
      self.dtype,
      self.axis_name,
      self.axis_index_groups,
      use_mean=False,
      use_fast_variance=self.use_fast_variance,
      mask=mask,
      force_float32_reductions=self.force_float32_reductions,
    )
    return _normalize(
      self,
      x,
      mean,
      var,
      self.reduction_axes,
      self.feature_axes,
      self.dtype,
      self.param_dtype,
      self.epsilon,
      False,
      self.use_scale,
      initializers.zeros,
      self.scale_init,
      self.force_float32_reductions,
    )


class GroupNorm(Module):
  """Group normalization: statistics over groups of channels (and the spatial axes).

  The last axis holds the channels. Give either ``num_groups`` or ``group_size`` (set
  ``num_groups=None`` to use ``group_size``).

  Attributes:
    num_groups: the number of channel groups.
    group_size: the number of channels per group.
    epsilon: added to the variance before the square root.
    dtype: the output dtype (None: promoted from input and params).
    param_dtype: the dtype of ``scale`` and ``bias``.
    use_bias: whether to add the learned ``bias``.
    use_scale: whether to multiply by the learned ``scale``.
    bias_init: initializer of ``bias``.
    scale_init: initializer of ``scale``.
    reduction_axes: the axes statistics are computed over; must include the last.
      None: every axis but the first (the batch axis).
    axis_name: a mapped axis name over which statistics are averaged.
    axis_index_groups: groups of device indices within ``axis_name``.
    use_fast_variance: compute the variance as ``E[x^2] - E[x]^2``.
    force_float32_reductions: compute statistics in at least float32.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.GroupNorm(num_groups=2)
  >>> x = jnp.array([[1.0, 3.0, 10.0, 20.0]])
  >>> variables = layer.init(jax.random.key(0), x)
  >>> jnp.round(layer.apply(variables, x), 3)
  Array([[-1., 1., -1., 1.]], dtype=float32)
  """

  num_groups: int | None = 32
  group_size: int | None = None
  epsilon: float = 1e-6
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Initializer = initializers.zeros
  scale_init: Initializer = initializers.ones
  reduction_axes: Axes | None = None
  axis_name: str | None = None
  axis_index_groups: Any = None
  use_fast_variance: bool = True
  force_float32_reductions: bool = True

  @compact
  def __call__(self, x: Array, *, mask: Array | None = None) -> Array:
    """Normalizes ``x``; ``mask`` (shape of ``x``) selects the entries in the statistics."""
    if self.reduction_axes is not None:
      reduction_axes = self.reduction_axes
    else:
      reduction_axes = list(range(1, x.ndim - 1)) + [-1]
    reduction_axes = _canonicalize_axes(x.ndim, reduction_axes)
    if reduction_axes[-1] != x.ndim - 1:
      raise ValueError(
        'The reduction axes must include the final dimension as this is assumed to be '
        'the feature axis.'
      )
    if (self.num_groups is None) == (self.group_size is None):
      raise ValueError(
        'Either `num_groups` or `group_size` should be specified. If `group_size` is to '
        'be specified, pass `num_groups=None` as argument to override the default '
        '`num_groups` value of 32.'
      )
    channels = x.shape[-1]
    if self.num_groups is not None:
      num_groups = self.num_groups
    else:
      group_size = self.group_size
      assert group_size is not None  # exactly one of the two is set (checked above)
      if channels % group_size != 0:
        raise ValueError(
          f'Number of channels ({channels}) is not multiple of the group size ({group_size}).'
        )
      num_groups = channels // group_size
    if num_groups <= 0 or channels % num_groups != 0:
      raise ValueError(
        f'Number of groups ({num_groups}) does not divide the number of channels ({channels}).'
      )
    group_size = channels // num_groups
    group_shape = x.shape[:-1] + (num_groups, group_size)
    if mask is not None:
      mask = mask.reshape(mask.shape[:-1] + (num_groups, group_size))
    mean, var = _compute_stats(
      x.reshape(group_shape),
      list(reduction_axes[:-1]) + [-1],
      self.dtype,
      self.axis_name,
      self.axis_index_groups,
      use_fast_variance=self.use_fast_variance,
      mask=mask,
      force_float32_reductions=self.force_float32_reductions,
    )
    mean = jnp.repeat(mean, group_size, axis=-1)
    var = jnp.repeat(var, group_size, axis=-1)
    return _normalize(
      self,
      x,
      mean,
      var,
      reduction_axes[:-1],
      (x.ndim - 1,),
      self.dtype,
      self.param_dtype,
      self.epsilon,
      self.use_bias,
      self.use_scale,
      self.bias_init,
      self.scale_init,
      self.force_float32_reductions,
    )


class InstanceNorm(Module):
  """Instance normalization: per example and channel, over the remaining axes.

  Attributes:
    epsilon: added to the variance before the square root.
    dtype: the output dtype (None: promoted from input and params).
    param_dtype: the dtype of ``scale`` and ``bias``.
    use_bias: whether to add the learned ``bias``.
    use_scale: whether to multiply by the learned ``scale``.
    bias_init: initializer of ``bias``.
    scale_init: initializer of ``scale``.
    feature_axes: the channel axes (never the leading batch axis).
    axis_name: a mapped axis name over which statistics are averaged.
    axis_index_groups: groups of device indices within ``axis_name``.
    use_fast_variance: compute the variance as ``E[x^2] - E[x]^2``.
    force_float32_reductions: compute statistics in at least float32.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.InstanceNorm()
  >>> x = jnp.array([[[1.0], [3.0]]])
  >>> variables = layer.init(jax.random.key(0), x)
  >>> layer.apply(variables, x)[..., 0]
  Array([[-1., 1.]], dtype=float32)
  """

  epsilon: float = 1e-6
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Initializer = initializers.zeros
  scale_init: Initializer = initializers.ones
  feature_axes: Axes = -1
  axis_name: str | None = None
  axis_index_groups: Any = None
  use_fast_variance: bool = True
  force_float32_reductions: bool = True

  @compact
  def __call__(self, x: Array, *, mask: Array | None = None) -> Array:
    """Normalizes ``x``; ``mask`` (shape of ``x``) selects the entries in the statistics."""
    feature_axes = _canonicalize_axes(x.ndim, self.feature_axes)
    if 0 in feature_axes:
      raise ValueError(
        'The channel axes cannot include the leading dimension as this is assumed to be '
        'the batch axis.'
      )
    reduction_axes = [i for i in range(1, x.ndim) if i not in feature_axes]
    mean, var = _compute_stats(
      x,
      reduction_axes,
      self.dtype,
      self.axis_name,
      self.axis_index_groups,
      use_fast_variance=self.use_fast_variance,
      mask=mask,
      force_float32_reductions=self.force_float32_reductions,
    )
    return _normalize(
      self,
      x,
      mean,
      var,
      reduction_axes,
      feature_axes,
      self.dtype,
      self.param_dtype,
      self.epsilon,
      self.use_bias,
      self.use_scale,
      self.bias_init,
      self.scale_init,
      self.force_float32_reductions,
    )


#################################################
# Wrappers that re-parametrize a layer's variables
#################################################


def _run_with_mapped_variables(
  layer: Module,
  transform: Callable[[Any, Any], Any],
  writable: bool,
  args: tuple,
  kwargs: dict,
) -> Any:
  """Calls ``layer`` on variables rewritten leaf by leaf with ``transform(path, leaf)``.

  Reproduces Linen's ``map_variables`` on the layer's scope: during ``init`` the layer
  first runs on its own variables (creating them), then on the transformed ones; the
  layer sees a detached scope with the same path, RNG streams and RNG counters; the
  collections it may write (all of them when ``writable`` or initializing, none
  otherwise) are written back afterwards, in sorted key order, transformed values
  included, which is why ``init`` returns the re-parametrized kernel.
  """
  outer = layer.scope
  if outer is None:
    raise ValueError(
      f'{type(layer).__name__} wrapped for re-parametrization is unbound: call the wrapper '
      'inside init/apply (or on a module bound with bind).'
    )
  initializing = bool(outer.get_flag('initializing', False))
  writable = writable or initializing

  def run(variables: dict, mutable: Any) -> tuple[Any, dict]:
    inner = Scope(
      variables,
      rngs=outer.rngs,
      name=outer.name,
      mutable=mutable,
      path=outer.path,
      flags=outer.flags,
    )
    inner.rng_counters = outer.rng_counters  # shared, as lifted scopes do in Linen
    try:
      y = layer.clone(parent=inner, _deep_clone=True)(*args, **kwargs)
      out = {col: value for col, value in inner.mutable_variables().items() if value}
    finally:
      inner.invalidate()
    return y, out

  target = outer.variables()
  if initializing:
    _, target = run(target, outer.mutable)
  target = jax.tree_util.tree_map_with_path(transform, target)
  inner_mutable = outer.mutable if writable else False
  y, out = run(target, inner_mutable)
  if writable:
    for col in sorted(out):
      if not outer.is_mutable_collection(col):
        continue
      for name in sorted(out[col]):
        outer.put_variable(col, name, out[col][name])
  return y


class _SpectralTransform:
  """``transform(path, leaf)`` for SpectralNorm; a class so the params init stays cacheable."""

  __slots__ = ('module', 'update_stats')

  def __init__(self, module: SpectralNorm, update_stats: bool):
    self.module = module
    self.update_stats = update_stats

  def __call__(self, path: Any, leaf: Any) -> Any:
    return self.module._spectral_normalize(path, leaf, self.update_stats)


class SpectralNorm(Module):
  """Spectral normalization of a wrapped layer's weights (Miyato et al., 2018).

  Every parameter with two or more dimensions (others pass through) is divided by its
  largest singular value, estimated by power iteration. Arrays with more than two
  dimensions are flattened to ``(-1, last_dim)`` first. The power-iteration vector
  ``u`` and the estimate ``sigma`` are stored in ``collection_name`` at this module's
  level, under flat keys such as ``'layer_instance/kernel/u'``; the call needs
  ``update_stats`` (True while training, with ``mutable=[collection_name]``).

  Attributes:
    layer_instance: the module whose parameters are normalized.
    n_steps: power-iteration steps per call.
    epsilon: added inside the square root when normalizing vectors.
    dtype: the dtype of the normalized parameters (None: promoted).
    param_dtype: the dtype of ``u`` and ``sigma``.
    error_on_non_matrix: raise for parameters with more than two dimensions instead of
      flattening them.
    collection_name: the collection that holds ``u`` and ``sigma``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.SpectralNorm(nn.Dense(3))
  >>> x = jnp.ones((1, 4))
  >>> variables = layer.init(jax.random.key(0), x, update_stats=False)
  >>> list(variables['batch_stats'])
  ['layer_instance/kernel/u', 'layer_instance/kernel/sigma']
  >>> y, updates = layer.apply(variables, x, update_stats=True, mutable=['batch_stats'])
  >>> y.shape
  (1, 3)
  """

  layer_instance: Module
  n_steps: int = 1
  epsilon: float = 1e-12
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  error_on_non_matrix: bool = False
  collection_name: str = 'batch_stats'

  @compact
  def __call__(self, *args: Any, update_stats: bool, **kwargs: Any) -> Any:
    """Calls the wrapped layer with normalized parameters.

    Args:
      *args: the layer's positional arguments.
      update_stats: store the new ``u`` and ``sigma``.
      **kwargs: the layer's keyword arguments.
    """
    return _run_with_mapped_variables(
      self.layer_instance, _SpectralTransform(self, update_stats), True, args, kwargs
    )

  def _spectral_normalize(self, path: Any, leaf: Any, update_stats: bool) -> Any:
    value = jnp.asarray(leaf)
    value_shape = value.shape
    if value.ndim <= 1 or self.n_steps < 1:
      return value
    if value.ndim > 2:
      if self.error_on_non_matrix:
        raise ValueError(f'Input is {value.ndim}D but error_on_non_matrix is True')
      value = jnp.reshape(value, (-1, value.shape[-1]))
    # path[0] is the collection; the key names the variable inside the layer.
    prefix = f'{self.layer_instance.name}/' + jax.tree_util.keystr(
      path[1:], simple=True, separator='/'
    )
    u_name, sigma_name = prefix + '/u', prefix + '/sigma'
    col = self.collection_name
    u_key = None if self.has_variable(col, u_name) else self.make_rng('params')
    u_var = self.variable(
      col, u_name, jax.random.normal, u_key, (1, value.shape[-1]), self.param_dtype
    )
    sigma_var = self.variable(col, sigma_name, jnp.ones, (), self.param_dtype)
    u0 = u_var.value
    v0 = None
    for _ in range(self.n_steps):
      v0 = _l2_normalize(jnp.matmul(u0, value.T), eps=self.epsilon)
      u0 = _l2_normalize(jnp.matmul(v0, value), eps=self.epsilon)
    assert v0 is not None  # n_steps >= 1: smaller counts returned above
    u0 = lax.stop_gradient(u0)
    v0 = lax.stop_gradient(v0)
    sigma = jnp.matmul(jnp.matmul(v0, value), u0.T)[0, 0]
    value = value / jnp.where(sigma != 0, sigma, 1)
    if update_stats:
      u_var.value = u0
      sigma_var.value = sigma
    dtype = dtypes.canonicalize_dtype(leaf, u0, v0, sigma, dtype=self.dtype)
    return jnp.asarray(value.reshape(value_shape), dtype)


def _default_variable_filter() -> set[str]:
  return {'kernel'}


class WeightNorm(Module):
  """Weight normalization of a wrapped layer (Salimans & Kingma, 2016).

  Each selected parameter is L2-normalized over its non-feature axes and multiplied by a
  learned ``scale`` of the feature axes' shape, stored at this module's level under a
  flat key such as ``'layer_instance/kernel/scale'``.

  Attributes:
    layer_instance: the module whose parameters are normalized.
    epsilon: added inside the square root when normalizing.
    dtype: the dtype of the normalized parameters (None: promoted).
    param_dtype: the dtype of ``scale``.
    use_scale: whether to learn a ``scale``.
    scale_init: initializer of ``scale``.
    feature_axes: the axes kept (each feature normalized separately); None normalizes
      the whole array.
    variable_filter: substrings of ``'<layer name>/<variable path>'`` selecting which
      variables to normalize; empty or None selects all.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.WeightNorm(nn.Dense(3))
  >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 4)))
  >>> list(variables['params'])
  ['layer_instance/kernel/scale', 'layer_instance']
  >>> kernel = variables['params']['layer_instance']['kernel']
  >>> jnp.round(jnp.linalg.norm(kernel, axis=0), 3)
  Array([1., 1., 1.], dtype=float32)
  """

  layer_instance: Module
  epsilon: float = 1e-12
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  use_scale: bool = True
  scale_init: Initializer = initializers.ones
  feature_axes: Axes | None = -1
  variable_filter: Iterable | None = dataclasses.field(default_factory=_default_variable_filter)

  @compact
  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    """Calls the wrapped layer with weight-normalized parameters."""
    return _run_with_mapped_variables(
      self.layer_instance, self._weight_normalize, False, args, kwargs
    )

  def _weight_normalize(self, path: Any, leaf: Any) -> Any:
    value = jnp.asarray(leaf)
    str_path = f'{self.layer_instance.name}/' + jax.tree_util.keystr(
      path[1:], simple=True, separator='/'
    )
    if self.variable_filter and not any(f in str_path for f in self.variable_filter):
      return value
    if self.feature_axes is None:
      feature_axes: tuple[int, ...] = ()
    else:
      feature_axes = _canonicalize_axes(value.ndim, self.feature_axes)
    reduction_axes = tuple(i for i in range(value.ndim) if i not in feature_axes)
    feature_shape = [1] * value.ndim
    scale_shape = []
    for ax in feature_axes:
      feature_shape[ax] = value.shape[ax]
      scale_shape.append(value.shape[ax])
    value_bar = _l2_normalize(value, axis=reduction_axes, eps=self.epsilon)
    args = [leaf]
    if self.use_scale:
      scale = self.param(
        str_path + '/scale', self.scale_init, tuple(scale_shape), self.param_dtype
      ).reshape(feature_shape)
      value_bar = value_bar * scale
      args.append(scale)
    return jnp.asarray(value_bar, dtypes.canonicalize_dtype(*args, dtype=self.dtype))


__all__ = [
  'BatchNorm',
  'LayerNorm',
  'RMSNorm',
  'GroupNorm',
  'InstanceNorm',
  'SpectralNorm',
  'WeightNorm',
]
