"""Small data helpers from ``flax.training.common_utils``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def shard(xs: Any) -> Any:
  """Reshapes every leaf's leading axis to ``(local_device_count, -1)`` for ``pmap``.

  Example:

  >>> import numpy as np
  >>> from flaxlike.training import common_utils
  >>> common_utils.shard(np.zeros((jax.local_device_count() * 2, 3))).shape[1:]
  (2, 3)
  """
  n = jax.local_device_count()
  return jax.tree_util.tree_map(lambda x: x.reshape((n, -1) + x.shape[1:]), xs)


def shard_prng_key(prng_key: Any) -> Any:
  """Splits ``prng_key`` into one key per local device."""
  return jax.random.split(prng_key, num=jax.local_device_count())


def stack_forest(forest: Any) -> Any:
  """Stacks a sequence of identical pytrees into one pytree of numpy arrays.

  Example:

  >>> from flaxlike.training import common_utils
  >>> common_utils.stack_forest([{'loss': 1.0}, {'loss': 2.0}])
  {'loss': array([1., 2.])}
  """
  return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *forest)


def get_metrics(device_metrics: Any) -> Any:
  """Takes the first replica of each step's (pmapped) metrics, fetches them to host and
  stacks them over steps.

  Example:

  >>> import jax.numpy as jnp
  >>> from flaxlike.training import common_utils
  >>> common_utils.get_metrics([{'acc': jnp.array([0.5])}, {'acc': jnp.array([1.0])}])
  {'acc': array([0.5, 1. ], dtype=float32)}
  """
  first = jax.tree_util.tree_map(lambda x: x[0], device_metrics)
  return stack_forest(jax.device_get(first))


def onehot(
  labels: Any, num_classes: int, on_value: float = 1.0, off_value: float = 0.0
) -> jax.Array:
  """One-hot float32 encoding of integer ``labels`` along a new last axis.

  Example:

  >>> import jax.numpy as jnp
  >>> from flaxlike.training import common_utils
  >>> common_utils.onehot(jnp.array([0, 2]), 3).tolist()
  [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
  """
  labels = jnp.asarray(labels)
  hit = labels[..., None] == jnp.arange(num_classes).reshape((1,) * labels.ndim + (-1,))
  return jnp.where(hit, on_value, off_value).astype(jnp.float32)
