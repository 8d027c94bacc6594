"""Linear layers: ``Dense`` and its generalisations."""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
from jax import lax

from flaxlike.linen import initializers
from flaxlike.linen.dtypes import promote_dtype
from flaxlike.linen.module import Module, compact

Array = Any
Dtype = Any
PrecisionLike = Any
Initializer = Callable[..., Any]

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
    bias = self.param('bias', self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    if self.dot_general_cls is not None:
      dot_general = self.dot_general_cls()
    elif self.dot_general is not None:
      dot_general = self.dot_general
    else:
      dot_general = lax.dot_general
    y = dot_general(
      inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())), precision=self.precision
    )
    if bias is not None:
      y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    return y
