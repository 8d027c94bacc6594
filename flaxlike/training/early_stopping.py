"""Stop training when a metric has stopped improving, as ``flax.training.early_stopping``."""

from __future__ import annotations

import math

from flaxlike import struct


class EarlyStopping(struct.PyTreeNode):
  """Tracks the best value of a metric (lower is better) and says when to stop.

  An update improves on the best value when it is lower by more than ``min_delta``; the
  first update always does. After more than ``patience`` updates in a row without an
  improvement, ``should_stop`` becomes True (and stays True until ``reset``). The object
  is immutable: ``update`` returns a new one.

  Attributes:
    min_delta: how much lower than the best value a metric must be to count as an
      improvement.
    patience: how many updates without improvement are tolerated before stopping.
    best_metric: the best (lowest) value seen so far.
    patience_count: updates since the last improvement.
    should_stop: whether training should stop.
    has_improved: whether the last ``update`` improved on the best value.

  Example:

    >>> from flaxlike.training.early_stopping import EarlyStopping
    >>> early_stop = EarlyStopping(min_delta=1e-3, patience=2)
    >>> for epoch, loss in enumerate([4, 3, 3, 3, 2, 2, 2, 2, 1, 1]):
    ...   early_stop = early_stop.update(loss)
    ...   if early_stop.should_stop:
    ...     print(f'stopping at epoch {epoch}, best loss {early_stop.best_metric}')
    ...     break
    stopping at epoch 7, best loss 2
  """

  min_delta: float = 0
  patience: int = 0
  best_metric: float = float('inf')
  patience_count: int = 0
  should_stop: bool = False
  has_improved: bool = False

  def reset(self) -> EarlyStopping:
    """The same settings with the tracking state cleared (for a new run)."""
    return self.replace(
      best_metric=float('inf'), patience_count=0, should_stop=False, has_improved=False
    )

  def update(self, metric: float) -> EarlyStopping:
    """Records one value of the metric.

    Args:
      metric: the new value (lower is better), e.g. this epoch's validation loss.

    Returns:
      The updated state; ``has_improved`` says whether ``metric`` beat the best value by
      more than ``min_delta``.
    """
    if math.isinf(self.best_metric) or self.best_metric - metric > self.min_delta:
      return self.replace(best_metric=metric, patience_count=0, has_improved=True)
    # should_stop is checked against the count before this update, so ``patience`` misses
    # are tolerated and the next one stops (as in Flax).
    return self.replace(
      patience_count=self.patience_count + 1,
      should_stop=self.should_stop or self.patience_count >= self.patience,
      has_improved=False,
    )
