"""Lifted transforms: JAX transforms applied to functions of scopes.

Every transform here (``vmap``, ``scan``, ``jit``, ``checkpoint``, ``cond``, ``switch``,
``while_loop``, ``map_variables``, ``vjp``, ``jvp``, ``custom_vjp``, ...) is the lifting
primitive ``pack`` (:mod:`flaxlike.core.packing`) plus a few lines saying how variable
groups and RNG groups map onto the JAX transform's arguments. Each takes and returns plain
scope functions ``fn(scope, *args)``.

See docs/design/lift.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxlike.core import meta
from flaxlike.core._lift_autodiff import custom_vjp as custom_vjp
from flaxlike.core._lift_autodiff import jvp as jvp
from flaxlike.core._lift_autodiff import value_and_grad as value_and_grad
from flaxlike.core._lift_autodiff import vjp as vjp
from flaxlike.core.packing import ScopeTree, _identity, _key_sorted
from flaxlike.core.packing import _filter_key as _filter_key
from flaxlike.core.packing import _flatten_scopes as _flatten_scopes
from flaxlike.core.packing import _Hashable as _Hashable
from flaxlike.core.packing import pack as pack
from flaxlike.core.scope import (
  Filter,
  Scope,
  intersect_filters,
  is_filter_empty,
  subtract_filters,
)

# In and Out are the variable_axes markers of flaxlike.typing (Flax defines them there too).
from flaxlike.typing import In as In
from flaxlike.typing import Out as Out

# A group is a tuple with one entry per scope; ``variable_groups[i]`` holds the
# collections matched by the i-th variable filter.
VariableGroups = tuple


class _Broadcast:
  """Marks an argument or output of ``scan`` that is not scanned over (``nn.broadcast``)."""

  def __repr__(self) -> str:
    return 'broadcast'

  def __reduce__(self):
    return (_get_broadcast, ())


broadcast = _Broadcast()


def _get_broadcast() -> _Broadcast:
  return broadcast


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
      not is_filter_empty(intersect_filters(variable_broadcast, m))
      for m in scope_fn.mutable_filters
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
  if len(lengths) == 1:

    def step(scope, carry):
      return body_fn(scope, carry), ()

  else:
    inner_params = {**metadata_params, meta.PARTITION_NAME: None}

    def step(scope, carry):
      inner = remat_scan(
        body_fn,
        lengths[1:],
        policy,
        variable_broadcast=variable_broadcast,
        variable_carry=variable_carry,
        variable_axes=variable_axes,
        split_rngs=split_rngs,
        metadata_params=inner_params,
      )
      return inner(scope, carry), ()

  looped = scan(
    checkpoint(step, policy=policy, prevent_cse=False),
    variable_broadcast=variable_broadcast,
    variable_carry=variable_carry,
    variable_axes=variable_axes,
    split_rngs=split_rngs,
    length=lengths[0],
    metadata_params=metadata_params,
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
  scope: ScopeTree,
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
  scope: ScopeTree,
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
  scope: ScopeTree,
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
# Variable mapping
#################################################


def map_variables(
  fn: Callable[..., Any],
  mapped_collections: Filter,
  map_in_fn: Callable[..., Any] = _identity,
  map_out_fn: Callable[..., Any] = _identity,
  init: bool = False,
  mutable: bool = False,
  rngs: Filter = True,
  variables: Filter = True,
) -> Callable[..., Any]:
  """Runs ``fn(scope, *args)`` on variables transformed by ``map_in_fn``.

  ``map_in_fn``/``map_out_fn`` receive ``{collection: subtree}`` of the mapped collections
  at the scope. With ``mutable``, writes inside are mapped back with ``map_out_fn``. With
  ``init``, whenever a collection is writable ``fn`` first runs on the raw variables to
  create the missing ones, and the mapped collections come back out through
  ``map_in_fn`` then ``map_out_fn`` (so ``init`` returns the mapped values, as in Linen).

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import init, lift, nn
  >>> def double(variables):
  ...   return jax.tree_util.tree_map(lambda v: 2 * v, variables)
  >>> doubled = lift.map_variables(nn.dense, 'params', double)
  >>> _, v = init(nn.dense)(jax.random.key(0), jnp.ones((1, 2)), 1,
  ...                       kernel_init=nn.initializers.ones)
  >>> from flaxlike.core import apply
  >>> apply(doubled)(v, jnp.ones((1, 2)), 1)
  Array([[4.]], dtype=float32)
  """
  is_target_out = mutable or init
  rest = subtract_filters(variables, mapped_collections)
  in_filters = (mapped_collections, rest)
  out_filters = in_filters if is_target_out else (False, rest)
  # Mapped collections are read-only inside unless the mapping can be inverted.
  inner_mutable: Filter = True if is_target_out else subtract_filters(True, mapped_collections)

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args, **kwargs):
    target, other = variable_groups
    if init:
      first = scope_fn((target, other), rng_groups)
      if any(not is_filter_empty(s.mutable) for s in _flatten_scopes(first)[0]):
        fn(first, *args, **kwargs)
        target, _ = repack_fn(first)
        target = tuple(map_out_fn(t) for t in target)
    mapped_target = tuple(_key_sorted(map_in_fn(t)) for t in target)
    inner_scope = scope_fn((mapped_target, other), rng_groups, mutable=inner_mutable)
    y = fn(inner_scope, *args, **kwargs)
    out_target, out_other = repack_fn(inner_scope)
    if is_target_out:
      out_target = tuple(map_out_fn(t) for t in out_target)
    return y, (out_target, out_other)

  return pack(inner, in_filters, out_filters, (rngs,), name='map_variables')


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
