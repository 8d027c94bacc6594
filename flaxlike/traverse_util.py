"""Nested-dict utilities and Linen's ``Traversal`` lenses.

``flatten_dict``/``unflatten_dict`` turn nested dicts into ``{path_tuple: leaf}`` and back;
``path_aware_map`` maps over leaves with their paths (the usual way to build optax masks
and labels).

A ``Traversal`` selects parts of an immutable structure, to read them (``iterate``) or to
get a copy with them replaced (``update``, ``set``). Traversals chain from
``t_identity``: ``t_identity['layers'].each().kernel`` selects the ``kernel`` attribute of
every item of ``x['layers']``. Nothing is ever mutated in place. Linen keeps them for
older optimizer code; new code usually wants ``path_aware_map`` and optax.

>>> from flaxlike import traverse_util
>>> data = [{'w': 1, 'b': 2}, {'w': 3, 'b': 4}]
>>> weights = traverse_util.t_identity.each()['w']
>>> list(weights.iterate(data))
[1, 3]
>>> weights.update(lambda w: 10 * w, data)
[{'w': 10, 'b': 2}, {'w': 30, 'b': 4}]
"""

from __future__ import annotations

import abc
import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax

from flaxlike.core.frozen_dict import FrozenDict


class _EmptyNode:
  """Marks an empty dict in a flattened tree (with ``keep_empty_nodes=True``).

  A pytree with no leaves, as in Linen, so ``jax.tree_util.tree_map`` over a flattened dict
  skips it; unflattening gives back the same singleton, so ``is empty_node`` holds.
  """

  def __repr__(self) -> str:
    return 'empty_node'

  def __reduce__(self) -> str:
    return 'empty_node'


empty_node = _EmptyNode()
jax.tree_util.register_pytree_node(_EmptyNode, lambda _: ((), None), lambda *_: empty_node)


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


#################################################
# Traversals
#################################################


class Traversal(abc.ABC):
  """Selects parts of a structure, to iterate over them or to replace them in a copy.

  Subclasses implement ``update`` and ``iterate``; the chaining methods (``each``,
  ``filter``, ``[key]``, ``.attr``, ...) compose traversals.

  Example:

  >>> from flaxlike import traverse_util
  >>> t = traverse_util.t_identity['params'].each()
  >>> t.set([0, 0], {'params': [1, 2]})
  {'params': [0, 0]}
  """

  @abc.abstractmethod
  def update(self, fn: Callable[[Any], Any], inputs: Any) -> Any:
    """A copy of ``inputs`` with every selected value ``v`` replaced by ``fn(v)``."""

  @abc.abstractmethod
  def iterate(self, inputs: Any) -> Iterator[Any]:
    """The selected values of ``inputs``, in order."""

  def set(self, values: list[Any], inputs: Any) -> Any:
    """A copy of ``inputs`` with the selected values replaced by ``values``, in order.

    Raises:
      ValueError: when ``values`` has fewer or more entries than there are selected values.
    """
    remaining = list(values)

    def next_value(_: Any) -> Any:
      if not remaining:
        raise ValueError(
          f'Not enough values provided: got {len(values)} values, but the traversal selects more.'
        )
      return remaining.pop(0)

    result = self.update(next_value, inputs)
    if remaining:
      raise ValueError(
        f'Too many values provided: the traversal selects {len(values) - len(remaining)} '
        f'values, got {len(values)}.'
      )
    return result

  def compose(self, other: Traversal) -> Traversal:
    """``other`` applied to each value this traversal selects."""
    return TraverseCompose(self, other)

  def merge(self, *traversals: Traversal) -> Traversal:
    """Each of ``traversals`` applied to the values this traversal selects, in turn."""
    return self.compose(TraverseMerge(*traversals))

  def each(self) -> Traversal:
    """Every item of the selected lists, tuples or dicts (dict values)."""
    return self.compose(TraverseEach())

  def tree(self) -> Traversal:
    """Every pytree leaf of the selected values."""
    return self.compose(TraverseTree())

  def filter(self, fn: Callable[[Any], bool]) -> Traversal:
    """Only the selected values for which ``fn`` is true."""
    return self.compose(TraverseFilter(fn))

  def __getattr__(self, attr: str) -> Traversal:
    # Protocol lookups (copy, pickle, numpy) ask for dunder names; they are not fields.
    if attr.startswith('__') and attr.endswith('__'):
      raise AttributeError(attr)
    return self.compose(TraverseAttr(attr))

  def __getitem__(self, key: Any) -> Traversal:
    return self.compose(TraverseItem(key))


class TraverseId(Traversal):
  """Selects the input itself; the start of every chain (``t_identity``).

  Example:

  >>> from flaxlike import traverse_util
  >>> traverse_util.TraverseId().update(lambda x: x + 1, 1)
  2
  """

  def update(self, fn: Callable[[Any], Any], inputs: Any) -> Any:
    return fn(inputs)

  def iterate(self, inputs: Any) -> Iterator[Any]:
    yield inputs


t_identity = TraverseId()


class TraverseMerge(Traversal):
  """Selects what each of several traversals selects, one traversal after the other.

  Example:

  >>> from flaxlike import traverse_util as tu
  >>> both = tu.TraverseMerge(tu.TraverseItem('a'), tu.TraverseItem('b'))
  >>> list(both.iterate({'a': 1, 'b': 2, 'c': 3}))
  [1, 2]
  """

  def __init__(self, *traversals: Traversal):
    self.traversals = traversals

  def update(self, fn: Callable[[Any], Any], inputs: Any) -> Any:
    for traversal in self.traversals:
      inputs = traversal.update(fn, inputs)
    return inputs

  def iterate(self, inputs: Any) -> Iterator[Any]:
    for traversal in self.traversals:
      yield from traversal.iterate(inputs)


class TraverseCompose(Traversal):
  """Selects what ``inner`` selects within each value ``outer`` selects.

  Example:

  >>> from flaxlike import traverse_util as tu
  >>> t = tu.TraverseCompose(tu.TraverseItem('a'), tu.TraverseEach())
  >>> list(t.iterate({'a': [1, 2]}))
  [1, 2]
  """

  def __init__(self, outer: Traversal, inner: Traversal):
    self.outer = outer
    self.inner = inner

  def update(self, fn: Callable[[Any], Any], inputs: Any) -> Any:
    return self.outer.update(lambda x: self.inner.update(fn, x), inputs)

  def iterate(self, inputs: Any) -> Iterator[Any]:
    for x in self.outer.iterate(inputs):
      yield from self.inner.iterate(x)


class TraverseFilter(Traversal):
  """Selects the input when ``predicate(input)`` is true, else nothing.

  Example:

  >>> from flaxlike import traverse_util
  >>> negatives = traverse_util.t_identity.each().filter(lambda x: x < 0)
  >>> negatives.update(abs, [1, -2, 3])
  [1, 2, 3]
  """

  def __init__(self, predicate: Callable[[Any], bool]):
    self.predicate = predicate

  def update(self, fn: Callable[[Any], Any], inputs: Any) -> Any:
    return fn(inputs) if self.predicate(inputs) else inputs

  def iterate(self, inputs: Any) -> Iterator[Any]:
    if self.predicate(inputs):
      yield inputs


def _is_namedtuple(x: Any) -> bool:
  return isinstance(x, tuple) and hasattr(type(x), '_fields')


def _rebuild_sequence(original: tuple | list, items: list[Any]) -> Any:
  """``items`` as a sequence of ``original``'s type (namedtuples take them positionally)."""
  if _is_namedtuple(original):
    return type(original)(*items)
  return type(original)(items)


class TraverseAttr(Traversal):
  """Selects attribute ``attr``; updates copy the object (namedtuple, dataclass or other).

  Example:

  >>> import collections
  >>> from flaxlike import traverse_util
  >>> Point = collections.namedtuple('Point', 'x y')
  >>> traverse_util.TraverseAttr('y').update(lambda v: v * 2, Point(1, 2))
  Point(x=1, y=4)
  """

  def __init__(self, attr: str):
    self.attr = attr

  def update(self, fn: Callable[[Any], Any], inputs: Any) -> Any:
    value = fn(getattr(inputs, self.attr))
    if _is_namedtuple(inputs):
      return inputs._replace(**{self.attr: value})
    if dataclasses.is_dataclass(inputs) and not isinstance(inputs, type):
      return dataclasses.replace(inputs, **{self.attr: value})
    result = copy.copy(inputs)
    setattr(result, self.attr, value)
    return result

  def iterate(self, inputs: Any) -> Iterator[Any]:
    yield getattr(inputs, self.attr)


class TraverseItem(Traversal):
  """Selects ``inputs[key]``; a slice key selects each item in the slice.

  Example:

  >>> from flaxlike import traverse_util
  >>> traverse_util.TraverseItem(slice(1, 3)).update(lambda v: -v, (1, 2, 3, 4))
  (1, -2, -3, 4)
  """

  def __init__(self, key: Any):
    self.key = key

  def update(self, fn: Callable[[Any], Any], inputs: Any) -> Any:
    if isinstance(inputs, (tuple, list)):
      if isinstance(self.key, slice):
        chosen = set(range(*self.key.indices(len(inputs))))
      else:
        chosen = {range(len(inputs))[self.key]}  # normalises negative indices, checks bounds
      items = [fn(x) if i in chosen else x for i, x in enumerate(inputs)]
      return _rebuild_sequence(inputs, items)
    if isinstance(inputs, FrozenDict):
      return inputs.copy({self.key: fn(inputs[self.key])})
    result = copy.copy(inputs)
    result[self.key] = fn(inputs[self.key])
    return result

  def iterate(self, inputs: Any) -> Iterator[Any]:
    if isinstance(self.key, slice):
      yield from inputs[self.key]
    else:
      yield inputs[self.key]


class TraverseEach(Traversal):
  """Selects every item of a list or tuple, or every value of a dict.

  Example:

  >>> from flaxlike import traverse_util
  >>> traverse_util.TraverseEach().update(lambda v: v + 1, {'a': 1, 'b': 2})
  {'a': 2, 'b': 3}
  """

  def update(self, fn: Callable[[Any], Any], inputs: Any) -> Any:
    if isinstance(inputs, FrozenDict):
      return FrozenDict({k: fn(v) for k, v in inputs.items()})
    if type(inputs) is dict:
      return {k: fn(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
      return _rebuild_sequence(inputs, [fn(x) for x in inputs])
    raise ValueError(
      f'Only the entries of a list or tuple (or the values of a dict) can be traversed; '
      f'got {type(inputs).__name__}. Use .tree() for the leaves of any pytree.'
    )

  def iterate(self, inputs: Any) -> Iterator[Any]:
    if isinstance(inputs, Mapping):
      yield from inputs.values()
    else:
      yield from inputs


class TraverseTree(Traversal):
  """Selects every leaf of a pytree.

  Example:

  >>> from flaxlike import traverse_util
  >>> list(traverse_util.TraverseTree().iterate({'a': [1, 2], 'b': (3,)}))
  [1, 2, 3]
  """

  def update(self, fn: Callable[[Any], Any], inputs: Any) -> Any:
    return jax.tree_util.tree_map(fn, inputs)

  def iterate(self, inputs: Any) -> Iterator[Any]:
    yield from jax.tree_util.tree_leaves(inputs)


def _params_dict(inputs: Any) -> dict[Any, Any]:
  if isinstance(inputs, (dict, FrozenDict)):
    return dict(inputs) if isinstance(inputs, dict) else inputs.unfreeze()
  raise ValueError(
    f'Can only traverse a flax Model instance or a nested dict, not {type(inputs)}. '
    'ModelParamTraversal selects leaves of a params dict such as variables["params"].'
  )


class ModelParamTraversal(Traversal):
  """Selects the leaves of a nested params dict whose path passes a filter.

  Leaves are visited in sorted path order. ``filter_fn(path, value)`` receives the path
  as ``'/module/submodule/param'``. ``update`` keeps empty submodule dicts and returns a
  ``FrozenDict`` for a ``FrozenDict`` input.

  Attributes:
    filter_fn: ``filter_fn(path, value) -> bool``; True selects the leaf.

  Example:

  >>> from flaxlike import traverse_util
  >>> params = {'Dense_0': {'kernel': 1.0, 'bias': 0.5}}
  >>> kernels = traverse_util.ModelParamTraversal(lambda path, _: path.endswith('kernel'))
  >>> kernels.update(lambda w: 2 * w, params)
  {'Dense_0': {'bias': 0.5, 'kernel': 2.0}}
  """

  def __init__(self, filter_fn: Callable[[str, Any], bool]):
    self.filter_fn = filter_fn

  @staticmethod
  def _sorted_leaves(params: Mapping[Any, Any], keep_empty_nodes: bool) -> list:
    flat = flatten_dict(params, keep_empty_nodes=keep_empty_nodes)
    return sorted(flat.items(), key=lambda item: item[0])

  def iterate(self, inputs: Any) -> Iterator[Any]:
    for path, value in self._sorted_leaves(_params_dict(inputs), keep_empty_nodes=False):
      if self.filter_fn('/' + '/'.join(map(str, path)), value):
        yield value

  def update(self, fn: Callable[[Any], Any], inputs: Any) -> Any:
    updated = {}
    for path, value in self._sorted_leaves(_params_dict(inputs), keep_empty_nodes=True):
      if value is not empty_node and self.filter_fn('/' + '/'.join(map(str, path)), value):
        value = fn(value)
      updated[path] = value
    result = unflatten_dict(updated)
    return FrozenDict(result) if isinstance(inputs, FrozenDict) else result
