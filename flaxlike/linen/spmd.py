"""Sharding with logical axis names: rules, constraints, boxes and sharded init.

Models name array dimensions with *logical* names ('batch', 'embed', 'mlp'); a list of
rules maps each logical name onto mesh axes ('data', 'model') or None (replicated). The
same model then runs data parallel, tensor parallel or both by changing only the rules:

>>> import flaxlike as nn
>>> rules = (('batch', 'data'), ('mlp', 'model'), ('embed', None))
>>> nn.logical_to_mesh_axes(('batch', 'embed', 'mlp'), rules)
P('data', None, 'model')

Rules are looked up in order; a logical name takes the mesh axes of its first rule whose
mesh axes no other dimension of the same array already uses, and stays unassigned when
none fits (replicated, or an error/no constraint as ``RulesFallback`` says).
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flaxlike import errors, struct
from flaxlike.core import meta
from flaxlike.core.staged_init import pure_initializer
from flaxlike.typing import LogicalRules

# One rule: (logical name, mesh axis | tuple of mesh axes | None).

_rules_var: contextvars.ContextVar[tuple[tuple[str, Any], ...]] = contextvars.ContextVar(
  'flaxlike_logical_axis_rules', default=()
)


class _Unassigned:
  """Marks a logical name that no rule mapped (distinct from an explicit None rule)."""

  def __repr__(self) -> str:
    return 'UNASSIGNED'


_UNASSIGNED = _Unassigned()


def _freeze_rules(rules: LogicalRules) -> tuple[tuple[str, Any], ...]:
  """Checks ``rules`` and returns them as a hashable tuple of pairs."""
  if isinstance(rules, (str, dict)) or not isinstance(rules, Sequence):
    raise TypeError(
      f'Logical axis rules must be a sequence of (logical_name, mesh_axes) pairs, e.g. '
      f"(('batch', 'data'), ('mlp', 'model')); got {rules!r}."
    )
  frozen = []
  for rule in rules:
    if not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str):
      raise TypeError(
        f'Each logical axis rule is a (logical_name, mesh_axes) pair with a str name; '
        f'got {rule!r} in {rules!r}.'
      )
    name, axes = rule
    frozen.append((name, tuple(axes) if isinstance(axes, list) else axes))
  return tuple(frozen)


def set_logical_axis_rules(rules: LogicalRules) -> None:
  """Sets the logical axis rules of the current context (thread / asyncio task).

  Example:

  >>> import flaxlike as nn
  >>> nn.set_logical_axis_rules((('batch', 'data'),))
  >>> nn.get_logical_axis_rules()
  (('batch', 'data'),)
  >>> nn.set_logical_axis_rules(())
  """
  _rules_var.set(_freeze_rules(rules))


def get_logical_axis_rules() -> tuple[tuple[str, Any], ...]:
  """Returns the logical axis rules of the current context (``()`` when none are set)."""
  return _rules_var.get()


@contextlib.contextmanager
def logical_axis_rules(rules: LogicalRules) -> Iterator[None]:
  """Context manager that sets the logical axis rules and restores the previous ones.

  Example:

  >>> import flaxlike as nn
  >>> with nn.logical_axis_rules((('mlp', 'model'),)):
  ...   print(nn.logical_to_mesh_axes(('embed', 'mlp')))
  P(None, 'model')
  >>> nn.get_logical_axis_rules()
  ()
  """
  token = _rules_var.set(_freeze_rules(rules))
  try:
    yield
  finally:
    _rules_var.reset(token)


def _mesh_axes_in(entry: Any) -> set[str]:
  """The mesh axis names one spec entry uses (None and UNCONSTRAINED use none)."""
  if isinstance(entry, str):
    return {entry}
  if isinstance(entry, (tuple, list)):
    return {e for e in entry if isinstance(e, str)}
  return set()


def _assign(names: Sequence[Any], rules: LogicalRules | None) -> list[Any]:
  """Maps logical ``names`` to mesh axes; unmatched str names stay ``_UNASSIGNED``."""
  rules = get_logical_axis_rules() if rules is None else _freeze_rules(rules)
  position: dict[str, int] = {}
  for i, name in enumerate(names):
    if isinstance(name, str):
      if name in position:
        raise ValueError(
          f'Logical axis name {name!r} occurs more than once in {tuple(names)}; each '
          'dimension of an array needs its own logical name.'
        )
      position[name] = i
  # Non-str entries (None, UNCONSTRAINED, tuples of mesh axes) pass through unchanged.
  result = [_UNASSIGNED if isinstance(name, str) else name for name in names]
  used = set().union(*(_mesh_axes_in(e) for e in result))
  for logical, mesh_axes in rules:
    pos = position.get(logical)
    if pos is None or result[pos] is not _UNASSIGNED:
      continue
    wanted = _mesh_axes_in(mesh_axes)
    if wanted & used:
      continue  # an earlier dimension took this mesh axis; a later rule may still fit
    result[pos] = mesh_axes
    used |= wanted
  return result


def logical_to_mesh_axes(
  array_dim_names: Sequence[Any] | None, rules: LogicalRules | None = None
) -> PartitionSpec | None:
  """Maps one logical name per dimension to a mesh ``PartitionSpec``.

  Args:
    array_dim_names: a logical name (or None) per dimension, or None.
    rules: ``(logical_name, mesh_axes)`` pairs in priority order; None uses the rules of
      the current context (``logical_axis_rules``).

  Returns:
    The mesh ``PartitionSpec`` (unmatched names become None, i.e. replicated), or None
    when ``array_dim_names`` is None.

  Example:

  >>> import flaxlike as nn
  >>> rules = (('batch', 'data'), ('heads', 'model'), ('kv', 'model'))
  >>> nn.logical_to_mesh_axes(('batch', 'heads', 'kv'), rules)  # 'model' already taken
  P('data', 'model', None)
  """
  if array_dim_names is None:
    return None
  assigned = _assign(array_dim_names, rules)
  return PartitionSpec(*(None if a is _UNASSIGNED else a for a in assigned))


def _is_spec(x: Any) -> bool:
  return isinstance(x, PartitionSpec)


def logical_to_mesh(tree: Any, rules: LogicalRules | None = None) -> Any:
  """Maps every logical ``PartitionSpec`` leaf of ``tree`` to its mesh ``PartitionSpec``.

  Example:

  >>> import flaxlike as nn
  >>> from jax.sharding import PartitionSpec as P
  >>> nn.logical_to_mesh({'w': P('embed', 'mlp')}, (('mlp', 'model'),))
  {'w': P(None, 'model')}
  """
  return jax.tree_util.tree_map(
    lambda spec: logical_to_mesh_axes(spec, rules), tree, is_leaf=_is_spec
  )


def logical_to_mesh_sharding(tree: Any, mesh: Mesh, rules: LogicalRules | None = None) -> Any:
  """Maps every logical ``PartitionSpec`` leaf of ``tree`` to a ``NamedSharding`` on ``mesh``.

  Example:

  >>> import jax, flaxlike as nn
  >>> from jax.sharding import PartitionSpec as P
  >>> mesh = jax.make_mesh((2,), ('model',), devices=jax.devices()[:2])
  >>> nn.logical_to_mesh_sharding(P('embed', 'mlp'), mesh, (('mlp', 'model'),)).spec
  P(None, 'model')
  """
  return jax.tree_util.tree_map(
    lambda spec: NamedSharding(mesh, spec), logical_to_mesh(tree, rules), is_leaf=_is_spec
  )


class RulesFallback(enum.Enum):
  """What to do with a logical name that no rule maps.

  ``AXIS_IS_UNSHARDED``: replicate that dimension. ``RAISE_ERROR``: raise
  ``ShardingAxisNameError``. ``NO_CONSTRAINT``: leave the whole array unconstrained.
  """

  AXIS_IS_UNSHARDED = 'axis_is_unsharded'
  RAISE_ERROR = 'raise_error'
  NO_CONSTRAINT = 'no_constraint'


def _resolve(
  names: Sequence[Any], rules: LogicalRules | None, fallback: RulesFallback, where: str
) -> PartitionSpec | None:
  """The mesh spec of ``names``, or None when ``fallback`` says to leave it unconstrained."""
  assigned = _assign(names, rules)
  unmatched = [n for n, a in zip(names, assigned) if a is _UNASSIGNED]
  if unmatched:
    if fallback is RulesFallback.RAISE_ERROR:
      raise errors.ShardingAxisNameError(
        f'{where}: logical axis names {unmatched} (of {tuple(names)}) match no logical axis '
        f'rule (rules: {get_logical_axis_rules() if rules is None else rules}). Add a rule '
        f"such as ({unmatched[0]!r}, 'model'), or ({unmatched[0]!r}, None) to replicate."
      )
    if fallback is RulesFallback.NO_CONSTRAINT:
      return None
  return PartitionSpec(*(None if a is _UNASSIGNED else a for a in assigned))


def _is_logical_spec(x: Any) -> bool:
  return x is None or (
    isinstance(x, tuple)
    and all(e is None or e is PartitionSpec.UNCONSTRAINED or isinstance(e, str) for e in x)
  )


def with_logical_constraint(
  x: Any,
  logical_axis_resources: Any,
  rules: LogicalRules | None = None,
  mesh: Mesh | None = None,
  fallback: RulesFallback = RulesFallback.AXIS_IS_UNSHARDED,
) -> Any:
  """``with_sharding_constraint`` in logical axis names.

  A no-op when there are no rules (argument or context), or no mesh (argument or active
  ``jax.set_mesh``); so model code can call it unconditionally. As in Linen,
  ``RAISE_ERROR`` checks the names whenever rules are set, with or without a mesh.

  Args:
    x: an array or a pytree of arrays.
    logical_axis_resources: a logical spec (tuple of names) or a matching pytree of them.
    rules: logical axis rules; None uses the context rules.
    mesh: the mesh; None uses the active global mesh.
    fallback: what to do with a logical name that matches no rule.

  Returns:
    ``x`` laid out as the mapped specs.

  Example:

  >>> import jax, jax.numpy as jnp, flaxlike as nn
  >>> mesh = jax.make_mesh((2,), ('data',), devices=jax.devices()[:2])
  >>> f = jax.jit(lambda x: nn.with_logical_constraint(
  ...   x * 2, ('embed', 'batch'), rules=(('batch', 'data'),), mesh=mesh))
  >>> f(jnp.ones((3, 4))).sharding.spec
  P(None, 'data')
  """
  if rules is None:
    rules = get_logical_axis_rules()
  if not rules or logical_axis_resources is None:
    return x

  def one(names, value):
    if names is None:
      return value
    spec = _resolve(names, rules, fallback, 'with_logical_constraint')
    return value if spec is None else meta.constrain(value, spec, mesh)

  return jax.tree_util.tree_map(one, logical_axis_resources, x, is_leaf=_is_logical_spec)


class LogicallyPartitioned(meta.Partitioned):
  """A value annotated with one *logical* axis name per dimension.

  ``get_partition_spec`` returns the logical spec (as in Linen); ``get_sharding`` and
  ``unbox`` map it through ``rules`` (or the context rules) onto mesh axes. ``unbox``
  constrains the value only when a mesh is given or active and some rules are set.

  Attributes:
    value: the array.
    names: one logical axis name (or None) per dimension.
    mesh: the mesh to shard on; None means the global mesh, if any.
    rules: logical axis rules for this value; None means the context rules.
  """

  rules: tuple[tuple[str, Any], ...] | None = struct.field(default=None, pytree_node=False)

  def __post_init__(self):
    # Rules are pytree metadata, which JAX hashes; lists (as users write them) would make
    # every tree operation on the box fail far from here.
    if self.rules is not None:
      try:
        hash(self.rules)
      except TypeError:
        object.__setattr__(self, 'rules', _freeze_rules(self.rules))

  def unbox(self, apply_constraint: bool = True) -> Any:
    if not apply_constraint or (self.mesh is None and not meta.global_mesh_defined()):
      return self.value
    return with_logical_constraint(self.value, self.names, rules=self.rules, mesh=self.mesh)

  def get_mesh_partition_spec(
    self,
    rules: LogicalRules | None = None,
    fallback: RulesFallback = RulesFallback.AXIS_IS_UNSHARDED,
  ) -> PartitionSpec:
    """The mesh ``PartitionSpec``: names mapped through ``self.rules``, else ``rules``,
    else the context rules."""
    chosen = self.rules if self.rules is not None else rules
    spec = _resolve(self.names, chosen, fallback, f'LogicallyPartitioned{self.names}')
    return PartitionSpec() if spec is None else spec

  def get_sharding(self, mesh: Mesh) -> NamedSharding:
    """The ``NamedSharding`` on ``mesh`` (or ``self.mesh``), logical names mapped to mesh axes."""
    mesh = self.mesh if self.mesh is not None else mesh
    return NamedSharding(mesh, self.get_mesh_partition_spec())


@pure_initializer
def with_logical_partitioning(
  fn: Callable[..., Any],
  names: Sequence[Any],
  mesh: Mesh | None = None,
  rules: LogicalRules | None = None,
) -> Callable[..., LogicallyPartitioned]:
  """Wraps initializer ``fn`` so it returns a ``LogicallyPartitioned`` box.

  Example:

  >>> import jax, jax.numpy as jnp, flaxlike as nn
  >>> dense = nn.Dense(3, kernel_init=nn.with_logical_partitioning(
  ...   nn.initializers.lecun_normal(), ('embed', 'mlp')))
  >>> box = dense.init(jax.random.key(0), jnp.ones((1, 2)))['params']['kernel']
  >>> box.names, box.value.shape
  (('embed', 'mlp'), (2, 3))
  """
  frozen = None if rules is None else _freeze_rules(rules)

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    return LogicallyPartitioned(fn(*args, **kwargs), tuple(names), mesh=mesh, rules=frozen)

  return wrapper


#################################################
# Sharded init
#################################################


def _path_text(path: tuple[Any, ...]) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)


def _variable_sharding(
  path: tuple[Any, ...],
  leaf: Any,
  mesh: Mesh,
  rules: LogicalRules | None,
  fallback: RulesFallback,
) -> NamedSharding:
  """The sharding of one abstract (possibly boxed) variable, checked against ``mesh``."""
  where = _path_text(path)
  if not isinstance(leaf, meta.Partitioned):
    return NamedSharding(mesh, PartitionSpec())
  if isinstance(leaf, LogicallyPartitioned):
    chosen = leaf.rules if leaf.rules is not None else rules
    spec = _resolve(leaf.names, chosen, fallback, where) or PartitionSpec()
  else:
    spec = leaf.get_partition_spec()
  ndim = len(leaf.value.shape)
  if len(spec) > ndim:
    raise errors.ShardingAxisNameError(
      f'{where}: {len(leaf.names)} axis names {leaf.names} for a value of shape '
      f'{leaf.value.shape}; give one name (or None) per dimension.'
    )
  missing = set().union(*(_mesh_axes_in(e) for e in spec)) - set(mesh.axis_names)
  if missing:
    raise errors.ShardingAxisNameError(
      f'{where}: axis names {leaf.names} map to {spec}, but the mesh has no axis '
      f'{sorted(missing)} (mesh axes: {mesh.axis_names}). Fix the rules or the names.'
    )
  return NamedSharding(mesh, spec)


def sharded_init(
  module: Any,
  rngs: Any,
  *args: Any,
  mesh: Mesh,
  rules: LogicalRules | None = None,
  method: Any = None,
  fallback: RulesFallback = RulesFallback.AXIS_IS_UNSHARDED,
  **kwargs: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
  """Initializes ``module`` directly into sharded arrays: no variable is ever whole.

  Traces ``module.init`` abstractly (``jax.eval_shape``), reads each variable's layout
  from its box (``nn.with_logical_partitioning`` names mapped through ``rules``, or
  ``nn.with_partitioning`` mesh names; unboxed variables are replicated), then runs init
  under ``jax.jit(out_shardings=...)`` so every device computes only its own shard.

  Array arguments are traced; a ``jax.ShapeDtypeStruct`` argument stands for zeros of
  that shape (use real arrays if init depends on input values); other arguments are
  passed through as Python values.

  Use a mesh with ``Auto`` axes (``jax.sharding.Mesh(devices, names)`` or
  ``jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * n)``) for Linen-style
  models: arrays on ``Explicit`` axes (the ``jax.make_mesh`` default) switch JAX to
  explicit sharding, where a matmul over a sharded contracting dimension needs an
  ``out_sharding`` that the layers do not pass.

  Args:
    module: the Module to initialize.
    rngs: a PRNG key or a dict of keys, as for ``init``.
    *args: the inputs of ``init``.
    mesh: the device mesh to lay the variables out on.
    rules: logical axis rules; None uses the context rules. Also active while tracing.
    method: the method to initialize through, as for ``init``.
    fallback: for logical names no rule maps: ``AXIS_IS_UNSHARDED`` replicates the
      dimension, ``RAISE_ERROR`` raises ``ShardingAxisNameError`` naming the variable.
    **kwargs: keyword inputs of ``init``.

  Returns:
    ``(variables, shardings)``: every collection init produced as plain nested dicts of
    unboxed, sharded arrays, and the same tree of ``NamedSharding`` (pass
    ``shardings['params']`` to ``jax.jit`` of a train step).

  Example:

  >>> import jax, jax.numpy as jnp, flaxlike as nn
  >>> from jax.sharding import AxisType
  >>> mesh = jax.make_mesh((2, 4), ('data', 'model'), axis_types=(AxisType.Auto,) * 2)
  >>> dense = nn.Dense(8, kernel_init=nn.with_logical_partitioning(
  ...   nn.initializers.lecun_normal(), ('embed', 'mlp')))
  >>> variables, shardings = nn.sharded_init(
  ...   dense, jax.random.key(0), jnp.ones((2, 4)), mesh=mesh, rules=(('mlp', 'model'),))
  >>> variables['params']['kernel'].sharding.spec
  P(None, 'model')
  >>> shardings['params']['bias'].spec  # not annotated: replicated
  P()
  """
  if fallback is RulesFallback.NO_CONSTRAINT:
    raise ValueError(
      'sharded_init needs a layout for every variable; use fallback=AXIS_IS_UNSHARDED '
      '(unmatched names replicated) or RAISE_ERROR.'
    )
  rules = _freeze_rules(rules) if rules is not None else get_logical_axis_rules()
  leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
  # Arrays are traced; everything else (static flags, ShapeDtypeStructs) is closed over.
  array_at = [i for i, leaf in enumerate(leaves) if isinstance(leaf, (jax.Array, np.ndarray))]

  def boxed_init(rngs, arrays):
    filled = [
      jnp.zeros(x.shape, x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else x for x in leaves
    ]
    for i, a in zip(array_at, arrays):
      filled[i] = a
    call_args, call_kwargs = jax.tree_util.tree_unflatten(treedef, filled)
    with logical_axis_rules(rules):
      return module.init(rngs, *call_args, method=method, **call_kwargs)

  arrays = [leaves[i] for i in array_at]
  abstract = jax.eval_shape(boxed_init, rngs, arrays)
  shardings = jax.tree_util.tree_map_with_path(
    lambda path, leaf: _variable_sharding(path, leaf, mesh, rules, fallback),
    abstract,
    is_leaf=meta.is_axis_metadata,
  )
  # A box is a one-child node, so a sharding in its place is a valid out_shardings prefix.
  boxed = jax.jit(boxed_init, out_shardings=shardings)(rngs, arrays)

  def bare(x: Any) -> Any:
    if isinstance(x, meta.AxisMetadata):
      # Boxes hold their array in a ``value`` field (what AxisMetadata.replace_boxed
      # assumes); the abstract base declares no fields, so a checker cannot see it.
      return x.value  # pyright: ignore[reportAttributeAccessIssue]
    return x

  variables = jax.tree_util.tree_map(bare, boxed, is_leaf=meta.is_axis_metadata)
  return variables, shardings
