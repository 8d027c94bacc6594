"""Dropout as a function of a scope.

Example:

>>> import jax, jax.numpy as jnp
>>> from flaxlike.core import apply, nn
>>> y = apply(nn.dropout)({}, jnp.ones((4,)), 0.5, rngs={'dropout': jax.random.key(0)})
>>> set(y.tolist()) <= {0.0, 2.0}
True
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax, random

from flaxlike.core.scope import Scope

Array = Any


def dropout(
  scope: Scope,
  inputs: Array,
  rate: float,
  deterministic: bool = False,
  rng: Any = None,
) -> Array:
  """Zeroes each element with probability ``rate`` and scales the rest by ``1 / (1 - rate)``.

  Args:
    scope: the scope whose ``'dropout'`` stream gives the mask's key.
    inputs: the array to mask.
    rate: the probability of zeroing an element.
    deterministic: return ``inputs`` unchanged (evaluation).
    rng: a key to use instead of ``scope.make_rng('dropout')``.

  Returns:
    The masked array.
  """
  if rate == 0.0 or deterministic:
    return inputs
  keep_prob = 1.0 - rate
  if rng is None:
    rng = scope.make_rng('dropout')
  mask = random.bernoulli(rng, p=keep_prob, shape=inputs.shape)
  return lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))
