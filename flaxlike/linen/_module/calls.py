"""Method decorators and the wrapper every user method of a Module runs through.

Methods are wrapped once, when the class is created. The wrapper is the hottest code in
the library (it runs on every module call while tracing), so it does only what every
call needs: lazy ``setup``, the module stack, and compact-call bookkeeping; hooks
(interceptors, intermediates capture, profiling names) sit behind one flag check.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from flaxlike import errors
from flaxlike.configurations import config
from flaxlike.linen._module.context import call_with_hooks
from flaxlike.linen._module.context import context as _context
from flaxlike.linen._module.state import SetupState

T = TypeVar('T')


#################################################
# Method decorators
#################################################


def compact(fun: Callable[..., T]) -> Callable[..., T]:
  """Marks a method whose body may declare submodules and variables inline.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> class MLP(nn.Module):
  ...   @nn.compact
  ...   def __call__(self, x):
  ...     h = nn.relu(nn.Dense(4)(x))
  ...     return nn.Dense(2)(h)
  >>> params = MLP().init(jax.random.key(0), jnp.ones((1, 3)))['params']
  >>> list(params)
  ['Dense_0', 'Dense_1']
  """
  fun.compact = True  # type: ignore[attr-defined]
  return fun


def nowrap(fun: Callable[..., T]) -> Callable[..., T]:
  """Marks a helper method that must not be wrapped (no lazy setup, no naming scope).

  Use it for methods that only compute something from fields, e.g. a shape helper
  called from ``__post_init__``.
  """
  fun.nowrap = True  # type: ignore[attr-defined]
  return fun


def compact_name_scope(fun: Callable[..., T]) -> Callable[..., T]:
  """Runs a method compactly with its submodules under a sub-scope named after it.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> class AutoEncoder(nn.Module):
  ...   @nn.compact_name_scope
  ...   def up(self, x):
  ...     return nn.Dense(4)(x)
  ...   @nn.compact_name_scope
  ...   def down(self, x):
  ...     return nn.Dense(2)(x)
  ...   def __call__(self, x):
  ...     return self.down(self.up(x))
  >>> params = AutoEncoder().init(jax.random.key(0), jnp.ones((1, 2)))['params']
  >>> {k: list(v) for k, v in params.items()}
  {'up': ['Dense_0'], 'down': ['Dense_0']}
  """
  fun.compact_name_scope = True  # type: ignore[attr-defined]
  return fun


# Methods of Module itself and dunders are never wrapped.
_NEVER_WRAPPED = frozenset(
  {
    '__init__',
    '__post_init__',
    '__setattr__',
    '__getattr__',
    '__repr__',
    '__eq__',
    '__hash__',
    '__reduce__',
    '__init_subclass__',
    '__getstate__',
    '__setstate__',
  }
)


def wrap_method(fun: Callable[..., Any]) -> Callable[..., Any]:
  """Wraps a user method with lazy setup, the module stack and compact-call bookkeeping."""
  method_name = fun.__name__
  is_compact = getattr(fun, 'compact', False)
  is_setup = method_name == 'setup'

  @functools.wraps(fun)
  def wrapped(self, *args, **kwargs):
    state = self._state
    scope = self.scope
    recurrent = True
    if is_setup:
      if scope is None:
        raise errors.CallSetupUnboundModuleError()
      recurrent = state.in_setup
      state.in_setup = True
    elif state.setup_called is not SetupState.DONE and scope is not None:
      self._try_setup()
    if is_compact:
      if scope is None:
        raise errors.CallCompactUnboundModuleError()
      recurrent = state.in_compact_method
      state.in_compact_method = True
    stack = _context.module_stack
    stack.append(self)
    try:
      if _context.hooks_active or config.flax_profile:
        return call_with_hooks(self, fun, method_name, args, kwargs)
      return fun(self, *args, **kwargs)
    finally:
      stack.pop()
      if not recurrent:
        if is_compact:
          self.scope.rewind()
        state.reset()

  wrapped.__flaxlike_method__ = fun  # type: ignore[attr-defined]
  return wrapped


def _wrap_name_scope_method(fun: Callable[..., Any]) -> Callable[..., Any]:
  method_name = fun.__name__

  @functools.wraps(fun)
  def wrapped(self, *args, **kwargs):
    if self.scope is None:
      raise errors.CallCompactUnboundModuleError()
    if self._state.setup_called is not SetupState.DONE:
      self._try_setup()
    holder = self._state.name_scopes.get(method_name)
    if holder is None:
      holder = self._name_scope_holder(method_name)
    holder_state = holder._state
    recurrent = holder_state.in_compact_method
    holder_state.in_compact_method = True
    stack = _context.module_stack
    stack.append(holder)
    try:
      return fun(self, *args, **kwargs)
    finally:
      stack.pop()
      if not recurrent:
        holder.scope.rewind()
        holder_state.reset()

  wrapped.__flaxlike_method__ = fun  # type: ignore[attr-defined]
  return wrapped


def _wrap_property(prop: property) -> property:
  getter = prop.fget
  prop_name = getattr(getter, '__name__', 'property')

  @functools.wraps(getter)  # type: ignore[arg-type]
  def fget(self):
    if self.scope is not None and self._state.setup_called is not SetupState.DONE:
      self._try_setup()
    try:
      return getter(self)  # type: ignore[misc]
    except AttributeError as e:
      # Module.__getattr__ would otherwise turn a typo inside the property into a
      # misleading "no attribute <property name>".
      raise errors.DescriptorAttributeError(type(self).__name__, prop_name, e) from e

  return property(fget, prop.fset, prop.fdel, prop.__doc__)


class _DescriptorView:
  """Another descriptor (not a property) of a Module class, seen through a wrapper that
  reports an ``AttributeError`` raised inside ``__get__`` as ``DescriptorAttributeError``:
  otherwise Python would retry through ``Module.__getattr__``, whose "no attribute" (maybe
  "defined in setup()") hides the real cause, as Linen's wrapper does."""

  __slots__ = ('wrapped', 'attr_name')

  def __init__(self, wrapped: Any, attr_name: str):
    self.wrapped = wrapped
    self.attr_name = attr_name

  def __get__(self, obj: Any, objtype: Any = None) -> Any:
    try:
      return self.wrapped.__get__(obj, objtype)
    except AttributeError as e:
      if obj is None:  # class access (hasattr(cls, ...), abc checks): unchanged
        raise
      raise errors.DescriptorAttributeError(type(obj).__name__, self.attr_name, e) from e

  def __getattr__(self, name: str) -> Any:
    # Everything else (``__doc__``, ``__isabstractmethod__``, the descriptor's own
    # attributes) is the wrapped descriptor's.
    if name in _DescriptorView.__slots__:
      raise AttributeError(name)
    return getattr(self.wrapped, name)


class _DataDescriptorView(_DescriptorView):
  """A ``_DescriptorView`` of a data descriptor: assignment and deletion go through."""

  __slots__ = ()

  def __set__(self, obj: Any, value: Any) -> None:
    self.wrapped.__set__(obj, value)

  def __delete__(self, obj: Any) -> None:
    self.wrapped.__delete__(obj)


def _is_plain_descriptor(value: Any) -> bool:
  """A descriptor that is not a method, property, static or class method."""
  return (
    not callable(value)
    and not isinstance(value, (property, staticmethod, classmethod, _DescriptorView))
    and hasattr(type(value), '__get__')
    and not getattr(value, 'nowrap', False)
  )


def wrap_class_methods(cls: type) -> None:
  fields = getattr(cls, '__dataclass_fields__', {})
  for name, value in list(cls.__dict__.items()):
    if name in _NEVER_WRAPPED or (name.startswith('__') and name != '__call__'):
      continue
    if isinstance(value, property):
      if value.fget is not None and not getattr(value.fget, 'nowrap', False):
        setattr(cls, name, _wrap_property(value))
      continue
    if name not in fields and _is_plain_descriptor(value):
      is_data = hasattr(type(value), '__set__') or hasattr(type(value), '__delete__')
      setattr(cls, name, (_DataDescriptorView if is_data else _DescriptorView)(value, name))
      continue
    if not inspect.isfunction(value) or getattr(value, 'nowrap', False):
      continue
    if hasattr(value, '__flaxlike_method__'):
      continue
    if getattr(value, 'compact_name_scope', False):
      setattr(cls, name, _wrap_name_scope_method(value))
    else:
      setattr(cls, name, wrap_method(value))
