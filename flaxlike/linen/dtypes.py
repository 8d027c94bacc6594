"""Dtype handling shared by the layers: which dtype a computation runs in.

Layers store parameters in ``param_dtype`` and compute in ``dtype``; when ``dtype`` is
None it is inferred from the inputs and parameters by JAX's type promotion.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from flaxlike.typing import Dtype


def canonicalize_dtype(*args: Any, dtype: Dtype | None = None, inexact: bool = True) -> Dtype:
  """The dtype a layer computes in: ``dtype``, or the promotion of the arguments' dtypes.

  Args:
    *args: arrays (None entries are ignored).
    dtype: an explicit dtype; wins when given.
    inexact: require a floating or complex result (integers promote to float32).

  Returns:
    The dtype.

  Example:

  >>> import jax.numpy as jnp
  >>> from flaxlike.linen.dtypes import canonicalize_dtype
  >>> canonicalize_dtype(jnp.ones(2, jnp.bfloat16), jnp.ones(2, jnp.float32))
  dtype('float32')
  """
  if dtype is None:
    dtype = jnp.result_type(*(x for x in args if x is not None))
    if inexact and not jnp.issubdtype(dtype, jnp.inexact):
      dtype = jnp.promote_types(jnp.float32, dtype)
  if inexact and not jnp.issubdtype(dtype, jnp.inexact):
    raise ValueError(f'Dtype must be inexact (floating or complex), got {dtype}.')
  return jnp.dtype(dtype)


def _as_dtype(x: Any, dtype: Dtype) -> Any:
  """``jnp.asarray(x, dtype)``, except that a jax array already of ``dtype`` (and not
  weakly typed, which asarray would change) is returned as is, skipping asarray's checks:
  they are a noticeable part of the layers' trace time."""
  if isinstance(x, jax.Array) and x.dtype == dtype and not x.weak_type:
    return x
  return jnp.asarray(x, dtype)


def promote_dtype(*args: Any, dtype: Dtype | None = None, inexact: bool = True) -> list[Any]:
  """Casts every argument to ``canonicalize_dtype(*args, dtype=dtype)``; keeps Nones.

  Example:

  >>> import jax.numpy as jnp
  >>> from flaxlike.linen.dtypes import promote_dtype
  >>> x, w, b = promote_dtype(jnp.ones(2, jnp.bfloat16), jnp.ones(2), None)
  >>> x.dtype, b
  (dtype('float32'), None)
  """
  target = canonicalize_dtype(*args, dtype=dtype, inexact=inexact)
  return [None if x is None else _as_dtype(x, target) for x in args]
