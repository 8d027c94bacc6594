"""Turns each Module subclass into a dataclass with keyword-only ``parent`` and ``name``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from flaxlike import errors
from flaxlike.linen import kw_only_dataclasses
from flaxlike.linen._module.calls import wrap_class_methods
from flaxlike.linen._module.state import _unspecified_parent


def make_module_dataclass(cls: type, kw_only: bool) -> None:
  """Makes ``cls`` a dataclass, adds ``parent``/``name`` once, wraps its methods.

  Args:
    cls: the new Module subclass.
    kw_only: make the subclass's own fields keyword-only (allows fields without
      defaults after inherited fields with defaults).
  """
  own_annotations = cls.__dict__.get('__annotations__', {})
  if 'parent' in own_annotations or 'name' in own_annotations:
    raise errors.ReservedModuleAttributeError(own_annotations)
  inherited = getattr(cls, '__dataclass_fields__', {})
  extra_fields = ()
  if 'parent' not in inherited:
    # Keyword-only fields go last in every subclass (Linen's field order: a subclass's
    # own fields come before ``parent`` and ``name``).
    extra_fields = (
      (
        'parent',
        Any,
        kw_only_dataclasses.field(
          default=_unspecified_parent, kw_only=True, repr=False, compare=False, hash=False
        ),
      ),
      ('name', 'str | None', kw_only_dataclasses.field(default=None, kw_only=True)),
    )
  own_hash = '__hash__' in cls.__dict__
  kw_only_dataclasses.dataclass(
    cls,
    extra_fields=extra_fields,
    unsafe_hash=not own_hash,
    repr=False,
    kw_only=kw_only,
  )
  if 'parent' in cls.__dict__:
    # The dataclass left the default as a class attribute; it would hide Module's
    # ``parent`` descriptor (a weak link to a parent Module). __init__ keeps the default.
    delattr(cls, 'parent')
  if not own_hash:
    cls.__hash__ = _unbound_only_hash(cls.__hash__)  # type: ignore[method-assign]
  cls._field_names = tuple(
    f.name for f in dataclasses.fields(cls) if f.init and f.name not in ('parent', 'name')
  )
  wrap_class_methods(cls)


def _unbound_only_hash(field_hash: Callable[[Any], int]) -> Callable[[Any], int]:
  """The dataclass hash of a module's fields, refused once the module is bound: a bound
  module holds variables, which are not part of the fields, so equal hashes would lie."""

  def __hash__(self: Any) -> int:
    if self.__dict__.get('scope') is not None:
      raise TypeError("Can't call __hash__ on modules that hold variables.")
    return field_hash(self)

  return __hash__
