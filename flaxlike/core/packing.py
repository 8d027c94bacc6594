"""``pack``: the one primitive under every lifted transform of ``flaxlike.core.lift``.

A JAX transform only accepts pure functions of pytrees, while a scope hides its variables
and RNG streams behind a stateful object. ``pack`` bridges the two: it takes the variables
(at each scope's path) and RNG keys out of the scopes as plain pytrees, runs the
transform's body over them (the body rebuilds fresh root scopes from the pytrees inside
the JAX transform), and writes the mutated collections back into the outer scopes.

RNG streams travel as raw root keys; the static path suffix of each lazy key stays on the
Python side and is re-attached inside, so splitting a stream splits the raw root key and
keeps the suffix, as Linen does. Inner root scopes share the outer scope's counter table
(and, through it, the counter tables of all descendants), so keys drawn inside continue
the outer counters and survive re-tracing.

Scopes passed together may alias: when one is a descendant of another (``(scope,
scope.push('a'))``), only the ancestor is packed and the descendant is re-derived inside by
``push``, so inside, too, ``a.parent == scope`` and both see the same variables.

See docs/design/lift.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from flaxlike.core.scope import (
  Filter,
  LazyRng,
  Scope,
  _copy_dict_nodes,
  _forget_cached_dicts,
  group_collections,
  in_filter,
  intersect_filters,
  union_filters,
)

# A group is a tuple with one entry per packed scope; ``variable_groups[i]`` holds the
# collections matched by the i-th variable filter.
VariableGroups = tuple
RngGroups = tuple


# What every lifted transform takes as its scope argument: one scope, or several (a list,
# tuple or dict of scopes), lifted together.
ScopeTree = Scope | Sequence[Scope] | Mapping[str, Scope]


def _flatten_scopes(scope_tree: Any) -> tuple[list[Scope], Callable[[list], Any]]:
  """The scopes of a scope, list/tuple or dict of scopes, and how to rebuild the tree."""
  if isinstance(scope_tree, Scope):
    return [scope_tree], lambda xs: xs[0]
  if isinstance(scope_tree, (list, tuple)):
    kind = type(scope_tree)
    return list(scope_tree), lambda xs: kind(xs)
  if isinstance(scope_tree, Mapping):
    keys = list(scope_tree)
    return [scope_tree[k] for k in keys], lambda xs: dict(zip(keys, xs))
  raise TypeError(f'Lifted transforms expect a Scope or a list/dict of Scopes, got {scope_tree!r}.')


def _dedup_scopes(scopes: list[Scope]) -> tuple[list[Scope], list[tuple[int, tuple[str, ...]]]]:
  """Splits ``scopes`` into the ones to pack and, for each input scope, where it lives.

  Returns ``(packed, places)``: ``packed`` keeps (in order) every scope with no ancestor
  among ``scopes``, and ``places[k] = (i, names)`` says that ``scopes[k]`` is
  ``packed[i]`` followed by pushes of ``names``.
  """
  packed: list[Scope] = []
  places: list[tuple[int, tuple[str, ...]]] = []
  for scope in scopes:
    # The outermost ancestor of ``scope`` (itself included) that is also passed in.
    top: Scope = scope
    names: tuple[str, ...] = ()
    walked: tuple[str, ...] = ()
    child, node = scope, scope.parent
    while node is not None:
      # Only the root has no name, and ``child`` has a parent.
      assert child.name is not None
      walked = walked + (child.name,)
      if any(node == other for other in scopes):
        top, names = node, tuple(reversed(walked))
      child, node = node, node.parent
    for i, seen in enumerate(packed):
      if seen == top:
        places.append((i, names))
        break
    else:
      packed.append(top)
      places.append((len(packed) - 1, names))
  return packed, places


def _variables_at(scope: Scope) -> dict[str, Any]:
  found = {}
  for col in scope.root._call.variables:
    d = scope._read_col(col)
    if d is not None:
      found[col] = d
  return found


def _group_rngs(scope: Scope, rng_filters: Sequence[Filter]) -> tuple[dict[str, Any], ...]:
  remaining = dict(scope.rngs)
  groups = []
  for f in rng_filters:
    taken = {name: lazy for name, lazy in remaining.items() if in_filter(f, name)}
    for name in taken:
      del remaining[name]
    groups.append(taken)
  return tuple(groups)


def _fork(scope: Scope, lazy_rngs: dict[str, LazyRng]) -> dict[str, LazyRng]:
  # Linen's "cached" transforms draw a fresh root key per stream in the transformed scope.
  return {name: LazyRng(scope.make_rng(name)) for name in lazy_rngs}


def _decorated(debug_path: tuple[str, ...], name: str | None) -> tuple[str, ...]:
  """``debug_path`` with its last element wrapped in the transform's name: ``vmap(dense)``."""
  if not name:
    return debug_path
  if not debug_path:
    return (f'{name}()',)
  return debug_path[:-1] + (f'{name}({debug_path[-1]})',)


def _identity(x: Any) -> Any:
  return x


def _key_sorted(tree: Any) -> Any:
  """``tree`` rebuilt by a pytree map, which orders every dict's keys: the order in which
  variables leave a JAX transform, and in which Linen's lifted scopes hand them out (they
  copy their inputs that way). Transforms that run their body without a JAX transform
  use it so that ``init`` returns Linen's key order."""
  return jax.tree_util.tree_map(_identity, tree)


class _Hashable:
  """Wraps a static argument so unhashable values still key the jit cache (by identity)."""

  __slots__ = ('value', '_key')

  def __init__(self, value: Any):
    self.value = value
    try:
      hash(value)
      self._key = value
    except TypeError:
      self._key = ('__id__', id(value))

  def __hash__(self) -> int:
    return hash(self._key)

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, _Hashable) and self._key == other._key


def _filter_key(f: Filter) -> Any:
  if isinstance(f, (bool, str)):
    return f
  if isinstance(f, (set, frozenset, list, tuple)):
    return tuple(sorted(f))
  return repr(f)


def pack(
  fn: Callable[..., Any],
  in_variable_filters: Sequence[Filter],
  out_variable_filters: Sequence[Filter],
  rng_filters: Sequence[Filter],
  name: str | None = None,
  fork_rngs: bool = False,
) -> Callable[..., Any]:
  """The lifting primitive: runs ``fn`` over plain pytrees taken out of scopes.

  ``fn(scope_fn, repack_fn, variable_groups, rng_groups, *args, **kwargs)`` must return
  ``(y, out_variable_groups)``. Inside whatever JAX transform ``fn`` applies:

  - ``scope_fn(variable_groups, rng_groups, mutable=None)`` builds fresh root scopes
    (one per outer scope) from the groups; ``mutable`` narrows what may be written.
  - ``repack_fn(inner_scopes)`` returns the mutable collections of the inner scopes,
    grouped by ``out_variable_filters``.

  ``variable_groups[i][j]`` is ``{collection: subtree}`` of packed scope ``j`` for the
  i-th variable filter (each collection goes to the first filter matching it;
  collections matching none are invisible inside). ``rng_groups[i][j]`` is ``{stream:
  raw root key}``. A scope passed together with one of its ancestors is not packed
  separately (see the module docstring).

  Args:
    fn: the transform body, as described above.
    in_variable_filters: how the variables entering ``fn`` are grouped.
    out_variable_filters: which mutable collections come back out, and their grouping.
    rng_filters: how RNG streams are grouped (streams matching none are invisible).
    name: the transform's name, shown in the debug path of the inner scopes
      (``/vmap(dense)``) and so in error messages.
    fork_rngs: draw a new root key per stream in the outer scope before the call and
      restart the path suffix (what Linen's jit and fold_rngs do).

  Returns:
    ``wrapper(scope_tree, *args, **kwargs)``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import init, lift
  >>> def body(scope_fn, repack_fn, variable_groups, rng_groups, x):
  ...   scope = scope_fn(variable_groups, rng_groups)
  ...   y = x * scope.param('w', jax.nn.initializers.ones, ())
  ...   return y, repack_fn(scope)
  >>> lifted = lift.pack(body, (True,), (True,), (True,), name='demo')
  >>> init(lifted)(jax.random.key(0), 3.0)
  (Array(3., dtype=float32), {'params': {'w': Array(1., dtype=float32)}})
  """
  out_union: Filter = False
  for f in out_variable_filters:
    out_union = union_filters(out_union, f)

  def wrapper(scope_tree: Any, *args: Any, **kwargs: Any) -> Any:
    given, rebuild = _flatten_scopes(scope_tree)
    if len(given) == 1:
      scopes, places = given, [(0, ())]
    else:
      scopes, places = _dedup_scopes(given)
    for scope in scopes:
      scope._check_valid()
      scope._check_trace_level()
    per_scope_vars = [group_collections(_variables_at(s), in_variable_filters) for s in scopes]
    per_scope_rngs = []
    for s in scopes:
      groups = _group_rngs(s, rng_filters)
      if fork_rngs:
        groups = tuple(_fork(s, g) for g in groups)
      per_scope_rngs.append(groups)
    suffixes = [
      {n: lazy.suffix for g in groups for n, lazy in g.items()} for groups in per_scope_rngs
    ]
    variable_groups = tuple(
      tuple(per_scope_vars[j][i] for j in range(len(scopes)))
      for i in range(len(in_variable_filters))
    )
    rng_groups = tuple(
      tuple({n: lazy.rng for n, lazy in per_scope_rngs[j][i].items()} for j in range(len(scopes)))
      for i in range(len(rng_filters))
    )
    inner_mutables = [intersect_filters(out_union, s._call.mutable) for s in scopes]
    debug_paths = [_decorated(s.debug_path, name) for s in scopes]
    created: list[Scope] = []

    def scope_fn(
      variable_groups: VariableGroups, rng_groups: RngGroups, mutable: Filter | None = None
    ):
      inner = []
      for j, outer in enumerate(scopes):
        mutable_j = inner_mutables[j]
        if mutable is not None:
          mutable_j = intersect_filters(mutable_j, mutable)
        variables: dict[str, Any] = {}
        for group in variable_groups:
          for col, tree in group[j].items():
            # Mutable subtrees are copied so writes inside never alias the outer dicts.
            variables[col] = _copy_dict_nodes(tree) if in_filter(mutable_j, col) else tree
        rngs = {}
        for group in rng_groups:
          for stream, key in group[j].items():
            rngs[stream] = LazyRng(key, suffixes[j][stream])
        scope = Scope(
          variables,
          rngs=rngs,
          name=outer.name,
          mutable=mutable_j,
          path=outer.path,
          debug_path=debug_paths[j],
          flags=outer._call.flags,
        )
        # Shared counter table: draws inside continue the outer counters (Linen semantics).
        scope.rng_counters = outer.rng_counters
        inner.append(scope)
      created.extend(inner)
      views = []
      for i, names in places:
        view = inner[i]
        for child_name in names:
          view = view.push(child_name, reuse=True)
        views.append(view)
      return rebuild(views)

    # What each inner scope may write, for transforms that skip work nobody can observe.
    scope_fn.mutable_filters = tuple(inner_mutables)  # type: ignore[attr-defined]
    # What a cached trace (jit) depends on besides the argument shapes.
    scope_fn.cache_key = tuple(  # type: ignore[attr-defined]
      (
        s.path,
        tuple(sorted(suffixes[j].items())),
        _filter_key(inner_mutables[j]),
        _Hashable(tuple(sorted(s._call.flags.items()))),
      )
      for j, s in enumerate(scopes)
    ) + (tuple(places),)

    def repack_fn(inner_tree: Any) -> VariableGroups:
      views, _ = _flatten_scopes(inner_tree)
      # The packed (root) scope of each group, whichever view of it was handed back.
      inner: list[Scope | None] = [None] * len(scopes)
      for view, (i, _) in zip(views, places):
        if inner[i] is None:
          inner[i] = view.root
      per_scope = []
      for scope in inner:
        assert scope is not None
        mutable_cols = {
          col: tree
          for col, tree in scope._call.variables.items()
          if scope.is_mutable_collection(col)
        }
        per_scope.append(group_collections(mutable_cols, out_variable_filters))
      return tuple(
        tuple(per_scope[j][i] for j in range(len(inner))) for i in range(len(out_variable_filters))
      )

    try:
      y, out_groups = fn(scope_fn, repack_fn, variable_groups, rng_groups, *args, **kwargs)
    finally:
      for scope in created:
        scope.invalidate()
    for group in out_groups:
      for j, scope in enumerate(scopes):
        for col, tree in group[j].items():
          # Transforms such as scan hand back immutable broadcast collections too.
          if not scope.is_mutable_collection(col) or not tree:
            continue
          for var_name, value in tree.items():
            scope.put_variable(col, var_name, value)
          for child in scope._children.values():
            _forget_cached_dicts(child, col)
    return y

  wrapper.__name__ = f'lifted_{name or getattr(fn, "__name__", "transform")}'
  return wrapper
