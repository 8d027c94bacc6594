"""Parameter initializers traced, or shape-evaluated, once per (initializer, arguments).

When ``init`` is traced (under ``jax.jit``, ``make_jaxpr``, ``nn.scan``, ...), every
``scope.param`` runs its initializer on a fresh key: a ``fold_in`` of the stream's key,
then e.g. a truncated normal and a multiply. A model of identical layers traces the same
initializer on the same shapes over and over, and each trace walks ``jax.random`` and
``jnp`` in Python. Here the key derivation and the initializer are staged together as one
``jax.jit(inline=True)`` function per initializer and arguments, so a repeat costs a cache
hit and the equations are inlined into the caller's trace as before: the same operations
on the same key, hence the same parameters, bit for bit.

Only initializers known to be pure are staged: the functions of ``jax.nn.initializers``
(whose closures hold plain numbers and strings) and functions registered with
``pure_initializer``, called with arguments that are plain values (shapes, dtypes,
numbers, strings, such initializers). Two closures of one factory with equal settings
(``lecun_normal()`` made in each layer) share one staged function. Anything else (a user's
initializer, arrays among the arguments) and every eager call run the initializer as
written.

``apply`` checks each existing param against the shape its initializer would produce;
``output_shapes`` evaluates that shape once per hashable (initializer, arguments) instead of
tracing the initializer on every call as Linen does.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jax
import numpy as np
from jax.core import Tracer

from flaxlike.core.rng import _hash_suffix, fold_static

F = TypeVar('F', bound=Callable[..., Any])

_PURE_CODE: set[types.CodeType] = set()
_STAGED: dict[Any, Callable[[Any, Any], Any]] = {}
# Each entry holds a jitted function and its traces; clearing when full bounds the memory
# a program that makes many distinct initializers can pin.
_STAGED_LIMIT = 4096
_OUTPUT_SHAPES: dict[Any, list[tuple[int, ...]]] = {}
_OUTPUT_SHAPES_LIMIT = 8192


def _register_code(code: types.CodeType) -> None:
  _PURE_CODE.add(code)
  for const in code.co_consts:  # closures defined inside (``variance_scaling.<locals>.init``)
    if isinstance(const, types.CodeType):
      _register_code(const)


def pure_initializer(fn: F) -> F:
  """Marks ``fn`` (and the functions defined inside it) as a pure initializer.

  A pure initializer computes its value from its arguments and its closure alone, with no
  side effects and no use of a scope: ``scope.param`` may then trace it once per
  arguments and replay the trace. Returns ``fn`` unchanged.

  Example:

  >>> import jax.numpy as jnp
  >>> from flaxlike.core.staged_init import pure_initializer
  >>> @pure_initializer
  ... def halves(key, shape, dtype=jnp.float32):
  ...   return jnp.full(shape, 0.5, dtype)
  >>> halves(None, (2,)).tolist()
  [0.5, 0.5]
  """
  _register_code(fn.__code__)
  return fn


for _fn in vars(jax.nn.initializers).values():
  if inspect.isfunction(_fn):
    _register_code(_fn.__code__)


class _NotStatic(Exception):
  """A value that cannot be part of a staged initializer's cache key."""


_SCALARS = (bool, int, float, complex, str, bytes, type(None))


def _static_key(value: Any) -> Any:
  """A hashable key equal for equal plain values (types included: ``1`` is not ``1.0``);
  raises _NotStatic for anything else."""
  if isinstance(value, _SCALARS):
    return (type(value), value)
  if isinstance(value, np.generic):  # numpy scalars, e.g. a feature count from np.prod
    return (type(value), value.item())
  if isinstance(value, (tuple, list)):
    return (type(value), tuple(_static_key(v) for v in value))
  if isinstance(value, (np.dtype, type)):
    return value
  if isinstance(value, types.FunctionType):
    return _function_key(value)
  raise _NotStatic


def _function_key(fn: types.FunctionType) -> Any:
  """Code, closure contents and defaults of a pure initializer; raises _NotStatic when
  ``fn`` is not registered as pure or closes over anything but plain values."""
  if fn.__code__ not in _PURE_CODE:
    raise _NotStatic
  try:
    cells = tuple(_static_key(cell.cell_contents) for cell in fn.__closure__ or ())
  except ValueError:  # an empty cell (a closure variable not assigned yet)
    raise _NotStatic from None
  kwdefaults = sorted((fn.__kwdefaults__ or {}).items())
  return (fn.__code__, cells, _static_key(fn.__defaults__), _static_key(kwdefaults))


def _staged(init_fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]) -> Any:
  """The staged ``(key, data) -> init_fn(fold_in(key, data), *args, **kwargs)``, or None
  when ``init_fn`` or its arguments are not plain enough to stage."""
  try:
    cache_key = (
      _static_key(init_fn),
      _static_key(args),
      _static_key(sorted(kwargs.items())) if kwargs else (),
    )
  except _NotStatic:
    return None
  staged = _STAGED.get(cache_key)
  if staged is None:

    def derive_and_init(key: Any, data: Any) -> Any:
      return init_fn(jax.random.fold_in(key, data), *args, **kwargs)

    if len(_STAGED) >= _STAGED_LIMIT:
      _STAGED.clear()
    staged = _STAGED[cache_key] = jax.jit(derive_and_init, inline=True)
  return staged


def init_with_key(
  init_fn: Callable[..., Any],
  key: Any,
  suffix: tuple[Any, ...],
  args: tuple = (),
  kwargs: Mapping[str, Any] | None = None,
) -> Any:
  """``init_fn(fold_static(key, suffix), *args, **kwargs)``, staged and cached when ``key``
  is being traced and ``init_fn`` is a pure initializer with plain arguments.

  Example:

  >>> import jax
  >>> from flaxlike.core.staged_init import init_with_key
  >>> lecun = jax.nn.initializers.lecun_normal()
  >>> key = jax.random.key(0)
  >>> traced = jax.jit(lambda k: init_with_key(lecun, k, ('dense', 1), ((3, 2),)))(key)
  >>> bool((traced == init_with_key(lecun, key, ('dense', 1), ((3, 2),))).all())
  True
  """
  kwargs = kwargs or {}
  if suffix and isinstance(key, Tracer):
    staged = _staged(init_fn, args, kwargs)
    if staged is not None:
      return staged(key, np.uint32(_hash_suffix(suffix)))
  return init_fn(fold_static(key, suffix), *args, **kwargs)


def output_shapes(
  init_fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]
) -> list[tuple[int, ...]]:
  """Leaf shapes that ``init_fn(key, *args, **kwargs)`` produces, cached when hashable.

  Example:

  >>> import jax
  >>> from flaxlike.core.staged_init import output_shapes
  >>> output_shapes(jax.nn.initializers.zeros, ((3, 2),), {})
  [(3, 2)]
  """
  try:
    cache_key = (init_fn, args, tuple(sorted(kwargs.items())) if kwargs else ())
    shapes = _OUTPUT_SHAPES.get(cache_key)
  except TypeError:  # unhashable arguments (e.g. arrays): evaluate every time
    cache_key, shapes = None, None
  if shapes is not None:
    return shapes
  abstract = jax.eval_shape(lambda: init_fn(jax.random.key(0), *args, **kwargs))
  shapes = [tuple(leaf.shape) for leaf in jax.tree_util.tree_leaves(abstract)]
  if cache_key is not None:
    if len(_OUTPUT_SHAPES) >= _OUTPUT_SHAPES_LIMIT:
      _OUTPUT_SHAPES.clear()
    _OUTPUT_SHAPES[cache_key] = shapes
  return shapes
