"""Collection filters: which variable collections (or RNG streams) a setting applies to.

A filter is ``True`` (everything), ``False`` (nothing), a collection name, a collection of
names, or a ``DenyList`` (everything but what its filter matches). ``mutable=``,
``variable_axes``, ``split_rngs`` and the lifted transforms all take filters; the set
operations here return the same filter objects as Linen's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from flaxlike import errors

VariableDict = Mapping[str, Mapping[str, Any]]


@dataclasses.dataclass(frozen=True, eq=True)
class DenyList:
  """A filter that matches every collection except those matched by ``deny``.

  Attributes:
    deny: the filter of the collections that do not match.

  Example:

  >>> from flaxlike.core import DenyList, in_filter
  >>> in_filter(DenyList('intermediates'), 'params')
  True
  """

  deny: Any

  # Orderable against strings and other deny lists, so filters can be sorted (the jit
  # cache key of a lifted transform sorts the filters it was given).
  def __lt__(self, other: Any) -> bool:
    if isinstance(other, str):
      return False
    if isinstance(other, DenyList):
      return str(self.deny) < str(other.deny)
    return NotImplemented

  def __gt__(self, other: Any) -> bool:
    if isinstance(other, str):
      return True
    if isinstance(other, DenyList):
      return str(self.deny) > str(other.deny)
    return NotImplemented


Filter = bool | str | Collection[str] | DenyList
CollectionFilter = Filter
PRNGSequenceFilter = Filter


def in_filter(filter_like: Filter, col: str) -> bool:
  """Whether collection ``col`` matches ``filter_like``.

  Example:

  >>> from flaxlike.core import in_filter
  >>> in_filter(['params', 'batch_stats'], 'params'), in_filter(False, 'params')
  (True, False)
  """
  if isinstance(filter_like, str):
    return col == filter_like
  if isinstance(filter_like, bool):
    return filter_like
  if isinstance(filter_like, DenyList):
    return not in_filter(filter_like.deny, col)
  if isinstance(filter_like, Collection):
    return col in filter_like
  raise errors.InvalidFilterError(filter_like)


def is_filter_empty(filter_like: Filter) -> bool:
  """Whether ``filter_like`` matches no collection at all.

  ``False``, an empty collection and a deny list that denies everything are empty; a
  string never is.

  Example:

  >>> from flaxlike.core.scope import DenyList, is_filter_empty
  >>> is_filter_empty(set()), is_filter_empty(DenyList(True)), is_filter_empty('params')
  (True, True, False)
  """
  if isinstance(filter_like, str):
    return False
  if isinstance(filter_like, bool):
    return not filter_like
  if isinstance(filter_like, DenyList):
    # A deny list is empty when its own filter matches everything.
    is_deny, names = _normal_form(filter_like.deny)
    return is_deny and not names
  if isinstance(filter_like, Collection):
    return not filter_like
  raise errors.InvalidFilterError(filter_like)


def _normal_form(f: Filter) -> tuple[bool, frozenset]:
  """(is_deny, names): the filter matches names (allow) or everything but names (deny)."""
  if isinstance(f, bool):
    return (f, frozenset())
  if isinstance(f, str):
    return (False, frozenset([f]))
  if isinstance(f, DenyList):
    is_deny, names = _normal_form(f.deny)
    return (not is_deny, names)
  if isinstance(f, Collection):
    return (False, frozenset(f))
  raise errors.InvalidFilterError(f)


def filter_to_set(filter_like: Filter) -> set[str]:
  """The set of names an allow-list filter matches (``False`` gives the empty set).

  Raises:
    InvalidFilterError: for ``True`` and deny lists, which match infinitely many names.
  """
  if filter_like is True or isinstance(filter_like, DenyList):
    raise errors.InvalidFilterError(filter_like)
  if filter_like is False:
    return set()
  if isinstance(filter_like, str):
    return {filter_like}
  if isinstance(filter_like, Collection):
    return set(filter_like)
  raise errors.InvalidFilterError(filter_like)


# The three set operations below return the same filter objects as Linen's (``True``,
# ``False``, a set or a DenyList, nested as Linen nests them), since user code and tests
# compare filters by equality. Only ``True`` and ``False`` are treated as infinite/empty
# sentinels; every other allow filter becomes a set.


def union_filters(a: Filter, b: Filter) -> Filter:
  """A filter matching what ``a`` or ``b`` matches.

  Example:

  >>> from flaxlike.core import union_filters
  >>> sorted(union_filters(['a', 'b'], 'c'))
  ['a', 'b', 'c']
  """
  if a is True or b is True:
    return True
  if isinstance(a, DenyList) and isinstance(b, DenyList):
    return DenyList(intersect_filters(a.deny, b.deny))
  if isinstance(b, DenyList):
    a, b = b, a
  if isinstance(a, DenyList):
    return DenyList(subtract_filters(a.deny, b))
  return filter_to_set(a) | filter_to_set(b)


def subtract_filters(a: Filter, b: Filter) -> Filter:
  """A filter matching what ``a`` matches and ``b`` does not.

  Example:

  >>> from flaxlike.core import subtract_filters
  >>> subtract_filters(['a', 'b'], 'b'), subtract_filters(True, 'a')
  ({'a'}, DenyList(deny='a'))
  """
  if b is True:
    return False
  if a is True:
    return DenyList(b)
  if isinstance(a, DenyList) and isinstance(b, DenyList):
    return subtract_filters(b.deny, a.deny)
  if isinstance(a, DenyList):
    return DenyList(union_filters(a.deny, b))
  if isinstance(b, DenyList):
    return intersect_filters(a, b.deny)
  return filter_to_set(a) - filter_to_set(b)


def intersect_filters(a: Filter, b: Filter) -> Filter:
  """A filter matching what both ``a`` and ``b`` match.

  Example:

  >>> from flaxlike.core import intersect_filters
  >>> intersect_filters(['a', 'b'], ['b', 'c']), intersect_filters(True, 'a')
  ({'b'}, 'a')
  """
  if a is True:
    return b
  if b is True:
    return a
  if isinstance(a, DenyList) and isinstance(b, DenyList):
    return DenyList(union_filters(b.deny, a.deny))
  if isinstance(b, DenyList):
    a, b = b, a
  if isinstance(a, DenyList):
    return subtract_filters(b, a.deny)
  return filter_to_set(a) & filter_to_set(b)


def group_collections(
  xs: VariableDict, col_filters: Iterable[Filter]
) -> tuple[dict[str, Any], ...]:
  """Splits the collections of ``xs`` by filter: each goes to the first filter matching it.

  Returns one dict per filter; collections matching no filter are dropped. The
  collections themselves are not copied.

  Example:

  >>> from flaxlike.core import group_collections
  >>> group_collections({'params': {}, 'batch_stats': {}}, ['params', True])
  ({'params': {}}, {'batch_stats': {}})
  """
  cols = list(xs)
  groups = []
  for col_filter in col_filters:
    taken = [c for c in cols if in_filter(col_filter, c)]
    groups.append({c: xs[c] for c in taken})
    cols = [c for c in cols if c not in taken]
  return tuple(groups)
