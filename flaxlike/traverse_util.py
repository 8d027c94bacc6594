"""Flattening nested dicts to ``{path_tuple: leaf}`` and back, and path-aware maps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flaxlike.core.frozen_dict import FrozenDict


class _EmptyNode:
  """Marks an empty dict in a flattened tree (with ``keep_empty_nodes=True``)."""

  def __repr__(self) -> str:
    return 'empty_node'


empty_node = _EmptyNode()


def flatten_dict(
  xs: Mapping[Any, Any],
  keep_empty_nodes: bool = False,
  is_leaf: Callable[[tuple[Any, ...], Any], bool] | None = None,
  sep: str | None = None,
) -> dict[Any, Any]:
  """Flattens nested dicts into ``{(k1, k2, ...): leaf}`` (or ``'k1/k2'`` with ``sep='/'``).

  Args:
    xs: nested dicts or FrozenDicts.
    keep_empty_nodes: map empty dicts to ``empty_node`` instead of dropping them.
    is_leaf: ``fn(path, value)``; True stops the descent at ``value``.
    sep: join keys with this separator instead of building tuples.

  Example:

  >>> from flaxlike import traverse_util
  >>> traverse_util.flatten_dict({'a': {'b': 1}, 'c': 2}, sep='/')
  {'a/b': 1, 'c': 2}
  """
  if not isinstance(xs, (dict, FrozenDict)):
    raise TypeError(f'flatten_dict expects a dict or FrozenDict, got {type(xs).__name__}.')
  flat: dict[Any, Any] = {}

  def key_of(path: tuple[Any, ...]) -> Any:
    return sep.join(path) if sep is not None else path

  def walk(node: Any, path: tuple[Any, ...]) -> None:
    if isinstance(node, (dict, FrozenDict)) and not (is_leaf and is_leaf(path, node)):
      if not node:
        if keep_empty_nodes and path:
          flat[key_of(path)] = empty_node
        return
      for k, v in node.items():
        walk(v, path + (k,))
      return
    flat[key_of(path)] = node

  walk(xs, ())
  return flat


def unflatten_dict(xs: Mapping[Any, Any], sep: str | None = None) -> dict[Any, Any]:
  """Inverts ``flatten_dict`` (``empty_node`` values become empty dicts).

  Example:

  >>> from flaxlike import traverse_util
  >>> traverse_util.unflatten_dict({('a', 'b'): 1, ('c',): 2})
  {'a': {'b': 1}, 'c': 2}
  """
  tree: dict[Any, Any] = {}
  for path, value in xs.items():
    keys = path.split(sep) if sep is not None else path
    cursor = tree
    for k in keys[:-1]:
      cursor = cursor.setdefault(k, {})
    cursor[keys[-1]] = {} if value is empty_node else value
  return tree


def path_aware_map(
  f: Callable[[tuple[Any, ...], Any], Any], nested_dict: Mapping[Any, Any]
) -> dict[Any, Any]:
  """Maps ``f(path, leaf)`` over a nested dict, keeping its structure.

  Typical use: optax labels, e.g. ``'decay' if path[-1] == 'kernel' else 'no_decay'``.

  Example:

  >>> from flaxlike import traverse_util
  >>> traverse_util.path_aware_map(lambda p, x: p[-1], {'a': {'kernel': 0, 'bias': 0}})
  {'a': {'kernel': 'kernel', 'bias': 'bias'}}
  """
  flat = flatten_dict(nested_dict, keep_empty_nodes=True)
  return unflatten_dict({k: f(k, v) if v is not empty_node else v for k, v in flat.items()})
