"""The Scope: variable collections, RNG streams and names for one node of a model tree.

A model is a function ``fn(scope, *args)``. The root scope of an ``init``/``apply`` call
owns the variable collections (``{'params': {...}, 'batch_stats': {...}}``); each child
scope sees the sub-dicts at its path. Everything a Module does with variables goes through
a scope, so this file is the whole state model of flaxlike.

Hot-path notes (see docs/design/scope.md):
- Only mutable collections are copied on entry (their dict nodes, not the arrays);
  immutable collections are read in place.
- A scope caches the dict it found at its path per collection, so reading a param costs
  two dict lookups after the first access.
- The shape check of existing params evaluates each initializer's output shape once per
  (initializer, arguments) and caches it (``staged_init.output_shapes``), instead of
  tracing the initializer on every ``apply`` as Linen does.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import jax
import numpy as np
from jax.extend.core import get_opaque_trace_state

from flaxlike import errors
from flaxlike.configurations import config
from flaxlike.core import meta, partial_eval, staged_init
from flaxlike.core.filters import CollectionFilter as CollectionFilter
from flaxlike.core.filters import DenyList as DenyList
from flaxlike.core.filters import Filter as Filter
from flaxlike.core.filters import PRNGSequenceFilter as PRNGSequenceFilter
from flaxlike.core.filters import filter_to_set as filter_to_set
from flaxlike.core.filters import group_collections as group_collections
from flaxlike.core.filters import in_filter as in_filter
from flaxlike.core.filters import intersect_filters as intersect_filters
from flaxlike.core.filters import is_filter_empty as is_filter_empty
from flaxlike.core.filters import subtract_filters as subtract_filters
from flaxlike.core.filters import union_filters as union_filters
from flaxlike.core.frozen_dict import FrozenDict, freeze
from flaxlike.core.rng import APPLY_RNGS_LEAD, INIT_RNGS_LEAD
from flaxlike.core.rng import LazyRng as LazyRng
from flaxlike.core.rng import _is_valid_rng as _is_valid_rng
from flaxlike.core.rng import _validate_rngs as _validate_rngs
from flaxlike.core.rng import fold_static as fold_static

T = TypeVar('T')

PRNGKey = Any
Array = Any
VariableDict = Mapping[str, Mapping[str, Any]]
RNGSequences = Mapping[str, PRNGKey]


# Key under which a scope's counter table holds the counter table of child ``name``.
_CHILD_COUNTERS = '__child__'


#################################################
# Variables
#################################################


def _unbox(value: Any) -> Any:
  """``meta.unbox`` with a fast path for the common case of a bare array."""
  if isinstance(value, meta.AxisMetadata):
    return value.unbox()
  if isinstance(value, (dict, FrozenDict, list, tuple)):
    return meta.unbox(value)
  return value


class Variable(Generic[T]):
  """A handle on one variable of a scope; ``.value`` reads and writes it.

  Example:

  >>> import jax.numpy as jnp
  >>> from flaxlike import core
  >>> def counter(scope):
  ...   count = scope.variable('counter', 'n', jnp.zeros, ())
  ...   count.value += 1
  ...   return count.value
  >>> _, variables = core.init(counter)({})
  >>> variables['counter']['n']
  Array(1., dtype=float32)
  """

  __slots__ = ('scope', 'collection', 'name', 'unbox')

  def __init__(self, scope: Scope, collection: str, name: str, unbox: bool = True):
    self.scope = scope
    self.collection = collection
    self.name = name
    self.unbox = unbox

  @property
  def value(self) -> T:
    v = self.scope.get_variable(self.collection, self.name)
    return _unbox(v) if self.unbox else v

  @value.setter
  def value(self, value: T) -> None:
    # What is stored: the value itself, or the value boxed like the current one.
    stored: Any = value
    if self.unbox:
      current = self.scope.get_variable(self.collection, self.name)
      if isinstance(current, meta.AxisMetadata):
        stored = current.replace_boxed(value)
      elif isinstance(current, (dict, list, tuple)):
        stored = meta.replace_boxed(current, value)
    self.scope.put_variable(self.collection, self.name, stored)

  def is_mutable(self) -> bool:
    """Whether this variable's collection may be written in the current call."""
    return self.scope.is_mutable_collection(self.collection)

  def __repr__(self) -> str:
    return (
      f'Variable(collection={self.collection!r}, name={self.name!r}, path={self.scope.path_text!r})'
    )


#################################################
# Scope
#################################################


class _CallState:
  """State shared by every scope of one ``init``/``apply``/``bind`` call."""

  __slots__ = ('variables', 'mutable', 'mutable_cache', 'valid', 'flags', 'trace_state')

  def __init__(self, variables: dict[str, Any], mutable: Filter, flags: Mapping[str, Any]):
    self.variables = variables
    self.mutable = mutable
    self.mutable_cache: dict[str, bool] = {}
    self.valid = True
    self.flags = flags
    self.trace_state = get_opaque_trace_state()


def _plain_dict(d: Any) -> dict:
  if type(d) is dict:
    return d
  if isinstance(d, FrozenDict):
    return d._dict
  return dict(d)


def _copy_dict_nodes(tree: Any) -> Any:
  """Copies the dict nodes of a variable tree (not the leaves), as plain dicts."""
  if isinstance(tree, FrozenDict):
    tree = tree._dict
  if isinstance(tree, Mapping):
    return {k: _copy_dict_nodes(v) for k, v in tree.items()}
  return tree


def _merge_into(target: dict, value: Mapping) -> None:
  """Writes ``value`` into ``target`` key by key, merging nested dicts in place."""
  for key, sub in value.items():
    existing = target.get(key)
    if type(existing) is dict and isinstance(sub, Mapping):
      _merge_into(existing, sub)
    else:
      target[key] = sub


def _forget_cached_dicts(scope: Scope, col: str) -> None:
  """Drops the dict of ``col`` that ``scope`` and its descendants cached: the subtree at
  their path was replaced."""
  scope._col_dicts.pop(col, None)
  for child in scope._children.values():
    _forget_cached_dicts(child, col)


def _drop_children(scope: Scope) -> None:
  children = scope._children
  if children:
    scope._children = {}
    for child in children.values():
      _drop_children(child)


class Scope:
  """One node of the model tree: its variables, RNG streams and reserved names.

  Scopes are created by ``init``, ``apply`` and ``bind`` (the root), by hand
  (``Scope(variables, rngs, mutable=...)``), and by ``push``/``child`` (children). A
  scope made by ``init``/``apply`` is valid only during that call.

  Attributes:
    name: this scope's name in its parent (None for the root).
    parent: the parent scope (None for the root).
    path: the names from the root to this scope.
    debug_path: ``path`` with the lifted transforms it runs under, for messages
      (``('vmap(dense)',)``).
    rngs: the RNG streams, as lazy keys.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import Scope
  >>> root = Scope({}, {'params': jax.random.key(0)}, mutable='params')
  >>> ones = jax.nn.initializers.ones
  >>> w = root.child(lambda scope: scope.param('w', ones, (2,)), 'layer')()
  >>> root.variables()['params']['layer']['w']
  Array([1., 1.], dtype=float32)
  """

  __slots__ = (
    'name',
    'parent',
    'path',
    'debug_path',
    'rngs',
    'rng_counters',
    'reservations',
    '_call',
    '_children',
    '_col_dicts',
    '_rng_source',
    '_invalid',
    '__weakref__',  # weak-referenceable, as Linen's scopes (caches keyed on a root)
  )

  def __init__(
    self,
    variables: dict[str, Any] | _CallState,
    rngs: Mapping[str, Any] | None = None,
    name: str | None = None,
    mutable: Filter = False,
    parent: Scope | None = None,
    path: Iterable[str] = (),
    debug_path: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
  ):
    if isinstance(variables, _CallState):
      self._call = variables
    elif parent is not None:
      # A child sees its variables through its parent (as ``push`` makes it).
      self._call = parent._call
    else:
      # A hand-made root works on the caller's dicts, as Linen's does; frozen (or other
      # read-only) mappings of writable collections are copied into plain dicts first.
      variables = {
        col: _copy_dict_nodes(tree) if type(tree) is not dict and in_filter(mutable, col) else tree
        for col, tree in variables.items()
      }
      self._call = _CallState(variables, mutable, flags or {})
    self.name = name
    self.parent = parent
    self.path = tuple(path)
    self.debug_path = tuple(debug_path) or self.path
    # Raw or typed keys are wrapped lazily, so a hand-made root behaves like bind's.
    self.rngs: dict[str, LazyRng] = (
      {k: r if isinstance(r, LazyRng) else LazyRng(r) for k, r in rngs.items()} if rngs else {}
    )
    # RNG stream name -> draws so far, and (_CHILD_COUNTERS, child name) -> that child's table.
    self.rng_counters: dict[str | tuple[str, str], Any] = {}
    self.reservations: dict[str, set[str | None]] = {}
    self._children: dict[str, Scope] = {}
    self._col_dicts: dict[str, dict] = {}
    self._rng_source: Any = None
    self._invalid = False

  # -- identity -----------------------------------------------------------------

  def __eq__(self, other: Any) -> bool:
    # Two scope objects behave identically when they look at the same variables, at the
    # same path, with the same RNG counters (``rewound`` copies, scopes of a lifted
    # transform that alias one another).
    if self is other:
      return True
    if not isinstance(other, Scope):
      return False
    return (
      self._call is other._call
      and self.path == other.path
      and self.rng_counters is other.rng_counters
    )

  def __hash__(self) -> int:
    return hash((id(self._call), self.path, id(self.rng_counters)))

  @property
  def root(self) -> Scope:
    scope = self
    while scope.parent is not None:
      scope = scope.parent
    return scope

  @property
  def path_text(self) -> str:
    """The debug path as text: ``'/encoder/vmap(dense)'``."""
    return '/' + '/'.join(self.debug_path)

  @property
  def mutable(self) -> Filter:
    return self._call.mutable

  @property
  def flags(self) -> Mapping[str, Any]:
    return self._call.flags

  def has_flag(self, key: str) -> bool:
    """Whether flag ``key`` was set for this call (``'initializing'`` during ``init``)."""
    return key in self._call.flags

  def get_flag(self, key: str, default: Any = None) -> Any:
    """The value of flag ``key``, or ``default``."""
    return self._call.flags.get(key, default)

  def __repr__(self) -> str:
    return f'Scope({self.path_text!r})'

  # -- validity -----------------------------------------------------------------

  @property
  def invalid(self) -> bool:
    """Whether this scope may no longer be used."""
    return self._invalid or not self._call.valid

  def invalidate(self) -> None:
    """Marks this scope as no longer usable; on a root, every scope of its call."""
    self._invalid = True
    if self.parent is None:
      self._call.valid = False
      # Parents and children refer to each other; once the call is over nothing pushes
      # again, so the downward links are dropped. The tree (and the variables and RNG
      # keys it holds, tracers under a transform) is then freed by reference counting
      # as soon as the modules let go of it, not at some later cycle collection.
      _drop_children(self)

  @contextlib.contextmanager
  def temporary(self) -> Iterator[Scope]:
    """A context manager yielding this scope and invalidating it on exit.

    Example:

    >>> from flaxlike.core import Scope
    >>> with Scope({}).temporary() as root:
    ...   pass
    >>> root.invalid
    True
    """
    try:
      yield self
    finally:
      self.invalidate()

  def _check_valid(self) -> None:
    if self._invalid or not self._call.valid:
      raise errors.InvalidScopeError(self.path_text)

  def _check_trace_level(self) -> None:
    if get_opaque_trace_state() != self._call.trace_state:
      raise errors.JaxTransformError()

  # -- names --------------------------------------------------------------------

  def reserve(self, name: str, col: str | None = None, owner: str | None = None) -> None:
    """Claims ``name`` in this scope for a submodule (``col=None``) or a variable.

    Variables of different collections may share a name; a submodule name clashes with
    everything.

    Raises:
      NameInUseError: when the name is taken.
    """
    if not isinstance(name, str):
      raise TypeError(
        f'The type of scope "{name}" should be string but it is {type(name)} (in {self.path_text}).'
      )
    taken = self.reservations.get(name)
    if taken is None:
      self.reservations[name] = {col}
      return
    if col is None or None in taken or col in taken:
      kind = 'submodule' if col is None else ('param' if col == 'params' else 'variable')
      raise errors.NameInUseError(kind, name, owner or self.path_text)
    taken.add(col)

  def name_reserved(self, name: str, col: str | None = None) -> bool:
    """Whether ``name`` is taken for collection ``col`` (or at all, if ``col`` is None)."""
    taken = self.reservations.get(name)
    if taken is None:
      return False
    return col is None or None in taken or col in taken

  def default_name(self, prefix: str) -> str:
    """The first ``f'{prefix}{i}'`` not yet reserved."""
    i = 0
    while f'{prefix}{i}' in self.reservations:
      i += 1
    return f'{prefix}{i}'

  def push(self, name: str | None = None, prefix: str = '', reuse: bool = False) -> Scope:
    """Returns the child scope ``name``, reserving the name.

    Pushing a name again after ``rewind`` returns the same child with fresh
    reservations, so RNG counters continue where they were (Linen's behaviour when a
    compact module is called twice).

    Args:
      name: the child's name; None picks ``default_name(prefix)``.
      prefix: prefix of the generated name.
      reuse: allow the name to be taken already (several modules sharing one scope).
    """
    self._check_valid()
    if name is None:
      name = self.default_name(prefix)
    if not reuse or name not in self.reservations:
      self.reserve(name)
    child = self._children.get(name)
    if child is None:
      child = Scope(
        self._call,
        name=name,
        parent=self,
        path=self.path + (name,),
        debug_path=self.debug_path + (name,),
      )
      # Child counters live in this scope's counter table (as in Linen), so an inner
      # scope of a lifted transform that shares the table shares the whole subtree.
      counters = self.rng_counters.get((_CHILD_COUNTERS, name))
      if counters is None:
        counters = self.rng_counters[(_CHILD_COUNTERS, name)] = {}
      child.rng_counters = counters
      self._children[name] = child
    elif not reuse:
      child.reservations = {}
    if child._rng_source is not self.rngs:
      child.rngs = {k: LazyRng(r.rng, r.suffix + (name,)) for k, r in self.rngs.items()}
      child._rng_source = self.rngs
    return child

  def child(
    self,
    fn: Callable[..., Any],
    name: str | None = None,
    prefix: str | None = None,
    named_call: bool = True,
    **partial_kwargs: Any,
  ) -> Callable[..., Any]:
    """Returns ``fn`` with a child scope bound as its first argument.

    Each call of the returned function runs ``fn`` on a rewound copy of the child, so
    calling it again reuses the child's variables.

    Args:
      fn: a function ``fn(scope, *args, **kwargs)``.
      name: the child's name; None picks ``default_name(prefix)``.
      prefix: prefix of the generated name (default: ``fn.__name__ + '_'``).
      named_call: run ``fn`` under ``jax.named_scope(name)`` (profiler names).
      **partial_kwargs: keyword arguments bound to ``fn``.

    Example:

    >>> import jax, jax.numpy as jnp
    >>> from flaxlike.core import init
    >>> def linear(scope, x):
    ...   return x @ scope.param('w', jax.nn.initializers.ones, (x.shape[-1], 2))
    >>> def model(scope, x):
    ...   return scope.child(linear, 'out')(x)
    >>> y, variables = init(model)(jax.random.key(0), jnp.ones((1, 3)))
    >>> variables['params']['out']['w'].shape
    (3, 2)
    """
    if name is None:
      if prefix is None:
        prefix = fn.__name__ + '_' if hasattr(fn, '__name__') else ''
      name = self.default_name(prefix)
    scope = self.push(name)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
      if partial_kwargs:
        kwargs = {**partial_kwargs, **kwargs}
      if named_call:
        with jax.named_scope(name):
          return fn(scope.rewound(), *args, **kwargs)
      return fn(scope.rewound(), *args, **kwargs)

    return wrapper

  def rewound(self, rewind_rngs: bool = False) -> Scope:
    """A copy of this scope with no names reserved, over the same variables.

    Args:
      rewind_rngs: also restart the RNG counters (by default the copy continues them).
    """
    self._check_valid()
    scope = Scope(
      self._call,
      name=self.name,
      parent=self.parent,
      path=self.path,
      debug_path=self.debug_path,
    )
    scope.rngs = self.rngs
    scope._rng_source = self._rng_source
    if not rewind_rngs:
      scope.rng_counters = self.rng_counters
    return scope

  def rewind(self) -> None:
    """Forgets the names reserved so far, so a module can run its methods again."""
    self.reservations = {}

  # -- collections -----------------------------------------------------------------

  def _read_col(self, col: str) -> dict | None:
    """This scope's dict in collection ``col``, or None if there is none (yet)."""
    found = self._col_dicts.get(col)
    if found is not None:
      return found
    if self.parent is None:
      found = self._call.variables.get(col)
    else:
      parent_dict = self.parent._read_col(col)
      if parent_dict is None:
        return None
      found = parent_dict.get(self.name)
    if found is None or not isinstance(found, Mapping):
      return None
    found = _plain_dict(found)
    self._col_dicts[col] = found
    return found

  def _write_col(self, col: str) -> dict:
    """This scope's dict in mutable collection ``col``, created along the path if needed.

    Creating dicts lazily, at first write, is what makes collections and child dicts
    appear in the order their first variable was created.
    """
    found = self._read_col(col)
    if found is not None:
      return found
    created: dict = {}
    if self.parent is None:
      self._call.variables[col] = created
    else:
      self.parent._write_col(col)[self.name] = created
    self._col_dicts[col] = created
    return created

  def is_mutable_collection(self, col: str) -> bool:
    """Whether collection ``col`` may be written in this call."""
    cache = self._call.mutable_cache
    result = cache.get(col)
    if result is None:
      result = cache[col] = in_filter(self._call.mutable, col)
    return result

  def is_collection_empty(self, col: str) -> bool:
    """Whether the call has no variables at all in collection ``col``."""
    return not self._call.variables.get(col)

  def has_collection(self, col: str) -> bool:
    """Whether the call holds collection ``col`` at all, even empty.

    >>> Scope({'perturbations': {}}).has_collection('perturbations')
    True
    """
    return col in self._call.variables

  def collection(self, col: str) -> Mapping[str, Any]:
    """A read-only view of this scope's variables in ``col``."""
    return FrozenDict(self._read_col(col) or {})

  def variables(self) -> dict[str, dict[str, Any]]:
    """A copy of every collection's variables at this scope's path."""
    result = {}
    for col in self._call.variables:
      found = self._read_col(col)
      if found is not None:
        result[col] = _copy_dict_nodes(found)
    return result

  def mutable_variables(self) -> dict[str, Any]:
    """The mutable collections of the whole call (root level)."""
    return {
      col: value for col, value in self._call.variables.items() if self.is_mutable_collection(col)
    }

  def has_variable(self, col: str, name: str) -> bool:
    """Whether variable ``name`` exists in collection ``col`` of this scope."""
    found = self._read_col(col)
    return found is not None and name in found

  def get_variable(self, col: str, name: str, default: Any = None) -> Any:
    """The value of variable ``name`` in ``col``, or ``default`` if it does not exist."""
    found = self._read_col(col)
    if found is None:
      return default
    return found.get(name, default)

  def put_variable(self, col: str, name: str, value: Any) -> None:
    """Sets variable ``name`` in collection ``col``.

    Raises:
      ModifyScopeVariableError: when ``col`` is not mutable in this call.
    """
    self._check_valid()
    if not self.is_mutable_collection(col):
      raise errors.ModifyScopeVariableError(col, name, self.path_text)
    self._check_trace_level()
    target = self._write_col(col)
    existing = target.get(name)
    if type(existing) is dict and isinstance(value, Mapping):
      # Writing a subtree over an existing one merges into it, so the dicts that child
      # scopes hold for their paths stay the live ones (Linen does the same).
      _merge_into(existing, value)
    else:
      target[name] = value
      if name in self._children:
        _forget_cached_dicts(self._children[name], col)

  def variable(
    self,
    col: str,
    name: str,
    init_fn: Callable[..., T] | None = None,
    *init_args: Any,
    unbox: bool = True,
    **init_kwargs: Any,
  ) -> Variable[T]:
    """Declares variable ``name`` in ``col``, creating it with ``init_fn(*init_args)``.

    The initializer receives no RNG key; call ``make_rng`` inside it if it needs one.

    Raises:
      ScopeCollectionNotFound / ScopeVariableNotFoundError: when the variable is
        missing and cannot be created.
    """
    self.reserve(name, col)
    if not self.has_variable(col, name):
      if not self.is_mutable_collection(col) or init_fn is None:
        if self.is_collection_empty(col):
          raise errors.ScopeCollectionNotFound(col, name, self.path_text)
        raise errors.ScopeVariableNotFoundError(name, col, self.path_text)
      self.put_variable(col, name, init_fn(*init_args, **init_kwargs))
    return Variable(self, col, name, unbox=unbox)

  def param(
    self,
    name: str,
    init_fn: Callable[..., T],
    *init_args: Any,
    unbox: bool = True,
    **init_kwargs: Any,
  ) -> T:
    """Returns param ``name``, creating it with ``init_fn(make_rng('params'), *init_args)``.

    An existing param is checked against the shape its initializer would produce; the
    initializer is not run again (its output shape is cached).

    Raises:
      ScopeParamShapeError: when the existing param's shape differs.
      ScopeParamNotFoundError / ScopeCollectionNotFound: when it is missing in apply.
    """
    self.reserve(name, 'params')
    found = self._read_col('params')
    if found is not None and name in found:
      value = found[name]
      expected = staged_init.output_shapes(init_fn, init_args, init_kwargs)
      actual = jax.tree_util.tree_leaves(value)
      for leaf, shape in zip(actual, expected):
        if np.shape(leaf) != shape:
          raise errors.ScopeParamShapeError(name, self.path_text, np.shape(leaf), shape)
    else:
      if not self.is_mutable_collection('params'):
        if self.is_collection_empty('params'):
          raise errors.ScopeCollectionNotFound('params', name, self.path_text)
        raise errors.ScopeParamNotFoundError(name, self.path_text)
      # The key is drawn as make_rng('params') draws it; under a trace, a pure
      # initializer's key derivation and body are replayed from a per-arguments cache.
      rng, suffix = self._next_rng('params')
      value = staged_init.init_with_key(init_fn, rng, suffix, init_args, init_kwargs)
      self.put_variable('params', name, value)
    return _unbox(value) if unbox else value

  # -- RNG ------------------------------------------------------------------------

  def has_rng(self, name: str) -> bool:
    """Whether an RNG stream named ``name`` was given."""
    return name in self.rngs

  def make_rng(self, name: str = 'params') -> PRNGKey:
    """Draws a new key from stream ``name``.

    A missing stream falls back to ``'params'`` when that exists (as in Linen).

    Raises:
      InvalidRngError: when neither the stream nor ``'params'`` was given.
    """
    return fold_static(*self._next_rng(name))

  def _next_rng(self, name: str) -> tuple[PRNGKey, tuple[Any, ...]]:
    """Advances stream ``name``'s counter: the root key and the path to fold into it."""
    self._check_valid()
    self._check_trace_level()
    if name not in self.rngs:
      if 'params' not in self.rngs:
        raise errors.InvalidRngError(
          f'{self.name} needs PRNG for "{name}" (scope {self.path_text}): pass it to '
          'init/apply, e.g. '
          f"rngs={{'{name}': jax.random.key(0)}}."
        )
      name = 'params'
    count = self.rng_counters.get(name, 0) + 1
    self.rng_counters[name] = count
    lazy = self.rngs[name]
    return lazy.rng, lazy.suffix + (count,)


#################################################
# Functional entry points
#################################################


def _validate_variables(variables: Any) -> None:
  if not isinstance(variables, Mapping):
    raise errors.ApplyScopeInvalidVariablesTypeError(f'Got a {type(variables).__name__} instead.')
  for col, value in variables.items():
    if not isinstance(col, str):
      raise errors.ApplyScopeInvalidVariablesTypeError(f'Collection name {col!r} is not a str.')
    if not isinstance(value, Mapping):
      raise errors.ApplyScopeInvalidVariablesTypeError(
        f'Collection "{col}" is a {type(value).__name__}, not a dict.'
      )
  params = variables.get('params')
  if params is not None and 'params' in params:
    raise errors.ApplyScopeInvalidVariablesStructureError(variables)


def bind(
  variables: VariableDict,
  rngs: RNGSequences | None = None,
  mutable: Filter = False,
  flags: Mapping[str, Any] | None = None,
) -> Scope:
  """Returns a root scope over ``variables`` that stays valid until invalidated.

  Mutable collections are copied (their dict nodes); immutable ones are read in place.

  Args:
    variables: ``{collection: {...}}``.
    rngs: ``{stream: key}``.
    mutable: the collections that may be written.
    flags: read-only flags visible through ``scope.get_flag``.
  """
  _validate_variables(variables)
  own: dict[str, Any] = {}
  for col, value in variables.items():
    own[col] = _copy_dict_nodes(value) if in_filter(mutable, col) else value
  return Scope(own, _validate_rngs(rngs), mutable=mutable, flags=flags)


def _finish(variables: dict[str, Any]) -> Any:
  return freeze(variables) if config.flax_return_frozendict else variables


def apply(
  fn: Callable[..., Any],
  mutable: Filter = False,
  flags: Mapping[str, Any] | None = None,
) -> Callable[..., Any]:
  """Turns ``fn(scope, *args)`` into ``apply_fn(variables, *args, rngs=None)``.

  ``apply_fn`` returns ``fn``'s output, or ``(output, mutated_collections)`` when
  ``mutable`` is not False. ``rngs`` is a dict of keys, or one key (the ``'params'``
  stream), as in Linen.
  """

  def wrapper(variables: VariableDict, *args, rngs: Any = None, **kwargs):
    return _run(fn, variables, rngs, mutable, flags, APPLY_RNGS_LEAD, args, kwargs)

  return wrapper


def _run(
  fn: Callable[..., Any],
  variables: VariableDict,
  rngs: Any,
  mutable: Filter,
  flags: Mapping[str, Any] | None,
  lead: str,
  args: tuple,
  kwargs: dict[str, Any],
) -> Any:
  root = _entry_scope(variables, rngs, mutable, flags, lead)
  try:
    y = fn(root, *args, **kwargs)
  finally:
    root.invalidate()
  if mutable is False:
    return y
  return y, _finish(root.mutable_variables())


def _entry_scope(
  variables: VariableDict,
  rngs: Any,
  mutable: Filter,
  flags: Mapping[str, Any] | None,
  lead: str,
) -> Scope:
  """``bind`` for the init/apply entry points, as Linen's: one key is the ``'params'``
  stream, and a bad ``rngs`` is reported with Linen's sentence for the entry point
  (``lead``) first, then which stream held what."""
  if rngs is not None:
    rngs = _rng_streams(rngs, lead)
  try:
    return bind(variables, rngs=rngs, mutable=mutable, flags=flags)
  except errors.InvalidRngError as e:
    raise errors.InvalidRngError(f'{lead} {e}') from None


def _rng_streams(rngs: Any, lead: str) -> Mapping[str, Any]:
  """The streams of an init/apply call: a dict of keys as is, one key as the ``'params'``
  stream; anything else is reported with Linen's sentence for the entry point first."""
  if isinstance(rngs, Mapping):
    return rngs
  if not _is_valid_rng(rngs):
    raise errors.InvalidRngError(
      f'{lead} Got {type(rngs).__name__}: pass a key, e.g. jax.random.key(0), or a dict of '
      "keys, e.g. {'params': jax.random.key(0), 'dropout': jax.random.key(1)}."
    )
  return {'params': rngs}


def init(
  fn: Callable[..., Any],
  mutable: Filter = True,
  flags: Mapping[str, Any] | None = None,
) -> Callable[..., Any]:
  """Turns ``fn(scope, *args)`` into ``init_fn(rngs, *args) -> (output, variables)``.

  ``rngs`` is a key (used as the ``'params'`` stream) or a dict of keys.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike import core
  >>> def dense(scope, x, features):
  ...   kernel = scope.param('kernel', jax.nn.initializers.lecun_normal(),
  ...                        (x.shape[-1], features))
  ...   return x @ kernel
  >>> y, variables = core.init(dense)(jax.random.key(0), jnp.ones((1, 3)), 2)
  >>> variables['params']['kernel'].shape
  (3, 2)
  """
  init_flags = {**(flags or {}), 'initializing': True}

  def wrapper(rngs: Any, *args, **kwargs):
    rngs = _rng_streams(rngs, INIT_RNGS_LEAD)
    return _run(fn, {}, rngs, mutable, init_flags, INIT_RNGS_LEAD, args, kwargs)

  return wrapper


def lazy_init(
  fn: Callable[..., Any],
  mutable: Filter = True,
  flags: Mapping[str, Any] | None = None,
) -> Callable[..., Any]:
  """Like ``init`` but returns only the variables, and inputs may be given by shape.

  Inputs passed as ``jax.ShapeDtypeStruct`` stand for data that is not there: the forward
  pass on them is traced but not run (see ``core.partial_eval``).

  Raises:
    LazyInitError: when a variable's value depends on an input given only by shape.
  """
  init_fn = init(fn, mutable=mutable, flags=flags)
  return partial_eval.lazy_init(lambda rngs, *args, **kwargs: init_fn(rngs, *args, **kwargs)[1])
