"""How submodules held in attributes get their names and scopes.

Two situations name a submodule after the attribute that holds it:

- **Setup attributes.** ``self.proj = Dense(3)`` in ``setup``: the Dense was created
  without a name, and is named ``proj`` here. An unnamed module passed in a field of
  another module built in ``setup`` (``Wrapper(Dense(2))``) moves under that module.
- **Adoption.** A module created outside (``parent=None``) and passed in a dataclass
  field is cloned and the clone is named after the field. One instance held in several
  places is cloned once, so it keeps one scope (shared by identity). With
  ``config.flax_preserve_adopted_names`` (or ``preserve_adopted_names = True`` on the
  adopting class, which overrides the flag) a module that has its own ``name`` keeps it.

Containers are walked: a list or tuple gives ``attr_0, attr_1``, a dict ``attr_key``,
nested containers ``attr_1_0``. Lists become tuples and dicts ``FrozenDict`` so module
attributes stay hashable.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any, cast

from flaxlike.configurations import config
from flaxlike.core.frozen_dict import FrozenDict


def map_modules(
  fn: Callable[[str, Any], Any], value: Any, is_module: Callable[[Any], bool], suffix: str = ''
) -> Any:
  """Rebuilds ``value`` with every module ``m`` found at ``suffix`` replaced by ``fn(suffix, m)``."""
  if is_module(value):
    return fn(suffix, value)
  kind = type(value)
  if kind is list or kind is tuple:
    return tuple(map_modules(fn, v, is_module, f'{suffix}_{i}') for i, v in enumerate(value))
  if isinstance(value, tuple) and hasattr(kind, '_fields'):  # namedtuple keeps its type
    return kind(*(map_modules(fn, v, is_module, f'{suffix}_{i}') for i, v in enumerate(value)))
  if kind is dict or kind is FrozenDict:
    entries = cast(Mapping[Any, Any], value._dict if isinstance(value, FrozenDict) else value)
    # Visited in sorted key order, as Linen does: when one instance sits under several
    # keys, the first key in that order names it. The result keeps the caller's order.
    visited = {
      k: map_modules(fn, entries[k], is_module, f'{suffix}_{k}') for k in sorted(entries, key=str)
    }
    mapped = {k: visited[k] for k in entries}
    return FrozenDict(mapped, __unsafe_skip_copy__=True)
  return value


def register_submodules(
  owner: Any, attr_name: str, value: Any, module_cls: type, adopted: dict[int, tuple[Any, Any]]
) -> Any:
  """Names, adopts and binds the modules in ``value``; returns the frozen attribute value.

  Args:
    owner: the module that will hold ``value`` in attribute ``attr_name``.
    attr_name: the attribute (or dataclass field) name.
    value: a module, a container of modules, or anything else.
    module_cls: the Module base class (passed in to avoid an import cycle).
    adopted: ``(original, weak ref to its clone)`` made so far, by id of the original; shared by
      all modules of one root scope so one instance held in two places becomes one
      submodule.
  """
  kind = type(value)
  if not (
    isinstance(value, module_cls)
    or kind in (list, tuple, dict, FrozenDict)
    or (isinstance(value, tuple) and hasattr(kind, '_fields'))
  ):
    return value
  to_attach: list[Any] = []
  # A class attribute ``preserve_adopted_names = True/False`` on the owner's class
  # overrides the global flag for the modules that class adopts (as in Linen).
  preserve_names = getattr(type(owner), 'preserve_adopted_names', None)
  if preserve_names is None:
    preserve_names = config.flax_preserve_adopted_names

  def attach(suffix: str, sub: Any) -> Any:
    if sub.parent is None:
      # Created outside any module: clone it so the caller's instance stays unbound.
      own_name = sub.name
      known = adopted.get(id(sub))
      # The original is kept with its clone so its id cannot be reused by another module.
      if known is not None and known[0] is sub:
        clone = known[1]()
        if clone is not None:
          return clone
      clone = sub.clone(parent=None, name=None)
      # The clone is held weakly: every module of the tree shares this table, so a strong
      # entry would be a reference cycle (clone -> its state -> table -> clone).
      adopted[id(sub)] = (sub, weakref.ref(clone))
      object.__setattr__(clone, 'parent', owner)
      object.__setattr__(
        clone, 'name', own_name if preserve_names and own_name else f'{attr_name}{suffix}'
      )
      to_attach.append(clone)
      return clone
    if sub.name is None:
      # Created unnamed in some setup() (this owner's, or its parent's when passed
      # down in a field): it belongs where it is stored, as in Linen.
      object.__setattr__(sub, 'parent', owner)
      object.__setattr__(sub, 'name', f'{attr_name}{suffix}')
      to_attach.append(sub)
    return sub

  frozen = map_modules(attach, value, lambda v: isinstance(v, module_cls))
  for sub in to_attach:
    sub._attach_to_parent()
  return frozen
