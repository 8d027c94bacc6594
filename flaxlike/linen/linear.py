"""Linear layers: ``Dense`` and its generalisations."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax.numpy as jnp
from jax import lax

from flaxlike.core import meta
from flaxlike.core.staged_init import pure_initializer
from flaxlike.linen import initializers
from flaxlike.linen._staging import hashable, staged
from flaxlike.linen.dtypes import promote_dtype
from flaxlike.linen.module import Module, compact, merge_param, nowrap
from flaxlike.typing import Array, Dtype, Initializer, LaxPadding, PaddingLike, PrecisionLike

default_kernel_init = initializers.lecun_normal()


class Dense(Module):
  """A linear transformation of the last axis: ``y = x @ kernel + bias``.

  Attributes:
    features: the number of output features.
    use_bias: whether to add a bias.
    dtype: the computation dtype (None: promoted from inputs and params).
    param_dtype: the dtype of the parameters.
    precision: the ``lax`` precision of the matmul.
    kernel_init: initializer of ``kernel`` (shape ``(in, features)``).
    bias_init: initializer of ``bias`` (shape ``(features,)``).
    promote_dtype: the function that casts inputs and params to a common dtype.
    dot_general: a replacement for ``lax.dot_general``.
    dot_general_cls: a class whose instances replace ``lax.dot_general``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.Dense(features=4)
  >>> params = layer.init(jax.random.key(0), jnp.ones((1, 3)))['params']
  >>> jax.tree_util.tree_map(jnp.shape, params)
  {'bias': (4,), 'kernel': (3, 4)}
  """

  features: int
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = default_kernel_init
  bias_init: Initializer = initializers.zeros_init()
  promote_dtype: Callable[..., Any] = promote_dtype
  dot_general: Callable[..., Any] | None = None
  dot_general_cls: Any = None

  @compact
  def __call__(self, inputs: Array) -> Array:
    kernel = self.param(
      'kernel', self.kernel_init, (jnp.shape(inputs)[-1], self.features), self.param_dtype
    )
    bias = (
      self.param('bias', self.bias_init, (self.features,), self.param_dtype)
      if self.use_bias
      else None
    )
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    return _contract(
      self,
      inputs,
      kernel,
      bias,
      (((inputs.ndim - 1,), (0,)), ((), ())),
      (1,) * (inputs.ndim - 1) + (-1,),
    )


#################################################
# Shared helpers
#################################################


def _canonicalize_tuple(x: Any) -> tuple[Any, ...]:
  if isinstance(x, Iterable):
    return tuple(x)
  return (x,)


def _normalize_axes(axes: tuple[int, ...], ndim: int) -> tuple[int, ...]:
  # Positive axes, so a `b in axes` membership test is meaningful.
  return tuple(sorted(ax if ax >= 0 else ndim + ax for ax in axes))


@pure_initializer
def _reshaped_init(
  key: Any, init_fn: Initializer, flat_shape: tuple[int, ...], shape: tuple[int, ...], dtype: Dtype
) -> Any:
  """Draws ``init_fn`` on ``flat_shape`` (fixing its fan-in/fan-out) and reshapes to ``shape``.

  A module-level function rather than a closure so the scope's shape cache, keyed by
  the init function and its arguments, hits across calls.
  """
  value = init_fn(key, flat_shape, dtype)
  if isinstance(value, meta.AxisMetadata):
    # Reshape the bare value: its names describe ``shape``, so ``unbox()`` would constrain
    # the flat value to a spec of the wrong rank under an active mesh and rules.
    # Boxes hold their array in a ``value`` field (what AxisMetadata.replace_boxed assumes);
    # the abstract base declares no fields, so a checker cannot see it.
    bare = value.value  # pyright: ignore[reportAttributeAccessIssue]
    return value.replace_boxed(jnp.reshape(bare, shape))
  return jnp.reshape(value, shape)


def _where(module: Any) -> str:
  """``Conv at '/Block_0/Conv_0'``: names the failing layer in error messages."""
  scope = module.scope
  path = scope.path_text if scope is not None else '(unbound)'
  return f"{type(module).__name__} at '{path}'"


def _pick_dot_general(module: Any) -> Callable[..., Any]:
  if module.dot_general_cls is not None:
    return module.dot_general_cls()
  if module.dot_general is not None:
    return module.dot_general
  return lax.dot_general


def _dot_and_bias(
  inputs: Array,
  kernel: Array,
  bias: Array | None,
  *,
  dot_general: Callable[..., Any],
  dimension_numbers: Any,
  precision: Any,
  bias_shape: tuple[int, ...],
) -> Array:
  y = dot_general(inputs, kernel, dimension_numbers, precision=precision)
  if bias is not None:
    y += jnp.reshape(bias, bias_shape)
  return y


_dot_and_bias_staged = staged('dot_general', 'dimension_numbers', 'precision', 'bias_shape')(
  _dot_and_bias
)


def _contract(
  module: Any,
  inputs: Array,
  kernel: Array,
  bias: Array | None,
  dimension_numbers: Any,
  bias_shape: tuple[int, ...],
) -> Array:
  """``dot_general(inputs, kernel) + bias.reshape(bias_shape)`` with the module's
  ``dot_general``. With the default one (``lax.dot_general``) the math is staged, so
  JAX traces it once per shape; a user's ``dot_general`` or ``dot_general_cls`` (which
  may hold state of its own) runs as written."""
  default = module.dot_general_cls is None and module.dot_general is None
  run = _dot_and_bias_staged if default else _dot_and_bias
  return run(
    inputs,
    kernel,
    bias,
    dot_general=_pick_dot_general(module),
    dimension_numbers=dimension_numbers,
    precision=hashable(module.precision) if default else module.precision,
    bias_shape=bias_shape,
  )


#################################################
# DenseGeneral
#################################################


class DenseGeneral(Module):
  """A linear transformation over several input axes, to one or more feature axes.

  The kernel has shape ``(*batch, *contracted, *features)`` and is initialized as if
  it were the matrix ``(prod(batch) * prod(contracted), prod(features))``, so
  ``kernel_init``'s fan-in/fan-out are those of the flattened map.

  Attributes:
    features: the output feature shape (an int or a tuple of ints).
    axis: the input axis or axes to contract (negative values count from the end).
    batch_dims: leading input axes that are batch axes with their own kernel each;
      they must be ``0, 1, ..., k-1``.
    use_bias: whether to add a bias of shape ``(*batch, *features)``.
    dtype: the computation dtype (None: promoted from inputs and params).
    param_dtype: the dtype of the parameters.
    kernel_init: initializer of ``kernel``, called with the flattened 2-D shape.
    bias_init: initializer of ``bias``, called with the flattened 1-D shape.
    precision: the ``lax`` precision of the contraction.
    promote_dtype: the function that casts inputs and params to a common dtype.
    dot_general: a replacement for ``lax.dot_general``.
    dot_general_cls: a class whose instances replace ``lax.dot_general``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.DenseGeneral(features=(2, 3), axis=(-2, -1))
  >>> params = layer.init(jax.random.key(0), jnp.ones((1, 4, 5)))['params']
  >>> jax.tree_util.tree_map(jnp.shape, params)
  {'bias': (2, 3), 'kernel': (4, 5, 2, 3)}
  """

  features: int | Sequence[int]
  axis: int | Sequence[int] = -1
  batch_dims: Sequence[int] = ()
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init
  bias_init: Initializer = initializers.zeros_init()
  precision: PrecisionLike = None
  promote_dtype: Callable[..., Any] = promote_dtype
  dot_general: Callable[..., Any] | None = None
  dot_general_cls: Any = None

  @compact
  def __call__(self, inputs: Array) -> Array:
    features = tuple(int(f) for f in _canonicalize_tuple(self.features))
    ndim = jnp.ndim(inputs)
    shape = jnp.shape(inputs)
    batch_dims = _normalize_axes(_canonicalize_tuple(self.batch_dims), ndim)
    if batch_dims != tuple(range(len(batch_dims))):
      raise ValueError(
        f'{_where(self)}: batch_dims {tuple(self.batch_dims)} must be the leading axes '
        '0, 1, ..., k-1 of the input; move batch axes to the front first.'
      )
    axis = _normalize_axes(_canonicalize_tuple(self.axis), ndim)
    n_batch = len(batch_dims)

    batch_shape = tuple(shape[ax] for ax in batch_dims)
    contracted_shape = tuple(shape[ax] for ax in axis)
    n_batch_flat = math.prod(batch_shape)
    n_features_flat = math.prod(features)
    kernel = self.param(
      'kernel',
      _reshaped_init,
      self.kernel_init,
      (n_batch_flat * math.prod(contracted_shape), n_features_flat),
      batch_shape + contracted_shape + features,
      self.param_dtype,
    )
    if self.use_bias:
      bias = self.param(
        'bias',
        _reshaped_init,
        self.bias_init,
        (n_batch_flat * n_features_flat,),
        batch_shape + features,
        self.param_dtype,
      )
    else:
      bias = None
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)

    kernel_batch = tuple(range(n_batch))
    kernel_contract = tuple(range(n_batch, n_batch + len(axis)))
    # The output is (*batch, *free input axes, *features); the bias broadcasts over the
    # free axes only.
    n_free = ndim - n_batch - len(axis)
    return _contract(
      self,
      inputs,
      kernel,
      bias,
      ((axis, kernel_contract), (batch_dims, kernel_batch)),
      batch_shape + (1,) * n_free + features,
    )


#################################################
# Einsum
#################################################


def _einsum_bias_shapes(
  einsum_str: str, lhs_ndim: int, kernel_shape: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """The bias shape and its broadcastable form for the output of ``einsum_str``.

  The bias covers the output axes that come from the kernel, in output order; the
  other output axes (e.g. those of the input or of an input ellipsis) get size 1.
  """
  inputs_str, output_str = einsum_str.split('->')
  lhs_str, rhs_str = inputs_str.split(',')
  if '...' in lhs_str or '...' in rhs_str:
    # Spell ellipses out with unused letters, right-aligned as NumPy broadcasts them.
    used = set(einsum_str)
    spare = [c for c in 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz' if c not in used]
    lhs_ell = lhs_ndim - len(lhs_str.replace('...', ''))
    rhs_ell = len(kernel_shape) - len(rhs_str.replace('...', ''))
    n_ell = max(lhs_ell if '...' in lhs_str else 0, rhs_ell if '...' in rhs_str else 0)
    letters = ''.join(spare[:n_ell])
    lhs_str = lhs_str.replace('...', letters[n_ell - lhs_ell :])
    rhs_str = rhs_str.replace('...', letters[n_ell - rhs_ell :])
    output_str = output_str.replace('...', letters)
  sizes = dict(zip(rhs_str, kernel_shape))
  bias_shape = tuple(sizes[c] for c in output_str if c in sizes)
  broadcast_shape = tuple(sizes.get(c, 1) for c in output_str)
  return bias_shape, broadcast_shape


class Einsum(Module):
  """A learnable kernel contracted with the input by ``jnp.einsum``.

  ``einsum_str`` has two operands, the input then the kernel, and an explicit
  output (``'...'`` is allowed). The bias covers the output axes taken from the kernel.

  Attributes:
    shape: the kernel shape.
    einsum_str: the equation, e.g. ``'abc,cde->abde'``; may instead be passed at call
      time (exactly one of the two).
    use_bias: whether to add a bias.
    dtype: the computation dtype (None: promoted from inputs and params).
    param_dtype: the dtype of the parameters.
    precision: the ``lax`` precision of the contraction.
    kernel_init: initializer of ``kernel``.
    bias_init: initializer of ``bias``.
    promote_dtype: the function that casts inputs and params to a common dtype.
    preferred_element_type: the accumulation/result dtype passed to ``jnp.einsum``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.Einsum((5, 6, 7), 'abc,cde->abde')
  >>> variables = layer.init(jax.random.key(0), jnp.ones((3, 4, 5)))
  >>> jax.tree_util.tree_map(jnp.shape, variables['params'])
  {'bias': (6, 7), 'kernel': (5, 6, 7)}
  >>> layer.apply(variables, jnp.ones((3, 4, 5))).shape
  (3, 4, 6, 7)
  """

  shape: Sequence[int]
  einsum_str: str | None = None
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = default_kernel_init
  bias_init: Initializer = initializers.zeros_init()
  promote_dtype: Callable[..., Any] = promote_dtype
  preferred_element_type: Dtype | None = None

  @compact
  def __call__(self, inputs: Array, einsum_str: str | None = None) -> Array:
    einsum_str = merge_param('einsum_str', self.einsum_str, einsum_str).replace(' ', '')
    if '->' not in einsum_str:
      raise ValueError(
        f'{_where(self)}: `einsum_str` equation must be explicit and include "->". '
        f'Got {einsum_str!r}; name the output axes, e.g. "abc,cd->abd".'
      )
    if einsum_str.count(',') != 1:
      raise ValueError(
        f'{_where(self)}: `einsum_str` equation must have exactly two operands and '
        f'therefore, exactly one comma character, instead of {einsum_str.count(",")}. '
        f'Got {einsum_str!r}; the operands are the input and the kernel.'
      )
    kernel_shape = tuple(self.shape)
    kernel = self.param('kernel', self.kernel_init, kernel_shape, self.param_dtype)
    if self.use_bias:
      bias_shape, broadcast_shape = _einsum_bias_shapes(einsum_str, jnp.ndim(inputs), kernel_shape)
      bias = self.param('bias', self.bias_init, bias_shape, self.param_dtype)
    else:
      bias, broadcast_shape = None, ()
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    y = jnp.einsum(
      einsum_str,
      inputs,
      kernel,
      precision=self.precision,
      preferred_element_type=self.preferred_element_type,
    )
    if bias is not None:
      y += jnp.reshape(bias, broadcast_shape)
    return y


#################################################
# Convolutions
#################################################


def canonicalize_padding(padding: PaddingLike, rank: int) -> LaxPadding:
  """Turns a padding spec into a string or a list of ``rank`` ``(low, high)`` pairs.

  Example:

  >>> from flaxlike.linen.linear import canonicalize_padding
  >>> canonicalize_padding(1, 2), canonicalize_padding([(0, 1), 2], 2)
  ([(1, 1), (1, 1)], [(0, 1), (2, 2)])
  """
  if isinstance(padding, str):
    return padding
  if isinstance(padding, int):
    return [(padding, padding)] * rank
  if isinstance(padding, Sequence) and len(padding) == rank:
    pairs = []
    for p in padding:
      if isinstance(p, int):
        pairs.append((p, p))
      elif isinstance(p, Sequence) and len(p) == 2 and all(isinstance(q, int) for q in p):
        pairs.append(tuple(p))
      else:
        break
    if len(pairs) == rank:
      return pairs
  raise ValueError(
    f'Invalid padding {padding!r}: expected a string, an int, or a sequence of {rank} '
    'ints or (low, high) pairs of ints.'
  )


def _conv_dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
  """Channels-last input/output and a ``(*spatial, in, out)`` kernel."""
  spatial = tuple(range(1, ndim - 1))
  lhs_spec = (0, ndim - 1) + spatial
  rhs_spec = (ndim - 1, ndim - 2) + tuple(range(ndim - 2))
  return lax.ConvDimensionNumbers(lhs_spec, rhs_spec, lhs_spec)


def _broadcast_ints(x: Any, n: int) -> tuple[int, ...]:
  if x is None:
    x = 1
  if isinstance(x, int):
    return (x,) * n
  return tuple(x)


def _flatten_batch(
  module: Module, inputs: Array, num_spatial: int
) -> tuple[Array, tuple[int, ...] | None]:
  """Folds all leading batch axes into one (adding it for unbatched input).

  Raises:
    ValueError: naming ``module`` when ``inputs`` lacks the spatial and feature axes.
  """
  if jnp.ndim(inputs) < num_spatial + 1:
    raise ValueError(
      f'{_where(module)}: input of shape {jnp.shape(inputs)} has too few axes for a '
      f'{num_spatial}-D kernel; expected (*batch, *{num_spatial} spatial, features).'
    )
  n_batch = jnp.ndim(inputs) - num_spatial - 1
  if n_batch == 1:
    return inputs, None
  shape = jnp.shape(inputs)
  batch_shape = tuple(shape[:n_batch])
  return jnp.reshape(inputs, (math.prod(batch_shape),) + tuple(shape[n_batch:])), batch_shape


def _unflatten_batch(y: Array, batch_shape: tuple[int, ...] | None) -> Array:
  if batch_shape is None:
    return y
  return jnp.reshape(y, batch_shape + tuple(y.shape[1:]))


_PAD_MODES = {'CIRCULAR': 'wrap', 'REFLECT': 'reflect'}


class _Conv(Module):
  """Shared implementation of ``Conv`` and ``ConvLocal``."""

  features: int
  kernel_size: int | Sequence[int]
  strides: None | int | Sequence[int] = 1
  padding: PaddingLike = 'SAME'
  input_dilation: None | int | Sequence[int] = 1
  kernel_dilation: None | int | Sequence[int] = 1
  feature_group_count: int = 1
  use_bias: bool = True
  mask: Array | None = None
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = default_kernel_init
  bias_init: Initializer = initializers.zeros_init()
  promote_dtype: Callable[..., Any] = promote_dtype
  conv_general_dilated: Callable[..., Any] | None = None
  conv_general_dilated_cls: Any = None

  # Not a dataclass field: a class-level switch between Conv and ConvLocal.
  _shared_weights = True

  @compact
  def __call__(self, inputs: Array) -> Array:
    kernel_size = _canonicalize_tuple(self.kernel_size)
    n_spatial = len(kernel_size)
    inputs, batch_shape = _flatten_batch(self, inputs, n_spatial)
    strides = _broadcast_ints(self.strides, n_spatial)
    input_dilation = _broadcast_ints(self.input_dilation, n_spatial)
    kernel_dilation = _broadcast_ints(self.kernel_dilation, n_spatial)

    padding = canonicalize_padding(self.padding, n_spatial)
    if isinstance(padding, str) and padding in _PAD_MODES:
      dilated = [(k - 1) * d + 1 for k, d in zip(kernel_size, kernel_dilation)]
      pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in dilated] + [(0, 0)]
      inputs = jnp.pad(inputs, pads, mode=_PAD_MODES[padding])
      padding = 'VALID'
    elif padding == 'CAUSAL':
      if n_spatial != 1:
        raise ValueError(
          f"{_where(self)}: padding='CAUSAL' is only defined for 1-D convolutions, got a "
          f'{n_spatial}-D kernel_size {kernel_size}; pad explicitly with (low, high) pairs.'
        )
      inputs = jnp.pad(inputs, [(0, 0), (kernel_dilation[0] * (kernel_size[0] - 1), 0), (0, 0)])
      padding = 'VALID'

    dimension_numbers = _conv_dimension_numbers(inputs.ndim)
    in_features = jnp.shape(inputs)[-1]
    if self._shared_weights:
      if in_features % self.feature_group_count:
        raise ValueError(
          f'{_where(self)}: {in_features} input features are not divisible by '
          f'feature_group_count={self.feature_group_count}.'
        )
      kernel_shape = kernel_size + (in_features // self.feature_group_count, self.features)
      out_spatial = ()  # one kernel for every output position
    else:
      if self.feature_group_count != 1:
        raise ValueError(
          f'{_where(self)}: unshared (local) convolutions need feature_group_count=1, '
          f'got {self.feature_group_count}.'
        )
      out_spatial = _conv_output_spatial(
        jnp.shape(inputs)[1:-1], kernel_size, strides, padding, input_dilation, kernel_dilation
      )
      kernel_shape = out_spatial + (math.prod(kernel_size) * in_features, self.features)

    if self.mask is not None and tuple(self.mask.shape) != kernel_shape:
      raise ValueError(
        f'{_where(self)}: mask shape {tuple(self.mask.shape)} must equal the kernel shape '
        f'{kernel_shape}.'
      )
    kernel = self.param('kernel', self.kernel_init, kernel_shape, self.param_dtype)
    if self.mask is not None:
      kernel *= self.mask
    if self.use_bias:
      bias_shape = (self.features,) if self._shared_weights else out_spatial + (self.features,)
      bias = self.param('bias', self.bias_init, bias_shape, self.param_dtype)
    else:
      bias = None
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)

    if self._shared_weights:
      if self.conv_general_dilated_cls is not None:
        conv = self.conv_general_dilated_cls()
      elif self.conv_general_dilated is not None:
        conv = self.conv_general_dilated
      else:
        conv = lax.conv_general_dilated
      y = conv(
        inputs,
        kernel,
        strides,
        padding,
        lhs_dilation=input_dilation,
        rhs_dilation=kernel_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=self.feature_group_count,
        precision=self.precision,
      )
    else:
      y = lax.conv_general_dilated_local(
        inputs,
        kernel,
        strides,
        padding,
        kernel_size,
        lhs_dilation=input_dilation,
        rhs_dilation=kernel_dilation,
        dimension_numbers=dimension_numbers,
        precision=self.precision,
      )
    if bias is not None:
      y += jnp.reshape(bias, (1,) * (y.ndim - bias.ndim) + bias.shape)
    return _unflatten_batch(y, batch_shape)


def _conv_output_spatial(
  in_spatial: Sequence[int],
  kernel_size: Sequence[int],
  strides: Sequence[int],
  padding: LaxPadding,
  input_dilation: Sequence[int],
  kernel_dilation: Sequence[int],
) -> tuple[int, ...]:
  """The spatial output shape of ``lax.conv_general_dilated``, computed without tracing."""
  in_dilated = [(n - 1) * d + 1 if n else 0 for n, d in zip(in_spatial, input_dilation)]
  k_dilated = [(k - 1) * d + 1 for k, d in zip(kernel_size, kernel_dilation)]
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(in_dilated, k_dilated, strides, padding)
  else:
    pads = padding
  return tuple(
    max(0, (n + lo + hi - k) // s + 1)
    for n, (lo, hi), k, s in zip(in_dilated, pads, k_dilated, strides)
  )


class Conv(_Conv):
  """A convolution over the trailing spatial axes of channels-last inputs.

  Inputs are ``(*batch, *spatial, features)``; any number of leading batch axes (zero
  for unbatched input) is allowed. The kernel has shape
  ``(*kernel_size, in_features // feature_group_count, features)``.

  Attributes:
    features: the number of output features (channels).
    kernel_size: the kernel's spatial shape (an int means a 1-D kernel).
    strides: the window strides (an int applies to every spatial axis).
    padding: ``'SAME'``, ``'VALID'``, ``'CIRCULAR'`` (periodic), ``'REFLECT'``,
      ``'CAUSAL'`` (1-D only: all padding on the left), an int, or a sequence of ints or
      ``(low, high)`` pairs, one per spatial axis.
    input_dilation: the input dilation (transposed-convolution style upsampling).
    kernel_dilation: the kernel dilation (atrous convolution).
    feature_group_count: the number of feature groups; input and output features must
      be divisible by it (grouped / depthwise convolutions).
    use_bias: whether to add a bias of shape ``(features,)``.
    mask: an optional array of the kernel's shape multiplied into the kernel.
    dtype: the computation dtype (None: promoted from inputs and params).
    param_dtype: the dtype of the parameters.
    precision: the ``lax`` precision of the convolution.
    kernel_init: initializer of ``kernel``.
    bias_init: initializer of ``bias``.
    promote_dtype: the function that casts inputs and params to a common dtype.
    conv_general_dilated: a replacement for ``lax.conv_general_dilated``.
    conv_general_dilated_cls: a class whose instances replace
      ``lax.conv_general_dilated``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.Conv(features=4, kernel_size=(3, 3), padding='CIRCULAR')
  >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
  >>> jax.tree_util.tree_map(jnp.shape, variables['params'])
  {'bias': (4,), 'kernel': (3, 3, 3, 4)}
  >>> layer.apply(variables, jnp.ones((1, 8, 8, 3))).shape
  (1, 8, 8, 4)
  """


class ConvLocal(_Conv):
  """A convolution with unshared weights: a separate kernel at every output position.

  The kernel has shape ``(*out_spatial, prod(kernel_size) * in_features, features)``
  and the bias ``(*out_spatial, features)``; the input-patch axis is ordered input
  feature first, then kernel position (as ``lax.conv_general_dilated_patches``).

  Attributes:
    features: the number of output features (channels).
    kernel_size: the window's spatial shape (an int means 1-D).
    strides: the window strides (an int applies to every spatial axis).
    padding: as for ``Conv``: ``'SAME'``, ``'VALID'``, ``'CIRCULAR'``, ``'REFLECT'``,
      ``'CAUSAL'`` (1-D), an int, or per-axis ints or ``(low, high)`` pairs.
    input_dilation: the input dilation.
    kernel_dilation: the window dilation.
    feature_group_count: must be 1 (kept for signature compatibility with ``Conv``).
    use_bias: whether to add a per-position bias.
    mask: an optional array of the kernel's shape multiplied into the kernel.
    dtype: the computation dtype (None: promoted from inputs and params).
    param_dtype: the dtype of the parameters.
    precision: the ``lax`` precision of the convolution.
    kernel_init: initializer of ``kernel``.
    bias_init: initializer of ``bias``.
    promote_dtype: the function that casts inputs and params to a common dtype.
    conv_general_dilated: unused by the unshared convolution (kept for compatibility).
    conv_general_dilated_cls: unused by the unshared convolution (kept for
      compatibility).

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.ConvLocal(features=2, kernel_size=(3,), padding='VALID')
  >>> params = layer.init(jax.random.key(0), jnp.ones((1, 5, 3)))['params']
  >>> jax.tree_util.tree_map(jnp.shape, params)
  {'bias': (3, 2), 'kernel': (3, 9, 2)}
  """

  _shared_weights = False


class ConvTranspose(Module):
  """A transposed convolution (the gradient of ``Conv`` with respect to its input).

  Inputs are ``(*batch, *spatial, features)``. The kernel has shape
  ``(*kernel_size, in_features, features)``, or ``(*kernel_size, features, in_features)``
  with ``transpose_kernel=True``.

  Attributes:
    features: the number of output features (channels).
    kernel_size: the kernel's spatial shape (an int means a 1-D kernel).
    strides: the upsampling strides (None: 1 on every axis; an int applies to all).
    padding: ``'SAME'``, ``'VALID'``, ``'CIRCULAR'`` (the output wraps around with
      period ``input size * stride``), an int, or per-axis ints or ``(low, high)`` pairs.
    kernel_dilation: the kernel dilation (None: no dilation).
    use_bias: whether to add a bias of shape ``(features,)``.
    mask: an optional array of the kernel's shape multiplied into the kernel.
    dtype: the computation dtype (None: promoted from inputs and params).
    param_dtype: the dtype of the parameters.
    precision: the ``lax`` precision of the convolution.
    kernel_init: initializer of ``kernel``.
    bias_init: initializer of ``bias``.
    transpose_kernel: flip the kernel spatially and swap its feature axes, which makes
      this layer the exact transpose (gradient) of a ``Conv`` with the same kernel.
    promote_dtype: the function that casts inputs and params to a common dtype.
    preferred_element_type: the accumulation/result dtype of the convolution.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.ConvTranspose(features=2, kernel_size=(3, 3), strides=(2, 2))
  >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 4, 4, 3)))
  >>> layer.apply(variables, jnp.ones((1, 4, 4, 3))).shape
  (1, 8, 8, 2)
  """

  features: int
  kernel_size: int | Sequence[int]
  strides: Sequence[int] | None = None
  padding: PaddingLike = 'SAME'
  kernel_dilation: Sequence[int] | None = None
  use_bias: bool = True
  mask: Array | None = None
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = default_kernel_init
  bias_init: Initializer = initializers.zeros_init()
  transpose_kernel: bool = False
  promote_dtype: Callable[..., Any] = promote_dtype
  preferred_element_type: Dtype | None = None

  @compact
  def __call__(self, inputs: Array) -> Array:
    kernel_size = _canonicalize_tuple(self.kernel_size)
    n_spatial = len(kernel_size)
    inputs, batch_shape = _flatten_batch(self, inputs, n_spatial)
    strides = _broadcast_ints(self.strides, n_spatial)
    kernel_dilation = (
      None if self.kernel_dilation is None else _broadcast_ints(self.kernel_dilation, n_spatial)
    )
    in_features = jnp.shape(inputs)[-1]
    if self.transpose_kernel:
      kernel_shape = kernel_size + (self.features, in_features)
    else:
      kernel_shape = kernel_size + (in_features, self.features)
    if self.mask is not None and tuple(self.mask.shape) != kernel_shape:
      raise ValueError(
        f'{_where(self)}: mask shape {tuple(self.mask.shape)} must equal the kernel shape '
        f'{kernel_shape}.'
      )
    padding = canonicalize_padding(self.padding, n_spatial)
    circular = padding == 'CIRCULAR'
    if isinstance(padding, str) and padding not in ('SAME', 'VALID', 'CIRCULAR'):
      raise ValueError(
        f'{_where(self)}: padding {padding!r} is not supported by ConvTranspose; use '
        "'SAME', 'VALID', 'CIRCULAR', an int or (low, high) pairs."
      )
    kernel = self.param('kernel', self.kernel_init, kernel_shape, self.param_dtype)
    if self.mask is not None:
      kernel *= self.mask
    if self.use_bias:
      bias = self.param('bias', self.bias_init, (self.features,), self.param_dtype)
    else:
      bias = None
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    y = lax.conv_transpose(
      inputs,
      kernel,
      strides,
      'VALID' if circular else padding,
      rhs_dilation=kernel_dilation,
      dimension_numbers=_conv_dimension_numbers(inputs.ndim),
      transpose_kernel=self.transpose_kernel,
      precision=self.precision,
      preferred_element_type=self.preferred_element_type,
    )
    if circular:
      y = self._wrap_circular(y, jnp.shape(inputs)[1:-1], strides)
    if bias is not None:
      y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    return _unflatten_batch(y, batch_shape)

  @nowrap
  def _wrap_circular(self, y: Array, in_spatial: Sequence[int], strides: Sequence[int]) -> Array:
    """Folds the full ('VALID') transposed output onto a period of ``in * stride``.

    The output is padded to a whole number of periods, placed so that the input's
    origin lands on a period boundary (otherwise the result would come out shifted),
    and the periods are summed.
    """
    periods = [n * s for n, s in zip(in_spatial, strides)]
    pads = []
    for size, period in zip(y.shape[1:-1], periods):
      extra = -(size - period) % (2 * period)
      # Odd leftovers go left for the plain kernel and right for the transposed one,
      # mirroring where Conv's SAME padding puts them.
      if self.transpose_kernel:
        pads.append((extra // 2, (extra + 1) // 2))
      else:
        pads.append(((extra + 1) // 2, extra // 2))
    y = jnp.pad(y, [(0, 0)] + pads + [(0, 0)])
    for axis, period in enumerate(periods, start=1):
      y = jnp.reshape(y, y.shape[:axis] + (-1, period) + y.shape[axis + 1 :]).sum(axis=axis)
    return y


#################################################
# Embed
#################################################

default_embed_init = initializers.variance_scaling(1.0, 'fan_in', 'normal', out_axis=0)


class Embed(Module):
  """A lookup table of ``num_embeddings`` vectors of size ``features``.

  ``__call__`` maps integer indices to rows of ``embedding`` (out-of-range indices give
  NaN rows; negative ones count from the end); ``attend`` computes
  ``query @ embedding.T``, e.g. for output logits tied to the input embedding.

  Attributes:
    num_embeddings: the number of rows.
    features: the size of each row.
    dtype: the dtype of the returned embeddings (None: ``param_dtype``) and of
      ``attend``'s computation (None: promoted).
    param_dtype: the dtype of ``embedding``.
    embedding_init: initializer of ``embedding`` (shape ``(num_embeddings, features)``).
    promote_dtype: the function that casts inputs and params to a common dtype.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.Embed(num_embeddings=10, features=3)
  >>> variables = layer.init(jax.random.key(0), jnp.array([1, 2]))
  >>> layer.apply(variables, jnp.array([[1, 2], [3, 4]])).shape
  (2, 2, 3)
  >>> layer.apply(variables, jnp.ones((2, 3)), method='attend').shape
  (2, 10)
  """

  num_embeddings: int
  features: int
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  embedding_init: Initializer = default_embed_init
  promote_dtype: Callable[..., Any] = promote_dtype

  embedding: Array = dataclasses.field(init=False, repr=False, compare=False, hash=False)

  def setup(self) -> None:
    self.embedding = self.param(
      'embedding', self.embedding_init, (self.num_embeddings, self.features), self.param_dtype
    )

  def __call__(self, inputs: Array) -> Array:
    if not jnp.issubdtype(jnp.result_type(inputs), jnp.integer):
      raise ValueError(
        f'{_where(self)}: inputs must be integer indices, got dtype '
        f'{jnp.result_type(inputs)}; cast them with .astype(jnp.int32).'
      )
    (embedding,) = self.promote_dtype(self.embedding, dtype=self.dtype, inexact=False)
    if self.num_embeddings == 1:
      # A gather from a single row is slow on some backends; every valid index picks it.
      return jnp.broadcast_to(embedding, jnp.shape(inputs) + (self.features,))
    return jnp.take(embedding, inputs, axis=0)

  def attend(self, query: Array) -> Array:
    """Dot products of ``query`` (``(..., features)``) with every embedding row.

    Returns:
      An array of shape ``(..., num_embeddings)``.
    """
    query, embedding = self.promote_dtype(query, self.embedding, dtype=self.dtype)
    return jnp.dot(query, embedding.T)
