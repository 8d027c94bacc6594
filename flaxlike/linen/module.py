"""The Linen-style Module: a dataclass that declares variables through a bound Scope.

Lifecycle (see docs/design/module-lifecycle.md):

1. **Construction.** Every subclass is a dataclass with two extra keyword-only fields,
   ``parent`` and ``name``. ``__post_init__`` finds the parent (the module whose method
   is running), names the module (``ClassName_N`` in compact methods) and pushes its
   child scope. Top-level modules have no parent and no scope: they are unbound.
2. **Binding.** ``init``/``apply``/``bind`` clone the top-level module with a root
   scope as parent. Submodules bind themselves as they are constructed (compact) or as
   they are assigned (setup), and modules passed in fields are adopted.
3. **Calls.** Each user method is wrapped once, at class creation: the wrapper runs
   ``setup`` lazily on first use, tracks which module is running, and after the
   outermost compact call resets names so the next call reuses the same scopes.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import typing
from typing import Any, Callable, Mapping, TypeVar

import jax
import jax.numpy as jnp
from typing_extensions import dataclass_transform

from flaxlike import errors
from flaxlike.configurations import config
from flaxlike.core import scope as core_scope
from flaxlike.core.frozen_dict import FrozenDict
from flaxlike.core.scope import DenyList, Filter, Scope, Variable, union_filters
from flaxlike.linen import _module_naming
from flaxlike.linen._module_context import (
  InterceptorContext as InterceptorContext,
  call_with_hooks,
  context as _context,
  disable_named_call as disable_named_call,
  enable_named_call as enable_named_call,
  intercept_methods as intercept_methods,
  override_named_call as override_named_call,
)

T = TypeVar('T')
PRNGKey = Any
Array = Any


class _UnspecifiedParent:
  """Default of ``parent``: take the module whose method is running, if any."""

  def __repr__(self) -> str:
    return '_unspecified_parent'

  def __reduce__(self):
    return (_get_unspecified_parent, ())


_unspecified_parent = _UnspecifiedParent()


def _get_unspecified_parent() -> _UnspecifiedParent:
  return _unspecified_parent


class _SetupState(enum.IntEnum):
  NEW = 0
  # A lifted transform has run setup on a clone; setup submodules may alias scopes.
  TRANSFORMED = 1
  DONE = 2


class _ModuleState:
  """Mutable bookkeeping of one module instance (modules themselves are frozen)."""

  __slots__ = (
    'in_compact_method',
    'in_setup',
    'setup_called',
    'is_initialized',
    'autoname_cursor',
    'children',
    'adopted',
    'name_scopes',
  )

  def __init__(self):
    self.in_compact_method = False
    self.in_setup = False
    self.setup_called = _SetupState.NEW
    self.is_initialized = False
    self.autoname_cursor: dict[str, int] = {}
    self.children: dict[str, Any] = {}
    self.adopted: dict[int, Any] = {}
    self.name_scopes: dict[str, Any] = {}

  def reset(self) -> None:
    self.in_compact_method = False
    self.in_setup = False
    self.autoname_cursor = {}


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
_NEVER_WRAPPED = frozenset({
  '__init__', '__post_init__', '__setattr__', '__getattr__', '__repr__', '__eq__',
  '__hash__', '__reduce__', '__init_subclass__', '__getstate__', '__setstate__',
})


def _wrap_method(fun: Callable[..., Any]) -> Callable[..., Any]:
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
    elif state.setup_called is not _SetupState.DONE and scope is not None:
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
    if self._state.setup_called is not _SetupState.DONE:
      self._try_setup()
    holder = self._state.name_scopes.get(method_name)
    if holder is None:
      # Bound directly to a child scope: the method itself need not be compact.
      holder = _NameScope(parent=self.scope.push(method_name), name=method_name)
      self._state.name_scopes[method_name] = holder
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

  @functools.wraps(getter)  # type: ignore[arg-type]
  def fget(self):
    if self.scope is not None and self._state.setup_called is not _SetupState.DONE:
      self._try_setup()
    try:
      return getter(self)  # type: ignore[misc]
    except AttributeError as e:
      # Module.__getattr__ would otherwise turn a typo inside the property into a
      # misleading "no attribute <property name>".
      raise errors.DescriptorAttributeError() from e

  return property(fget, prop.fset, prop.fdel, prop.__doc__)


def _wrap_class_methods(cls: type) -> None:
  for name, value in list(cls.__dict__.items()):
    if name in _NEVER_WRAPPED or (name.startswith('__') and name != '__call__'):
      continue
    if isinstance(value, property):
      if value.fget is not None and not getattr(value.fget, 'nowrap', False):
        setattr(cls, name, _wrap_property(value))
      continue
    if not inspect.isfunction(value) or getattr(value, 'nowrap', False):
      continue
    if hasattr(value, '__flaxlike_method__'):
      continue
    if getattr(value, 'compact_name_scope', False):
      setattr(cls, name, _wrap_name_scope_method(value))
    else:
      setattr(cls, name, _wrap_method(value))


#################################################
# Module
#################################################


def _check_post_init_called(init: Callable[..., None]) -> Callable[..., None]:
  @functools.wraps(init)
  def checked_init(self, *args, **kwargs):
    init(self, *args, **kwargs)
    if '_state' not in self.__dict__:
      raise errors.IncorrectPostInitOverrideError()

  return checked_init


def _rebuild_module(cls: type, attrs: dict[str, Any]) -> Any:
  return cls(**attrs)


@dataclass_transform(field_specifiers=(dataclasses.field,))  # type: ignore[literal-required]
class Module:
  """Base class of all neural-network modules.

  Subclasses are dataclasses: declare hyperparameters as fields, and submodules and
  variables either in ``setup()`` or inline in a ``@compact`` method.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> class Linear(nn.Module):
  ...   features: int
  ...   @nn.compact
  ...   def __call__(self, x):
  ...     w = self.param('w', nn.initializers.lecun_normal(), (x.shape[-1], self.features))
  ...     return x @ w
  >>> variables = Linear(3).init(jax.random.key(0), jnp.ones((2, 4)))
  >>> Linear(3).apply(variables, jnp.ones((2, 4))).shape
  (2, 3)
  """

  if typing.TYPE_CHECKING:
    parent: Module | Scope | _UnspecifiedParent | None
    name: str | None

    def __init__(self, *args, **kwargs):  # pragma: no cover
      pass

  scope: Scope | None = None
  _field_names: tuple[str, ...] = ()

  def __init_subclass__(cls, kw_only: bool = False, **kwargs: Any) -> None:
    super().__init_subclass__(**kwargs)
    own_annotations = cls.__dict__.get('__annotations__', {})
    if 'parent' in own_annotations or 'name' in own_annotations:
      raise errors.ReservedModuleAttributeError(own_annotations)
    inherited = getattr(cls, '__dataclass_fields__', {})
    if 'parent' not in inherited:
      annotations = dict(own_annotations)
      annotations['parent'] = Any
      annotations['name'] = 'str | None'
      cls.__annotations__ = annotations
      cls.parent = dataclasses.field(  # type: ignore[attr-defined]
        default=_unspecified_parent, kw_only=True, repr=False, compare=False, hash=False
      )
      cls.name = dataclasses.field(default=None, kw_only=True)  # type: ignore[attr-defined]
    dataclasses.dataclass(
      cls, unsafe_hash='__hash__' not in cls.__dict__, repr=False, kw_only=kw_only
    )
    cls._field_names = tuple(
      f.name for f in dataclasses.fields(cls) if f.init and f.name not in ('parent', 'name')
    )
    if cls.__post_init__ is not Module.__post_init__:
      cls.__init__ = _check_post_init_called(cls.__init__)  # type: ignore[method-assign]
    _wrap_class_methods(cls)

  # -- construction ----------------------------------------------------------------

  def __post_init__(self) -> None:
    object.__setattr__(self, '_state', _ModuleState())
    if self.parent is _unspecified_parent:
      stack = _context.module_stack
      object.__setattr__(self, 'parent', stack[-1] if stack else None)
    self._attach_to_parent()

  def _attach_to_parent(self) -> None:
    """Names this module and pushes its scope, if its parent is bound."""
    parent = self.parent
    state = self._state
    if parent is None:
      state.is_initialized = True
      return
    if isinstance(parent, Module):
      parent_state = parent._state
      if parent_state.in_setup and self.name is None:
        # Named by the setup attribute it is assigned to (_module_naming).
        state.is_initialized = True
        return
      if not (parent_state.in_setup or parent_state.in_compact_method or not parent_state.is_initialized):
        raise errors.AssignSubModuleError(type(self).__name__)
      parent_scope = parent.scope
      if parent_scope is None:
        state.is_initialized = True
        return
      name = self.name
      if name is None:
        prefix = type(self).__name__
        cursor = parent_state.autoname_cursor.get(prefix, 0)
        name = f'{prefix}_{cursor}'
        parent_state.autoname_cursor[prefix] = cursor + 1
        object.__setattr__(self, 'name', name)
      reuse = parent_state.in_setup and parent_state.setup_called is _SetupState.TRANSFORMED
      if not reuse and name in parent_scope.reservations:
        raise errors.NameInUseError('submodule', name, type(parent).__name__)
      parent_state.children[name] = self
      object.__setattr__(self, 'scope', parent_scope.push(name, reuse=reuse))
    elif isinstance(parent, Scope):
      object.__setattr__(self, 'scope', parent)
    else:
      raise ValueError(
        f'parent of {type(self).__name__} must be a Module, a Scope or None, got '
        f'{type(parent).__name__}.'
      )
    for field_name in self._field_names:
      value = self.__dict__[field_name]
      registered = _module_naming.register_submodules(
        self, field_name, value, Module, state.adopted
      )
      if registered is not value:
        object.__setattr__(self, field_name, registered)
    state.is_initialized = True

  def __setattr__(self, name: str, value: Any) -> None:
    state = self.__dict__.get('_state')
    if state is None or (not state.in_setup and not state.is_initialized):
      object.__setattr__(self, name, value)
      return
    if not state.in_setup:
      raise errors.SetAttributeFrozenModuleError(type(self).__name__, name, value)
    if name in self._field_names:
      raise errors.SetAttributeInModuleSetupError()
    value = _module_naming.register_submodules(self, name, value, Module, state.adopted)
    object.__setattr__(self, name, value)

  if not typing.TYPE_CHECKING:

    def __getattr__(self, name: str) -> Any:
      # Only reached when normal lookup fails: maybe setup() defines it.
      state = self.__dict__.get('_state')
      if (
        state is not None
        and not name.startswith('__')
        and not state.in_setup
        and state.setup_called is not _SetupState.DONE
        and self.__dict__.get('scope') is not None
      ):
        self._try_setup()
        if name in self.__dict__:
          return self.__dict__[name]
      raise AttributeError(
        f'"{type(self).__name__}" object has no attribute "{name}". If "{name}" is '
        'defined in setup(), it exists only on bound modules (inside init/apply, or '
        'after module.bind(variables)).'
      )

  def __reduce__(self):
    attrs = {f: getattr(self, f) for f in self._field_names}
    attrs['name'] = self.name
    return (_rebuild_module, (type(self), attrs))

  def _try_setup(self, shallow: bool = False) -> None:
    """Runs ``setup`` once, on first use of a bound module."""
    state = self._state
    if state.in_setup or state.setup_called is _SetupState.DONE or self.scope is None:
      return
    state.in_setup = True
    try:
      if not shallow:
        self.setup()
        state.setup_called = _SetupState.DONE
    finally:
      state.in_setup = False

  def setup(self) -> None:
    """Declares submodules and variables; runs lazily on a bound module's first use.

    Override it instead of ``__init__``/``__post_init__`` to build submodules. Modules
    assigned to attributes here are named after the attribute.
    """

  @property
  def _initialization_allowed(self) -> bool:
    state = self._state
    return not state.is_initialized or state.in_setup or state.in_compact_method

  # -- cloning ---------------------------------------------------------------------

  def clone(self: T, *, parent: Any = None, _deep_clone: bool = False, **updates: Any) -> T:
    """Returns a copy with fields replaced by ``updates`` and the given parent.

    Args:
      parent: the parent of the copy (None: unbound).
      **updates: new field values.
    """
    attrs = {f: getattr(self, f) for f in self._field_names}  # type: ignore[attr-defined]
    if _deep_clone:
      attrs = {k: _unbind_field(v) for k, v in attrs.items()}
    attrs['name'] = self.name  # type: ignore[attr-defined]
    attrs.update(updates)
    attrs['parent'] = parent
    return type(self)(**attrs)

  def copy(self: T, *, parent: Any = _unspecified_parent, name: str | None = None, **updates: Any) -> T:
    """A clone that attaches to the running module by default (use it in ``setup``)."""
    return self.clone(parent=parent, name=name, **updates)  # type: ignore[attr-defined]

  # -- variables -------------------------------------------------------------------

  def _bound_scope(self, what: str) -> Scope:
    scope = self.scope
    if scope is None:
      raise ValueError(
        f"Can't {what} on unbound module {type(self).__name__}: use it inside init/apply "
        'or after module.bind(variables).'
      )
    return scope

  def param(self, name: str, init_fn: Callable[..., T], *init_args: Any, unbox: bool = True, **init_kwargs: Any) -> T:
    """Declares and returns parameter ``name`` of this module.

    Args:
      name: the parameter name (unique within this module).
      init_fn: ``init_fn(key, *init_args, **init_kwargs)`` creates the value.
      *init_args: further arguments of ``init_fn`` (usually the shape, then dtype).
      unbox: strip ``AxisMetadata`` boxes from the returned value.

    Returns:
      The parameter value.
    """
    scope = self._bound_scope('create params')
    if not self._initialization_allowed:
      raise ValueError(
        f'Parameters of {type(self).__name__} must be initialized in `setup()` or in a '
        'method wrapped in `@compact`.'
      )
    if scope.name_reserved(name, 'params'):
      raise errors.NameInUseError('param', name, type(self).__name__)
    return scope.param(name, init_fn, *init_args, unbox=unbox, **init_kwargs)

  def variable(
    self, col: str, name: str, init_fn: Callable[..., T] | None = None, *init_args: Any,
    unbox: bool = True, **init_kwargs: Any,
  ) -> Variable[T]:
    """Declares variable ``name`` in collection ``col``; returns a ``Variable`` handle.

    ``init_fn(*init_args)`` creates it when missing and ``col`` is mutable; it gets no
    RNG key (call ``self.make_rng`` inside it if needed).
    """
    scope = self._bound_scope('create variables')
    if not self._initialization_allowed:
      raise ValueError(
        f'Variables of {type(self).__name__} must be initialized in `setup()` or in a '
        'method wrapped in `@compact`.'
      )
    if scope.name_reserved(name, col):
      raise errors.NameInUseError('variable', name, type(self).__name__)
    return scope.variable(col, name, init_fn, *init_args, unbox=unbox, **init_kwargs)

  def has_variable(self, col: str, name: str) -> bool:
    """Whether variable ``name`` exists in collection ``col`` of this module."""
    return self._bound_scope('read variables').has_variable(col, name)

  def get_variable(self, col: str, name: str, default: Any = None) -> Any:
    """The value of variable ``name`` in ``col``, or ``default``."""
    return self._bound_scope('read variables').get_variable(col, name, default)

  def put_variable(self, col: str, name: str, value: Any) -> None:
    """Sets variable ``name`` in collection ``col`` (which must be mutable)."""
    self._bound_scope('write variables').put_variable(col, name, value)

  def is_mutable_collection(self, col: str) -> bool:
    """Whether collection ``col`` may be written in the current call."""
    return self._bound_scope('inspect collections').is_mutable_collection(col)

  def is_initializing(self) -> bool:
    """True inside ``init``/``init_with_output``."""
    return bool(self._bound_scope('inspect the call').get_flag('initializing', False))

  def has_rng(self, name: str) -> bool:
    """Whether RNG stream ``name`` was given to this call."""
    return self._bound_scope('use RNGs').has_rng(name)

  def make_rng(self, name: str = 'params') -> PRNGKey:
    """Draws a fresh key from RNG stream ``name`` (falls back to ``'params'``)."""
    return self._bound_scope('use RNGs').make_rng(name)

  @property
  def variables(self) -> dict[str, Any]:
    """A copy of this module's variables, by collection."""
    return self._bound_scope('access variables').variables()

  @property
  def path(self) -> tuple[str, ...]:
    """The names from the root module to this one."""
    return self._bound_scope('access the path').path

  def sow(
    self, col: str, name: str, value: Any,
    reduce_fn: Callable[[Any, Any], Any] = lambda xs, x: xs + (x,),
    init_fn: Callable[[], Any] = lambda: (),
  ) -> bool:
    """Stores an intermediate value in collection ``col`` when it is mutable.

    By default values are appended to a tuple, so calling a module twice records both.

    Returns:
      Whether the value was stored.
    """
    scope = self._bound_scope('sow')
    if not scope.is_mutable_collection(col):
      return False
    if not scope.has_variable(col, name):
      scope.reserve(name, col)
      scope.put_variable(col, name, reduce_fn(init_fn(), value))
    else:
      scope.put_variable(col, name, reduce_fn(scope.get_variable(col, name), value))
    return True

  def perturb(self, name: str, value: T, collection: str = 'perturbations') -> T:
    """Adds a zero-valued variable to ``value`` so gradients w.r.t. it can be taken.

    ``init`` creates the zeros; differentiating ``apply`` with respect to the
    ``perturbations`` collection gives the gradient of the loss at this intermediate.
    """
    scope = self._bound_scope('perturb')
    if scope.is_mutable_collection(collection) and not scope.has_variable(collection, name):
      scope.reserve(name, collection)
      zeros = jax.tree_util.tree_map(lambda x: jnp.zeros_like(x, dtype=jnp.result_type(x)), value)
      scope.put_variable(collection, name, zeros)
    if not scope.is_collection_empty(collection):
      if not scope.has_variable(collection, name):
        raise ValueError(
          f'Perturbation collection "{collection}" was passed in, but it has no variable '
          f'"{name}" at {scope.path_text}.'
        )
      value = jax.tree_util.tree_map(jnp.add, value, scope.get_variable(collection, name))
    return value

  # -- init / apply ----------------------------------------------------------------

  def _resolve_method(self, method: Any) -> Callable[..., Any]:
    if method is None:
      method = '__call__'
    if isinstance(method, str):
      fn = getattr(type(self), method, None)
      if fn is None or not callable(fn):
        raise errors.ApplyModuleInvalidMethodError(method)
      return fn
    if inspect.ismethod(method) and isinstance(method.__self__, Module):
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

  def apply(
    self, variables: Mapping[str, Any], *args: Any, rngs: Mapping[str, PRNGKey] | None = None,
    method: Any = None, mutable: Filter = False, capture_intermediates: Any = False, **kwargs: Any,
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

  def init_with_output(
    self, rngs: Any, *args: Any, method: Any = None,
    mutable: Filter = DenyList('intermediates'), capture_intermediates: Any = False, **kwargs: Any,
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

  def init(
    self, rngs: Any, *args: Any, method: Any = None,
    mutable: Filter = DenyList('intermediates'), capture_intermediates: Any = False, **kwargs: Any,
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
      rngs, *args, method=method, mutable=mutable, capture_intermediates=capture_intermediates,
      **kwargs,
    )[1]

  def lazy_init(
    self, rngs: Any, *args: Any, method: Any = None,
    mutable: Filter = DenyList('intermediates'), **kwargs: Any,
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
  ) -> dict[str, Module]:
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
    found: dict[str, Module] = {}

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

  def bind(self: T, variables: Mapping[str, Any], *args: Any, rngs: Mapping[str, PRNGKey] | None = None,
           mutable: Filter = False) -> T:
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

  # -- repr ------------------------------------------------------------------------

  def __repr__(self) -> str:
    return _module_repr(self)


def _check_instance(module: Any) -> None:
  if not isinstance(module, Module):
    raise errors.InvalidInstanceModuleError()


def _unbind_field(value: Any) -> Any:
  """Detaches modules held in a field so a fresh binding adopts them again."""
  if isinstance(value, Module):
    if value.parent is None:
      return value
    return value.clone(parent=None, _deep_clone=True)
  if type(value) in (list, tuple, dict, FrozenDict):
    return _module_naming.map_modules(
      lambda _, m: _unbind_field(m), value, lambda v: isinstance(v, Module)
    )
  return value


def _module_repr(module: Module, depth: int = 0) -> str:
  max_depth = config.flax_max_repr_depth
  cls_name = type(module).__name__
  if max_depth is not None and depth >= max_depth:
    return f'{cls_name}(...)'
  lines = []
  for field_name in module._field_names:
    value = getattr(module, field_name)
    text = _module_repr(value, depth + 1) if isinstance(value, Module) else repr(value)
    lines.append(f'{field_name} = {text}')
  if not lines:
    return f'{cls_name}()'
  body = '\n'.join('    ' + line.replace('\n', '\n    ') for line in ['# attributes', *lines])
  return f'{cls_name}(\n{body}\n)'


class _NameScope(Module):
  """The sub-scope holder of a ``compact_name_scope`` method (no variables of its own)."""


def share_scope(module: Module, other: Module, /) -> None:
  """Makes ``other`` use ``module``'s scope, so its variables sit at ``module``'s level.

  Call it in ``setup`` (or a compact method) of ``module`` with a submodule ``other``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> class Wrapper(nn.Module):
  ...   def setup(self):
  ...     self.dense = nn.Dense(2)
  ...     nn.share_scope(self, self.dense)
  ...   def __call__(self, x):
  ...     return self.dense(x)
  >>> params = Wrapper().init(jax.random.key(0), jnp.ones((1, 3)))['params']
  >>> list(params)
  ['kernel', 'bias']
  """
  if module.scope is None or other.scope is None:
    raise errors.CallShareScopeOnUnboundModuleError()
  other_scope = other.scope
  if other_scope.parent is module.scope and other_scope.name in module.scope.reservations:
    taken = module.scope.reservations[other_scope.name]
    taken.discard(None)
    if not taken:
      del module.scope.reservations[other_scope.name]
  object.__setattr__(other, 'scope', module.scope)


#################################################
# Functional forms
#################################################


def apply(fn: Callable[..., Any], module: Module, mutable: Filter = False,
          capture_intermediates: Any = False) -> Callable[..., Any]:
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
    return module.apply(variables, *args, rngs=rngs, method=fn, mutable=mutable,
                        capture_intermediates=capture_intermediates, **kwargs)

  return wrapper


def init_with_output(fn: Callable[..., Any], module: Module, mutable: Filter = DenyList('intermediates'),
                     capture_intermediates: Any = False) -> Callable[..., Any]:
  """Turns ``fn(module, *args)`` into ``init_fn(rngs, *args) -> (output, variables)``."""

  def wrapper(rngs, *args, **kwargs):
    return module.init_with_output(rngs, *args, method=fn, mutable=mutable,
                                   capture_intermediates=capture_intermediates, **kwargs)

  return wrapper


def init(fn: Callable[..., Any], module: Module, mutable: Filter = DenyList('intermediates'),
         capture_intermediates: Any = False) -> Callable[..., Any]:
  """Turns ``fn(module, *args)`` into ``init_fn(rngs, *args) -> variables``."""

  def wrapper(rngs, *args, **kwargs):
    return module.init(rngs, *args, method=fn, mutable=mutable,
                       capture_intermediates=capture_intermediates, **kwargs)

  return wrapper


def merge_param(name: str, a: T | None, b: T | None) -> T:
  """Returns whichever of ``a`` (field) and ``b`` (call argument) is set.

  Raises:
    ValueError: when both or neither are set.
  """
  if a is None and b is None:
    raise ValueError(f'Parameter "{name}" must be passed to the constructor or at call time.')
  if a is not None and b is not None:
    raise ValueError(
      f'Parameter "{name}" was passed to the constructor and at call time. Should be '
      'passed just once.'
    )
  return a if b is None else b  # type: ignore[return-value]


__all__ = [
  'Module', 'compact', 'nowrap', 'compact_name_scope', 'share_scope', 'apply', 'init',
  'init_with_output', 'merge_param', 'intercept_methods', 'InterceptorContext', 'Variable',
  'enable_named_call', 'disable_named_call', 'override_named_call',
]
