"""An immutable, hashable mapping for variable trees, with Linen's semantics."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from typing import Any, TypeVar

import jax

K = TypeVar('K')
V = TypeVar('V')


def _thaw_nested(value: Any) -> Any:
  """Copies nested dicts/FrozenDicts into fresh plain dicts, keeping insertion order."""
  if isinstance(value, FrozenDict):
    value = value._dict
  if isinstance(value, dict):
    return {k: _thaw_nested(v) for k, v in value.items()}
  return value


class FrozenDict(Mapping[K, V]):
  """An immutable mapping; nested dicts inside it are immutable too.

  Construction copies the input, so later changes to the source do not leak in.
  Reading a nested dict returns a ``FrozenDict``. As a pytree its keys are flattened in
  sorted order, like a plain dict.

  Example:

  >>> from flaxlike.core import FrozenDict
  >>> d = FrozenDict({'a': {'b': 1}})
  >>> d['a']
  FrozenDict({
      b: 1,
  })
  >>> d2, b = d['a'].pop('b')
  >>> b, dict(d2)
  (1, {})
  """

  __slots__ = ('_dict', '_hash')
  # Built by dict(*args, **kwargs) from whatever the caller passed: K and V type the mapping
  # for users, the storage holds the nested plain dicts behind them.
  _dict: dict[Any, Any]
  _hash: int | None

  def __init__(self, *args, __unsafe_skip_copy__: bool = False, **kwargs):
    if __unsafe_skip_copy__:
      self._dict = dict(*args, **kwargs)
    else:
      self._dict = _thaw_nested(dict(*args, **kwargs))
    self._hash = None

  def __getitem__(self, key: K) -> V:
    value = self._dict[key]
    if isinstance(value, dict):
      return FrozenDict(value, __unsafe_skip_copy__=True)  # type: ignore[return-value]
    return value

  def __setitem__(self, key, value):
    raise ValueError('FrozenDict is immutable: use .copy({key: value}) for a changed copy.')

  def __contains__(self, key: object) -> bool:
    return key in self._dict

  def __iter__(self) -> Iterator[K]:
    return iter(self._dict)

  def __len__(self) -> int:
    return len(self._dict)

  def __repr__(self) -> str:
    return self.pretty_repr()

  def __reduce__(self):
    return FrozenDict, (self.unfreeze(),)

  def __hash__(self) -> int:
    if self._hash is None:
      h = 0
      for key, value in self.items():
        h ^= hash((key, value))
      self._hash = h
    return self._hash

  def __eq__(self, other: object) -> bool:
    if isinstance(other, FrozenDict):
      return self._dict == other._dict
    if isinstance(other, dict):
      return self._dict == other
    return NotImplemented

  def __or__(self, other: Mapping) -> FrozenDict:
    return self.copy(other)

  def copy(self, add_or_replace: Mapping[K, V] = {}) -> FrozenDict[K, V]:  # noqa: B006
    """Returns a new FrozenDict with the entries of ``add_or_replace`` added or replaced."""
    return type(self)({**self._dict, **_thaw_nested(dict(add_or_replace))})

  def keys(self):
    return self._dict.keys()

  # Linen's FrozenDict gives generators here (nested dicts come out as FrozenDicts), not
  # the view objects Mapping declares; users' code relies on what Linen does.
  def values(self):  # pyright: ignore[reportIncompatibleMethodOverride]
    return (self[k] for k in self._dict)

  def items(self):  # pyright: ignore[reportIncompatibleMethodOverride]
    for key in self._dict:
      yield (key, self[key])

  def pop(self, key: K) -> tuple[FrozenDict[K, V], V]:
    """Returns ``(copy without key, value of key)``."""
    value = self[key]
    rest = {k: v for k, v in self._dict.items() if k != key}
    return type(self)(rest, __unsafe_skip_copy__=True), value

  def unfreeze(self) -> dict[K, V]:
    """Returns a deep copy as nested plain dicts."""
    return _thaw_nested(self._dict)

  def pretty_repr(self, num_spaces: int = 4) -> str:
    """Returns an indented, one-entry-per-line representation."""
    return _pretty(self, num_spaces, 0)

  def tree_flatten_with_keys(self):
    sorted_keys = sorted(self._dict)
    children = tuple((jax.tree_util.DictKey(k), self._dict[k]) for k in sorted_keys)
    return children, tuple(sorted_keys)

  @classmethod
  def tree_unflatten(cls, keys, values):
    return cls(dict(zip(keys, values)), __unsafe_skip_copy__=True)


def _flatten_frozen(fd: FrozenDict):
  keys = sorted(fd._dict)
  return tuple(fd._dict[k] for k in keys), tuple(keys)


jax.tree_util.register_pytree_with_keys(
  FrozenDict,
  lambda fd: fd.tree_flatten_with_keys(),
  FrozenDict.tree_unflatten,
  _flatten_frozen,
)


def _pretty(x: Any, num_spaces: int, depth: int) -> str:
  if not isinstance(x, (dict, FrozenDict)):
    return repr(x)
  name = 'FrozenDict' if isinstance(x, FrozenDict) else ''
  items = x._dict.items() if isinstance(x, FrozenDict) else x.items()
  if not x:
    return f'{name}({{}})' if name else '{}'
  pad = ' ' * (num_spaces * (depth + 1))
  lines = [f'{pad}{k}: {_pretty(v, num_spaces, depth + 1)},' for k, v in items]
  close = ' ' * (num_spaces * depth)
  body = '\n'.join(lines)
  return f'{name}({{\n{body}\n{close}}})' if name else f'{{\n{body}\n{close}}}'


def freeze(xs: Mapping[Any, Any]) -> FrozenDict:
  """Returns an immutable copy of ``xs``."""
  return FrozenDict(xs)


def unfreeze(x: Any) -> Any:
  """Returns a deep, mutable copy of ``x`` as nested plain dicts.

  Leaves are shared, not copied. Non-mapping inputs are returned unchanged.
  """
  if isinstance(x, (FrozenDict, dict)):
    return _thaw_nested(x)
  return x


def _tree_copy(x: dict) -> dict:
  """A deep copy made as Linen makes it, through a tree map: the keys of every nested
  dict come back sorted (as pytree flattening orders them), FrozenDicts stay FrozenDicts."""
  return jax.tree_util.tree_map(lambda leaf: leaf, x)


def copy(x: Mapping, add_or_replace: Mapping = {}) -> Any:  # noqa: B006
  """``x.copy(add_or_replace)`` for both dicts and FrozenDicts.

  A plain dict is copied as Linen copies it: nested dicts are new dicts with their keys
  sorted, and the added entries follow, as given.

  Example:

    >>> from flaxlike.core import copy
    >>> copy({'params': {'b': 1, 'a': 2}, 'cache': 0}, {'extra': 3})
    {'cache': 0, 'params': {'a': 2, 'b': 1}, 'extra': 3}
  """
  if isinstance(x, FrozenDict):
    return x.copy(add_or_replace)
  if isinstance(x, dict):
    result = _tree_copy(x)
    result.update(add_or_replace)
    return result
  raise TypeError(
    f'Expected FrozenDict or dict, got {type(x)}. copy adds entries to a variable dict; '
    f'pass a dict or FrozenDict (e.g. dict(x)).'
  )


def pop(x: Mapping, key: Hashable) -> tuple[Any, Any]:
  """Returns ``(x without key, x[key])`` for dicts and FrozenDicts without mutating x.

  A plain dict is copied as Linen copies it, so the keys of the result come back sorted.

  Example:

    >>> from flaxlike.core import pop
    >>> pop({'params': {'w': 1}, 'batch_stats': {'mean': 0}, 'cache': 2}, 'params')
    ({'batch_stats': {'mean': 0}, 'cache': 2}, {'w': 1})
  """
  if isinstance(x, FrozenDict):
    return x.pop(key)
  if isinstance(x, dict):
    result = _tree_copy(x)
    value = result.pop(key)
    return result, value
  raise TypeError(
    f'Expected FrozenDict or dict, got {type(x)}. pop removes an entry of a variable dict; '
    f'pass a dict or FrozenDict (e.g. dict(x)).'
  )


def pretty_repr(x: Any, num_spaces: int = 4) -> str:
  """Indented representation of a (Frozen)dict tree; other values use ``repr``."""
  return _pretty(x, num_spaces, 0)
