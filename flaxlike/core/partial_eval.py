"""Evaluating what a function computes from the values it is given, with shapes for the rest.

Arguments passed as ``jax.ShapeDtypeStruct`` stand for values that are not there. JAX's
partial evaluation traces the function once: every operation whose inputs are all known
runs as it is traced (so a parameter drawn from a key gets its value), and every operation
that needs a missing value is only recorded. ``lazy_init`` uses this to build variables from
input shapes alone; ``flaxlike.jax_utils.partial_eval_by_shape`` is the same evaluation with
shapes given as specs.

Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import partial_eval
  >>> def f(x, scale):
  ...   return {'y': x * scale, 'bias': jnp.full((2,), scale, jnp.float32)}
  >>> partial_eval.evaluate_known(f)(jax.ShapeDtypeStruct((3, 2), jnp.float32), 2.0)
  {'bias': Array([2., 2.], dtype=float32), 'y': ShapeDtypeStruct(shape=(3, 2), dtype=float32)}
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
from jax import core as jax_core
from jax.extend import linear_util as lu
from jax.interpreters import partial_eval as pe

from flaxlike import errors


def _partial_value(leaf: Any) -> pe.PartialVal:
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return pe.PartialVal.unknown(jax_core.ShapedArray(leaf.shape, leaf.dtype))
  return pe.PartialVal.known(leaf)


def evaluate_known(fn: Callable[..., Any]) -> Callable[..., Any]:
  """Wraps ``fn`` so that ``jax.ShapeDtypeStruct`` arguments stand for missing values.

  The wrapper returns ``fn``'s output with every leaf that could be computed from the
  given values as an array, and every leaf that needs a missing value as a
  ``jax.ShapeDtypeStruct`` of its shape and dtype. Non-array arguments (flags, sizes) reach
  ``fn`` as they are.

  Args:
    fn: any function of arrays and Python values.

  Returns:
    ``fn`` with the same arguments, evaluated as far as the known values allow.

  Example:

    >>> import jax, jax.numpy as jnp
    >>> from flaxlike.core import partial_eval
    >>> evaluate = partial_eval.evaluate_known(lambda a, b: (a + 1, b * 2))
    >>> evaluate(jnp.ones(2), jax.ShapeDtypeStruct((3,), jnp.float32))
    (Array([2., 2.], dtype=float32), ShapeDtypeStruct(shape=(3,), dtype=float32))
  """

  @functools.wraps(fn)
  def wrapper(*args: Any, **kwargs: Any) -> Any:
    leaves, in_tree = jax.tree_util.tree_flatten((args, kwargs))
    debug_info = jax.api_util.debug_info('flaxlike evaluate_known', fn, (in_tree,), {})
    flat_fn, out_tree = jax.api_util.flatten_fun(lu.wrap_init(fn, debug_info=debug_info), in_tree)
    _, out_pvals, _ = pe.trace_to_jaxpr_nounits(flat_fn, [_partial_value(x) for x in leaves])
    outputs = [
      value if aval is None else jax.ShapeDtypeStruct(aval.shape, aval.dtype)
      for aval, value in out_pvals
    ]
    return jax.tree_util.tree_unflatten(out_tree(), outputs)

  return wrapper


def lazy_init(fn: Callable[..., Any]) -> Callable[..., Any]:
  """Wraps a function that builds variables so that inputs may be given by shape only.

  Arguments passed as ``jax.ShapeDtypeStruct`` stand for data that is not there; the
  wrapper returns ``fn``'s output computed without it, and only the work the output needs
  is done (a model's forward pass on the missing inputs is traced, never run).

  Args:
    fn: a function returning variables, e.g. ``lambda rngs, x: init_fn(rngs, x)[1]``.

  Returns:
    ``fn`` with the same arguments.

  Raises:
    LazyInitError: when an output leaf depends on a value given by shape only; the
      error names the leaf's path.

  Example:

    >>> import jax, jax.numpy as jnp
    >>> from flaxlike.core import partial_eval
    >>> make = lambda key, x: {'w': jax.random.normal(key, (x.shape[-1], 2))}
    >>> x = jax.ShapeDtypeStruct((8, 3), jnp.float32)
    >>> partial_eval.lazy_init(make)(jax.random.key(0), x)['w'].shape
    (3, 2)
  """
  evaluate = evaluate_known(fn)

  @functools.wraps(fn)
  def wrapper(*args: Any, **kwargs: Any) -> Any:
    outputs = evaluate(*args, **kwargs)
    for path, leaf in jax.tree_util.tree_leaves_with_path(outputs):
      if isinstance(leaf, jax.ShapeDtypeStruct):
        raise errors.LazyInitError(leaf, jax.tree_util.keystr(path, simple=True, separator='/'))
    return outputs

  return wrapper
