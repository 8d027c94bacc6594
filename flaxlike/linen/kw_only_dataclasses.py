"""Dataclasses whose keyword-only fields always come last, inherited ones included.

Python's own ``kw_only`` fields may follow fields with defaults, but they keep their place
in ``dataclasses.fields`` and a subclass that redeclares one turns it positional again.
Linen's Module needs more: its keyword-only ``parent`` and ``name`` (and any field a base
class declared keyword-only) stay keyword-only in every subclass and sit at the end of
both the field list and ``__init__``. This module gives that behaviour to any dataclass:

>>> import dataclasses, inspect
>>> from flaxlike.linen import kw_only_dataclasses
>>> @kw_only_dataclasses.dataclass
... class Parent:
...   name: str = kw_only_dataclasses.field(default='', kw_only=True)
>>> @kw_only_dataclasses.dataclass
... class Child(Parent):
...   size: float  # required, after an inherited field with a default
>>> print(inspect.signature(Child.__init__))
(self, size: float, *, name: str = '') -> None
>>> [f.name for f in dataclasses.fields(Child)]
['size', 'name']
"""

import dataclasses
from collections.abc import Sequence
from typing import Any, cast

from typing_extensions import dataclass_transform

# The marker annotation: fields after ``_: KW_ONLY`` are keyword-only (as in dataclasses).
KW_ONLY = dataclasses.KW_ONLY

_KW_ONLY_KEY = 'kw_only'  # field metadata flag, so subclasses see what a base declared


def field(*, metadata: Any = None, kw_only: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
  """``dataclasses.field``; ``kw_only=True`` makes the field keyword-only and last.

  Example:

  >>> from flaxlike.linen import kw_only_dataclasses
  >>> f = kw_only_dataclasses.field(default=1, kw_only=True)
  >>> f.kw_only, f.metadata['kw_only']
  (True, True)
  """
  if kw_only is not dataclasses.MISSING and kw_only:
    metadata = {**(metadata or {}), _KW_ONLY_KEY: True}
    kwargs['kw_only'] = True
  return dataclasses.field(metadata=metadata, **kwargs)


def _is_kw_only(f: dataclasses.Field) -> bool:
  return bool(f.metadata.get(_KW_ONLY_KEY)) or f.kw_only is True


def _as_kw_only(value: Any) -> dataclasses.Field:
  """``value`` (a default or a Field) as a keyword-only Field."""
  if not isinstance(value, dataclasses.Field):
    value = dataclasses.field(default=value)
  # typeshed types field() as returning the field's value type, so that class bodies
  # check; what it returns is the Field.
  copy = dataclasses.field(
    default=value.default,
    default_factory=value.default_factory,
    init=value.init,
    repr=value.repr,
    hash=value.hash,
    compare=value.compare,
    metadata={**value.metadata, _KW_ONLY_KEY: True},
    kw_only=True,
  )
  return cast(dataclasses.Field, copy)


@dataclass_transform(field_specifiers=(field,))  # type: ignore[literal-required]
def dataclass(
  cls: type | None = None,
  extra_fields: Sequence[tuple[str, Any, dataclasses.Field]] | None = None,
  **kwargs: Any,
) -> Any:
  """``dataclasses.dataclass`` that moves every keyword-only field to the end.

  A field is keyword-only when declared with ``field(kw_only=True)``, after a
  ``_: KW_ONLY`` marker, or when any base class declared it so (a subclass may change
  its default without repeating ``kw_only``).

  Args:
    cls: the class (None: return a decorator).
    extra_fields: ``(name, annotation, Field)`` triples added to the class first; Linen
      adds ``parent`` and ``name`` this way.
    **kwargs: arguments of ``dataclasses.dataclass`` (``frozen``, ``unsafe_hash``, ...).

  Returns:
    The dataclass (or a decorator making one).

  Example:

  >>> import dataclasses
  >>> from flaxlike.linen import kw_only_dataclasses
  >>> @kw_only_dataclasses.dataclass
  ... class Point:
  ...   x: int = 0
  ...   label: str = kw_only_dataclasses.field(default='p', kw_only=True)
  ...   y: int = 0
  >>> [f.name for f in dataclasses.fields(Point)], Point(1, 2)
  (['x', 'y', 'label'], Point(x=1, y=2, label='p'))
  """
  if cls is None:
    return lambda c: dataclass(c, extra_fields=extra_fields, **kwargs)
  return _process_class(cls, extra_fields or (), kwargs)


def _process_class(cls: type, extra_fields: Sequence[tuple], kwargs: dict) -> type:
  if '__annotations__' not in cls.__dict__:
    cls.__annotations__ = {}
  annotations: dict[str, Any] = cls.__dict__['__annotations__']
  for entry in extra_fields:
    if not (
      len(entry) == 3 and isinstance(entry[0], str) and isinstance(entry[2], dataclasses.Field)
    ):
      raise ValueError(
        f'Expected extra_fields to a be a list of (name, type, Field) tuples; got {entry!r} '
        f'for {cls.__name__}.'
      )
    name, annotation, default = entry
    setattr(cls, name, default)
    annotations[name] = annotation

  # Keyword-only fields in base-class order, then this class's own.
  kw_only: dict[str, tuple[Any, Any]] = {}
  hidden: dict[type, dict[str, dataclasses.Field]] = {}
  for base in reversed(cls.__mro__[1:]):
    base_fields = base.__dict__.get('__dataclass_fields__')
    if not base_fields:
      continue
    for f in dataclasses.fields(base):  # real fields only (no ClassVar / InitVar)
      name = f.name
      if name in base_fields and (_is_kw_only(f) or name in kw_only):
        kw_only[name] = (f.type, f)
        # Hidden from dataclasses while it processes ``cls``, so these fields are
        # collected again below, at the end; restored afterwards.
        hidden.setdefault(base, dict(base_fields))
        del base_fields[name]

  after_marker = False
  for name, annotation in list(annotations.items()):
    if annotation is KW_ONLY:
      del annotations[name]
      after_marker = True
      continue
    value = cls.__dict__.get(name, dataclasses.MISSING)
    declared = isinstance(value, dataclasses.Field) and _is_kw_only(value)
    if declared or after_marker or name in kw_only:
      del annotations[name]
      kw_only[name] = (annotation, value if value is not dataclasses.MISSING else None)

  for name, (annotation, value) in kw_only.items():
    if value is None:  # keyword-only without a default: required keyword
      value = dataclasses.field(kw_only=True, metadata={_KW_ONLY_KEY: True})
    else:
      value = _as_kw_only(value)
    setattr(cls, name, value)
    annotations[name] = annotation

  try:
    return dataclasses.dataclass(cls, **kwargs)
  finally:
    for base, fields in hidden.items():
      base.__dataclass_fields__ = fields  # type: ignore[attr-defined]
