"""Activation functions (JAX's ``jax.nn``, re-exported as Linen does) and ``PReLU``."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax.nn import celu as celu
from jax.nn import elu as elu
from jax.nn import gelu as gelu
from jax.nn import glu as glu
from jax.nn import hard_sigmoid as hard_sigmoid
from jax.nn import hard_silu as hard_silu
from jax.nn import hard_swish as hard_swish
from jax.nn import hard_tanh as hard_tanh
from jax.nn import identity as identity
from jax.nn import leaky_relu as leaky_relu
from jax.nn import log_sigmoid as log_sigmoid
from jax.nn import log_softmax as log_softmax
from jax.nn import logsumexp as logsumexp
from jax.nn import mish as mish
from jax.nn import one_hot as one_hot
from jax.nn import relu as relu
from jax.nn import relu6 as relu6
from jax.nn import selu as selu
from jax.nn import sigmoid as sigmoid
from jax.nn import silu as silu
from jax.nn import soft_sign as soft_sign
from jax.nn import softmax as softmax
from jax.nn import softplus as softplus
from jax.nn import standardize as standardize
from jax.nn import swish as swish
from jax.numpy import tanh as tanh

from flaxlike.linen.module import Module, compact
from flaxlike.typing import Dtype


def _scalar_init(key: Any, value: float, dtype: Dtype) -> Any:
  del key  # a constant; kept in the signature so params draw their key as in Linen
  return jnp.asarray(value, dtype)


class PReLU(Module):
  """Parametric ReLU: ``x`` where ``x >= 0``, else ``negative_slope * x`` (learned).

  Attributes:
    param_dtype: the dtype of the ``negative_slope`` parameter.
    negative_slope_init: the initial slope.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.PReLU()
  >>> variables = layer.init(jax.random.key(0), jnp.array([-1.0, 2.0]))
  >>> layer.apply(variables, jnp.array([-1.0, 2.0]))
  Array([-0.01,  2.  ], dtype=float32)
  """

  param_dtype: Dtype = jnp.float32
  negative_slope_init: float = 0.01

  @compact
  def __call__(self, inputs: Any) -> Any:
    negative_slope = self.param(
      'negative_slope', _scalar_init, self.negative_slope_init, self.param_dtype
    )
    return jnp.where(inputs >= 0, inputs, jnp.asarray(negative_slope, inputs.dtype) * inputs)
