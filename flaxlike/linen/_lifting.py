"""The machinery behind ``nn.transforms``: binding a module to the scopes a transform lifts.

A transformed method may reach more scopes than its module's own (bound modules held in
fields or passed as arguments, Variables). ``_Lifting`` finds every such scope before the
JAX transform and rebuilds the modules and variables on the inner scopes inside it;
``_lift`` turns a transform target (class, method or function) into the transformed
callable. The public transforms in ``flaxlike.linen.transforms`` are built on these.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax

from flaxlike import errors, serialization
from flaxlike.core.frozen_dict import FrozenDict
from flaxlike.core.scope import Scope, Variable
from flaxlike.linen._module.calls import wrap_method
from flaxlike.linen._module.module_class import Module, _unbind_field
from flaxlike.linen._module.state import SetupState

#################################################
# Binding a module to an inner scope
#################################################


def _check_returns(y: Any, name: str) -> Any:
  for leaf in jax.tree_util.tree_leaves(y, is_leaf=lambda x: isinstance(x, (Module, Variable))):
    if isinstance(leaf, (Module, Variable)):
      raise errors.TransformedMethodReturnValueError(name)
  return y


def _outer_scope(module: Any, transform: str) -> Scope:
  if not isinstance(module, Module):
    raise errors.TransformTargetError(module)
  scope = module.scope
  if scope is None:
    raise ValueError(
      f'nn.{transform} needs a bound module, but {type(module).__name__} is unbound: call '
      'it inside init/apply (or a @compact method / setup of a bound parent).'
    )
  return scope


def _as_method(fn: Callable[..., Any]) -> Callable[..., Any]:
  """``fn`` run the way Module methods run: lazy setup, on the module stack, compact.

  Functions handed to a transform (``fn(module, *args)``, cond branches, scan bodies)
  create submodules inline like a ``@compact`` method of the module they receive, so
  those submodules live under that module's (inner) scope.
  """
  if hasattr(fn, '__flaxlike_method__') or getattr(fn, 'lifted', False):
    # A lifted method (a transform of a transform) binds and sets up the module it runs
    # on itself: the module in between runs no setup and claims no names, as in Linen.
    return fn

  def call(self, *args, **kwargs):
    return fn(self, *args, **kwargs)

  call.__name__ = getattr(fn, '__name__', 'fn')
  call.compact = True  # type: ignore[attr-defined]
  wrapped = wrap_method(call)
  # nn.jit runs the plain function on an unbound module (a jitted init/apply override).
  wrapped.__flaxlike_plain__ = fn  # type: ignore[attr-defined]
  return wrapped


def _copy_counters(table: dict) -> dict:
  return {k: _copy_counters(v) if type(v) is dict else v for k, v in table.items()}


def _detach_counters(scope_tree: Any) -> None:
  """Gives the inner scopes of a jitted call their own copy of the RNG counters.

  The streams are new root keys drawn for this call, so keys stay unique whatever the
  counts; counting on from the outer counts keeps Linen's key values. Writing the
  counts back would make later draws depend on whether this call traced (a cache hit
  runs no Python and would not advance them), so they stay inside.
  """
  for scope in [scope_tree] if isinstance(scope_tree, Scope) else scope_tree:
    scope.rng_counters = _copy_counters(scope.rng_counters)


#################################################
# The scopes a call reaches
#################################################
#
# A transformed method may touch more scopes than its module's own: a bound module held in a
# field but owned elsewhere (``Inner(outer_dense)``), a bound module or a Variable passed as
# an argument. Linen lifts each of those scopes with the module's, so their variables cross
# the JAX transform as data and their writes come back out. ``_Lifting`` finds them before
# the transform (deduplicated by identity, so one scope is lifted once) and rebuilds the
# modules and variables on the inner scopes inside it.


class _Slot:
  """Stands for a bound module or Variable in a transform's arguments.

  A pytree node without leaves: JAX transforms carry it through untouched, and ``key``
  (what the trace depends on) is part of the tree structure, so ``jit`` retraces when
  a different kind of module arrives.
  """

  __slots__ = ('index', 'key')

  def __init__(self, index: int, key: Any):
    self.index = index
    self.key = key

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, _Slot) and self.index == other.index and self.key == other.key

  def __hash__(self) -> int:
    return hash((self.index, self.key))

  def __repr__(self) -> str:
    return f'_Slot({self.index})'


jax.tree_util.register_pytree_node(
  _Slot, lambda s: ((), (s.index, s.key)), lambda aux, _: _Slot(*aux)
)


def _is_ref(x: Any) -> bool:
  return isinstance(x, (Module, Variable))


def _is_foreign(value: Any, owner: Module) -> bool:
  """A bound module held by ``owner`` but owned elsewhere (its scope is lifted on its own)."""
  return isinstance(value, Module) and value.scope is not None and value.parent is not owner


def _map_refs(fn: Callable[[Any], Any], value: Any) -> Any:
  """``value`` with every Module/Variable ``x`` in it (plain containers) replaced by ``fn(x)``."""
  if isinstance(value, (Module, Variable)):
    return fn(value)
  kind = type(value)
  if kind is tuple or kind is list:
    return kind(_map_refs(fn, v) for v in value)
  if kind is dict:
    return {k: _map_refs(fn, v) for k, v in value.items()}
  if kind is FrozenDict:
    return FrozenDict({k: _map_refs(fn, v) for k, v in value.items()})
  return value


class _Lifting:
  """The scopes one transformed call lifts, and how to rebuild its modules on the inner ones."""

  __slots__ = ('scopes', '_index', '_seen', 'refs', 'layout')

  def __init__(self, module: Module):
    self.scopes: list[Scope] = []
    self._index: dict[int, tuple[int, tuple[str, ...]]] = {}
    self._seen: set[int] = set()
    # Bound modules and Variables found in the arguments, by slot index.
    self.refs: list[Any] = []
    # Where each module/variable lives inside, in discovery order: a trace depends on it.
    self.layout: list[tuple[int, tuple[str, ...]]] = []
    self._add_scope(_outer_scope(module, 'transform'))
    self._visit_fields(module)

  def _add_scope(self, scope: Scope) -> None:
    place = self._index.get(id(scope))
    if place is None:
      place = self._place(scope)
      self._index[id(scope)] = place
    self.layout.append(place)

  def _place(self, scope: Scope) -> tuple[int, tuple[str, ...]]:
    """Where ``scope`` lives inside: (lifted scope, path below it).

    A scope below one lifted already is not lifted again: inside it is the same child
    of the inner scope (as in Linen), so its variables are not carried twice, writes
    cannot overwrite each other, and its name stays reserved in the inner parent.
    """
    if self.scopes:
      root, path = scope.root, scope.path
      for i, lifted in enumerate(self.scopes):
        n = len(lifted.path)
        if path[:n] == lifted.path and lifted.root is root:
          return i, path[n:]
    self.scopes.append(scope)
    return len(self.scopes) - 1, ()

  def _visit_fields(self, module: Module) -> None:
    if id(module) in self._seen:
      return
    self._seen.add(id(module))
    for field_name in module._field_names:
      _map_refs(lambda x, m=module: self._visit_field_ref(x, m), module.__dict__[field_name])

  def _visit_field_ref(self, x: Any, owner: Module) -> Any:
    if isinstance(x, Variable):
      if isinstance(x.scope, Scope):
        self._add_scope(x.scope)
    elif _is_foreign(x, owner):
      self._add_scope(x.scope)
      self._visit_fields(x)
    return x

  def lift_args(self, args: tuple, kwargs: Mapping[str, Any], keyed: bool) -> tuple[tuple, dict]:
    """``args``/``kwargs`` with bound modules and Variables replaced by ``_Slot``s."""
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs), is_leaf=_is_ref)
    if not any(_is_ref(leaf) for leaf in leaves):
      return args, dict(kwargs)
    new_leaves = []
    for leaf in leaves:
      if isinstance(leaf, Module) and leaf.scope is not None:
        self._add_scope(leaf.scope)
        self._visit_fields(leaf)
        key = _fingerprint(leaf, {}) if keyed else None
      elif isinstance(leaf, Variable) and isinstance(leaf.scope, Scope):
        self._add_scope(leaf.scope)
        key = (leaf.collection, leaf.name, leaf.unbox)
      else:
        new_leaves.append(leaf)
        continue
      new_leaves.append(_Slot(len(self.refs), key))
      self.refs.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, new_leaves)

  def linen_order(self, module: Module) -> list[int]:
    """The lifted scopes in Linen's order: those of fields first, depth first; module last."""
    order: list[int] = []
    seen: set[int] = set()

    def add(scope: Scope) -> None:
      i, rel = self._index[id(scope)]
      if not rel and i not in order:
        order.append(i)

    def visit(m: Module) -> None:
      if id(m) in seen:
        return
      seen.add(id(m))
      for field_name in m._field_names:
        _map_refs(lambda x, m=m: visit_ref(x, m), m.__dict__[field_name])
      assert m.scope is not None  # only bound modules are visited
      add(m.scope)

    def visit_ref(x: Any, owner: Module) -> Any:
      if isinstance(x, Variable):
        if isinstance(x.scope, Scope):
          add(x.scope)
      elif _is_foreign(x, owner):
        visit(x)
      return x

    visit(module)
    return order

  def scope_tree(self) -> Scope | list[Scope]:
    return self.scopes[0] if len(self.scopes) == 1 else list(self.scopes)

  def bind(
    self, module: Module, inner_tree: Any, cls: type | None, args: tuple, kwargs: Mapping[str, Any]
  ) -> tuple[Module, tuple, Mapping[str, Any]]:
    """The module (as ``cls``) and the arguments rebuilt on the inner scopes."""
    inner = [inner_tree] if isinstance(inner_tree, Scope) else list(inner_tree)
    memo: dict[int, Any] = {}

    def scope_of(outer: Scope) -> Scope:
      i, rel = self._index[id(outer)]
      scope = inner[i]
      for name in rel:
        scope = scope.push(name, reuse=True)
      return scope

    def rebind(m: Module, as_cls: type | None = None) -> Module:
      done = memo.get(id(m))
      if done is not None:
        return done

      def field(x: Any) -> Any:
        if isinstance(x, Variable):
          if isinstance(x.scope, Scope):
            return Variable(scope_of(x.scope), x.collection, x.name, x.unbox)
          return x
        if _is_foreign(x, m):
          return rebind(x)
        return _unbind_field(x)

      attrs = {f: _map_refs(field, m.__dict__[f]) for f in m._field_names}
      attrs['name'] = m.name
      assert m.scope is not None  # only bound modules are rebound
      clone = (as_cls or type(m))(**attrs, parent=scope_of(m.scope))
      if m._state.setup_called is SetupState.DONE:
        # Its setup ran outside: the copy runs it again, reusing the child scopes (the
        # ones pushed for lifted submodules included) instead of claiming their names.
        clone._state.setup_called = SetupState.TRANSFORMED
      memo[id(m)] = clone
      return clone

    bound = rebind(module, cls)
    if not self.refs:
      return bound, args, dict(kwargs)

    def restore(x: Any) -> Any:
      if not isinstance(x, _Slot):
        return x
      ref = self.refs[x.index]
      if isinstance(ref, Variable):
        return Variable(scope_of(ref.scope), ref.collection, ref.name, ref.unbox)
      return rebind(ref)

    args, kwargs = jax.tree_util.tree_map(
      restore, (args, dict(kwargs)), is_leaf=lambda x: isinstance(x, _Slot)
    )
    return bound, args, kwargs


#################################################
# Targets: classes, methods, functions
#################################################

# build(fn_of_scope) -> lifted(scope, *args); one per call of the transformed method.
Builder = Callable[[Callable[..., Any]], Callable[..., Any]]


def _method_names(methods: Any) -> dict[str, dict[str, Any]]:
  if methods is None:
    return {'__call__': {}}
  if isinstance(methods, str):
    return {methods: {}}
  if isinstance(methods, Mapping):
    return {k: dict(v or {}) for k, v in methods.items()}
  return {m: {} for m in methods}


def _transform_class(
  prefix: str,
  cls: type,
  methods: Any,
  make: Callable[..., Callable[..., Any]],
  transform_kwargs: dict[str, Any],
) -> type:
  attrs: dict[str, Any] = {}
  for method_name, overrides in _method_names(methods).items():
    original = getattr(cls, method_name, None)
    if original is None or not callable(original):
      raise AttributeError(
        f'nn.{prefix.lower()}({cls.__name__}, methods=...): {cls.__name__} has no method '
        f'"{method_name}".'
      )
    run = _as_method(original)
    call_transform = make(
      run, cls, f'{cls.__name__}.{method_name}', {**transform_kwargs, **overrides}
    )
    call_transform.nowrap = True  # type: ignore[attr-defined]
    call_transform.lifted = True  # type: ignore[attr-defined]
    call_transform.__name__ = method_name
    attrs[method_name] = call_transform
  attrs['__module__'] = cls.__module__
  new_cls = type(f'{prefix}{cls.__name__}', (cls,), attrs)
  new_cls.__qualname__ = f'{prefix}{cls.__qualname__}'
  return new_cls


def _transform_function(
  fn: Callable[..., Any], make: Callable[..., Callable[..., Any]], transform_kwargs: dict[str, Any]
) -> Callable[..., Any]:
  run = _as_method(fn)
  wrapped = make(run, None, getattr(fn, '__name__', 'fn'), transform_kwargs)
  functools.update_wrapper(wrapped, fn)
  # A decorated method must not get Module's method wrapper a second time: the outer
  # module would run setup and claim names outside the transform.
  wrapped.__dict__.pop('compact', None)
  wrapped.__dict__.pop('__flaxlike_method__', None)
  wrapped.nowrap = True  # type: ignore[attr-defined]
  wrapped.lifted = True  # type: ignore[attr-defined]
  return wrapped


def _lift(
  prefix: str,
  target: Any,
  methods: Any,
  make: Callable[..., Callable[..., Any]],
  **transform_kwargs: Any,
) -> Any:
  if isinstance(target, type) and issubclass(target, Module):
    return _transform_class(prefix, target, methods, make, transform_kwargs)
  if (
    isinstance(target, functools.partial)
    and isinstance(target.func, type)
    and issubclass(target.func, Module)
  ):
    # A partially applied constructor: transform the class, keep the bound arguments.
    new_cls = _transform_class(prefix, target.func, methods, make, transform_kwargs)
    return functools.partial(new_cls, *target.args, **target.keywords)
  if callable(target) and not isinstance(target, Module):
    return _transform_function(target, make, transform_kwargs)
  raise errors.TransformTargetError(target)


def _simple(
  core_builder: Callable[..., Builder], transform: str
) -> Callable[..., Callable[..., Any]]:
  """``make`` for transforms whose lifted function is rebuilt per call (closures are fine)."""

  def make(run, cls, name, kw):
    def call_transformed(module, *args, **kwargs):
      _outer_scope(module, transform)
      lifting = _Lifting(module)
      args, kwargs = lifting.lift_args(args, kwargs, keyed=False)

      def body(scope_tree: Any, *args: Any) -> Any:
        bound, args, inner_kwargs = lifting.bind(module, scope_tree, cls, args, kwargs)
        return _check_returns(run(bound, *args, **inner_kwargs), name)

      return core_builder(**kw)(body)(lifting.scope_tree(), *args)

    return call_transformed

  return make


#################################################
# What a jit trace depends on
#################################################


class _ById:
  """Keys an unhashable value by identity; holding it keeps the id from being reused."""

  __slots__ = ('value',)

  def __init__(self, value: Any):
    self.value = value

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, _ById) and other.value is self.value

  def __hash__(self) -> int:
    return id(self.value)


def _fingerprint(obj: Any, seen: dict[int, int]) -> Any:
  """A hashable stand-in for what a module (or field value) contributes to a jit trace.

  Modules are keyed by class and fields (not ``name``/``parent``: sibling instances with
  equal fields share one trace), a module seen before by its position (aliasing is part
  of the structure), dataclasses and containers by their contents, types registered with
  ``serialization`` by their state dict, other hashable values by themselves and the rest
  by identity.
  """
  if obj is None or isinstance(obj, (str, int, float, complex, type)):
    return obj
  if isinstance(obj, Module):
    i = seen.get(id(obj))
    if i is not None:
      return type(obj), i
    seen[id(obj)] = len(seen)
    return type(obj), tuple((f, _fingerprint(obj.__dict__[f], seen)) for f in obj._field_names)
  if isinstance(obj, Variable):
    return Variable, obj.collection, obj.name, obj.unbox
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return type(obj), tuple(
      (f.name, _fingerprint(getattr(obj, f.name), seen))
      for f in dataclasses.fields(obj)
      if hasattr(obj, f.name)
    )
  if isinstance(obj, Mapping):
    return type(obj), tuple((k, _fingerprint(v, seen)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj), tuple(_fingerprint(v, seen) for v in obj)
  if serialization.is_serializable(obj):
    return type(obj), _fingerprint(serialization.to_state_dict(obj), seen)
  try:
    hash(obj)
  except TypeError:
    return _ById(obj)
  return obj
