"""Global behaviour flags, named as in Flax so existing configuration keeps working.

Each flag starts from its default, can be overridden by an environment variable of the
same name in upper case (``FLAX_FIX_RNG_SEPARATOR=1``), and changed at run time with
``flaxlike.config.update(name, value)``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

_TRUE_STRINGS = frozenset({'1', 'true', 'yes', 'on', 't', 'y'})
_FALSE_STRINGS = frozenset({'0', 'false', 'no', 'off', 'f', 'n', ''})

# name -> (default, help). Only flags that change behaviour in flaxlike are listed.
_FLAG_DEFAULTS: dict[str, tuple[Any, str]] = {
  'flax_fix_rng_separator': (
    False,
    'Hash a 0x00 byte before each path element when deriving RNG keys. Changes every '
    'initial value; off to match Linen.',
  ),
  'flax_return_frozendict': (
    False,
    'Return FrozenDicts instead of plain dicts from init and apply.',
  ),
  'flax_preserve_adopted_names': (
    False,
    'Keep the name= of a module passed in as a field instead of naming it after the field.',
  ),
  'flax_profile': (
    True,
    'Run each module method under jax.named_scope so profiles and HLO carry module names '
    '(as in Linen). Turn off with nn.disable_named_call() to shave a little trace time.',
  ),
  'flax_max_repr_depth': (None, 'Maximum nesting depth of Module reprs (None: no limit).'),
  'flax_filter_frames': (
    True,
    "Hide flaxlike's own frames (with JAX's) from the tracebacks of errors raised under a "
    'JAX transform; see flaxlike.traceback_util.',
  ),
  'flax_use_orbax_checkpointing': (
    True,
    'Save checkpoints with Orbax (a directory per step) when orbax-checkpoint is '
    "installed (pip install 'flaxlike[orbax]'), as Linen does; off, or without Orbax, "
    'save single msgpack files. Restoring reads either format whatever the flag says.',
  ),
}

# name -> function called with the new value after ``config.update(name, value)``, for flags
# whose effect lives outside this object (flax_filter_frames edits JAX's exclusion list).
_update_hooks: dict[str, Callable[[Any], None]] = {}


def _parse_env(name: str, default: Any) -> Any:
  raw = os.environ.get(name.upper())
  if raw is None:
    return default
  if isinstance(default, bool):
    lowered = raw.strip().lower()
    if lowered in _TRUE_STRINGS:
      return True
    if lowered in _FALSE_STRINGS:
      return False
    raise ValueError(f'Environment variable {name.upper()}={raw!r} is not a boolean.')
  if default is None:
    return int(raw) if raw.strip() else None
  return type(default)(raw)


class Config:
  """Holds the current value of every flag; read flags as attributes.

  Flags are plain instance attributes so that reading one on a hot path (every module
  method call reads ``flax_profile``) costs a single attribute lookup. Each flag is
  declared here too, so type checkers know ``config.flax_profile`` (tests/test_typing.py
  keeps these declarations equal to ``_FLAG_DEFAULTS``).

  Example:

  >>> from flaxlike import config
  >>> config.flax_return_frozendict
  False
  """

  flax_fix_rng_separator: bool
  flax_return_frozendict: bool
  flax_preserve_adopted_names: bool
  flax_profile: bool
  flax_max_repr_depth: int | None
  flax_filter_frames: bool
  flax_use_orbax_checkpointing: bool

  def __init__(self):
    for name, (default, _) in _FLAG_DEFAULTS.items():
      object.__setattr__(self, name, _parse_env(name, default))

  def __reduce__(self) -> str:
    # A singleton: pickling refers to the module global, never to a stale copy.
    return 'config'

  def __setattr__(self, name: str, value: Any) -> None:
    raise AttributeError(f'Use config.update({name!r}, value) to change a flag.')

  def update(self, name: str, value: Any) -> None:
    """Sets flag ``name`` to ``value``.

    Args:
      name: a flag name such as ``'flax_fix_rng_separator'``.
      value: its new value.
    """
    if name not in _FLAG_DEFAULTS:
      known = ', '.join(sorted(_FLAG_DEFAULTS))
      raise LookupError(f'Unknown flaxlike config flag {name!r}; known flags: {known}.')
    object.__setattr__(self, name, value)
    hook = _update_hooks.get(name)
    if hook is not None:
      hook(value)

  @contextlib.contextmanager
  def temp_flip_flag(self, name: str, value: Any) -> Iterator[None]:
    """Sets a flag for the duration of a ``with`` block (or decorated function), then
    restores it. ``name`` may omit the ``flax_`` prefix, as Linen's takes it."""
    if name not in _FLAG_DEFAULTS and f'flax_{name}' in _FLAG_DEFAULTS:
      name = f'flax_{name}'
    previous = getattr(self, name)
    self.update(name, value)
    try:
      yield
    finally:
      self.update(name, previous)


config = Config()
