"""The ``Module`` class: construction, attributes, the variables API and the entry points.

This is the top of the ``_module`` package; it imports the layers below it (state and
context, method wrapping, naming, the dataclass transform) and nothing imports it back
except the public face ``flaxlike.linen.module`` and the layers built on Modules.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Self, TypeVar

import jax
import jax.numpy as jnp
from typing_extensions import dataclass_transform

from flaxlike import errors, traceback_util
from flaxlike.configurations import config
from flaxlike.core import rng as core_rng
from flaxlike.core import scope as core_scope
from flaxlike.core.frozen_dict import FrozenDict
from flaxlike.core.scope import DenyList, Filter, Scope, Variable, union_filters
from flaxlike.linen import summary
from flaxlike.linen._module import naming
from flaxlike.linen._module.context import context as _context
from flaxlike.linen._module.context import intercept_methods
from flaxlike.linen._module.dataclass_transform import make_module_dataclass
from flaxlike.linen._module.state import (
  SetupState,
  _ModuleState,
  _unspecified_parent,
  _UnspecifiedParent,
)
from flaxlike.typing import PRNGKey

T = TypeVar('T')

if typing.TYPE_CHECKING:
  # Type checkers see a dataclass-transform base, so every subclass of Module is a
  # dataclass to them and ``Module``'s own annotated ``name``/``parent`` below are
  # inherited keyword-only fields. At run time Module derives from object alone: the
  # dataclass transform is ``make_module_dataclass``, run in ``__init_subclass__``.
  @dataclass_transform(field_specifiers=(dataclasses.field,))
  class _ModuleBase:
    # Declared here (on the transform base) so they are attributes, not fields.
    scope: Scope | None
    _state: _ModuleState
    _field_names: tuple[str, ...]

else:
  _ModuleBase = object


def _rebuild_module(cls: type, attrs: dict[str, Any]) -> Any:
  return cls(**attrs)


class Module(_ModuleBase):
  """Base class of all neural-network modules.

  Subclasses are dataclasses: declare hyperparameters as fields, and submodules and
  variables either in ``setup()`` or inline in a ``@compact`` method. Every module also
  takes the keyword-only ``name`` and ``parent`` arguments.

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
  >>> Linear(3, name='proj').apply(variables, jnp.ones((2, 4))).shape
  (2, 3)
  """

  if typing.TYPE_CHECKING:
    name: str | None = dataclasses.field(kw_only=True, default=None)
    parent: Module | Scope | _UnspecifiedParent | None = dataclasses.field(
      kw_only=True, default=None
    )

    # Lets checkers call a module held as ``nn.Module``; subclasses define the real one.
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

  scope = None
  _field_names = ()

  def __init_subclass__(cls, kw_only: bool = False, **kwargs: Any) -> None:
    super().__init_subclass__(**kwargs)
    make_module_dataclass(cls, kw_only)

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
      # A top-level module stays open, as in Linen: its attributes may still be set
      # (``model.layers = [...]`` before ``init``). Every binding works on a clone, and
      # bound modules are frozen.
      return
    if isinstance(parent, Module):
      parent_state = parent._state
      if parent_state.in_setup and self.name is None:
        # Named by the setup attribute it is assigned to (naming.register_submodules).
        state.is_initialized = True
        return
      if not (
        parent_state.in_setup or parent_state.in_compact_method or not parent_state.is_initialized
      ):
        raise errors.AssignSubModuleError(type(self).__name__, _path_text(parent))
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
      reuse = parent_state.in_setup and parent_state.setup_called is SetupState.TRANSFORMED
      if not reuse and name in parent_scope.reservations:
        raise errors.NameInUseError(
          'submodule', name, type(parent).__name__, parent_scope.path_text
        )
      parent_state.children[name] = self
      object.__setattr__(self, 'scope', parent_scope.push(name, reuse=reuse))
      # One adoption table per root scope (as Linen's per-root cache): a top-level
      # instance passed to several modules of one tree becomes one submodule, named
      # where it was adopted first, with one set of variables.
      state.adopted = parent_state.adopted
    elif isinstance(parent, Scope):
      object.__setattr__(self, 'scope', parent)
    else:
      raise ValueError(
        f'parent of {type(self).__name__} must be a Module, a Scope or None, got '
        f'{type(parent).__name__}: pass parent=None for a top-level module, or leave it '
        'out to attach to the module whose method is running.'
      )
    for field_name in self._field_names:
      value = self.__dict__[field_name]
      registered = naming.register_submodules(self, field_name, value, Module, state.adopted)
      if registered is not value:
        object.__setattr__(self, field_name, registered)
    state.is_initialized = True

  def __setattr__(self, name: str, value: Any) -> None:
    state = self.__dict__.get('_state')
    if state is None or (not state.in_setup and not state.is_initialized):
      object.__setattr__(self, name, value)
      return
    if not state.in_setup:
      if name.startswith('__'):
        # Python's own dunders (typing sets ``__orig_class__`` on ``C[T]()`` instances,
        # IPython's autoreload sets ``__class__``) are not module attributes.
        object.__setattr__(self, name, value)
        return
      raise errors.SetAttributeFrozenModuleError(type(self).__name__, name, value)
    if name in self._field_names:
      raise errors.SetAttributeInModuleSetupError(type(self).__name__, name)
    value = naming.register_submodules(self, name, value, Module, state.adopted)
    object.__setattr__(self, name, value)

  if not typing.TYPE_CHECKING:
    # Hidden from checkers so that a misspelled attribute is still reported to users.

    def __getattr__(self, name: str) -> Any:
      # Only reached when normal lookup fails: maybe setup() defines it.
      state = self.__dict__.get('_state')
      if (
        state is not None
        and not name.startswith('__')
        and not state.in_setup
        and state.setup_called is not SetupState.DONE
        and self.__dict__.get('scope') is not None
      ):
        self._try_setup()
        if name in self.__dict__:
          return self.__dict__[name]
      if name == '_state' and state is None:
        # Every use of a module reads its state first; it is missing only when an
        # overriding __post_init__ never called Module's (Linen, too, lets such a module
        # be built and raises on its first use).
        raise errors.IncorrectPostInitOverrideError(type(self).__name__)
      raise AttributeError(
        f'"{type(self).__name__}" object has no attribute "{name}". If "{name}" is '
        'defined in setup(), it exists only on bound modules (inside init/apply, or '
        'after module.bind(variables)).'
      )

  def __dir__(self) -> list[str]:
    # A bound module lists what setup() defines (tab completion, ``'d' in dir(m)``).
    if '_state' in self.__dict__:
      self._try_setup()
    return list(object.__dir__(self))

  def __reduce__(self):
    attrs = {f: getattr(self, f) for f in self._field_names}
    attrs['name'] = self.name
    return (_rebuild_module, (type(self), attrs))

  def _try_setup(self, shallow: bool = False) -> None:
    """Runs ``setup`` once, on first use of a bound module."""
    state = self._state
    if state.in_setup or state.setup_called is SetupState.DONE or self.scope is None:
      return
    state.in_setup = True
    try:
      if not shallow:
        self.setup()
        state.setup_called = SetupState.DONE
    finally:
      state.in_setup = False

  def _name_scope_holder(self, method_name: str) -> Module:
    """The module whose scope holds the submodules of ``compact_name_scope`` method."""
    # Bound directly to a child scope: the method itself need not be compact.
    holder = _NameScope(
      parent=self._bound_scope('call methods').push(method_name), name=method_name
    )
    self._state.name_scopes[method_name] = holder
    return holder

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

  def clone(
    self,
    *,
    parent: Any = None,
    _deep_clone: bool | dict[int, Any] = False,
    _reset_names: bool = False,
    **updates: Any,
  ) -> Self:
    """Returns a copy with fields replaced by ``updates`` and the given parent.

    Args:
      parent: the parent of the copy (None: unbound).
      **updates: new field values.
    """
    attrs = {f: getattr(self, f) for f in self._field_names}
    if _deep_clone is not False:
      # Bound submodules held in fields are detached too; one instance held in several
      # places gives one copy (the memo), so a fresh binding adopts it once.
      memo = {} if _deep_clone is True else _deep_clone
      attrs = {k: _unbind_field(v, memo, _reset_names) for k, v in attrs.items()}
    attrs['name'] = self.name
    attrs.update(updates)
    attrs['parent'] = parent
    return type(self)(**attrs)

  def copy(
    self, *, parent: Any = _unspecified_parent, name: str | None = None, **updates: Any
  ) -> Self:
    """A clone that attaches to the running module by default (use it in ``setup``)."""
    return self.clone(parent=parent, name=name, **updates)

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
      raise errors.NameInUseError('param', name, type(self).__name__, scope.path_text)
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
      raise errors.NameInUseError('variable', name, type(self).__name__, scope.path_text)
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

  def make_rng(self, name: str = 'params') -> jax.Array:
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
    # As in Linen: once the collection is passed in (even empty), every perturbation
    # must be in it.
    if scope.has_collection(collection):
      if not scope.has_variable(collection, name):
        raise ValueError(
          f'Perturbation collection {collection} present, but missing perturbation variable '
          f'{name} at {scope.path_text}: call init (or apply with '
          f'mutable=["{collection}"]) to create it first.'
        )
      value = jax.tree_util.tree_map(jnp.add, value, scope.get_variable(collection, name))
    return value

  # -- init / apply ----------------------------------------------------------------

  def _resolve_method(self, method: Any) -> Callable[..., Any]:
    if method is None:
      # Looked up in the class's own MRO: on the class object, a missing __call__ would
      # find the metaclass's (type.__call__), which constructs a new module instead.
      for klass in type(self).__mro__:
        if '__call__' in klass.__dict__:
          return klass.__dict__['__call__']
      raise AttributeError(
        f'"{type(self).__name__}" object has no attribute "__call__": define __call__, or '
        "pass the method to run, e.g. method='encode'."
      )
    if isinstance(method, str):
      # Instance lookup, as in Linen: a missing name raises AttributeError naming the
      # module and the attribute; a field holding a callable may be named too.
      attr = getattr(self, method)
      if not callable(attr):
        raise TypeError(
          f"'{type(self).__name__}.{method}' must be a callable, got {type(attr)}. Pass the "
          "name of a method, e.g. method='encode'."
        )
      if isinstance(attr, Module):
        # A submodule field: call the bound module's submodule of that name.
        return functools.partial(_call_attribute, method)
      method = attr
    if inspect.ismethod(method) and isinstance(method.__self__, Module):
      return method.__func__
    # The function receives the bound module first, so it needs one parameter at least.
    if not callable(method) or not _takes_an_argument(method):
      raise errors.ApplyModuleInvalidMethodError(method)
    return method

  def _run_bound(self, root: Scope, method: Any, capture: Any, args: tuple, kwargs: dict) -> Any:
    """Runs ``method`` on a clone of this module bound to ``root``, then retires ``root``."""
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

  # The entry points are JAX API boundaries, as in Linen: an error raised below them gets
  # a traceback with JAX's and flaxlike's frames removed (see flaxlike.traceback_util).
  @traceback_util.api_boundary
  def apply(
    self,
    variables: Mapping[str, Any],
    *args: Any,
    rngs: PRNGKey | Mapping[str, PRNGKey] | None = None,
    method: Callable[..., Any] | str | None = None,
    mutable: Filter = False,
    capture_intermediates: bool | Callable[[Module, str], bool] = False,
    **kwargs: Any,
  ) -> Any:
    """Runs ``method`` (``__call__`` by default) with the given variables.

    Args:
      variables: ``{collection: {...}}``, e.g. the output of ``init``.
      *args: positional arguments of the method.
      rngs: RNG streams, e.g. ``{'dropout': key}``; one key is the ``'params'`` stream.
      method: a method name (or the name of a submodule field, to call that submodule),
        a method of this class, or ``fn(module, *args)``.
      mutable: the collections that may change; when not False the updated
        collections are returned too.
      capture_intermediates: True to record every ``__call__`` output in
        ``intermediates``, or a filter ``fn(module, method_name) -> bool``.
      **kwargs: keyword arguments of the method.

    Returns:
      The method's output, or ``(output, updated_collections)`` when ``mutable``.

    Example:

    >>> import jax, jax.numpy as jnp
    >>> import flaxlike as nn
    >>> model = nn.Dense(2)
    >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
    >>> model.apply(variables, jnp.ones((1, 3))).shape
    (1, 2)
    """
    _check_instance(self)
    if rngs is not None and not isinstance(rngs, Mapping):
      rngs = _params_stream(self, rngs)
    if capture_intermediates:
      mutable = union_filters(mutable, 'intermediates')
    root = core_scope._entry_scope(variables, rngs, mutable, None, core_rng.APPLY_RNGS_LEAD)
    y = self._run_bound(root, method, capture_intermediates, args, kwargs)
    if mutable is False:
      return y
    return y, core_scope._finish(root.mutable_variables())

  @traceback_util.api_boundary
  def init_with_output(
    self,
    rngs: PRNGKey | Mapping[str, PRNGKey],
    *args: Any,
    method: Callable[..., Any] | str | None = None,
    mutable: Filter = DenyList('intermediates'),
    capture_intermediates: bool | Callable[[Module, str], bool] = False,
    **kwargs: Any,
  ) -> tuple[Any, dict[str, Any]]:
    """Like ``init`` but also returns the method's output: ``(output, variables)``."""
    _check_instance(self)
    if not isinstance(rngs, Mapping):
      rngs = _params_stream(self, rngs)
    if capture_intermediates:
      mutable = union_filters(mutable, 'intermediates')
    root = core_scope._entry_scope(
      {}, rngs, mutable, {'initializing': True}, core_rng.INIT_RNGS_LEAD
    )
    y = self._run_bound(root, method, capture_intermediates, args, kwargs)
    return y, core_scope._finish(root.mutable_variables())

  @traceback_util.api_boundary
  def init(
    self,
    rngs: PRNGKey | Mapping[str, PRNGKey],
    *args: Any,
    method: Callable[..., Any] | str | None = None,
    mutable: Filter = DenyList('intermediates'),
    capture_intermediates: bool | Callable[[Module, str], bool] = False,
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

    Example:

    >>> import jax, jax.numpy as jnp
    >>> import flaxlike as nn
    >>> variables = nn.Dense(2).init(jax.random.key(0), jnp.ones((1, 3)))
    >>> {name: p.shape for name, p in variables['params'].items()}
    {'kernel': (3, 2), 'bias': (2,)}
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
    rngs: PRNGKey | Mapping[str, PRNGKey],
    *args: Any,
    method: Callable[..., Any] | str | None = None,
    mutable: Filter = DenyList('intermediates'),
    **kwargs: Any,
  ) -> dict[str, Any]:
    """Creates the variables from input shapes only; inputs may be ``ShapeDtypeStruct``.

    Raises:
      LazyInitError: when a variable depends on input values rather than shapes.

    Example:

    >>> import jax, jax.numpy as jnp
    >>> import flaxlike as nn
    >>> x = jax.ShapeDtypeStruct((1, 3), jnp.float32)
    >>> nn.Dense(2).lazy_init(jax.random.key(0), x)['params']['kernel'].shape
    (3, 2)
    """
    _check_instance(self)
    if not isinstance(rngs, Mapping):
      rngs = _params_stream(self, rngs)

    def scope_fn(root, *a, **k):
      return self._run_bound(root, method, False, a, k)

    return core_scope.lazy_init(scope_fn, mutable=mutable)(rngs, *args, **kwargs)

  def module_paths(
    self,
    rngs: PRNGKey | Mapping[str, PRNGKey],
    *args: Any,
    mutable: Filter = DenyList('intermediates'),
    **kwargs: Any,
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

  def tabulate(self, rngs: PRNGKey | Mapping[str, PRNGKey], *args: Any, **kwargs: Any) -> str:
    """A plain-text summary table of this module on ``args``; see ``nn.tabulate``.

    Example:

    >>> import jax, jax.numpy as jnp
    >>> import flaxlike as nn
    >>> table = nn.Dense(2).tabulate(jax.random.key(0), jnp.ones((1, 3)))
    >>> 'Total Parameters: 8' in table
    True
    """
    return summary.module_tabulate(self, rngs, *args, **kwargs)

  @traceback_util.api_boundary
  def bind(
    self,
    variables: Mapping[str, Any],
    *args: Any,
    rngs: Mapping[str, PRNGKey] | None = None,
    mutable: Filter = False,
  ) -> Self:
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
    return self.clone(parent=root, _deep_clone=True)

  def unbind(self) -> tuple[Self, dict[str, Any]]:
    """Returns ``(unbound copy, variables)`` of a bound module.

    The copy has no name, nor do the submodules in its fields (as in Linen), so
    ``model.bind(variables).unbind()[0] == model``.

    Example:

    >>> import jax, jax.numpy as jnp
    >>> import flaxlike as nn
    >>> variables = nn.Dense(2).init(jax.random.key(0), jnp.ones((1, 3)))
    >>> module, unbound_vars = nn.Dense(2).bind(variables).unbind()
    >>> module.scope is None, list(unbound_vars['params'])
    (True, ['kernel', 'bias'])
    """
    if self.scope is None:
      raise errors.CallUnbindOnUnboundModuleError()
    self._try_setup()
    # Names come from the binding (an adopted field's name, a setup attribute's): the
    # copy and its submodules drop them, so it equals the module that was bound.
    unbound = self.clone(parent=None, _deep_clone=True, _reset_names=True, name=None)
    return unbound, self.variables

  # -- repr ------------------------------------------------------------------------

  def __repr__(self) -> str:
    """Linen's layout: the fields under ``# attributes`` (a named callable by its name,
    e.g. ``act = relu``), then a bound module's submodules under ``# children``.

    >>> import flaxlike as nn
    >>> print(nn.Dropout(0.1))
    Dropout(
        # attributes
        rate = 0.1
        broadcast_dims = ()
        deterministic = None
        rng_collection = 'dropout'
    )
    """
    return _module_repr(self)


class _ParentLink:
  """``module.parent``, holding a parent Module through a weak reference (as Linen does).

  A bound parent holds its children (attributes, ``_state.children``); strong links back
  would make every bound tree a reference cycle, which only the cycle collector frees:
  after a traced ``init``/``apply`` that keeps the tree's tracers (and device buffers)
  alive until some later collection, which JAX's leak checker reports. A parent that is
  gone reads as None.
  """

  def __get__(self, obj: Any, objtype: Any = None) -> Any:
    if obj is None:
      return self
    link = obj.__dict__.get('_parent_link')
    return link() if type(link) is weakref.ref else link

  def __set__(self, obj: Any, value: Any) -> None:
    obj.__dict__['_parent_link'] = weakref.ref(value) if isinstance(value, Module) else value


# Subclasses get no class attribute ``parent`` of their own (make_module_dataclass removes
# the dataclass default), so this descriptor serves every module.
Module.parent = _ParentLink()  # type: ignore[assignment]


class _NameScope(Module):
  """The sub-scope holder of a ``compact_name_scope`` method (no variables of its own)."""


def _call_attribute(name: str, module: Module, /, *args: Any, **kwargs: Any) -> Any:
  return getattr(module, name)(*args, **kwargs)


def _takes_an_argument(fn: Callable[..., Any]) -> bool:
  try:
    return len(inspect.signature(fn).parameters) >= 1
  except (TypeError, ValueError):  # no introspectable signature (some builtins): let it run
    return True


def _params_stream(module: Module, rng: Any) -> dict[str, Any]:
  """One key given as ``rngs``: the ``'params'`` stream."""
  if not core_rng._is_valid_rng(rng):
    raise errors.InvalidRngError(
      f'RNGs should be of shape (2,) or PRNGKey in Module {type(module).__name__}, but rngs '
      f'are: {rng}. Pass a key, e.g. jax.random.key(0), or a dict of keys, e.g. '
      "{'params': jax.random.key(0), 'dropout': jax.random.key(1)}."
    )
  return {'params': rng}


def _check_instance(module: Any) -> None:
  if not isinstance(module, Module):
    raise errors.InvalidInstanceModuleError()
  if '_state' not in module.__dict__:
    raise errors.IncorrectPostInitOverrideError(type(module).__name__)


def _path_text(module: Module) -> str:
  """Where ``module`` sits, for error messages: its scope path, or its class if unbound."""
  scope = module.scope
  return scope.path_text if scope is not None else f'unbound {type(module).__name__}'


def _unbind_field(value: Any, memo: dict[int, Any] | None = None, reset_names: bool = False) -> Any:
  """Detaches modules held in a field so a fresh binding adopts them again.

  Args:
    value: a field value.
    memo: copies made so far, by id of the bound original (shared across fields).
    reset_names: give the copies ``name=None`` (``unbind``: the names were given by the
      binding, e.g. an adopted field's name, and the original had none).
  """
  if isinstance(value, Module):
    # Unbound and parentless: nothing to detach. (A bound module whose parent is gone
    # reads parent None too, since the link is weak: it still holds a scope.)
    if value.parent is None and value.scope is None:
      return value
    if memo is None:
      memo = {}
    known = memo.get(id(value))
    if known is None:
      name = None if reset_names else value.name
      known = value.clone(parent=None, name=name, _deep_clone=memo, _reset_names=reset_names)
      memo[id(value)] = known
    return known
  if type(value) in (list, tuple, dict, FrozenDict):
    return naming.map_modules(
      lambda _, m: _unbind_field(m, memo, reset_names), value, lambda v: isinstance(v, Module)
    )
  return value


def _attr_repr(value: Any, depth: int) -> str:
  """How a field value reads in a module's repr: a module in full, a named callable by its
  name (``act = relu``, ``kernel_init = init``), anything else by ``repr``."""
  if isinstance(value, Module):
    # A module that carries a ``__name__`` of its own (set by the user) reads as that name.
    own_name = value.__dict__.get('__name__')
    if own_name and callable(value):
      return own_name
    return _module_repr(value, depth + 1)
  if callable(value):
    name = getattr(value, '__name__', None)
    if name:
      return name
  return repr(value)


def _module_repr(module: Module, depth: int = 0) -> str:
  """Linen's repr: ``# attributes`` (the fields) then ``# children`` (bound submodules)."""
  max_depth = config.flax_max_repr_depth
  cls_name = type(module).__name__
  if max_depth is not None and depth >= max_depth:
    return f'{cls_name}(...)'
  lines = []
  shown = [
    f.name for f in dataclasses.fields(module) if f.repr and f.name not in ('parent', 'name')
  ]
  if shown:
    lines.append('# attributes')
    for field_name in shown:
      lines.append(f'{field_name} = {_attr_repr(module.__dict__.get(field_name), depth)}')
  state = module.__dict__.get('_state')  # missing if __post_init__ skipped Module's
  children = [
    (name, child)
    for name, child in (state.children.items() if state is not None else ())
    if isinstance(child, Module)
  ]
  if children:
    lines.append('# children')
    for name, child in children:
      lines.append(f'{name} = {_module_repr(child, depth + 1)}')
  if not lines:
    return f'{cls_name}()'
  body = '\n'.join('    ' + line.replace('\n', '\n    ') for line in lines)
  return f'{cls_name}(\n{body}\n)'
