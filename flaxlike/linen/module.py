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
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from typing_extensions import dataclass_transform

from flaxlike import errors
from flaxlike.configurations import config
from flaxlike.core.frozen_dict import FrozenDict
from flaxlike.core.scope import Scope, Variable
from flaxlike.linen import _module_naming
from flaxlike.linen._module_calls import compact as compact
from flaxlike.linen._module_calls import compact_name_scope as compact_name_scope
from flaxlike.linen._module_calls import nowrap as nowrap
from flaxlike.linen._module_context import InterceptorContext as InterceptorContext
from flaxlike.linen._module_context import context as _context
from flaxlike.linen._module_context import disable_named_call as disable_named_call
from flaxlike.linen._module_context import enable_named_call as enable_named_call
from flaxlike.linen._module_context import intercept_methods as intercept_methods
from flaxlike.linen._module_context import override_named_call as override_named_call
from flaxlike.linen._module_dataclass import make_module_dataclass
from flaxlike.linen._module_init_apply import InitApplyMixin
from flaxlike.linen._module_init_apply import apply as apply
from flaxlike.linen._module_init_apply import init as init
from flaxlike.linen._module_init_apply import init_with_output as init_with_output
from flaxlike.linen._module_state import (
  _ModuleState,
  _SetupState,
  _unspecified_parent,
  _UnspecifiedParent,
)
from flaxlike.typing import PRNGKey

T = TypeVar('T')


def _rebuild_module(cls: type, attrs: dict[str, Any]) -> Any:
  return cls(**attrs)


@dataclass_transform(field_specifiers=(dataclasses.field,))  # type: ignore[literal-required]
class Module(InitApplyMixin):
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
    make_module_dataclass(cls, Module, kw_only)

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
    # An adopted clone was initialized unbound; while it attaches it adopts the modules
    # in its own fields, which must see it as still initializing (nested adoption).
    state.is_initialized = False
    if parent is None:
      state.is_initialized = True
      return
    if isinstance(parent, Module):
      parent_state = parent._state
      if parent_state.in_setup and self.name is None:
        # Named by the setup attribute it is assigned to (_module_naming).
        state.is_initialized = True
        return
      if not (
        parent_state.in_setup or parent_state.in_compact_method or not parent_state.is_initialized
      ):
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

  def copy(
    self: T, *, parent: Any = _unspecified_parent, name: str | None = None, **updates: Any
  ) -> T:
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

  def param(
    self,
    name: str,
    init_fn: Callable[..., T],
    *init_args: Any,
    unbox: bool = True,
    **init_kwargs: Any,
  ) -> T:
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
    self,
    col: str,
    name: str,
    init_fn: Callable[..., T] | None = None,
    *init_args: Any,
    unbox: bool = True,
    **init_kwargs: Any,
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
    self,
    col: str,
    name: str,
    value: Any,
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

  # -- repr ------------------------------------------------------------------------

  def __repr__(self) -> str:
    return _module_repr(self)


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
  'Module',
  'compact',
  'nowrap',
  'compact_name_scope',
  'share_scope',
  'apply',
  'init',
  'init_with_output',
  'merge_param',
  'intercept_methods',
  'InterceptorContext',
  'Variable',
  'enable_named_call',
  'disable_named_call',
  'override_named_call',
]
