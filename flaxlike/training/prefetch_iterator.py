"""An iterator that reads ahead on a background thread, as ``flax.training.prefetch_iterator``.

Flax deprecates it (data pipelines such as ``tf.data`` and ``grain`` prefetch themselves);
it is kept, with the same warning, so that programs using it run unchanged.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from typing import Any


class PrefetchIterator:
  """Wraps an iterator; a daemon thread keeps up to ``buffer_size`` items read ahead.

  Items come out in order. An exception raised by the wrapped iterator is raised by
  ``next`` once the items read before it are consumed. ``close()`` stops the thread.
  Constructing one warns with ``DeprecationWarning``, as in Flax.

  Args:
    data_iter: the iterator to read from.
    buffer_size: how many items to read ahead (default 1).

  Example:

    >>> import warnings
    >>> from flaxlike.training.prefetch_iterator import PrefetchIterator
    >>> with warnings.catch_warnings():
    ...   warnings.simplefilter('ignore', DeprecationWarning)
    ...   batches = PrefetchIterator(iter(range(5)), buffer_size=2)
    >>> list(batches)
    [0, 1, 2, 3, 4]
  """

  def __init__(self, data_iter: Iterator[Any], buffer_size: int = 1):
    warnings.warn(
      'PrefetchIterator is deprecated. Use the standard `tf.data` prefetch method instead',
      DeprecationWarning,
      stacklevel=2,
    )
    self._data_iter = data_iter
    self.buffer_size = buffer_size
    self._cond = threading.Condition()
    self._buffer: list[Any] = []
    self._active = True
    self._error: BaseException | None = None
    self._thread = threading.Thread(target=self._prefetch_loop, daemon=True)
    self._thread.start()

  def __iter__(self) -> PrefetchIterator:
    return self

  def __next__(self) -> Any:
    with self._cond:
      self._cond.wait_for(lambda: self._buffer or not self._active)
      if self._buffer:
        item = self._buffer.pop(0)
        self._cond.notify_all()  # room in the buffer: wake the reader
        return item
      if self._error is not None:
        raise self._error
      raise StopIteration

  def close(self) -> None:
    """Stops reading ahead; items already buffered can still be taken."""
    with self._cond:
      self._active = False
      self._cond.notify_all()

  def _prefetch_loop(self) -> None:
    while True:
      try:
        item = next(self._data_iter)
      except StopIteration:
        with self._cond:
          self._active = False
          self._cond.notify_all()
        return
      except Exception as e:  # handed to the consumer, raised by its next()
        with self._cond:
          self._error = e
          self._active = False
          self._cond.notify_all()
        return
      with self._cond:
        self._buffer.append(item)
        self._cond.notify_all()
        self._cond.wait_for(lambda: len(self._buffer) < self.buffer_size or not self._active)
        if not self._active:
          return
