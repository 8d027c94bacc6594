"""Per-thread state of module method calls: the stack of running modules and the hooks.

Every wrapped module method reads this once per call, so it is kept to a few plain
attributes: the module stack (to find the parent of a module being constructed) and a
single ``hooks_active`` flag that is False unless an interceptor or intermediates capture
is on (plus the ``flax_profile`` config flag, read directly so ``config.update`` takes
effect at once), so the common call pays for none of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax

from flaxlike.configurations import config


class _Context(threading.local):
  def __init__(self):
    self.module_stack: list[Any] = []
    self.interceptors: list[Callable[..., Any]] = []
    # One entry per running init/apply: the capture_intermediates filter (or False).
    self.capture_stack: list[Any] = []
    self.hooks_active = False

  def __reduce__(self) -> str:
    # A singleton: pickles (e.g. cloudpickle copying a wrapped method) refer to the
    # module global instead of copying per-thread state.
    return 'context'

  def refresh_hooks(self) -> None:
    capture = bool(self.capture_stack and self.capture_stack[-1])
    self.hooks_active = bool(self.interceptors) or capture


context = _Context()


@dataclasses.dataclass(frozen=True)
class InterceptorContext:
  """What an interceptor is told about the call it intercepts.

  Attributes:
    module: the module whose method is called.
    method_name: the method's name, e.g. ``'__call__'``.
    orig_method: the original method, bound to the module (without the interceptors).
  """

  module: Any
  method_name: str
  orig_method: Callable[..., Any]


@contextlib.contextmanager
def intercept_methods(interceptor: Callable[..., Any]) -> Iterator[None]:
  """Routes every module method call in the ``with`` block through ``interceptor``.

  The interceptor is called as ``interceptor(next_fun, args, kwargs, context)`` and
  usually returns ``next_fun(*args, **kwargs)``, possibly changing arguments or result.
  Interceptors entered later run first (outermost).

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> def double_outputs(next_fun, args, kwargs, context):
  ...   return next_fun(*args, **kwargs) * 2
  >>> model = nn.Dense(2, kernel_init=nn.initializers.ones)
  >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
  >>> with nn.intercept_methods(double_outputs):
  ...   model.apply(variables, jnp.ones((1, 3)))
  Array([[6., 6.]], dtype=float32)
  """
  context.interceptors.append(interceptor)
  context.refresh_hooks()
  try:
    yield
  finally:
    context.interceptors.pop()
    context.refresh_hooks()


def _capture_filter(
  capture: bool | Callable[[Any, str], bool] | None,
) -> Callable[[Any, str], bool] | None:
  if capture is True:
    return _is_call
  if callable(capture):
    return capture
  return None


def _is_call(module: Any, method_name: str) -> bool:
  return method_name == '__call__'


def profiling_name(module: Any, method_name: str) -> str:
  """The ``jax.named_scope`` name of a method call: ``Dense_0`` or ``Dense_0.encode``."""
  base = module.name or type(module).__name__
  return base if method_name == '__call__' else f'{base}.{method_name}'


def enable_named_call() -> None:
  """Runs every module method under a ``jax.named_scope`` named after the module."""
  config.update('flax_profile', True)


def disable_named_call() -> None:
  """Stops wrapping module methods in ``jax.named_scope``."""
  config.update('flax_profile', False)


@contextlib.contextmanager
def override_named_call(enable: bool = True) -> Iterator[None]:
  """Turns named-call profiling on or off for the duration of a ``with`` block."""
  with config.temp_flip_flag('flax_profile', enable):
    yield


def call_with_hooks(
  module: Any, fun: Callable[..., Any], method_name: str, args: tuple, kwargs: dict
) -> Any:
  """Runs ``fun`` through interceptors, profiling scopes and intermediates capture."""
  if not context.hooks_active:  # profiling alone: the cheap path
    with jax.named_scope(profiling_name(module, method_name)):
      return fun(module, *args, **kwargs)

  def run(*a, **k):
    return fun(module, *a, **k)

  if context.interceptors:
    # The context's orig_method is the method bound to the module, as in Linen; the
    # interceptor entered first is the outermost, so the innermost one sees the method.
    ctx = InterceptorContext(module, method_name, run)
    for interceptor in reversed(context.interceptors):
      run = _chain(interceptor, run, ctx)
  if config.flax_profile:
    with jax.named_scope(profiling_name(module, method_name)):
      y = run(*args, **kwargs)
  else:
    y = run(*args, **kwargs)
  capture = _capture_filter(context.capture_stack[-1]) if context.capture_stack else None
  if capture is not None and module.scope is not None and capture(module, method_name):
    module.sow('intermediates', method_name, y)
  return y


def _chain(interceptor: Callable[..., Any], next_fun: Callable[..., Any], ctx: InterceptorContext):
  def run(*args, **kwargs):
    return interceptor(next_fun, args, kwargs, ctx)

  return run
