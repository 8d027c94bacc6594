"""Staging the layers' pure math so that JAX traces it once per shape.

Every ``jnp`` operation traces through a jitted function whose trace JAX caches per input
shapes, but a sequence of operations written out in a layer is re-traced operation by
operation on every call. Wrapping the sequence in ``jax.jit(inline=True)`` keeps the same
equations in the caller's jaxpr (inlined, no nested call), while a later call with the
same shapes and static arguments costs one cache hit. Most layers of a model repeat their
shapes, so this is most of a layer's trace time. Parameters are created outside: a
staged function must be pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def staged(*static_argnames: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """Decorator: ``jax.jit(fn, inline=True, static_argnames=static_argnames)``."""
  return lambda fn: jax.jit(fn, inline=True, static_argnames=static_argnames)


def as_array(x: Any) -> Any:
  """``x`` if it is already an array (jax or numpy), else ``jnp.asarray(x)``, so it can
  be passed to a staged function as one leaf."""
  return x if isinstance(x, (jax.Array, np.ndarray)) else jnp.asarray(x)


def hashable(value: Any) -> Any:
  """Lists (e.g. a per-operand ``precision``) as tuples, so they can be static."""
  if isinstance(value, list):
    return tuple(hashable(v) for v in value)
  return value
