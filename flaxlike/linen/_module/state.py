"""Per-instance bookkeeping of a Module (modules are frozen; their state lives here)."""

from __future__ import annotations

import enum
from typing import Any


class _UnspecifiedParent:
  """Default of ``parent``: take the module whose method is running, if any."""

  def __repr__(self) -> str:
    return '_unspecified_parent'

  def __reduce__(self):
    return (_get_unspecified_parent, ())


_unspecified_parent = _UnspecifiedParent()


def _get_unspecified_parent() -> _UnspecifiedParent:
  return _unspecified_parent


class SetupState(enum.IntEnum):
  """How far a module instance is through its lazy ``setup`` (``module._state.setup_called``).

  ``NEW`` until first use of a bound module, ``DONE`` once ``setup`` has run.

  >>> from flaxlike.linen.module import SetupState
  >>> SetupState.NEW < SetupState.DONE
  True
  """

  NEW = 0
  # A lifted transform has run setup on a clone; setup submodules may alias scopes.
  TRANSFORMED = 1
  DONE = 2


class _ModuleState:
  """Mutable bookkeeping of one module instance (modules themselves are frozen)."""

  __slots__ = (
    'in_compact_method',
    'in_setup',
    'setup_called',
    'is_initialized',
    'autoname_cursor',
    'children',
    'adopted',
    'name_scopes',
  )

  def __init__(self):
    self.in_compact_method = False
    self.in_setup = False
    self.setup_called = SetupState.NEW
    self.is_initialized = False
    self.autoname_cursor: dict[str, int] = {}
    self.children: dict[str, Any] = {}
    self.adopted: dict[int, tuple[Any, Any]] = {}  # (original, weakref to clone)
    self.name_scopes: dict[str, Any] = {}

  def reset(self) -> None:
    self.in_compact_method = False
    self.in_setup = False
    self.autoname_cursor = {}
