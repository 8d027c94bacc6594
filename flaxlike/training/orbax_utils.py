"""Helpers that turn a target pytree into Orbax save and restore arguments, as in Flax.

This module needs the optional dependency orbax-checkpoint
(``pip install 'flaxlike[orbax]'``); ``import flaxlike`` never imports it, only importing
this module (or saving an Orbax checkpoint) does.

``restore_args_from_target`` is what makes a restore land in the right place: every
array of the target that carries a ``sharding`` (a ``jax.Array``, a
``jax.ShapeDtypeStruct`` with ``sharding=``, the output of ``nn.sharded_init`` or
``jax.eval_shape``) is read back directly into that sharding, on whatever mesh the
target uses, whatever mesh the checkpoint was written from.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import numpy as np

try:
  # Orbax is an optional dependency; this module exists only to build Orbax objects, so it
  # imports Orbax at import time and says how to install it when it is missing.
  import orbax.checkpoint as ocp
except ImportError as e:
  raise ImportError(
    f'flaxlike.training.orbax_utils needs orbax-checkpoint ({e}); install it with '
    "pip install 'flaxlike[orbax]'."
  ) from e


def is_multi_device_array(value: Any) -> bool:
  """Whether ``value`` is a ``jax.Array`` that is not fully replicated.

  Example:

  >>> import jax.numpy as jnp
  >>> from flaxlike.training import orbax_utils
  >>> orbax_utils.is_multi_device_array(jnp.ones(2)), orbax_utils.is_multi_device_array(1.0)
  (False, False)
  """
  if isinstance(value, jax.Array):
    return not value.is_fully_replicated
  return False


def save_args_from_target(target: Any) -> Any:
  """A pytree of default ``orbax.checkpoint.SaveArgs``, one per leaf of ``target``.

  Example:

  >>> import numpy as np
  >>> from flaxlike.training import orbax_utils
  >>> args = orbax_utils.save_args_from_target({'w': np.ones(2), 'step': 3})
  >>> sorted(args), type(args['w']).__name__
  (['step', 'w'], 'SaveArgs')
  """
  return jax.tree_util.tree_map(lambda _: ocp.SaveArgs(), target)


def maybe_construct_transformations(target: Any, transforms: Any | None) -> Any:
  """``transforms`` if given, else Orbax transforms that keep ``None`` leaves of ``target``.

  A ``None`` in the target (an empty optimizer state slot, say) has no counterpart to
  restore from, so it is marked to fall back to the checkpoint's value.

  Example:

  >>> from flaxlike.training import orbax_utils
  >>> t = orbax_utils.maybe_construct_transformations({'a': None, 'b': 1.0}, None)
  >>> list(t)
  ['a']
  """
  if transforms is not None:
    return transforms
  flat = ocp.utils.to_flat_dict(target, sep='/', keep_empty_nodes=True)
  return {k: ocp.Transform(use_fallback=True) for k, v in flat.items() if v is None}


def _sharding_of(x: Any) -> Any:
  return getattr(x, 'sharding', None)


def restore_args_from_target(target: Any, mesh: jax.sharding.Mesh | None = None) -> Any:
  """Orbax ``restore_args`` that restore each array into the form ``target`` has.

  Args:
    target: a pytree with the checkpoint's structure. Leaves with a ``sharding``
      (``jax.Array``, ``jax.ShapeDtypeStruct(shape, dtype, sharding=...)``) are restored
      as ``jax.Array``\\ s in that sharding; when no leaf has one, everything is restored
      as numpy arrays.
    mesh: deprecated, as in Flax: build the target's arrays on your mesh instead. When
      given, every sharding's ``PartitionSpec`` is placed on this mesh.

  Returns:
    A pytree of ``orbax.checkpoint.RestoreArgs`` / ``ArrayRestoreArgs``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.training import orbax_utils
  >>> args = orbax_utils.restore_args_from_target({'w': jnp.ones(2)})
  >>> type(args['w']).__name__, args['w'].sharding == jnp.ones(2).sharding
  ('ArrayRestoreArgs', True)
  """
  shardings = jax.tree_util.tree_map(_sharding_of, target)
  if not any(jax.tree_util.tree_leaves(shardings)):
    return jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  if mesh is not None:
    warnings.warn(
      'restore_args_from_target(): `mesh` is deprecated; create the target arrays on your '
      'mesh instead and call restore_args_from_target(target).',
      DeprecationWarning,
      stacklevel=2,
    )
    shardings = jax.tree_util.tree_map(
      lambda s: jax.sharding.NamedSharding(mesh, s.spec), shardings
    )
  return ocp.checkpoint_utils.construct_restore_args(target, shardings, set_global_shape=False)
