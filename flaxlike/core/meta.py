"""Boxed metadata for variables: values wrapped with information about their axes.

A box is a pytree node whose only child is the value, so optimizers and tree maps see
through it while the metadata (e.g. sharding names) rides along in the treedef. Lifted
transforms that add an axis (``vmap``, ``scan``) call ``add_axis``/``remove_axis`` so the
metadata keeps describing the value's axes.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, Callable, Generic, TypeVar

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flaxlike import errors, struct

A = TypeVar('A')
TAxisMetadata = TypeVar('TAxisMetadata', bound='AxisMetadata[Any]')

PARTITION_NAME = 'partition_name'


class AxisMetadata(struct.PyTreeNode, Generic[A], metaclass=abc.ABCMeta):
  """Abstract base of boxed metadata.

  Subclasses are ``struct`` dataclasses with a pytree field ``value`` and static
  metadata fields, and implement the four methods below.
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


def _global_mesh_active() -> bool:
  try:
    return not jax.sharding.get_abstract_mesh().empty
  except AttributeError:  # very old jax without abstract meshes
    return False


class Partitioned(AxisMetadata[A]):
  """A value annotated with one mesh axis name (or None) per dimension.

  ``unbox`` constrains the value to that sharding when ``mesh`` is set or a global mesh
  is active (``jax.set_mesh``); otherwise it returns the value unchanged.

  Attributes:
    value: the array.
    names: one mesh axis name, tuple of names, or None per dimension.
    mesh: the mesh to shard on; None means the global mesh, if any.
  """

  value: Any
  names: tuple[Any, ...] = struct.field(pytree_node=False)
  mesh: Mesh | None = struct.field(default=None, pytree_node=False)

  def unbox(self, apply_constraint: bool = True) -> A:
    if not apply_constraint:
      return self.value
    if self.mesh is not None:
      sharding = NamedSharding(self.mesh, self.get_partition_spec())
      return jax.lax.with_sharding_constraint(self.value, sharding)
    if _global_mesh_active():
      return jax.lax.with_sharding_constraint(self.value, self.get_partition_spec())
    return self.value

  def add_axis(self, index: int, params: dict[str, Any]) -> Partitioned[A]:
    axis_name = self._axis_name(params)
    names = list(self.names)
    while len(names) < index:
      names.append(None)
    names.insert(index, axis_name)
    return self.replace(names=tuple(names))

  def remove_axis(self, index: int, params: dict[str, Any]) -> Partitioned[A]:
    axis_name = self._axis_name(params)
    names = list(self.names)
    if names[index] != axis_name:
      raise ValueError(
        f'Removing axis {index} named {names[index]!r}, but the transform expected '
        f'{axis_name!r} (names: {self.names}).'
      )
    del names[index]
    return self.replace(names=tuple(names))

  def _axis_name(self, params: dict[str, Any]) -> Any:
    if PARTITION_NAME not in params:
      raise errors.PartitioningUnspecifiedError(self)
    return params[PARTITION_NAME]

  def get_partition_spec(self) -> PartitionSpec:
    """The ``PartitionSpec`` of the value."""
    return PartitionSpec(*self.names)

  def get_sharding(self, mesh: Mesh) -> NamedSharding:
    """The ``NamedSharding`` of the value on ``mesh`` (or on ``self.mesh``)."""
    return NamedSharding(self.mesh if self.mesh is not None else mesh, self.get_partition_spec())


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
