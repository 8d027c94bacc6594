"""Edit a copy of a nested, immutable object in place-style syntax, as ``flax.cursor``.

``cursor(obj)`` wraps ``obj``; indexing (``c['params']``, ``c[0]``) and attribute access
(``c.params``) walk into it, assignments record changes, and ``build()`` returns a copy of
``obj`` with the changes applied. Nothing is mutated. Dicts, FrozenDicts, lists, tuples,
named tuples and dataclasses (``struct.dataclass``, ``TrainState``) can be walked through.

Example:

  >>> from flaxlike.cursor import cursor
  >>> params = {'Dense_0': {'kernel': 1.0, 'bias': 0.0}, 'scales': (1, 2)}
  >>> c = cursor(params)
  >>> c['Dense_0']['bias'] = 0.5
  >>> c['scales'][1] = 4
  >>> c.build()
  {'Dense_0': {'kernel': 1.0, 'bias': 0.5}, 'scales': (1, 4)}
  >>> params['Dense_0']['bias']  # the original is unchanged
  0.0
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeGuard, TypeVar, runtime_checkable

from flaxlike.core.frozen_dict import FrozenDict
from flaxlike.errors import CursorFindError, CursorIterationError, TraverseTreeError

__all__ = ['cursor', 'Cursor', 'AccessType', 'ParentKey']

A = TypeVar('A')
Key = Any


@runtime_checkable
class Indexable(Protocol):
  def __getitem__(self, key) -> Any: ...


class AccessType(enum.Enum):
  """How a child is reached from its parent: ``obj[key]`` or ``obj.key``."""

  ITEM = enum.auto()
  ATTR = enum.auto()


@dataclasses.dataclass
class ParentKey(Generic[A]):
  """Where a child ``Cursor`` sits: its parent, the key and how the key is applied."""

  parent: Cursor[A]
  key: Key
  access_type: AccessType


class _NamedTupleLike(Protocol):
  """What ``_is_named_tuple`` checks for: the members namedtuple classes define."""

  _fields: tuple[str, ...]

  def _asdict(self) -> dict[str, Any]: ...

  def _replace(self, **changes: Any) -> Any: ...


def _is_named_tuple(obj: Any) -> TypeGuard[_NamedTupleLike]:
  return isinstance(obj, tuple) and all(
    hasattr(obj, name) for name in ('_fields', '_asdict', '_replace')
  )


def _children(obj: Any) -> tuple[Any, AccessType] | None:
  """``(iterable of (key, child), access type)`` for a container, ``None`` for a leaf."""
  if isinstance(obj, (FrozenDict, dict)):
    return obj.items(), AccessType.ITEM
  if _is_named_tuple(obj):
    return ((name, getattr(obj, name)) for name in obj._fields), AccessType.ATTR
  if isinstance(obj, (list, tuple)):
    return enumerate(obj), AccessType.ITEM
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    fields = (f for f in dataclasses.fields(obj) if f.init)
    return ((f.name, getattr(obj, f.name)) for f in fields), AccessType.ATTR
  return None


def _traverse_tree(path: tuple, obj: Any, *, update_fn=None, cond_fn=None) -> Iterator[Any]:
  """Walks ``obj`` depth first below the root, in container order.

  With ``update_fn``: yields ``(path, new value)`` where ``update_fn`` returned a different
  object (and does not descend there). With ``cond_fn``: yields the path of each node where
  it is True (and does not descend there). A path is a tuple of ``(key, AccessType)``.
  """
  if (update_fn is None) == (cond_fn is None):
    raise TraverseTreeError(update_fn, cond_fn)
  if path:
    str_path = '/'.join(str(key) for key, _ in path)
    if update_fn is not None:
      new_obj = update_fn(str_path, obj)
      if new_obj is not obj:
        yield path, new_obj
        return
    else:
      # Exactly one of the two functions was given, checked above.
      assert cond_fn is not None
      if cond_fn(str_path, obj):
        yield path
        return
  children = _children(obj)
  if children is None:
    return
  items, access_type = children
  for key, value in items:
    yield from _traverse_tree(
      path + ((key, access_type),), value, update_fn=update_fn, cond_fn=cond_fn
    )


def _with_changes(obj: Any, changes: dict[Any, Any]) -> Any:
  """A copy of ``obj`` of the same type, with ``changes`` (key -> new value) applied."""
  if isinstance(obj, FrozenDict):
    return obj.copy(changes)
  if isinstance(obj, (dict, list)):
    new = obj.copy()
    for key, value in changes.items():
      new[key] = value
    return new
  if _is_named_tuple(obj):
    return obj._replace(**changes)
  if isinstance(obj, tuple):
    items = list(obj)
    for key, value in changes.items():
      items[key] = value
    return tuple(items)
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return dataclasses.replace(obj, **changes)
  return obj


class Cursor(Generic[A]):
  """A position in an object, with the changes recorded below it (see ``cursor``).

  Arithmetic and comparison operators apply to the wrapped value, so ``c['w'] += 1``
  records ``value + 1``. Iterating over a cursor of a list or tuple gives the children's
  cursors.
  """

  # The value at this position. ``A`` is the type of the object ``cursor`` was given, which
  # ``build`` returns; a checker cannot follow types through keys and attributes, so the
  # value itself is Any (the operators below apply to whatever is wrapped).
  _obj: Any
  _parent_key: ParentKey[A] | None
  _changes: dict[Any, Cursor[A]]

  def __init__(self, obj: A, parent_key: ParentKey[A] | None):
    # Written to __dict__ directly: ``__setattr__`` records a change instead.
    vars(self)['_obj'] = obj
    vars(self)['_parent_key'] = parent_key
    vars(self)['_changes'] = {}

  @property
  def _root(self) -> Cursor[A]:
    return self if self._parent_key is None else self._parent_key.parent._root

  @property
  def _path(self) -> str:
    """The access path from the root, e.g. ``.params['Dense_0'][1]``."""
    if self._parent_key is None:
      return ''
    parent, key = self._parent_key.parent, self._parent_key.key
    if self._parent_key.access_type is AccessType.ITEM:
      return f'{parent._path}[{repr(key) if isinstance(key, str) else key}]'
    return f'{parent._path}.{key}'

  def __getitem__(self, key) -> Cursor[A]:
    if key in self._changes:
      return self._changes[key]
    if not isinstance(self._obj, Indexable):
      raise TypeError(f'Cannot index into {self._obj}')
    if isinstance(self._obj, Mapping) and key not in self._obj:
      raise KeyError(f'Key {key} not found in {self._obj}')
    if _is_named_tuple(self._obj):
      return getattr(self, self._obj._fields[key])
    child = Cursor(self._obj[key], ParentKey(self, key, AccessType.ITEM))
    self._changes[key] = child
    return child

  def __getattr__(self, name) -> Cursor[A]:
    if name in self._changes:
      return self._changes[name]
    if not hasattr(self._obj, name):
      raise AttributeError(f'Attribute {name} not found in {self._obj}')
    child = Cursor(getattr(self._obj, name), ParentKey(self, name, AccessType.ATTR))
    self._changes[name] = child
    return child

  def __setitem__(self, key, value):
    if _is_named_tuple(self._obj):
      return setattr(self, self._obj._fields[key], value)
    self._changes[key] = Cursor(value, ParentKey(self, key, AccessType.ITEM))

  def __setattr__(self, name, value):
    self._changes[name] = Cursor(value, ParentKey(self, name, AccessType.ATTR))

  def set(self, value: Any) -> A:
    """Sets the value at this position and returns a built copy of the whole object.

    Args:
      value: the new value.

    Returns:
      A copy of the root object with this value (and the other recorded changes).

    Example:

      >>> from flaxlike.cursor import cursor
      >>> cursor({'a': 1, 'b': (2, 3)})['b'][0].set(10)
      {'a': 1, 'b': (10, 3)}
    """
    if self._parent_key is None:
      return value
    parent, key = self._parent_key.parent, self._parent_key.key
    parent._changes[key] = Cursor(value, self._parent_key)
    return parent._root.build()

  def build(self) -> A:
    """A copy of the wrapped object with every recorded change applied, bottom up.

    Example:

      >>> import optax
      >>> from flaxlike.cursor import cursor
      >>> from flaxlike.training import train_state
      >>> state = train_state.TrainState.create(
      ...   apply_fn=None, params={'w': 1.0, 'b': 0.0}, tx=optax.sgd(0.1)
      ... )
      >>> c = cursor(state)
      >>> c.params['w'] = 2.0
      >>> c.step = 5
      >>> new_state = c.build()
      >>> new_state.params, int(new_state.step), state.params
      ({'w': 2.0, 'b': 0.0}, 5, {'w': 1.0, 'b': 0.0})
    """
    changes = {
      key: child.build() if isinstance(child, Cursor) else child
      for key, child in self._changes.items()
    }
    return _with_changes(self._obj, changes)

  def apply_update(self, update_fn: Callable[[str, Any], Any]) -> Cursor[A]:
    """Records ``update_fn(path, value)`` for every node below this one that it changes.

    ``update_fn`` gets the ``'/'``-joined path (``'Dense_0/kernel'``) and the value, and
    returns either the same object (no change; the walk goes on into it) or a new value
    (recorded; the walk does not descend into that branch). ``is`` decides, so return a
    copy when modifying a container. The root itself is not passed to ``update_fn``.

    Args:
      update_fn: ``(path, value) -> value``.

    Returns:
      This cursor, with the changes recorded; call ``build()`` for the new object.

    Example:

      >>> import jax, jax.numpy as jnp
      >>> import flaxlike as nn
      >>> from flaxlike.cursor import cursor
      >>> params = nn.Dense(2).init(jax.random.key(0), jnp.ones((1, 3)))['params']
      >>> def bias_to_one(path, value):
      ...   return jnp.zeros_like(value) + 1 if path.endswith('bias') else value
      >>> cursor(params).apply_update(bias_to_one).build()['bias']
      Array([1., 1.], dtype=float32)
    """
    for path, value in _traverse_tree((), self._obj, update_fn=update_fn):
      child = self
      for key, access_type in path[:-1]:
        child = child[key] if access_type is AccessType.ITEM else getattr(child, key)
      key, access_type = path[-1]
      if access_type is AccessType.ITEM:
        child[key] = value
      else:
        setattr(child, key, value)
    return self

  def find(self, cond_fn: Callable[[str, Any], bool]) -> Cursor[A]:
    """The cursor of the one node below this one for which ``cond_fn(path, value)`` holds.

    The walk does not descend below a match, and the root is not tested.

    Args:
      cond_fn: ``(path, value) -> bool``, with the ``'/'``-joined path.

    Returns:
      The matching child cursor; changes made through it are part of ``build()``.

    Raises:
      CursorFindError: no node matched, or more than one did.

    Example:

      >>> from flaxlike.cursor import cursor
      >>> params = {'Dense_0': {'bias': 0}, 'Dense_1': {'bias': 0}}
      >>> c = cursor(params)
      >>> c.find(lambda path, value: path == 'Dense_1')['bias'] = 7
      >>> c.build()
      {'Dense_0': {'bias': 0}, 'Dense_1': {'bias': 7}}
    """
    found = self.find_all(cond_fn)
    first = next(found, None)
    if first is None:
      raise CursorFindError()
    second = next(found, None)
    if second is not None:
      raise CursorFindError(first, second)
    return first

  def find_all(self, cond_fn: Callable[[str, Any], bool]) -> Generator[Cursor[A], None, None]:
    """The cursors of every node below this one for which ``cond_fn(path, value)`` holds.

    The walk does not descend below a match, and the root is not tested.

    Args:
      cond_fn: ``(path, value) -> bool``, with the ``'/'``-joined path.

    Yields:
      The matching child cursors, in container order.

    Example:

      >>> from flaxlike.cursor import cursor
      >>> params = {'Dense_0': {'bias': 1}, 'Dense_1': {'bias': 2}, 'scale': 3}
      >>> c = cursor(params)
      >>> for layer in c.find_all(lambda path, value: path.startswith('Dense')):
      ...   layer['bias'] *= 10
      >>> c.build()
      {'Dense_0': {'bias': 10}, 'Dense_1': {'bias': 20}, 'scale': 3}
    """
    for path in _traverse_tree((), self._obj, cond_fn=cond_fn):
      child = self
      for key, access_type in path:
        child = child[key] if access_type is AccessType.ITEM else getattr(child, key)
      yield child

  def __str__(self):
    return str(self._obj)

  def __repr__(self):
    return self._pretty_repr()

  def _pretty_repr(self, indent: int = 2, _prefix_indent: int = 0) -> str:
    pad = ' ' * (_prefix_indent + indent)
    obj_text = repr(self._obj).replace('\n', '\n' + pad)
    lines = [f'Cursor(\n{pad}_obj={obj_text},\n{pad}_changes={{']
    if self._changes:
      entries = []
      for key, child in self._changes.items():
        prefix = ' ' * (_prefix_indent + 2 * indent) + repr(key) + ': '
        entries.append(prefix + child._pretty_repr(indent=indent, _prefix_indent=len(prefix)))
      lines.append('\n' + ',\n'.join(entries) + '\n' + pad + '}\n')
    else:
      lines.append('}\n')
    return ''.join(lines) + ' ' * _prefix_indent + ')'

  def __len__(self):
    return len(self._obj)

  def _check_sequence(self, method: str) -> None:
    if not isinstance(self._obj, (tuple, list)):
      raise CursorIterationError(method, type(self._obj))

  def __iter__(self):
    self._check_sequence('__iter__')
    return (self[i] for i in range(len(self._obj)))

  def __reversed__(self):
    self._check_sequence('__reversed__')
    return (self[i] for i in range(len(self._obj) - 1, -1, -1))

  # Operators act on the wrapped value, so ``c[k] += 1`` reads, adds and records.
  def __add__(self, other):
    return self._obj + other

  def __sub__(self, other):
    return self._obj - other

  def __mul__(self, other):
    return self._obj * other

  def __matmul__(self, other):
    return self._obj @ other

  def __truediv__(self, other):
    return self._obj / other

  def __floordiv__(self, other):
    return self._obj // other

  def __mod__(self, other):
    return self._obj % other

  def __divmod__(self, other):
    return divmod(self._obj, other)

  def __pow__(self, other):
    return pow(self._obj, other)

  def __lshift__(self, other):
    return self._obj << other

  def __rshift__(self, other):
    return self._obj >> other

  def __and__(self, other):
    return self._obj & other

  def __xor__(self, other):
    return self._obj ^ other

  def __or__(self, other):
    return self._obj | other

  def __radd__(self, other):
    return other + self._obj

  def __rsub__(self, other):
    return other - self._obj

  def __rmul__(self, other):
    return other * self._obj

  def __rmatmul__(self, other):
    return other @ self._obj

  def __rtruediv__(self, other):
    return other / self._obj

  def __rfloordiv__(self, other):
    return other // self._obj

  def __rmod__(self, other):
    return other % self._obj

  def __rdivmod__(self, other):
    return divmod(other, self._obj)

  def __rpow__(self, other):
    return pow(other, self._obj)

  def __rlshift__(self, other):
    return other << self._obj

  def __rrshift__(self, other):
    return other >> self._obj

  def __rand__(self, other):
    return other & self._obj

  def __rxor__(self, other):
    return other ^ self._obj

  def __ror__(self, other):
    return other | self._obj

  def __neg__(self):
    return -self._obj

  def __pos__(self):
    return +self._obj

  def __abs__(self):
    return abs(self._obj)

  def __invert__(self):
    return ~self._obj

  def __round__(self, ndigits=None):
    return round(self._obj, ndigits)

  def __lt__(self, other):
    return self._obj < other

  def __le__(self, other):
    return self._obj <= other

  def __eq__(self, other):
    return self._obj == other

  def __ne__(self, other):
    return self._obj != other

  def __gt__(self, other):
    return self._obj > other

  def __ge__(self, other):
    return self._obj >= other


def cursor(obj: A) -> Cursor[A]:
  """Wraps ``obj`` in a ``Cursor``, to build modified copies of it.

  Three ways to use it: ``cursor(obj)[...].set(value)`` for one change;
  assignments through the cursor then ``build()`` for several; and
  ``apply_update(update_fn)`` then ``build()`` for changes chosen by path and value.

  Args:
    obj: the object to edit a copy of (dicts, FrozenDicts, lists, tuples, named tuples,
      dataclasses, nested in any way).

  Returns:
    The root cursor.

  Example:

    >>> from flaxlike.cursor import cursor
    >>> c = cursor(((1, 2), (3, 4)))
    >>> for pair in c:
    ...   pair[1] *= -1
    >>> c.build()
    ((1, -2), (3, -4))
  """
  return Cursor(obj, None)
