"""``init``, ``apply``, ``bind`` and friends: running a Module against variables.

``Module`` inherits these methods from ``InitApplyMixin``; the functional forms
``nn.init``/``nn.apply`` wrap them. Each call binds a root scope, clones the top-level
module onto it, runs the method and invalidates the scope.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jax

from flaxlike import errors, traceback_util
from flaxlike.core import scope as core_scope
from flaxlike.core.scope import DenyList, Filter, Scope, union_filters
from flaxlike.linen._module_context import context as _context
from flaxlike.linen._module_context import intercept_methods
from flaxlike.typing import PRNGKey

T = TypeVar('T')


class InitApplyMixin:
  """The entry points of a Module; see ``flaxlike.linen.module.Module``."""

  # -- init / apply ----------------------------------------------------------------

  # The entry points are JAX API boundaries, as in Linen: an error raised below them gets
  # a traceback with JAX's and flaxlike's frames removed (see flaxlike.traceback_util).

  def _resolve_method(self, method: Any) -> Callable[..., Any]:
    if method is None:
      method = '__call__'
    if isinstance(method, str):
      fn = getattr(type(self), method, None)
      if fn is None or not callable(fn):
        raise errors.ApplyModuleInvalidMethodError(method)
      return fn
    if inspect.ismethod(method) and isinstance(method.__self__, InitApplyMixin):
      return method.__func__
    if callable(method):
      return method
    raise errors.ApplyModuleInvalidMethodError(method)

  def _run_bound(self, root: Scope, method: Any, capture: Any, args: tuple, kwargs: dict) -> Any:
    fn = self._resolve_method(method)
    module = self.clone(parent=root, _deep_clone=True)
    _context.capture_stack.append(capture)
    if capture:
      _context.refresh_hooks()
    try:
      return fn(module, *args, **kwargs)
    finally:
      _context.capture_stack.pop()
      if capture:
        _context.refresh_hooks()
      root.invalidate()

  @traceback_util.api_boundary
  def apply(
    self,
    variables: Mapping[str, Any],
    *args: Any,
    rngs: Mapping[str, PRNGKey] | None = None,
    method: Any = None,
    mutable: Filter = False,
    capture_intermediates: Any = False,
    **kwargs: Any,
  ) -> Any:
    """Runs ``method`` (``__call__`` by default) with the given variables.

    Args:
      variables: ``{collection: {...}}``, e.g. the output of ``init``.
      *args: positional arguments of the method.
      rngs: RNG streams, e.g. ``{'dropout': key}``.
      method: a method name, a method of this class, or ``fn(module, *args)``.
      mutable: the collections that may change; when not False the updated
        collections are returned too.
      capture_intermediates: True to record every ``__call__`` output in
        ``intermediates``, or a filter ``fn(module, method_name) -> bool``.
      **kwargs: keyword arguments of the method.

    Returns:
      The method's output, or ``(output, updated_collections)`` when ``mutable``.
    """
    _check_instance(self)
    if capture_intermediates:
      mutable = union_filters(mutable, 'intermediates')
    root = core_scope.bind(variables, rngs=rngs, mutable=mutable)
    y = self._run_bound(root, method, capture_intermediates, args, kwargs)
    if mutable is False:
      return y
    return y, core_scope._finish(root.mutable_variables())

  @traceback_util.api_boundary
  def init_with_output(
    self,
    rngs: Any,
    *args: Any,
    method: Any = None,
    mutable: Filter = DenyList('intermediates'),
    capture_intermediates: Any = False,
    **kwargs: Any,
  ) -> tuple[Any, dict[str, Any]]:
    """Like ``init`` but also returns the method's output: ``(output, variables)``."""
    _check_instance(self)
    if capture_intermediates:
      mutable = union_filters(mutable, 'intermediates')
    root = core_scope.bind(
      {}, rngs=core_scope._rngs_from_init_arg(rngs), mutable=mutable, flags={'initializing': True}
    )
    y = self._run_bound(root, method, capture_intermediates, args, kwargs)
    return y, core_scope._finish(root.mutable_variables())

  @traceback_util.api_boundary
  def init(
    self,
    rngs: Any,
    *args: Any,
    method: Any = None,
    mutable: Filter = DenyList('intermediates'),
    capture_intermediates: Any = False,
    **kwargs: Any,
  ) -> dict[str, Any]:
    """Creates the module's variables by running ``method`` on example inputs.

    Args:
      rngs: a PRNG key (the ``'params'`` stream) or a dict of keys per stream.
      *args: example inputs of the method.
      method: the method to run (``__call__`` by default).
      mutable: collections to create; ``intermediates`` is left out by default.
      capture_intermediates: as in ``apply``.
      **kwargs: keyword arguments of the method.

    Returns:
      ``{collection: {...}}`` as plain nested dicts, in creation order.
    """
    _check_instance(self)
    return self.init_with_output(
      rngs,
      *args,
      method=method,
      mutable=mutable,
      capture_intermediates=capture_intermediates,
      **kwargs,
    )[1]

  @traceback_util.api_boundary
  def lazy_init(
    self,
    rngs: Any,
    *args: Any,
    method: Any = None,
    mutable: Filter = DenyList('intermediates'),
    **kwargs: Any,
  ) -> dict[str, Any]:
    """Creates the variables from input shapes only; inputs may be ``ShapeDtypeStruct``.

    Raises:
      LazyInitError: when a variable depends on input values rather than shapes.
    """
    _check_instance(self)

    def scope_fn(root, *a, **k):
      return self._run_bound(root, method, False, a, k)

    return core_scope.lazy_init(scope_fn, mutable=mutable)(rngs, *args, **kwargs)

  def module_paths(
    self, rngs: Any, *args: Any, mutable: Filter = DenyList('intermediates'), **kwargs: Any
  ) -> dict[str, Any]:
    """Maps the path of every module that ``init`` would call to an unbound copy of it.

    The root is ``''``; children are ``'Dense_0'``, ``'Block_0/Dense_1'``. Only shapes
    are computed (under ``jax.eval_shape``).

    Example:

    >>> import jax, jax.numpy as jnp
    >>> import flaxlike as nn
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     return nn.Dense(2)(x)
    >>> list(Net().module_paths(jax.random.key(0), jnp.ones((1, 3))))
    ['', 'Dense_0']
    """
    _check_instance(self)
    found: dict[str, Any] = {}

    def record(next_fun, call_args, call_kwargs, ctx):
      path = '/'.join(ctx.module.scope.path)
      if path not in found:
        found[path] = ctx.module
      return next_fun(*call_args, **call_kwargs)

    with intercept_methods(record):
      jax.eval_shape(lambda r: self.init(r, *args, mutable=mutable, **kwargs), rngs)
    return {path: m.clone(parent=None, _deep_clone=True) for path, m in found.items()}

  def tabulate(self, rngs: Any, *args: Any, **kwargs: Any) -> str:
    """A plain-text summary table of this module on ``args``; see ``nn.tabulate``."""
    from flaxlike.linen import summary  # summary builds on Module; import on use

    return summary.module_tabulate(self, rngs, *args, **kwargs)

  @traceback_util.api_boundary
  def bind(
    self: T,
    variables: Mapping[str, Any],
    *args: Any,
    rngs: Mapping[str, PRNGKey] | None = None,
    mutable: Filter = False,
  ) -> T:
    """Returns a copy bound to ``variables``, for interactive use outside ``apply``.

    Example:

    >>> import jax, jax.numpy as jnp
    >>> import flaxlike as nn
    >>> model = nn.Dense(2)
    >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
    >>> model.bind(variables)(jnp.ones((1, 3))).shape
    (1, 2)
    """
    _check_instance(self)
    root = core_scope.bind(variables, rngs=rngs, mutable=mutable)
    return self.clone(parent=root, _deep_clone=True)  # type: ignore[attr-defined]

  def unbind(self: T) -> tuple[T, dict[str, Any]]:
    """Returns ``(unbound copy, variables)`` of a bound module."""
    if self.scope is None:  # type: ignore[attr-defined]
      raise errors.CallUnbindOnUnboundModuleError()
    self._try_setup()  # type: ignore[attr-defined]
    return self.clone(parent=None, _deep_clone=True), self.variables  # type: ignore[attr-defined]


def _check_instance(module: Any) -> None:
  if not isinstance(module, InitApplyMixin):
    raise errors.InvalidInstanceModuleError()


#################################################
# Functional forms
#################################################


def apply(
  fn: Callable[..., Any], module: Any, mutable: Filter = False, capture_intermediates: Any = False
) -> Callable[..., Any]:
  """Turns ``fn(module, *args)`` into ``apply_fn(variables, *args, rngs=None)``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> model = nn.Dense(2)
  >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
  >>> nn.apply(lambda m, x: m(x) * 2, model)(variables, jnp.ones((1, 3))).shape
  (1, 2)
  """

  def wrapper(variables, *args, rngs=None, **kwargs):
    return module.apply(
      variables,
      *args,
      rngs=rngs,
      method=fn,
      mutable=mutable,
      capture_intermediates=capture_intermediates,
      **kwargs,
    )

  return wrapper


def init_with_output(
  fn: Callable[..., Any],
  module: Any,
  mutable: Filter = DenyList('intermediates'),
  capture_intermediates: Any = False,
) -> Callable[..., Any]:
  """Turns ``fn(module, *args)`` into ``init_fn(rngs, *args) -> (output, variables)``."""

  def wrapper(rngs, *args, **kwargs):
    return module.init_with_output(
      rngs, *args, method=fn, mutable=mutable, capture_intermediates=capture_intermediates, **kwargs
    )

  return wrapper


def init(
  fn: Callable[..., Any],
  module: Any,
  mutable: Filter = DenyList('intermediates'),
  capture_intermediates: Any = False,
) -> Callable[..., Any]:
  """Turns ``fn(module, *args)`` into ``init_fn(rngs, *args) -> variables``."""

  def wrapper(rngs, *args, **kwargs):
    return module.init(
      rngs, *args, method=fn, mutable=mutable, capture_intermediates=capture_intermediates, **kwargs
    )

  return wrapper
