"""Linen's legacy axis-rule API (``flax.linen.partitioning``), on top of ``spmd``.

Older sharded codebases (t5x, HuggingFace's Flax models) annotate variables with
``param_with_axes`` / ``variable_with_axes``: the value stays a plain array, and its logical
axis names are *sown* as an ``AxisMetadata`` into a parallel collection named
``<collection>_axes`` (``params_axes`` for params), from which ``get_axis_names`` builds
the tree of logical ``PartitionSpec``. ``scan_with_axes`` and ``vmap_with_axes`` keep that
metadata in step with the stacked axis they add.

There is one rules mechanism underneath: ``axis_rules``, ``set_axis_rules``,
``get_axis_rules``, ``logical_to_mesh_axes`` and ``with_sharding_constraint`` here are the
very functions of ``flaxlike.linen.spmd`` under their legacy names, so rules set either way
are seen by both APIs. New code should prefer boxed metadata
(``nn.with_logical_partitioning``), which carries the names on the value itself.

>>> import jax, jax.numpy as jnp, flaxlike as nn
>>> from flaxlike.linen import partitioning as nn_partitioning
>>> class Mlp(nn.Module):
...   @nn.compact
...   def __call__(self, x):
...     w = nn_partitioning.param_with_axes(
...       'w', nn.initializers.lecun_normal(), (x.shape[-1], 8), axes=('embed', 'mlp'))
...     return x @ w
>>> variables = Mlp().init(jax.random.key(0), jnp.ones((2, 4)))
>>> nn_partitioning.get_axis_names(variables['params_axes'])
FrozenDict({
    w: P('embed', 'mlp'),
})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from jax.sharding import PartitionSpec

from flaxlike import struct
from flaxlike.core import lift
from flaxlike.core.frozen_dict import FrozenDict, freeze, unfreeze
from flaxlike.core.scope import CollectionFilter as CollectionFilter
from flaxlike.core.scope import Filter, Variable, union_filters
from flaxlike.core.scope import Filter as PRNGSequenceFilter
from flaxlike.linen import spmd, transforms
from flaxlike.linen._lifting import _lift, _simple
from flaxlike.linen._module.context import context as _module_context
from flaxlike.linen.module import Module
from flaxlike.linen.spmd import LogicalRules as LogicalRules
from flaxlike.linen.spmd import RulesFallback as RulesFallback
from flaxlike.linen.spmd import get_logical_axis_rules as get_axis_rules
from flaxlike.linen.spmd import logical_axis_rules as axis_rules
from flaxlike.linen.spmd import logical_to_mesh as logical_to_mesh
from flaxlike.linen.spmd import logical_to_mesh_axes as logical_to_mesh_axes
from flaxlike.linen.spmd import set_logical_axis_rules as set_axis_rules
from flaxlike.linen.spmd import with_logical_constraint as with_sharding_constraint
from flaxlike.traverse_util import flatten_dict, unflatten_dict

__all__ = [
  'AxisMetadata',
  'CollectionFilter',
  'LogicalRules',
  'PRNGSequenceFilter',
  'PartitionedVariable',
  'RulesFallback',
  'ScanIn',
  'ScanOut',
  'axis_rules',
  'core_remat_static',
  'get_axis_names',
  'get_axis_rules',
  'logical_to_mesh',
  'logical_to_mesh_axes',
  'param_with_axes',
  'remat',
  'scan_with_axes',
  'set_axis_rules',
  'variable_with_axes',
  'vmap_with_axes',
  'with_sharding_constraint',
]

# ``variable_axes`` markers of ``scan_with_axes`` (``nn.scan`` takes them too).
ScanIn = lift.In
ScanOut = lift.Out


#################################################
# Axis metadata sown next to the variables
#################################################


@struct.dataclass
class AxisMetadata:
  """The logical axis names of one variable, as stored in a ``<collection>_axes`` collection.

  A pytree with no leaves: transforms carry it through untouched, and two are equal when
  their names are.

  Attributes:
    names: a logical spec (one name or None per dimension), or a pytree of them for a
      variable whose value is a pytree.

  Example:

  >>> from flaxlike.linen import partitioning
  >>> partitioning.AxisMetadata(('embed', 'mlp')) == partitioning.AxisMetadata(('embed', 'mlp'))
  True
  """

  names: Any = struct.field(pytree_node=False)


def _sow_axes_reduce(previous: Any, new: AxisMetadata) -> AxisMetadata:
  """Keeps the sown names; a second sow (another call) must sow the same names."""
  if isinstance(previous, AxisMetadata) and previous != new:
    raise ValueError(
      f'If axis names are sown twice, expected them to match. Got {previous} and {new}. '
      'A variable declared with param_with_axes/variable_with_axes must get the same '
      'axes on every call.'
    )
  return new


def _as_names(axes: Any) -> Any:
  """``axes`` as a logical spec tuple (lists of names become tuples), or a pytree of them."""
  if isinstance(axes, list) and all(a is None or isinstance(a, str) for a in axes):
    return tuple(axes)
  return axes


def _current_module(module: Module | None, fn_name: str) -> Module:
  if module is not None:
    return module
  stack = _module_context.module_stack
  if not stack or stack[-1] is None:
    raise ValueError(
      f'{fn_name} declares a variable of the running Module, but no Module method is '
      'running. Call it inside setup() or a @nn.compact method, or pass module=.'
    )
  return stack[-1]


def _check_rank(value: Any, names: Any, where: str) -> None:
  """A single spec may be shorter than the value's rank (a prefix), never longer."""
  if not spmd._is_logical_spec(names) or names is None:
    return
  for leaf in jax.tree_util.tree_leaves(value):
    ndim = getattr(leaf, 'ndim', None)
    if ndim is not None and len(names) > ndim:
      raise ValueError(
        f'{where}: {len(names)} logical axis names {names} for a value of shape '
        f'{leaf.shape}; give one name (or None) per dimension.'
      )


def param_with_axes(
  name: str,
  init_fn: Callable[..., Any],
  *init_args: Any,
  axes: Any = None,
  module: Module | None = None,
  **init_kwargs: Any,
) -> Any:
  """Declares a parameter of the running Module and records its logical axis names.

  The parameter is created as by ``module.param``; its value is constrained to the mesh
  layout of ``axes`` under the current rules (a no-op without rules or a mesh), and
  ``AxisMetadata(axes)`` is sown into ``params_axes`` as ``<name>_axes``.

  Args:
    name: the parameter name.
    init_fn: ``init_fn(key, *init_args, **init_kwargs)`` creates the value.
    *init_args: further arguments of ``init_fn`` (usually shape, dtype).
    axes: one logical axis name per dimension, or a pytree of such tuples matching the
      value; None records nothing.
    module: the module to declare on; default the module whose method is running.
    **init_kwargs: keyword arguments of ``init_fn``.

  Returns:
    The parameter value.

  Raises:
    ValueError: when ``axes`` names more dimensions than the value has.

  Example:

  >>> import jax, jax.numpy as jnp, flaxlike as nn
  >>> from flaxlike.linen import partitioning
  >>> class Bias(nn.Module):
  ...   @nn.compact
  ...   def __call__(self, x):
  ...     b = partitioning.param_with_axes('b', nn.initializers.zeros, (3,), axes=('embed',))
  ...     return x + b
  >>> variables = Bias().init(jax.random.key(0), jnp.ones(3))
  >>> variables['params_axes']['b_axes']
  AxisMetadata(names=('embed',))
  """
  module = _current_module(module, 'param_with_axes')
  if axes is None:
    return module.param(name, init_fn, *init_args, **init_kwargs)
  names = _as_names(axes)
  where = f'param_with_axes {name!r} of {type(module).__name__}'
  if not module.has_variable('params', name):
    # A new parameter is laid out as it is created, so a jitted init under a mesh
    # returns it sharded. Existing ones keep ``init_fn`` itself: the shape check of
    # ``apply`` caches by initializer, and a fresh closure per call would defeat it.
    def constrained_init(*args: Any, **kwargs: Any) -> Any:
      created = init_fn(*args, **kwargs)
      _check_rank(created, names, where)
      return with_sharding_constraint(created, names)

    param_init = constrained_init
  else:
    param_init = init_fn
  value = module.param(name, param_init, *init_args, **init_kwargs)
  _check_rank(value, names, where)
  value = with_sharding_constraint(value, names)
  module.sow('params_axes', f'{name}_axes', AxisMetadata(names), reduce_fn=_sow_axes_reduce)
  return value


class PartitionedVariable(Variable):
  """A ``Variable`` whose value is constrained to its logical axes on every read and write.

  Returned by ``variable_with_axes``; ``.value`` works as for any ``Variable``.
  """

  __slots__ = ('axes', 'fallback')

  def __init__(
    self,
    scope: Any,
    collection: str,
    name: str,
    axes: Any = None,
    fallback: RulesFallback = RulesFallback.AXIS_IS_UNSHARDED,
  ):
    super().__init__(scope, collection, name)
    self.axes = axes
    self.fallback = fallback

  def _constrain(self, value: Any) -> Any:
    if self.axes is None:
      return value
    return with_sharding_constraint(value, self.axes, fallback=self.fallback)

  @property
  def value(self) -> Any:
    return self._constrain(Variable.value.fget(self))  # type: ignore[attr-defined]

  @value.setter
  def value(self, value: Any) -> None:
    Variable.value.fset(self, self._constrain(value))  # type: ignore[attr-defined]


def variable_with_axes(
  collection: str,
  name: str,
  init_fn: Callable[..., Any],
  *init_args: Any,
  axes: Any = None,
  module: Module | None = None,
  fallback: RulesFallback = RulesFallback.AXIS_IS_UNSHARDED,
  **init_kwargs: Any,
) -> PartitionedVariable:
  """Declares a variable of the running Module and records its logical axis names.

  As ``module.variable``, but the value is constrained to the layout of ``axes`` when it
  is created, read and written, and ``AxisMetadata(axes)`` is sown into
  ``<collection>_axes`` as ``<name>_axes``.

  Args:
    collection: the variable's collection, e.g. ``'cache'``.
    name: the variable name.
    init_fn: ``init_fn(*init_args, **init_kwargs)`` creates the value (no RNG key).
    *init_args: arguments of ``init_fn``.
    axes: one logical axis name per dimension (or a pytree of them); None records nothing.
    module: the module to declare on; default the module whose method is running.
    fallback: what a logical name that no rule maps does (``RulesFallback``).
    **init_kwargs: keyword arguments of ``init_fn``.

  Returns:
    A ``PartitionedVariable`` handle.

  Example:

  >>> import jax, jax.numpy as jnp, flaxlike as nn
  >>> from flaxlike.linen import partitioning
  >>> class Counter(nn.Module):
  ...   @nn.compact
  ...   def __call__(self, x):
  ...     n = partitioning.variable_with_axes('counts', 'n', jnp.zeros, (3,), axes=('embed',))
  ...     n.value += 1
  ...     return x
  >>> _, state = Counter().apply({}, jnp.ones(3), mutable=True)
  >>> state['counts']['n'], state['counts_axes']['n_axes'].names
  (Array([1., 1., 1.], dtype=float32), ('embed',))
  """
  module = _current_module(module, 'variable_with_axes')
  names = _as_names(axes)

  def constrained_init(*args: Any, **kwargs: Any) -> Any:
    value = init_fn(*args, **kwargs)
    if names is None:
      return value
    _check_rank(value, names, f'variable_with_axes {collection}/{name!r}')
    return with_sharding_constraint(value, names, fallback=fallback)

  variable = module.variable(collection, name, constrained_init, *init_args, **init_kwargs)
  if names is not None:
    module.sow(
      f'{collection}_axes', f'{name}_axes', AxisMetadata(names), reduce_fn=_sow_axes_reduce
    )
  return PartitionedVariable(variable.scope, collection, name, names, fallback)


def get_axis_names(axes_metadata: Mapping[str, Any]) -> FrozenDict:
  """The logical ``PartitionSpec`` of every variable recorded in a ``*_axes`` collection.

  Args:
    axes_metadata: one ``<collection>_axes`` collection, e.g. ``variables['params_axes']``.

  Returns:
    A ``FrozenDict`` shaped like the variable collection (the ``_axes`` suffixes dropped)
    holding one ``PartitionSpec`` of logical names per variable (a pytree of them for
    pytree-valued variables). Map it to mesh axes with ``nn.logical_to_mesh``.

  Example:

  >>> from flaxlike.linen import partitioning
  >>> meta = {'Dense_0': {'kernel_axes': partitioning.AxisMetadata(('embed', 'mlp'))}}
  >>> partitioning.get_axis_names(meta)['Dense_0']['kernel']
  P('embed', 'mlp')
  """

  def as_spec(names: Any) -> Any:
    return None if names is None else PartitionSpec(*names)

  specs = {}
  for path, meta in flatten_dict(unfreeze(axes_metadata)).items():
    if not isinstance(meta, AxisMetadata):
      raise TypeError(
        f'get_axis_names expects a *_axes collection of AxisMetadata values; '
        f'{"/".join(map(str, path))} holds {type(meta).__name__}.'
      )
    leaf = path[-1]
    leaf = leaf[: -len('_axes')] if leaf.endswith('_axes') else leaf
    specs[(*path[:-1], leaf)] = jax.tree_util.tree_map(
      as_spec, meta.names, is_leaf=spmd._is_logical_spec
    )
  return freeze(unflatten_dict(specs))


#################################################
# Transforms that keep the axis metadata in step
#################################################


def _insert_axis(names: Any, position: int, axis_name: str) -> Any:
  if names is None:
    return None
  names = list(names)
  # Position counts in the stacked value, which has one more dimension.
  at = position if position >= 0 else len(names) + 1 + position
  names.insert(at, axis_name)
  return tuple(names)


def _remove_axis(names: Any, position: int, axis_name: str) -> Any:
  if names is None:
    return None
  names = list(names)
  at = position if position >= 0 else len(names) + position
  if not 0 <= at < len(names) or names[at] != axis_name:
    raise ValueError(
      f'Expected axis {axis_name} at position {position} in axis metadata {tuple(names)}. '
      'The *_axes collection does not match the transform: were these variables made '
      'with another variable_axes or axis_name?'
    )
  names.pop(at)
  return tuple(names)


def _map_axes_metadata(fn: Callable[[Any], Any], tree: Any) -> Any:
  """Applies ``fn`` to every logical spec inside the ``AxisMetadata`` leaves of ``tree``."""

  def one(meta: Any) -> Any:
    if not isinstance(meta, AxisMetadata):
      return meta
    # dataclasses.replace is what the struct.dataclass ``replace`` method runs; a checker
    # sees the function, not the method added at class creation.
    names = jax.tree_util.tree_map(fn, meta.names, is_leaf=spmd._is_logical_spec)
    return dataclasses.replace(meta, names=names)

  return jax.tree_util.tree_map(one, tree, is_leaf=lambda x: isinstance(x, AxisMetadata))


def _add_axis_to_metadata(target: Any, axis_pos: Any, axis_name: str, axis_col: str) -> Any:
  """Wraps ``target`` so ``axis_col`` holds names with ``axis_name`` at ``axis_pos`` outside
  and without it inside (where each variable has one dimension less)."""
  position = axis_pos.axis if isinstance(axis_pos, (lift.In, lift.Out)) else axis_pos
  return transforms.map_variables(
    target,
    axis_col,
    trans_in_fn=lambda tree: _map_axes_metadata(
      lambda names: _remove_axis(names, position, axis_name), tree
    ),
    trans_out_fn=lambda tree: _map_axes_metadata(
      lambda names: _insert_axis(names, position, axis_name), tree
    ),
    # Writes come back out only where the collection is mutable in the call (init):
    # the lifting primitive intersects this with the caller's mutability.
    mutable=True,
  )


def scan_with_axes(
  target: Any,
  variable_axes: Mapping[CollectionFilter, Any] = {},
  variable_broadcast: CollectionFilter = False,
  variable_carry: CollectionFilter = False,
  split_rngs: Mapping[PRNGSequenceFilter, bool] = {},
  in_axes: Any = 0,
  out_axes: Any = 0,
  length: int | None = None,
  reverse: bool = False,
  unroll: int = 1,
  axis_name: str = 'layers',
  axes_collections: tuple[str, ...] = ('params',),
  data_transform: Callable[..., Any] | None = None,
  methods: Any = None,
) -> Any:
  """``nn.scan`` that also stacks the logical axis names recorded by ``*_with_axes``.

  The ``<col>_axes`` collections of ``axes_collections`` are broadcast into the loop,
  and the names of each collection scanned over ``variable_axes[col]`` get ``axis_name``
  inserted at that position.

  Args:
    target: a Module class, a method, or a function taking a module first.
    variable_axes, variable_broadcast, variable_carry, split_rngs, in_axes, out_axes,
      length, reverse, unroll, data_transform, methods: as for ``nn.scan``.
    axis_name: the logical name of the stacked (layer) axis.
    axes_collections: the collections whose ``*_axes`` metadata is kept in step.

  Returns:
    The scanned target.

  Example:

  >>> import jax, jax.numpy as jnp, flaxlike as nn
  >>> from flaxlike.linen import partitioning
  >>> class Layer(nn.Module):
  ...   @nn.compact
  ...   def __call__(self, h, _):
  ...     w = partitioning.param_with_axes(
  ...       'w', nn.initializers.lecun_normal(), (3, 3), axes=('embed', 'mlp'))
  ...     return jnp.tanh(h @ w), None
  >>> Stack = partitioning.scan_with_axes(
  ...   Layer, variable_axes={'params': 0}, split_rngs={'params': True},
  ...   in_axes=nn.broadcast, length=4, axis_name='layers')
  >>> variables = Stack().init(jax.random.key(0), jnp.ones((1, 3)), None)
  >>> variables['params']['w'].shape, variables['params_axes']['w_axes'].names
  ((4, 3, 3), ('layers', 'embed', 'mlp'))
  """
  axes_filters = tuple(f'{col}_axes' for col in axes_collections)
  scanned = transforms.scan(
    target,
    variable_axes=variable_axes,
    variable_broadcast=union_filters(variable_broadcast, axes_filters),
    variable_carry=variable_carry,
    split_rngs=split_rngs,
    in_axes=in_axes,
    out_axes=out_axes,
    length=length,
    reverse=reverse,
    unroll=unroll,
    data_transform=data_transform,
    methods=methods,
  )
  for col in axes_collections:
    if col in variable_axes:
      scanned = _add_axis_to_metadata(scanned, variable_axes[col], axis_name, f'{col}_axes')
  return scanned


def vmap_with_axes(
  target: Any,
  variable_axes: Mapping[CollectionFilter, Any],
  split_rngs: Mapping[PRNGSequenceFilter, bool] = {},
  in_axes: Any = 0,
  out_axes: Any = 0,
  axis_size: int | None = None,
  axis_name: str | None = None,
  partitioning_axis_names: Mapping[str, str] = {},
  spmd_axis_name: str | None = None,
  methods: Any = None,
) -> Any:
  """``nn.vmap`` that also inserts a logical axis name for the mapped variable axis.

  Args:
    target: a Module class, a method, or a function taking a module first.
    variable_axes, split_rngs, in_axes, out_axes, axis_size, axis_name, spmd_axis_name,
      methods: as for ``nn.vmap``.
    partitioning_axis_names: collection -> the logical name of its mapped axis; the
      collection's ``*_axes`` metadata is broadcast and gets that name at
      ``variable_axes[collection]``.

  Returns:
    The vectorised target.

  Example:

  >>> import jax, jax.numpy as jnp, flaxlike as nn
  >>> from flaxlike.linen import partitioning
  >>> class Scale(nn.Module):
  ...   @nn.compact
  ...   def __call__(self, x):
  ...     return x * partitioning.param_with_axes('s', nn.initializers.ones, (3,), axes=('embed',))
  >>> Ensemble = partitioning.vmap_with_axes(
  ...   Scale, variable_axes={'params': 0}, split_rngs={'params': True},
  ...   partitioning_axis_names={'params': 'ensemble'})
  >>> variables = Ensemble().init(jax.random.key(0), jnp.ones((2, 3)))
  >>> variables['params']['s'].shape, variables['params_axes']['s_axes'].names
  ((2, 3), ('ensemble', 'embed'))
  """
  variable_axes = dict(variable_axes)
  for col in partitioning_axis_names:
    variable_axes[f'{col}_axes'] = None  # metadata is shared by every batch member
  vmapped = transforms.vmap(
    target,
    variable_axes=variable_axes,
    split_rngs=split_rngs,
    in_axes=in_axes,
    out_axes=out_axes,
    axis_size=axis_size,
    axis_name=axis_name,
    spmd_axis_name=spmd_axis_name,
    methods=methods,
  )
  for col, axis in variable_axes.items():
    if isinstance(col, str) and col in partitioning_axis_names:
      vmapped = _add_axis_to_metadata(vmapped, axis, partitioning_axis_names[col], f'{col}_axes')
  return vmapped


#################################################
# remat with static arguments counted after ``self``
#################################################


def _static_argnums(static_argnums: int | Sequence[int]) -> tuple[int, ...]:
  if isinstance(static_argnums, int):
    return (static_argnums,)
  return tuple(sorted(static_argnums))


def core_remat_static(
  fn: Callable[..., Any],
  variables: Filter = True,
  rngs: Filter = True,
  concrete: bool = False,
  prevent_cse: bool = True,
  static_argnums: int | Sequence[int] = (),
  policy: Callable[..., bool] | None = None,
) -> Callable[..., Any]:
  """``lift.checkpoint`` of ``fn(scope, *args)``; ``static_argnums`` index ``args``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.core import init
  >>> from flaxlike.linen import partitioning
  >>> def power(scope, x, n):
  ...   return x ** n
  >>> y, _ = init(partitioning.core_remat_static(power, static_argnums=(1,)))(
  ...   jax.random.key(0), jnp.float32(2.0), 3)
  >>> y
  Array(8., dtype=float32)
  """
  if concrete:
    raise ValueError(
      'remat(concrete=True) is not supported by JAX any more: mark the arguments that '
      'must be concrete with static_argnums instead.'
    )
  return lift.checkpoint(
    fn,
    variables=variables,
    rngs=rngs,
    prevent_cse=prevent_cse,
    static_argnums=_static_argnums(static_argnums),
    policy=policy,
  )


def remat(
  target: Any,
  variables: Filter = True,
  rngs: Filter = True,
  concrete: bool = False,
  prevent_cse: bool = True,
  static_argnums: int | Sequence[int] = (),
  policy: Callable[..., bool] | None = None,
  methods: Any = None,
) -> Any:
  """Rematerialises a Module in the backward pass, as ``nn.remat``, with one difference:

  ``static_argnums`` count from the first argument *after* ``self`` (``nn.remat`` counts
  ``self`` as 0). A class target becomes ``Core_remat_static<Class>``, so its autonames
  (``Core_remat_staticBlock_0``) and parameter paths are Linen's.

  Args:
    target: a Module class, a method, or a function taking a module first.
    variables, rngs: the collections and RNG streams visible inside.
    concrete: must be False (JAX dropped it; use ``static_argnums``).
    prevent_cse, policy: as for ``jax.checkpoint``.
    static_argnums: indices of arguments after ``self`` that are Python values.
    methods: the methods of a class target to transform (default ``__call__``).

  Returns:
    The rematerialised target.

  Example:

  >>> import jax, jax.numpy as jnp, flaxlike as nn
  >>> from flaxlike.linen import partitioning
  >>> class Block(nn.Module):
  ...   @nn.compact
  ...   def __call__(self, x, deterministic):
  ...     return nn.Dropout(0.5, deterministic=deterministic)(nn.Dense(2)(x))
  >>> RematBlock = partitioning.remat(Block, static_argnums=(1,))
  >>> params = RematBlock().init(jax.random.key(0), jnp.ones((1, 3)), True)['params']
  >>> RematBlock.__name__, list(params)
  ('Core_remat_staticBlock', ['Dense_0'])
  """

  def builder(**kw: Any) -> Callable[..., Any]:
    return lambda body: core_remat_static(body, **kw)

  return _lift(
    'Core_remat_static',
    target,
    methods,
    _simple(builder, 'remat'),
    variables=variables,
    rngs=rngs,
    concrete=concrete,
    prevent_cse=prevent_cse,
    static_argnums=static_argnums,
    policy=policy,
  )
