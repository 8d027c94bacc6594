"""Learning-rate schedules of Flax's image classification examples (``flax.training.lr_schedule``).

Flax considers these deprecated in favour of optax schedules (``optax.warmup_cosine_decay_schedule``,
``optax.piecewise_constant_schedule``, ...), and each constructor logs a warning saying so;
they are kept so that programs using them run unchanged. Each returns ``f(step) -> lr``,
usable as an optax learning rate. Durations are given in epochs and converted with
``steps_per_epoch``; ``warmup_length`` (epochs) multiplies the rate by a factor that rises
linearly from 0 to 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

_log = logging.getLogger(__name__)

# step -> learning rate; the constant schedule without warmup returns its float as it is.
Schedule = Callable[[int], jnp.ndarray | float]


def _warn_deprecated() -> None:
  _log.warning(
    'Learning rate schedules in ``flax.training`` are effectively deprecated in favor of '
    'Optax schedules. Please refer to '
    'https://optax.readthedocs.io/en/latest/api.html#optimizer-schedules for alternatives.'
  )


def _with_warmup(lr, step, warmup_length: float, steps_per_epoch: int):
  if warmup_length > 0.0:
    return lr * jnp.minimum(1.0, step / float(warmup_length) / steps_per_epoch)
  return lr


def create_constant_learning_rate_schedule(
  base_learning_rate: float, steps_per_epoch: int, warmup_length: float = 0.0
) -> Schedule:
  """A constant rate, after an optional linear warmup.

  Args:
    base_learning_rate: the rate.
    steps_per_epoch: training steps per epoch.
    warmup_length: warmup epochs (0: none).

  Returns:
    ``f(step) -> lr``.

  Example:

    >>> from flaxlike.training import lr_schedule
    >>> f = lr_schedule.create_constant_learning_rate_schedule(0.1, 10, warmup_length=1)
    >>> [round(float(f(s)), 3) for s in (0, 5, 10, 50)]
    [0.0, 0.05, 0.1, 0.1]
  """
  _warn_deprecated()
  return lambda step: _with_warmup(base_learning_rate, step, warmup_length, steps_per_epoch)


def create_stepped_learning_rate_schedule(
  base_learning_rate: float,
  steps_per_epoch: int,
  lr_sched_steps: Sequence[Sequence[float]],
  warmup_length: float = 0.0,
) -> Schedule:
  """A rate that drops to given fractions of the base rate at given epochs.

  Args:
    base_learning_rate: the rate before the first drop.
    steps_per_epoch: training steps per epoch.
    lr_sched_steps: ``[epoch, factor]`` pairs in increasing epoch order: from ``epoch`` on
      the rate is ``base_learning_rate * factor``; e.g. ``[[30, 0.1], [60, 0.01]]``.
    warmup_length: warmup epochs (0: none).

  Returns:
    ``f(step) -> lr``.

  Example:

    >>> from flaxlike.training import lr_schedule
    >>> f = lr_schedule.create_stepped_learning_rate_schedule(1.0, 10, [[1, 0.1], [2, 0.01]])
    >>> [round(float(f(s)), 4) for s in (0, 10, 11, 20, 21)]
    [1.0, 1.0, 0.1, 0.1, 0.01]
  """
  _warn_deprecated()
  # A step at epoch e takes effect after step round(e * steps_per_epoch), as in Flax.
  boundaries = np.round(np.array([s[0] for s in lr_sched_steps]) * steps_per_epoch).astype(int)
  values = np.array([1.0] + [s[1] for s in lr_sched_steps]) * base_learning_rate

  def learning_rate_fn(step):
    lr = jnp.take(values, jnp.sum(boundaries < step))
    return _with_warmup(lr, step, warmup_length, steps_per_epoch)

  return learning_rate_fn


def create_cosine_learning_rate_schedule(
  base_learning_rate: float,
  steps_per_epoch: int,
  halfcos_epochs: float,
  warmup_length: float = 0.0,
) -> Schedule:
  """Half a cosine wave from the base rate down to 0 over ``halfcos_epochs``.

  Args:
    base_learning_rate: the rate at step 0 (before warmup).
    steps_per_epoch: training steps per epoch.
    halfcos_epochs: epochs over which the rate falls to 0, usually the training length.
    warmup_length: warmup epochs (0: none).

  Returns:
    ``f(step) -> lr``.

  Example:

    >>> from flaxlike.training import lr_schedule
    >>> f = lr_schedule.create_cosine_learning_rate_schedule(1.0, 10, halfcos_epochs=2)
    >>> [round(float(f(s)), 4) for s in (0, 10, 20)]
    [1.0, 0.5, 0.0]
  """
  _warn_deprecated()
  halfwavelength_steps = halfcos_epochs * steps_per_epoch

  def learning_rate_fn(step):
    lr = base_learning_rate * (jnp.cos(step * jnp.pi / halfwavelength_steps) * 0.5 + 0.5)
    return _with_warmup(lr, step, warmup_length, steps_per_epoch)

  return learning_rate_fn
