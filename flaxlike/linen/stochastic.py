"""Stochastic layers: ``Dropout``."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from jax import lax, random

from flaxlike.linen.module import Module, compact, merge_param
from flaxlike.typing import Array, PRNGKey


class Dropout(Module):
  """Zeroes each input element with probability ``rate`` and scales the rest by ``1/(1-rate)``.

  The keep mask is ``jax.random.bernoulli(key, 1 - rate, shape)`` where ``key`` comes
  from ``self.make_rng(rng_collection)`` (or the ``rng`` call argument) and ``shape``
  is the input shape with the ``broadcast_dims`` axes set to 1.

  Attributes:
    rate: the probability of dropping an element (0 keeps everything, 1 zeroes all).
    broadcast_dims: axes along which one mask value is shared (e.g. the time axis for
      variational dropout).
    deterministic: if True, return the input unchanged; may instead be passed at call
      time (exactly one of the two).
    rng_collection: the RNG stream the mask is drawn from.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.Dropout(rate=0.5)
  >>> y = layer.apply({}, jnp.ones(6), deterministic=False,
  ...                 rngs={'dropout': jax.random.key(0)})
  >>> sorted(set(y.tolist())) in ([0.0, 2.0], [0.0], [2.0])
  True
  >>> layer.apply({}, jnp.ones(3), deterministic=True)
  Array([1., 1., 1.], dtype=float32)
  """

  rate: float
  broadcast_dims: Sequence[int] = ()
  deterministic: bool | None = None
  rng_collection: str = 'dropout'

  @compact
  def __call__(
    self, inputs: Array, deterministic: bool | None = None, rng: PRNGKey | None = None
  ) -> Array:
    """Applies dropout.

    Args:
      inputs: the array to drop elements of.
      deterministic: whether to skip dropout; give it here or as the field, not both.
      rng: an explicit key instead of ``make_rng(rng_collection)``.
    """
    deterministic = merge_param('deterministic', self.deterministic, deterministic)
    if self.rate == 0.0 or deterministic:
      return inputs
    if self.rate == 1.0:
      # Dividing by keep=0 would put NaNs into the gradient.
      return jnp.zeros_like(inputs)
    keep = 1.0 - self.rate
    # NumPy low-precision arrays would promote in `inputs / keep` (NumPy's rules),
    # leaving lax.select with mismatched dtypes.
    inputs = jnp.asarray(inputs)
    if rng is None:
      rng = self.make_rng(self.rng_collection)
    shape = list(jnp.shape(inputs))
    for axis in self.broadcast_dims:
      shape[axis] = 1
    mask = random.bernoulli(rng, p=keep, shape=tuple(shape))
    mask = jnp.broadcast_to(mask, jnp.shape(inputs))
    return lax.select(mask, inputs / keep, jnp.zeros_like(inputs))
