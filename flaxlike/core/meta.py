"""Boxed metadata for variables: values wrapped with information about their axes.

A box is a pytree node whose only child is the value, so optimizers and tree maps see
through it while the metadata (e.g. sharding names) rides along in the treedef. Lifted
transforms that add an axis (``vmap``, ``scan``) call ``add_axis``/``remove_axis`` so the
metadata keeps describing the value's axes.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from flaxlike import errors, struct
from flaxlike.core.staged_init import pure_initializer

A = TypeVar('A')
TAxisMetadata = TypeVar('TAxisMetadata', bound='AxisMetadata[Any]')

PARTITION_NAME = 'partition_name'


class AxisMetadata(Generic[A], metaclass=abc.ABCMeta):
  """Abstract base of boxed metadata.

  As in Linen, the base is not itself a pytree: a subclass registers itself, usually by
  also deriving from ``struct.PyTreeNode`` (``class Box(struct.PyTreeNode,
  AxisMetadata)``) with a pytree field ``value`` and static metadata fields, and
  implements ``unbox``, ``add_axis`` and ``remove_axis`` (and ``replace_boxed`` when its
  value field is not called ``value``).
  """

  @abc.abstractmethod
  def unbox(self) -> A:
    """Returns the bare value."""

  def replace_boxed(self: TAxisMetadata, val: A) -> TAxisMetadata:
    """Returns a copy holding ``val`` instead of the current value."""
    return self.replace(value=val)  # type: ignore[attr-defined]

  @abc.abstractmethod
  def add_axis(self: TAxisMetadata, index: int, params: dict[str, Any]) -> TAxisMetadata:
    """Records that a transform inserted an axis at ``index`` of the value."""

  @abc.abstractmethod
  def remove_axis(self: TAxisMetadata, index: int, params: dict[str, Any]) -> TAxisMetadata:
    """Records that a transform removed the axis at ``index`` of the value."""


def is_axis_metadata(val: Any) -> bool:
  """Whether ``val`` is a metadata box."""
  return isinstance(val, AxisMetadata)


def map_axis_meta(fn: Callable[[AxisMetadata], Any], tree: Any) -> Any:
  """Applies ``fn`` to every box in ``tree``, leaving other leaves unchanged."""

  def update(x):
    return fn(x) if isinstance(x, AxisMetadata) else x

  return jax.tree_util.tree_map(update, tree, is_leaf=is_axis_metadata)


def add_axis(tree: Any, index: int, params: dict[str, Any]) -> Any:
  """Calls ``add_axis`` on every box in ``tree``."""
  return map_axis_meta(lambda x: x.add_axis(index, params), tree)


def remove_axis(tree: Any, index: int, params: dict[str, Any]) -> Any:
  """Calls ``remove_axis`` on every box in ``tree``."""
  return map_axis_meta(lambda x: x.remove_axis(index, params), tree)


def unbox(tree: Any) -> Any:
  """Replaces every box in ``tree`` by its value (applying sharding constraints).

  Example:

  >>> import jax.numpy as jnp
  >>> from flaxlike.core import meta
  >>> meta.unbox({'w': meta.Partitioned(jnp.ones(2), ('data',))})['w'].shape
  (2,)
  """
  return map_axis_meta(lambda x: x.unbox(), tree)


def replace_boxed(tree: Any, updates: Any) -> Any:
  """Puts the leaves of ``updates`` into the boxes of ``tree`` (same structure unboxed)."""

  def inner(x, update):
    return x.replace_boxed(update) if isinstance(x, AxisMetadata) else update

  return jax.tree_util.tree_map(inner, tree, updates, is_leaf=is_axis_metadata)


def global_mesh_defined() -> bool:
  """Whether a global mesh is active (``jax.set_mesh``), as Linen's function of that name."""
  return not jax.sharding.get_abstract_mesh().empty


def _drop_axes(entry: Any, dropped: frozenset[str]) -> Any:
  if isinstance(entry, str):
    return None if entry in dropped else entry
  if isinstance(entry, (tuple, list)):
    kept = tuple(e for e in entry if e not in dropped)
    return kept or None
  return entry


def constrain(value: Any, spec: PartitionSpec, mesh: Mesh | None = None) -> Any:
  """Lays ``value`` out as ``spec`` on ``mesh``, or on the active mesh when ``mesh`` is None.

  Without either mesh the value is returned unchanged. Axes of an all-``Explicit`` mesh
  (the ``jax.make_mesh`` default) are laid out with ``jax.sharding.reshard``, since
  ``with_sharding_constraint`` only asserts there; other meshes get
  ``with_sharding_constraint``. Axes that are ``Manual`` in the active mesh (inside
  ``shard_map``) are left out: each shard already holds its slice along them.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from jax.sharding import PartitionSpec
  >>> from flaxlike.core import meta
  >>> meta.constrain(jnp.ones(4), PartitionSpec('data')).shape  # no mesh: unchanged
  (4,)
  """
  context = jax.sharding.get_abstract_mesh()
  if not context.empty:
    manual = frozenset(
      n for n, t in zip(context.axis_names, context.axis_types) if t == AxisType.Manual
    )
    if manual:
      if len(manual) == len(context.axis_names):
        return value
      # A concrete mesh cannot be named inside shard_map; the context mesh knows the
      # remaining (non-manual) axes.
      spec, mesh = PartitionSpec(*(_drop_axes(e, manual) for e in spec)), None
  if mesh is None:
    if context.empty:
      return value
    if context.are_all_axes_explicit:
      return jax.sharding.reshard(value, spec)
    return jax.lax.with_sharding_constraint(value, spec)
  if mesh.are_all_axes_explicit:
    if not context.empty:
      return jax.sharding.reshard(value, NamedSharding(mesh, spec))
    # Outside a mesh context a computation cannot carry explicit shardings; a layout
    # constraint on the same devices does the job.
    mesh = _auto_axes(mesh)
  return jax.lax.with_sharding_constraint(value, NamedSharding(mesh, spec))


@functools.lru_cache(maxsize=32)
def _auto_axes(mesh: Mesh) -> Mesh:
  return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


class Partitioned(struct.PyTreeNode, AxisMetadata[A]):
  """A value annotated with one mesh axis name (or None) per dimension.

  ``unbox`` constrains the value to that sharding when ``mesh`` is set or a global mesh
  is active (``jax.set_mesh``); otherwise it returns the value unchanged (see
  ``constrain``).

  Transforms that add an axis (``vmap``, ``scan``, ``remat_scan``) insert the name
  ``metadata_params[PARTITION_NAME]`` at that axis; without one the new axis is named
  None (replicated).

  Attributes:
    value: the array.
    names: one mesh axis name, tuple of names, or None per dimension.
    mesh: the mesh to shard on; None means the global mesh, if any.
  """

  value: Any
  names: tuple[Any, ...] = struct.field(pytree_node=False)
  mesh: Mesh | None = struct.field(default=None, pytree_node=False)

  def unbox(self, apply_constraint: bool = True) -> A:
    if not apply_constraint or (self.mesh is None and not global_mesh_defined()):
      return self.value
    return constrain(self.value, self.get_partition_spec(), self.mesh)

  def add_axis(self, index: int, params: dict[str, Any]) -> Partitioned[A]:
    axis_name = params.get(PARTITION_NAME)
    names = list(self.names)
    while len(names) < index:
      names.append(None)
    names.insert(index, axis_name)
    return self.replace(names=tuple(names))

  def remove_axis(self, index: int, params: dict[str, Any]) -> Partitioned[A]:
    names = list(self.names)
    if PARTITION_NAME not in params:
      # Without a name this transform added a None axis; a named axis here was added by a
      # transform that had one, so the two calls disagree.
      if names[index] is not None:
        raise errors.PartitioningUnspecifiedError(self, index)
      del names[index]
      return self.replace(names=tuple(names))
    axis_name = params[PARTITION_NAME]
    if names[index] != axis_name:
      raise ValueError(
        f'Removing axis {index} named {names[index]!r}, but the transform expected '
        f'{axis_name!r} (names: {self.names}).'
      )
    del names[index]
    return self.replace(names=tuple(names))

  def get_partition_spec(self) -> PartitionSpec:
    """The ``PartitionSpec`` of the value."""
    return PartitionSpec(*self.names)

  def get_sharding(self, mesh: Mesh) -> NamedSharding:
    """The ``NamedSharding`` of the value on ``mesh`` (or on ``self.mesh``)."""
    return NamedSharding(self.mesh if self.mesh is not None else mesh, self.get_partition_spec())


@pure_initializer
def with_partitioning(
  fn: Callable[..., Any], names: tuple[Any, ...], mesh: Mesh | None = None
) -> Callable[..., Partitioned[Any]]:
  """Wraps initializer ``fn`` so it returns a ``Partitioned`` box.

  Example:

  >>> import jax
  >>> from flaxlike.core import meta
  >>> init = meta.with_partitioning(jax.nn.initializers.zeros, (None, 'model'))
  >>> init(jax.random.key(0), (2, 3)).names
  (None, 'model')
  """

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    return Partitioned(fn(*args, **kwargs), tuple(names), mesh=mesh)

  return wrapper


def get_partition_spec(tree: Any) -> Any:
  """Maps boxes with partition information to their ``PartitionSpec``; other leaves to
  ``PartitionSpec()`` (replicated)."""

  def f(x):
    if hasattr(x, 'get_partition_spec'):
      return x.get_partition_spec()
    return PartitionSpec()

  return jax.tree_util.tree_map(f, tree, is_leaf=is_axis_metadata)


def get_sharding(tree: Any, mesh: Mesh) -> Any:
  """Maps every leaf of ``tree`` to a ``NamedSharding`` on ``mesh``."""

  def f(x):
    if hasattr(x, 'get_sharding'):
      return x.get_sharding(mesh)
    return NamedSharding(mesh, PartitionSpec())

  return jax.tree_util.tree_map(f, tree, is_leaf=is_axis_metadata)
