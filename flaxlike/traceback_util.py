"""Keeps flaxlike's own frames out of the tracebacks users read, as ``flax.traceback_util``.

JAX's API functions (``jax.jit``, ``jax.grad``, ...) are "API boundaries": an error raised
below one gets a traceback with JAX's internal frames removed, so that it ends in user
code. A Module's ``init``, ``init_with_output``, ``apply``, ``bind`` and ``lazy_init`` are
boundaries too, as in Linen, and flaxlike registers its source directory with JAX's
filter when it is imported, so the frames of the Module machinery, the layers and the
lifted transforms are removed as well. JAX adds a note saying so to the exception; set
``JAX_TRACEBACK_FILTERING=off`` to see every frame.

The ``flax_filter_frames`` config flag (default on; ``FLAX_FILTER_FRAMES=0`` in the
environment turns it off at import) says whether flaxlike's frames are hidden;
``show_flaxlike_in_tracebacks()``/``hide_flaxlike_in_tracebacks()`` (or Flax's names
``show_flax_in_tracebacks``/``hide_flax_in_tracebacks``) flip it at run time, as does
``flaxlike.config.update('flax_filter_frames', ...)``.

Example:

  >>> import flaxlike
  >>> from flaxlike import traceback_util
  >>> traceback_util.show_flaxlike_in_tracebacks()
  >>> flaxlike.config.flax_filter_frames
  False
  >>> traceback_util.hide_flaxlike_in_tracebacks()
  >>> flaxlike.config.flax_filter_frames
  True
"""

from __future__ import annotations

import os

from jax._src import traceback_util as jax_traceback_util
from jax.extend import source_info_util

from flaxlike import configurations
from flaxlike.configurations import config

__all__ = [
  'api_boundary',
  'register_exclusion',
  'hide_flaxlike_in_tracebacks',
  'show_flaxlike_in_tracebacks',
  'hide_flax_in_tracebacks',
  'show_flax_in_tracebacks',
]

# JAX's decorator that filters the traceback of an exception leaving the decorated function.
api_boundary = jax_traceback_util.api_boundary

# Every registered path, so that filtering can be switched off and on again.
_exclusions: list[str] = []
# The paths already given to source_info_util, which has no way to remove one.
_source_info_exclusions: set[str] = set()


def _set_jax_exclusions(enabled: bool) -> None:
  # JAX keeps a plain list of path prefixes and reads it when it filters a traceback.
  excluded = jax_traceback_util._exclude_paths
  for path in _exclusions:
    if enabled and path not in excluded:
      excluded.append(path)
    elif not enabled and path in excluded:
      excluded.remove(path)
    if enabled and path not in _source_info_exclusions:
      # Source info names the innermost user frame of each traced operation (shown in
      # profiles and error messages); flaxlike's frames should not count as the user's.
      source_info_util.register_exclusion(path)
      _source_info_exclusions.add(path)


def register_exclusion(path: str) -> None:
  """Hides the frames of the file ``path`` (or of every file under a directory prefix)
  from filtered tracebacks while ``flax_filter_frames`` is on.

  Args:
    path: a source file, or a directory ending in ``os.sep`` for everything under it.

  Example:

    >>> from flaxlike import traceback_util
    >>> traceback_util.register_exclusion(traceback_util.__file__)
  """
  if path not in _exclusions:
    _exclusions.append(path)
  _set_jax_exclusions(config.flax_filter_frames)


def hide_flaxlike_in_tracebacks() -> None:
  """Hides flaxlike's frames from filtered tracebacks (the default)."""
  config.update('flax_filter_frames', True)


def show_flaxlike_in_tracebacks() -> None:
  """Shows flaxlike's frames in tracebacks, e.g. to debug flaxlike itself."""
  config.update('flax_filter_frames', False)


# Flax's names for the same switches.
hide_flax_in_tracebacks = hide_flaxlike_in_tracebacks
show_flax_in_tracebacks = show_flaxlike_in_tracebacks

configurations._update_hooks['flax_filter_frames'] = lambda value: _set_jax_exclusions(bool(value))

# The whole package: every module of flaxlike is library code as far as a user is concerned.
register_exclusion(os.path.dirname(os.path.abspath(__file__)) + os.sep)
