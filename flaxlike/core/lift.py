"""Lifted transforms: JAX transforms applied to functions of scopes.

A JAX transform only accepts pure functions of pytrees, while a scope hides its variables
and RNG streams behind a stateful object. ``pack`` bridges the two: it takes the variables
(at the scope's path) and RNG keys out of the scopes as plain pytrees, runs a JAX transform
over an inner function that rebuilds fresh root scopes from them, and writes the mutated
collections back into the outer scopes. Every transform here (``vmap``, ``scan``, ``jit``,
``checkpoint``, ``cond``, ``while_loop``, ``custom_vjp``, ...) is ``pack`` plus a few lines
saying how variable groups and RNG groups map onto the JAX transform's arguments.

RNG streams travel as raw root keys; the static path suffix of each lazy key stays on the
Python side and is re-attached inside, so splitting a stream (``split_rngs``) splits the
raw root key and keeps the suffix, as Linen does. Inner root scopes share the outer scope's
counter table (and, through it, the counter tables of all descendants), so keys drawn
inside continue the outer counters and survive re-tracing.

See docs/design/lift.md.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxlike.core import meta
from flaxlike.core.scope import (
  Filter,
  LazyRng,
  Scope,
  _copy_dict_nodes,
  group_collections,
  in_filter,
  intersect_filters,
  subtract_filters,
  union_filters,
)

# A group is a tuple with one entry per scope; ``variable_groups[i]`` holds the
# collections matched by the i-th variable filter.
VariableGroups = tuple
RngGroups = tuple


class _Broadcast:
  """Marks an argument or output of ``scan`` that is not scanned over (``nn.broadcast``)."""

  def __repr__(self) -> str:
    return 'broadcast'

  def __reduce__(self):
    return (_get_broadcast, ())


broadcast = _Broadcast()


def _get_broadcast() -> _Broadcast:
  return broadcast


@dataclasses.dataclass(frozen=True)
class In:
  """A ``variable_axes`` value that applies to the inputs of a transform only."""

  axis: Any


@dataclasses.dataclass(frozen=True)
class Out:
  """A ``variable_axes`` value that applies to the outputs of a transform only."""

  axis: Any


def _split_in_out_axis(axis: Any) -> tuple[Any, Any]:
  if isinstance(axis, In):
    return axis.axis, None
  if isinstance(axis, Out):
    return None, axis.axis
  return axis, axis


def _split_in_out_axes(variable_axes: Mapping[Filter, Any]) -> tuple[tuple, tuple]:
  ins, outs = [], []
  for axis in variable_axes.values():
    i, o = _split_in_out_axis(axis)
    ins.append(i)
    outs.append(o)
  return tuple(ins), tuple(outs)


#################################################
# The primitive
#################################################


def _flatten_scopes(scope_tree: Any) -> tuple[list[Scope], Callable[[list], Any]]:
  if isinstance(scope_tree, Scope):
    return [scope_tree], lambda xs: xs[0]
  if isinstance(scope_tree, (list, tuple)):
    kind = type(scope_tree)
    return list(scope_tree), lambda xs: kind(xs)
  if isinstance(scope_tree, Mapping):
    keys = list(scope_tree)
    return [scope_tree[k] for k in keys], lambda xs: dict(zip(keys, xs))
  raise TypeError(f'Lifted transforms expect a Scope or a list/dict of Scopes, got {scope_tree!r}.')


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


def _forget_cached_dicts(scope: Scope, col: str) -> None:
  """Drops the per-scope dict caches of ``col`` below ``scope`` after a subtree write."""
  for child in scope._children.values():
    child._col_dicts.pop(col, None)
    _forget_cached_dicts(child, col)


def _fork(scope: Scope, lazy_rngs: dict[str, LazyRng]) -> dict[str, LazyRng]:
  # Linen's "cached" transforms draw a fresh root key per stream in the transformed scope.
  return {name: LazyRng(scope.make_rng(name)) for name in lazy_rngs}


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

  ``variable_groups[i][j]`` is ``{collection: subtree}`` of scope ``j`` for the i-th
  variable filter (each collection goes to the first filter matching it; collections
  matching none are invisible inside). ``rng_groups[i][j]`` is ``{stream: raw root key}``.

  Args:
    fn: the transform body, as described above.
    in_variable_filters: how the variables entering ``fn`` are grouped.
    out_variable_filters: which mutable collections come back out, and their grouping.
    rng_filters: how RNG streams are grouped (streams matching none are invisible).
    name: the transform's name, used in error messages.
    fork_rngs: draw a new root key per stream in the outer scope before the call and
      restart the path suffix (what Linen's jit and fold_rngs do).

  Returns:
    ``wrapper(scope_tree, *args, **kwargs)``.
  """
  out_union: Filter = False
  for f in out_variable_filters:
    out_union = union_filters(out_union, f)

  def wrapper(scope_tree: Any, *args: Any, **kwargs: Any) -> Any:
    scopes, rebuild = _flatten_scopes(scope_tree)
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
          flags=outer._call.flags,
        )
        # Shared counter table: draws inside continue the outer counters (Linen semantics).
        scope.rng_counters = outer.rng_counters
        inner.append(scope)
      created.extend(inner)
      return rebuild(inner)

    # What each inner scope may write, for transforms that skip work nobody can observe.
    scope_fn.mutable_filters = tuple(inner_mutables)  # type: ignore[attr-defined]
    # What a cached trace (jit) depends on besides the argument shapes.
    scope_fn.cache_key = tuple(  # type: ignore[attr-defined]
      (
        s.path,
        tuple(tuple(sorted(sfx.items())) for sfx in [suffixes[j]]),
        _filter_key(inner_mutables[j]),
        _Hashable(tuple(sorted(s._call.flags.items()))),
      )
      for j, s in enumerate(scopes)
    )

    def repack_fn(inner_tree: Any) -> VariableGroups:
      inner, _ = _flatten_scopes(inner_tree)
      per_scope = []
      for scope in inner:
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
          _forget_cached_dicts(scope, col)
    return y

  wrapper.__name__ = f'lifted_{name or getattr(fn, "__name__", "transform")}'
  return wrapper


#################################################
# Helpers shared by the mapping transforms
#################################################


def _split_keys(group: tuple[dict[str, Any], ...], n: int) -> tuple[dict[str, Any], ...]:
  return tuple({k: jax.random.split(v, n) for k, v in d.items()} for d in group)


def _map_meta(
  groups: VariableGroups, axes: Sequence[Any], params: Mapping[str, Any], add: bool
) -> VariableGroups:
  out = []
  for group, axis in zip(groups, axes):
    if axis is None or axis is broadcast:
      out.append(group)
    elif add:
      out.append(meta.add_axis(group, axis, dict(params)))
    else:
      out.append(meta.remove_axis(group, axis, dict(params)))
  return tuple(out)


def _infer_axis_size(in_axes: Any, args: tuple, what: str) -> int:
  sizes = set()

  def visit(axis, subtree):
    if axis is None or axis is broadcast:
      return
    for leaf in jax.tree_util.tree_leaves(subtree):
      sizes.add(np.shape(leaf)[axis])

  if isinstance(in_axes, (list, tuple)):
    if len(in_axes) != len(args):
      raise ValueError(
        f'{what}: in_axes has {len(in_axes)} entries but the function got {len(args)} '
        'positional arguments; give one axis per argument or a single int.'
      )
    for axis, arg in zip(in_axes, args):
      jax.tree_util.tree_map(visit, axis, arg, is_leaf=lambda a: a is None or a is broadcast)
  else:
    for arg in args:
      visit(in_axes, arg)
  if not sizes:
    raise ValueError(f'{what}: cannot infer the axis size from the inputs; pass axis_size/length.')
  if len(sizes) > 1:
    raise ValueError(f'{what}: inconsistent sizes {sorted(sizes)} along the mapped input axes.')
  return sizes.pop()


#################################################
# vmap
#################################################


def vmap(
  fn: Callable[..., Any],
  variable_axes: Mapping[Filter, Any],
  split_rngs: Mapping[Filter, bool],
  in_axes: Any = 0,
  out_axes: Any = 0,
  axis_size: int | None = None,
  axis_name: str | None = None,
  spmd_axis_name: Any = None,
  metadata_params: Mapping[str, Any] = {},
) -> Callable[..., Any]:
  """Vectorises ``fn(scope, *args)`` over a batch axis of its inputs.

  Collections matched by ``variable_axes`` are mapped along the given axis (``None``
  broadcasts them); collections matched by nothing are invisible inside. Streams with
  ``split_rngs[stream]`` True get one key per batch member, split from the raw root key.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import init, lift
  >>> def dense(scope, x):
  ...   w = scope.param('w', jax.nn.initializers.normal(), (x.shape[-1], 2))
  ...   return x @ w
  >>> ensemble = lift.vmap(dense, variable_axes={'params': 0}, split_rngs={'params': True},
  ...                      in_axes=None, axis_size=3)
  >>> y, variables = init(ensemble)(jax.random.key(0), jnp.ones((1, 4)))
  >>> variables['params']['w'].shape, y.shape
  ((3, 4, 2), (3, 1, 2))
  """
  variable_in_axes, variable_out_axes = _split_in_out_axes(variable_axes)
  variable_filters = tuple(variable_axes.keys())
  rng_filters = tuple(split_rngs.keys())
  rng_split = tuple(split_rngs.values())
  args_axes = tuple(in_axes) if isinstance(in_axes, list) else in_axes

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args):
    size = axis_size
    if size is None:
      size = _infer_axis_size(args_axes, args, 'vmap')
    rng_groups = tuple(
      _split_keys(g, size) if split else g for g, split in zip(rng_groups, rng_split)
    )
    rng_axes = tuple(0 if split else None for split in rng_split)
    variable_groups = _map_meta(variable_groups, variable_in_axes, metadata_params, add=False)

    def mapped(variable_groups, rng_groups, args):
      scope = scope_fn(variable_groups, rng_groups)
      y = fn(scope, *args)
      return y, repack_fn(scope)

    y, out_groups = jax.vmap(
      mapped,
      in_axes=(variable_in_axes, rng_axes, args_axes),
      out_axes=(out_axes, variable_out_axes),
      axis_size=size,
      axis_name=axis_name,
      spmd_axis_name=spmd_axis_name,
    )(variable_groups, rng_groups, args)
    return y, _map_meta(out_groups, variable_out_axes, metadata_params, add=True)

  return pack(inner, variable_filters, variable_filters, rng_filters, name='vmap')


def add_metadata_axis(
  fn: Callable[..., Any],
  variable_axes: Mapping[Filter, int] = {},
  metadata_params: Mapping[str, Any] = {},
) -> Callable[..., Any]:
  """Adds an axis to the boxed metadata of ``variable_axes`` collections, without mapping.

  Inside, boxes describe the value without the axis; outside, with it.
  """
  variable_filters = tuple(variable_axes.keys())
  axes = tuple(variable_axes.values())

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args, **kwargs):
    scope = scope_fn(_map_meta(variable_groups, axes, metadata_params, add=False), rng_groups)
    y = fn(scope, *args, **kwargs)
    return y, _map_meta(repack_fn(scope), axes, metadata_params, add=True)

  return pack(inner, variable_filters, variable_filters, (True,), name='add_metadata_axis')


#################################################
# scan
#################################################


def _to_front(tree: Any, axis: int) -> Any:
  if axis == 0:
    return tree
  return jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, axis, 0), tree)


def _from_front(tree: Any, axis: int) -> Any:
  if axis == 0:
    return tree
  return jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, 0, axis), tree)


def _is_axis_leaf(a: Any) -> bool:
  return a is None or a is broadcast


def _split_ys(out_axes: Any, ys: Any, keep_broadcast: bool) -> Any:
  """Keeps the broadcast (``keep_broadcast``) or the scanned outputs; None elsewhere."""

  def pick(axis, sub):
    if (axis is broadcast) == keep_broadcast:
      return sub
    return None

  return jax.tree_util.tree_map(pick, out_axes, ys, is_leaf=_is_axis_leaf)


def _merge_ys(out_axes: Any, scanned: Any, broadcasted: Any) -> Any:
  def pick(axis, s, b):
    return b if axis is broadcast else _from_front(s, axis)

  return jax.tree_util.tree_map(pick, out_axes, scanned, broadcasted, is_leaf=_is_axis_leaf)


def scan(
  fn: Callable[..., Any],
  variable_axes: Mapping[Filter, Any] = {},
  variable_broadcast: Filter = False,
  variable_carry: Filter = False,
  split_rngs: Mapping[Filter, bool] = {},
  in_axes: Any = 0,
  out_axes: Any = 0,
  length: int | None = None,
  reverse: bool = False,
  unroll: int = 1,
  _split_transpose: bool = False,
  data_transform: Callable[..., Any] | None = None,
  metadata_params: Mapping[str, Any] = {},
  check_constancy_invariants: bool = True,
) -> Callable[..., Any]:
  """Loops ``fn(scope, carry, *xs) -> (carry, ys)`` with ``jax.lax.scan``.

  Collections in ``variable_axes`` are stacked along their axis (one slice per step),
  ``variable_broadcast`` ones are shared by every step (created once, before the loop),
  ``variable_carry`` ones are threaded through the steps like the carry.

  With ``check_constancy_invariants`` (the default, as in Linen) the body runs once before
  the loop, under a size-1 ``vmap`` whose broadcast outputs must stay unbatched: that
  computes the broadcast variables and ``broadcast`` outputs, checks that they do not
  depend on the carry or the scanned inputs, and advances the RNG counters exactly as
  Linen's extra trace does, so initial values match Linen's. When there is nothing
  broadcast to compute (no writable broadcast collection, no ``broadcast`` output) that
  pass is traced abstractly, so it adds no equations to the caller's jaxpr, or, when no
  RNG stream reaches the body either (e.g. inference), not at all.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import init, lift
  >>> def layer(scope, h):
  ...   w = scope.param('w', jax.nn.initializers.normal(), (h.shape[-1], h.shape[-1]))
  ...   return jnp.tanh(h @ w), ()
  >>> stack = lift.scan(layer, variable_axes={'params': 0}, split_rngs={'params': True},
  ...                   length=5)
  >>> (h, _), variables = init(stack)(jax.random.key(0), jnp.ones((1, 3)))
  >>> variables['params']['w'].shape
  (5, 3, 3)
  """
  variable_in_axes, variable_out_axes = _split_in_out_axes(variable_axes)
  variable_filters = (variable_broadcast, variable_carry) + tuple(variable_axes.keys())
  rng_filters = tuple(split_rngs.keys())
  rng_split = tuple(split_rngs.values())

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, init, *args):
    bc_vars, carry_vars, *scan_vars = variable_groups
    arg_axes = tuple(in_axes) if isinstance(in_axes, (list, tuple)) else (in_axes,) * len(args)
    if len(arg_axes) != len(args):
      raise ValueError(
        f'scan: in_axes has {len(arg_axes)} entries for {len(args)} scanned arguments.'
      )
    scan_vars = _map_meta(tuple(scan_vars), variable_in_axes, metadata_params, add=False)
    scan_vars = tuple(_to_front(g, ax) for g, ax in zip(scan_vars, variable_in_axes))
    xs_args = tuple(None if ax is broadcast else _to_front(a, ax) for a, ax in zip(args, arg_axes))
    n = length
    if n is None:
      lead = jax.tree_util.tree_leaves((xs_args, scan_vars))
      if not lead:
        raise ValueError('scan: pass length= when nothing is scanned over (no scanned input).')
      n = np.shape(lead[0])[0]
    scan_rngs = tuple(
      _split_keys(g, n) if split else None for g, split in zip(rng_groups, rng_split)
    )
    bc_rngs = tuple(None if split else g for g, split in zip(rng_groups, rng_split))

    def body(bc, carry, xs):
      bc_vars_in, bc_rngs_in = bc
      carry_vars_in, c = carry
      scan_vars_in, scan_rngs_in, xs_in = xs
      groups = (bc_vars_in, carry_vars_in, *scan_vars_in)
      rngs_in = tuple(s if split else b for s, b, split in zip(scan_rngs_in, bc_rngs_in, rng_split))
      if data_transform is not None:
        groups, rngs_in = data_transform(groups, rngs_in)
      step_args = tuple(a if ax is broadcast else x for a, x, ax in zip(args, xs_in, arg_axes))
      scope = scope_fn(groups, rngs_in)
      c, y = fn(scope, c, *step_args)
      bc_out, carry_out, *scan_out = repack_fn(scope)
      # Immutable broadcast collections ride along so the loop body sees them too.
      bc_out = tuple({**d_in, **d_out} for d_in, d_out in zip(bc_vars_in, bc_out))
      return (bc_out, bc_rngs_in), (carry_out, c), (tuple(scan_out), y)

    bc = (bc_vars, bc_rngs)
    carry = (carry_vars, init)
    xs = (scan_vars, scan_rngs, xs_args)
    has_broadcast_ys = broadcast in jax.tree_util.tree_leaves(out_axes, is_leaf=_is_axis_leaf)
    broadcast_may_change = any(
      intersect_filters(variable_broadcast, m) is not False for m in scope_fn.mutable_filters
    )
    rng_in_reach = any(streams for group in rng_groups for streams in group)
    if check_constancy_invariants and not (has_broadcast_ys or broadcast_may_change):
      # Nothing the extra pass computes is used. Its one lasting effect is advancing the
      # RNG counters as Linen's extra trace does (so random values match Linen's); with
      # no RNG stream in reach it is skipped, and otherwise traced abstractly, so its
      # operations stay out of the caller's jaxpr instead of lingering there as dead code.
      if rng_in_reach:
        step_specs = jax.tree_util.tree_map(
          lambda x: jax.ShapeDtypeStruct(np.shape(x)[1:], x.dtype), xs
        )
        jax.eval_shape(lambda c, x: body(bc, c, x), carry, step_specs)
      bc_ys = None
    elif check_constancy_invariants:
      first = jax.tree_util.tree_map(lambda x: x[:1], xs)
      carry1 = jax.tree_util.tree_map(lambda x: jnp.expand_dims(jnp.asarray(x), 0), carry)
      probe_ys_axes = jax.tree_util.tree_map(
        lambda ax: None if ax is broadcast else 0, out_axes, is_leaf=_is_axis_leaf
      )
      try:
        bc, _, (_, probe_ys) = jax.vmap(
          body, in_axes=(None, 0, 0), out_axes=(None, 0, (0, probe_ys_axes)), axis_size=1
        )(bc, carry1, first)
      except ValueError as e:
        if 'out_axes' not in str(e):
          raise
        raise ValueError(
          'scan: a broadcast variable or a broadcast output (out_axes=nn.broadcast) '
          'depends on the carry or the scanned inputs, so it is not the same at every '
          'step. Compute it outside the scan, or scan it (variable_axes / out_axes=0).'
        ) from e
      bc_ys = _split_ys(out_axes, probe_ys, keep_broadcast=True)
    else:
      if has_broadcast_ys:
        raise ValueError(
          'scan with check_constancy_invariants=False does not support broadcast outputs '
          f'(out_axes={out_axes}).'
        )
      bc_ys = None

    def loop_body(carry, xs):
      _, carry, (scan_out, y) = body(bc, carry, xs)
      return carry, (scan_out, _split_ys(out_axes, y, keep_broadcast=False))

    (carry_vars_out, c), (scan_out, ys) = jax.lax.scan(
      loop_body,
      carry,
      xs,
      length=n,
      reverse=reverse,
      unroll=unroll,
      _split_transpose=_split_transpose,
    )
    if bc_ys is None:
      ys = jax.tree_util.tree_map(
        lambda ax, s: _from_front(s, ax), out_axes, ys, is_leaf=_is_axis_leaf
      )
    else:
      ys = _merge_ys(out_axes, ys, bc_ys)
    scan_out = tuple(_from_front(g, ax) for g, ax in zip(scan_out, variable_out_axes))
    scan_out = _map_meta(scan_out, variable_out_axes, metadata_params, add=True)
    return (c, ys), (bc[0], carry_vars_out, *scan_out)

  return pack(inner, variable_filters, variable_filters, rng_filters, name='scan')


#################################################
# jit, checkpoint, named_call, fold_rngs
#################################################


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


def jit(
  fn: Callable[..., Any],
  variables: Filter = True,
  rngs: Filter = True,
  static_argnums: int | Sequence[int] = (),
  static_argnames: str | Sequence[str] = (),
  donate_argnums: int | Sequence[int] = (),
  device: Any = None,
  backend: str | None = None,
) -> Callable[..., Any]:
  """Compiles ``fn(scope, *args)`` with ``jax.jit``, caching the trace across calls.

  RNG streams are forked (a fresh root key drawn from the outer scope per call), as in
  Linen, so cached calls still get new randomness. ``static_argnums`` index the arguments
  after the scope. The cache is keyed on the scope's path, RNG suffixes, mutability and
  flags plus the static arguments, so a cache hit never reuses a trace that was made
  for a different variable layout.
  """
  if isinstance(static_argnums, int):
    static_argnums = (static_argnums,)
  if isinstance(donate_argnums, int):
    donate_argnums = (donate_argnums,)
  local = threading.local()

  def traced(static_key, variable_groups, rng_groups, *args):
    del static_key
    scope_fn, repack_fn, static_positions = local.stack[-1]
    args = tuple(a.value if i in static_positions else a for i, a in enumerate(args))
    scope = scope_fn(variable_groups, rng_groups)
    y = fn(scope, *args)
    return y, repack_fn(scope)

  jitted = jax.jit(
    traced,
    static_argnums=(0,) + tuple(i + 3 for i in static_argnums),
    static_argnames=static_argnames,
    donate_argnums=tuple(i + 3 for i in donate_argnums),
    device=device,
    backend=backend,
  )

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args, **kwargs):
    positions = frozenset(static_argnums)
    args = tuple(_Hashable(a) if i in positions else a for i, a in enumerate(args))
    if not hasattr(local, 'stack'):
      local.stack = []
    local.stack.append((scope_fn, repack_fn, positions))
    try:
      return jitted(scope_fn.cache_key, variable_groups, rng_groups, *args, **kwargs)
    finally:
      local.stack.pop()

  return pack(inner, (variables,), (variables,), (rngs,), name='jit', fork_rngs=True)


def fold_rngs(
  fn: Callable[..., Any], variables: Filter = True, rngs: Filter = True
) -> Callable[..., Any]:
  """Runs ``fn(scope, *args)`` with forked RNG streams (Linen's ``fold_rngs``), no transform."""

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args, **kwargs):
    scope = scope_fn(variable_groups, rng_groups)
    y = fn(scope, *args, **kwargs)
    # Linen's fold_rngs hands the variables through a pytree map, which sorts dict keys;
    # rebuilding them the same way keeps the init output order identical.
    return y, jax.tree_util.tree_map(lambda v: v, repack_fn(scope))

  return pack(inner, (variables,), (variables,), (rngs,), name='fold_rngs', fork_rngs=True)


def checkpoint(
  fn: Callable[..., Any],
  variables: Filter = True,
  rngs: Filter = True,
  concrete: bool = False,
  prevent_cse: bool = True,
  static_argnums: int | Sequence[int] = (),
  policy: Callable[..., bool] | None = None,
) -> Callable[..., Any]:
  """Rematerialises ``fn(scope, *args)`` in the backward pass (``jax.checkpoint``).

  ``static_argnums`` index the arguments after the scope.
  """
  del concrete  # jax.checkpoint no longer needs it; kept for Linen's signature.
  if isinstance(static_argnums, int):
    static_argnums = (static_argnums,)

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args, **kwargs):
    def rematted(variable_groups, rng_groups, *args):
      scope = scope_fn(variable_groups, rng_groups)
      y = fn(scope, *args, **kwargs)
      return y, repack_fn(scope)

    return jax.checkpoint(
      rematted,
      prevent_cse=prevent_cse,
      policy=policy,
      static_argnums=tuple(i + 2 for i in static_argnums),
    )(variable_groups, rng_groups, *args)

  return pack(inner, (variables,), (variables,), (rngs,), name='remat')


remat = checkpoint


def named_call(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
  """Runs ``fn(scope, *args)`` under ``jax.named_scope(name)`` (profiler and HLO names)."""

  def wrapper(scope: Scope, *args: Any, **kwargs: Any) -> Any:
    with jax.named_scope(name):
      return fn(scope, *args, **kwargs)

  return wrapper


def remat_scan(
  body_fn: Callable[..., Any],
  lengths: Sequence[int] = (),
  policy: Callable[..., bool] | None = None,
  variable_broadcast: Filter = False,
  variable_carry: Filter = False,
  variable_axes: Mapping[Filter, Any] = {True: 0},
  split_rngs: Mapping[Filter, bool] = {True: True},
  metadata_params: Mapping[str, Any] = {},
) -> Callable[..., Any]:
  """Nested scans of rematerialised ``body_fn(scope, carry) -> carry``.

  ``lengths=(a, b)`` runs ``a * b`` steps with variables stacked as ``(a, b, ...)``, and
  memory that grows like ``a + b`` instead of ``a * b`` in the backward pass.
  ``metadata_params`` names the outermost stacked axis of boxed variables; the inner loop
  axes are named None (replicated), since one mesh axis cannot shard two dimensions.
  """
  if not lengths:
    raise ValueError('remat_scan needs at least one loop length, e.g. lengths=(4, 4).')
  scan_kwargs = dict(
    variable_broadcast=variable_broadcast,
    variable_carry=variable_carry,
    variable_axes=variable_axes,
    split_rngs=split_rngs,
  )
  if len(lengths) == 1:

    def step(scope, carry):
      return body_fn(scope, carry), ()

  else:
    inner_params = {**metadata_params, meta.PARTITION_NAME: None}

    def step(scope, carry):
      inner = remat_scan(body_fn, lengths[1:], policy, metadata_params=inner_params, **scan_kwargs)
      return inner(scope, carry), ()

  looped = scan(
    checkpoint(step, policy=policy, prevent_cse=False),
    length=lengths[0],
    metadata_params=metadata_params,
    **scan_kwargs,
  )

  def wrapper(scope: Scope, carry: Any) -> Any:
    return looped(scope, carry)[0]

  return wrapper


#################################################
# Control flow
#################################################


def _branch_runner(scope_fn, repack_fn, f):
  def run(variable_groups, rng_groups, *operands):
    inner_scope = scope_fn(variable_groups, rng_groups)
    y = f(inner_scope, *operands)
    return y, repack_fn(inner_scope)

  return run


def cond(
  pred: Any,
  true_fun: Callable[..., Any],
  false_fun: Callable[..., Any],
  scope: Scope,
  *operands: Any,
  variables: Filter = True,
  rngs: Filter = True,
) -> Any:
  """``jax.lax.cond`` over two functions of a scope; both branches are traced.

  Both branches must produce the same variables (create them in both, or before). As in
  Linen, the true branch is traced first, so RNG counters of variables created in both
  branches differ between the branches.
  """

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *operands):
    return jax.lax.cond(
      pred,
      _branch_runner(scope_fn, repack_fn, true_fun),
      _branch_runner(scope_fn, repack_fn, false_fun),
      variable_groups,
      rng_groups,
      *operands,
    )

  return pack(inner, (variables,), (variables,), (rngs,), name='cond')(scope, *operands)


def switch(
  index: Any,
  branches: Sequence[Callable[..., Any]],
  scope: Scope,
  *operands: Any,
  variables: Filter = True,
  rngs: Filter = True,
) -> Any:
  """``jax.lax.switch`` over functions of a scope; every branch is traced, in order."""

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *operands):
    runners = [_branch_runner(scope_fn, repack_fn, f) for f in branches]
    return jax.lax.switch(index, runners, variable_groups, rng_groups, *operands)

  return pack(inner, (variables,), (variables,), (rngs,), name='switch')(scope, *operands)


def while_loop(
  cond_fn: Callable[..., Any],
  body_fn: Callable[..., Any],
  scope: Scope,
  init: Any,
  carry_variables: Filter = False,
  broadcast_variables: Filter = True,
  split_rngs: Mapping[Filter, bool] = {},
) -> Any:
  """``jax.lax.while_loop`` with ``cond_fn(scope, c) -> bool`` and ``body_fn(scope, c) -> c``.

  ``carry_variables`` may change from one iteration to the next (they must exist before
  the loop); ``broadcast_variables`` are read-only. Streams with ``split_rngs`` True get a
  new key every iteration.
  """
  rng_filters = tuple(split_rngs.keys())
  rng_split = tuple(split_rngs.values())

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, init):
    carry_vars, bc_vars = variable_groups
    split_groups = tuple(g if split else None for g, split in zip(rng_groups, rng_split))
    fixed_groups = tuple(None if split else g for g, split in zip(rng_groups, rng_split))

    def rngs_of(split_state, advance):
      out, nxt = [], []
      for s, fixed, split in zip(split_state, fixed_groups, rng_split):
        if not split:
          out.append(fixed)
          nxt.append(None)
        elif advance:
          pairs = tuple({k: jax.random.split(v) for k, v in d.items()} for d in s)
          out.append(tuple({k: p[0] for k, p in d.items()} for d in pairs))
          nxt.append(tuple({k: p[1] for k, p in d.items()} for d in pairs))
        else:
          out.append(s)
          nxt.append(s)
      return tuple(out), tuple(nxt)

    def cond_wrapper(state):
      cvars, split_state, c = state
      rngs, _ = rngs_of(split_state, advance=False)
      inner_scope = scope_fn((cvars, bc_vars), rngs, mutable=False)
      return cond_fn(inner_scope, c)

    def body_wrapper(state):
      cvars, split_state, c = state
      rngs, nxt = rngs_of(split_state, advance=True)
      inner_scope = scope_fn((cvars, bc_vars), rngs, mutable=carry_variables)
      c = body_fn(inner_scope, c)
      cvars_out, _ = repack_fn(inner_scope)
      return cvars_out, nxt, c

    cvars, _, c = jax.lax.while_loop(cond_wrapper, body_wrapper, (carry_vars, split_groups, init))
    return c, (cvars, tuple({} for _ in bc_vars))

  filters = (carry_variables, broadcast_variables)
  return pack(inner, filters, filters, rng_filters, name='while_loop')(scope, init)


#################################################
# Variable mapping and differentiation
#################################################


def map_variables(
  fn: Callable[..., Any],
  mapped_collections: Filter,
  map_in_fn: Callable[..., Any],
  map_out_fn: Callable[..., Any],
  init: bool = False,
  mutable: bool = False,
  rngs: Filter = True,
  variables: Filter = True,
) -> Callable[..., Any]:
  """Runs ``fn(scope, *args)`` on variables transformed by ``map_in_fn``.

  ``map_in_fn``/``map_out_fn`` receive ``{collection: subtree}`` of the mapped collections
  at the scope. With ``mutable``, writes inside are mapped back with ``map_out_fn``; with
  ``init``, missing variables are first created by running ``fn`` on the raw variables.
  """
  is_target_out = mutable or init
  rest = subtract_filters(variables, mapped_collections)
  in_filters = (mapped_collections, rest)
  out_filters = in_filters if is_target_out else (False, rest)

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args, **kwargs):
    target, other = variable_groups
    created = None
    if init:
      first = scope_fn((target, other), rng_groups)
      scopes, _ = _flatten_scopes(first)
      if any(s.get_flag('initializing', False) for s in scopes):
        fn(first, *args, **kwargs)
        created, _ = repack_fn(first)
        target = tuple({**t, **c} for t, c in zip(target, created))
    mapped_target = tuple(map_in_fn(t) for t in target)
    inner_scope = scope_fn(
      (mapped_target, other),
      rng_groups,
      mutable=True if mutable else subtract_filters(True, mapped_collections),
    )
    y = fn(inner_scope, *args, **kwargs)
    out_target, out_other = repack_fn(inner_scope)
    if mutable:
      out_target = tuple(map_out_fn(t) for t in out_target)
    elif created is not None:
      out_target = created
    else:
      out_target = tuple({} for _ in target)
    return y, (out_target, out_other)

  return pack(inner, in_filters, out_filters, (rngs,), name='map_variables')


def _single_scope_grads(bwd: Callable[..., Any], cotangent: Any) -> tuple:
  var_grads, *primal_grads = bwd(cotangent)
  return (var_grads[0], *primal_grads)


def _scope_list_grads(bwd: Callable[..., Any], cotangent: Any) -> tuple:
  var_grads, *primal_grads = bwd(cotangent)
  return (list(var_grads), *primal_grads)


def vjp(
  fn: Callable[..., Any],
  scope: Scope,
  *primals: Any,
  has_aux: bool = False,
  reduce_axes: Sequence[Any] = (),
  vjp_variables: Filter = 'params',
  variables: Filter = True,
  rngs: Filter = True,
) -> Any:
  """``jax.vjp`` of ``fn(scope, *primals)`` w.r.t. the primals and ``vjp_variables``.

  Returns ``(y, vjp_fn)`` (plus ``aux`` with ``has_aux``); ``vjp_fn(cotangent)`` gives
  ``(variable_grads, *primal_grads)`` where ``variable_grads`` is ``{collection: grads}``.
  """
  del reduce_axes  # removed from jax.vjp; kept for Linen's signature.
  rest = subtract_filters(variables, vjp_variables)

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *primals):
    diff_vars, other_vars = variable_groups

    def pure(diff_vars, *primals):
      inner_scope = scope_fn((diff_vars, other_vars), rng_groups)
      out = fn(inner_scope, *primals)
      if has_aux:
        y, aux = out
      else:
        y, aux = out, None
      return y, (aux, repack_fn(inner_scope))

    y, bwd, (aux, out_groups) = jax.vjp(pure, diff_vars, *primals, has_aux=True)

    # A pytree (Partial), so it can be a residual of custom_vjp or cross a jit boundary.
    # One scope: its {collection: grads}; a list of scopes: one such dict per scope.
    grads_of = _single_scope_grads if isinstance(scope, Scope) else _scope_list_grads
    vjp_fn = jax.tree_util.Partial(grads_of, bwd)
    result = (y, vjp_fn, aux) if has_aux else (y, vjp_fn)
    return result, out_groups

  return pack(inner, (vjp_variables, rest), (vjp_variables, rest), (rngs,), name='vjp')(
    scope, *primals
  )


def value_and_grad(
  fn: Callable[..., Any],
  scope: Scope,
  *primals: Any,
  has_aux: bool = False,
  reduce_axes: Sequence[Any] = (),
  variables: Filter = True,
  rngs: Filter = True,
) -> Any:
  """``jax.value_and_grad`` of scalar ``fn(scope, *primals)`` w.r.t. the primals.

  Returns ``(value, primal_grads)``, or ``((value, aux), primal_grads)`` with ``has_aux``
  (Linen's convention: variables are not differentiated here; use ``vjp`` for them).
  """
  del reduce_axes

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *primals):
    def pure(*primals):
      inner_scope = scope_fn(variable_groups, rng_groups)
      out = fn(inner_scope, *primals)
      if has_aux:
        y, aux = out
      else:
        y, aux = out, None
      return y, (aux, repack_fn(inner_scope))

    argnums = tuple(range(len(primals)))
    (y, (aux, out_groups)), grads = jax.value_and_grad(pure, argnums=argnums, has_aux=True)(
      *primals
    )
    value = (y, aux) if has_aux else y
    return (value, grads), out_groups

  return pack(inner, (variables,), (variables,), (rngs,), name='value_and_grad')(scope, *primals)


def jvp(
  fn: Callable[..., Any],
  scope: Scope,
  primals: Sequence[Any],
  tangents: Sequence[Any],
  variable_tangents: Mapping[str, Any],
  variables: Filter = True,
  rngs: Filter = True,
) -> Any:
  """``jax.jvp`` of ``fn(scope, *primals)``; ``variable_tangents`` is ``{collection: tangents}``.

  Collections named in ``variable_tangents`` are differentiated; returns ``(y, y_tangent)``.
  """
  tangent_cols = tuple(variable_tangents.keys())
  rest = subtract_filters(variables, set(tangent_cols))

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args):
    diff_vars, other_vars = variable_groups
    var_tangents = tuple({c: variable_tangents[c] for c in d} for d in diff_vars)

    def pure(diff_vars, primals):
      inner_scope = scope_fn((diff_vars, other_vars), rng_groups)
      y = fn(inner_scope, *primals)
      return y, repack_fn(inner_scope)

    (y, out_groups), (y_t, _) = jax.jvp(
      pure, (diff_vars, tuple(primals)), (var_tangents, tuple(tangents))
    )
    return (y, y_t), out_groups

  return pack(inner, (set(tangent_cols), rest), (set(tangent_cols), rest), (rngs,), name='jvp')(
    scope
  )


def custom_vjp(
  fn: Callable[..., Any],
  forward_fn: Callable[..., Any],
  backward_fn: Callable[..., Any],
  grad_vars: Filter = 'params',
  nondiff_argnums: Sequence[int] = (),
) -> Callable[..., Any]:
  """A function of a scope with a custom backward pass (``jax.custom_vjp``).

  ``forward_fn(scope, *args) -> (y, residuals)``; ``backward_fn(residuals, y_cotangent)
  -> (variable_grads, *arg_grads)`` with ``variable_grads`` shaped like ``{collection:
  grads}`` of the ``grad_vars`` collections. The function may not mutate variables.
  """
  rest = subtract_filters(True, grad_vars)

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args):
    grad_groups, other_groups = variable_groups
    plain = scope_fn(variable_groups, rng_groups)
    if any(s.get_flag('initializing', False) for s in _flatten_scopes(plain)[0]):
      # Nothing is differentiated while initializing; running plainly lets fn create
      # its variables (a custom_vjp function itself may not write any).
      return fn(plain, *args), repack_fn(plain)

    def pure(grad_groups, *args):
      return fn(scope_fn((grad_groups, other_groups), rng_groups, mutable=False), *args)

    def fwd(grad_groups, *args):
      y, res = forward_fn(scope_fn((grad_groups, other_groups), rng_groups, mutable=False), *args)
      return y, res

    def bwd(*nondiff_and_res_and_g):
      *nondiff, res, g = nondiff_and_res_and_g
      var_grads, *arg_grads = backward_fn(*nondiff, res, g)
      # One scope: the user returns its {collection: grads}; several: one per scope.
      per_scope = (var_grads,) if len(grad_groups) == 1 else tuple(var_grads)
      return (per_scope, *arg_grads)

    wrapped = jax.custom_vjp(pure, nondiff_argnums=tuple(i + 1 for i in nondiff_argnums))
    wrapped.defvjp(fwd, bwd)
    y = wrapped(grad_groups, *args)
    return y, (tuple({} for _ in grad_groups), tuple({} for _ in other_groups))

  return pack(inner, (grad_vars, rest), (grad_vars, rest), (True,), name='custom_vjp')


__all__ = [
  'pack',
  'vmap',
  'scan',
  'jit',
  'checkpoint',
  'remat',
  'remat_scan',
  'cond',
  'switch',
  'while_loop',
  'map_variables',
  'custom_vjp',
  'vjp',
  'jvp',
  'value_and_grad',
  'named_call',
  'fold_rngs',
  'add_metadata_axis',
  'broadcast',
  'In',
  'Out',
]
