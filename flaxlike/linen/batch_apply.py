"""``BatchApply``: run a function on inputs whose leading axes are merged into one."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _is_array(x: Any) -> bool:
  return isinstance(x, (jax.Array, np.ndarray))


class BatchApply:
  """Merges the leading ``num_dims`` axes of array inputs, applies ``f``, splits them again.

  Useful to run a layer that expects one batch axis on ``(time, batch, ...)`` data.
  Array inputs with fewer than ``num_dims`` axes, and non-array inputs, are passed to
  ``f`` unchanged; the leading shape is taken from the first array with enough axes.
  Every output leaf must have the merged axis first.

  Example:

  >>> import jax.numpy as jnp
  >>> import flaxlike as nn
  >>> f = nn.BatchApply(lambda x: x.sum(-1, keepdims=True))
  >>> f(jnp.ones((2, 3, 4))).shape
  (2, 3, 1)
  """

  def __init__(self, f: Callable[..., Any], num_dims: int = 2):
    if num_dims < 1:
      raise ValueError(f'BatchApply: num_dims must be at least 1, got {num_dims}.')
    self._f = f
    self.num_dims = num_dims

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    n = self.num_dims
    example = next(
      (x for x in jax.tree_util.tree_leaves((args, kwargs)) if _is_array(x) and x.ndim >= n),
      None,
    )
    if example is None:
      raise ValueError(
        f'BatchApply requires at least one input with ndim >= {n} (an array whose '
        f'leading {n} axes are merged into one batch axis); got none.'
      )
    batch_shape = tuple(example.shape[:n])

    def merge(x):
      if _is_array(x) and x.ndim >= n:
        return jnp.reshape(x, (math.prod(x.shape[:n]),) + tuple(x.shape[n:]))
      return x

    def split(x):
      if jnp.ndim(x) < 1 or jnp.shape(x)[0] != math.prod(batch_shape):
        raise ValueError(
          f'BatchApply: every output of f must have the merged batch axis of size '
          f'{math.prod(batch_shape)} first, got an output of shape {jnp.shape(x)}.'
        )
      return jnp.reshape(x, batch_shape + tuple(jnp.shape(x)[1:]))

    args, kwargs = jax.tree_util.tree_map(merge, (args, kwargs))
    return jax.tree_util.tree_map(split, self._f(*args, **kwargs))
