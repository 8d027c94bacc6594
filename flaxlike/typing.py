"""Type aliases and small typing helpers shared by the library, named as in ``flax.typing``.

The library's modules import their annotations from here instead of defining their own.
This module depends on nothing in ``flaxlike`` except ``flaxlike.core.frozen_dict`` (a leaf
module), so any module, ``flaxlike.core`` included, can import it.

Aliases (for annotations; they check nothing at run time):

================================  ======================================================
``Array``                          a ``jax.Array`` or anything array-like
``PRNGKey``                        a PRNG key (``jax.random.key`` or ``PRNGKey``)
``RNGSequences``                   ``{stream name: key}``, the ``rngs=`` of ``init``/``apply``
``Dtype``, ``Shape``               a dtype-like value; a sequence of ints
``Initializer``                    ``init(key, shape, dtype) -> Array``
``PrecisionLike``                  what ``jax.lax`` accepts as ``precision=``
``DotGeneralT``, ``ConvGeneralDilatedT``, ``EinsumT``   the lax functions layers call
``PaddingLike``, ``LaxPadding``    convolution padding as layers take it; as lax takes it
``Collection``, ``MutableCollection``   one variable collection
``VariableDict``, ``FrozenVariableDict``, ``MutableVariableDict``   all collections
``PRNGFoldable``                   what folds into a key: an int or a str
``Axis``, ``InOutAxis``            a ``variable_axes`` value of ``nn.vmap``
``ScanAxis``, ``InOutScanAxis``    a ``variable_axes`` value of ``nn.scan``
``Axes``                           one axis or several
``LogicalNames``, ``AxisName``, ``LogicalRules``, ``Sharding``   logical partitioning
``Path``, ``PathParts``, ``Leaf``  a ``/``-joined path; its parts; a tree leaf
================================  ======================================================

Example:

  >>> import jax.numpy as jnp
  >>> from flaxlike import typing
  >>> def scale(x: typing.Array, factor: float = 2.0) -> typing.Array:
  ...   return x * factor
  >>> typing.SizeBytes.from_any({'w': jnp.ones((2, 3)), 'b': jnp.ones(3)})
  9 (36 B)
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeGuard, TypeVar

import jax
import jax.tree_util as jtu
import numpy as np

from flaxlike.core.frozen_dict import FrozenDict

# General

Array = jax.Array | Any
PRNGKey = jax.Array
RNGSequences = dict[str, PRNGKey]
Dtype = jax.typing.DTypeLike | Any
Shape = Sequence[int]
K = TypeVar('K')


class Key(Hashable, Protocol):
  """A dict key of a variable tree: hashable and ordered (the tree is sorted by key)."""

  def __lt__(self: K, value: K, /) -> bool: ...


def is_key_like(x: Any) -> TypeGuard[Key]:
  """Whether ``x`` can be a key of a variable tree (hashable and ordered).

  Stricter than Flax's check, which only asks for the two attributes (every object has
  them): here ``__hash__`` must not be ``None`` and ``__lt__`` must be defined by the type.

  Example:

    >>> from flaxlike.typing import is_key_like
    >>> is_key_like('kernel'), is_key_like(3), is_key_like(object())
    (True, True, False)
  """
  # object has an ``__lt__`` at run time (it returns NotImplemented); typeshed leaves it out
  # so that checkers treat only types that define one as ordered.
  unordered_lt = object.__lt__  # pyright: ignore[reportAttributeAccessIssue]
  return getattr(x, '__hash__', None) is not None and type(x).__lt__ is not unordered_lt


Path = str
PathParts = tuple[Key, ...]
Leaf = Any

# Linear layers

PrecisionLike = (
  None | str | jax.lax.Precision | tuple[str, str] | tuple[jax.lax.Precision, jax.lax.Precision]
)
DotGeneralT = Callable[..., Array]
ConvGeneralDilatedT = Callable[..., Array]
EinsumT = Callable[..., Array]
PaddingLike = str | int | Sequence[int | tuple[int, int]]
LaxPadding = str | Sequence[tuple[int, int]]

# Initializers

Initializer = jax.nn.initializers.Initializer | Callable[..., Any]

# Variable collections and variable dicts

Collection = Mapping[str, Any]
MutableCollection = dict[str, Any]
VariableDict = Mapping[str, Collection]
FrozenVariableDict = FrozenDict[str, Collection]
MutableVariableDict = dict[str, MutableCollection]
PRNGFoldable = int | str

# Axes of the lifted transforms

T = TypeVar('T')


@dataclasses.dataclass(frozen=True)
class In(Generic[T]):
  """A ``variable_axes`` value that lifts the collection as an input of the transform only.

  Example:

    >>> from flaxlike.typing import In
    >>> In(0).axis
    0
  """

  axis: T


@dataclasses.dataclass(frozen=True)
class Out(Generic[T]):
  """A ``variable_axes`` value that lifts the collection as an output of the transform only.

  Example:

    >>> from flaxlike.typing import Out
    >>> Out(1).axis
    1
  """

  axis: T


Axis = int | None
InOutAxis = Axis | In[Axis] | Out[Axis]
ScanAxis = int
InOutScanAxis = ScanAxis | In[ScanAxis] | Out[ScanAxis]
Axes = int | Sequence[int]

# Logical partitioning

LogicalNames = tuple[str | None, ...]
AxisName = str | tuple[str, ...] | None
# A logical axis name mapped to mesh axes: None (replicated), one mesh axis or several.
LogicalRules = Sequence[tuple[str, AxisName]]
ArrayPytree = Any
LogicalPartitionSpec = Any
LogicalPartitionSpecPytree = Any
PartitionSpecPytree = Any
Sharding = tuple[AxisName, ...]

A = TypeVar('A')
HA = TypeVar('HA', bound=Hashable)
HB = TypeVar('HB')


class PytreeDeque(deque[A]):
  """A ``collections.deque`` that JAX treats as a pytree (a sequence of children).

  Example:

    >>> import jax
    >>> from flaxlike.typing import PytreeDeque
    >>> jax.tree.map(lambda x: x * 10, PytreeDeque([1, 2]))
    PytreeDeque([10, 20])
  """


def _flatten_deque(xs: PytreeDeque, *, with_path: bool):
  if with_path:
    return tuple((jtu.SequenceKey(i), x) for i, x in enumerate(xs)), ()
  return tuple(xs), ()


jtu.register_pytree_with_keys(
  PytreeDeque,
  functools.partial(_flatten_deque, with_path=True),
  lambda _, children: PytreeDeque(children),
  flatten_func=functools.partial(_flatten_deque, with_path=False),
)


class Missing:
  """The type of ``MISSING``: a default that means "not given" where ``None`` is a value.

  Example:

    >>> from flaxlike.typing import MISSING, Missing
    >>> isinstance(MISSING, Missing)
    True
  """


MISSING = Missing()


def _bytes_repr(num_bytes: int) -> str:
  for scale, unit in ((1e9, 'GB'), (1e6, 'MB'), (1e3, 'KB')):
    if num_bytes > scale:
      return f'{num_bytes / scale:,.1f} {unit}'
  return f'{num_bytes:,} B'


class ShapeDtype(Protocol):
  """Anything with a ``shape`` and a ``dtype`` (arrays, ``jax.ShapeDtypeStruct``)."""

  shape: Shape
  dtype: Dtype


def has_shape_dtype(x: Any) -> TypeGuard[ShapeDtype]:
  """Whether ``x`` has a ``shape`` and a ``dtype``.

  Example:

    >>> import jax, numpy as np
    >>> from flaxlike.typing import has_shape_dtype
    >>> has_shape_dtype(np.zeros(2)), has_shape_dtype(jax.ShapeDtypeStruct((2,), 'f4')), has_shape_dtype(2)
    (True, True, False)
  """
  return hasattr(x, 'shape') and hasattr(x, 'dtype')


@dataclasses.dataclass(frozen=True, slots=True)
class SizeBytes:
  """An element count and its size in bytes; adds up, and prints as ``count (bytes)``.

  Example:

    >>> import numpy as np
    >>> from flaxlike.typing import SizeBytes
    >>> SizeBytes.from_array(np.zeros((1000, 300), np.float32))
    300,000 (1.2 MB)
  """

  size: int
  bytes: int

  @classmethod
  def from_array(cls, x: ShapeDtype) -> SizeBytes:
    """The size of one array (or shape struct)."""
    size = int(np.prod(x.shape))
    return cls(size, size * np.dtype(x.dtype).itemsize)

  @classmethod
  def from_any(cls, x: Any) -> SizeBytes:
    """The total size of every leaf of a pytree that has a shape and a dtype."""
    total = cls(0, 0)
    for leaf in jax.tree_util.tree_leaves(x):
      if has_shape_dtype(leaf):
        total += cls.from_array(leaf)
    return total

  def __add__(self, other: SizeBytes) -> SizeBytes:
    return type(self)(self.size + other.size, self.bytes + other.bytes)

  def __bool__(self) -> bool:
    return bool(self.size)

  def __repr__(self) -> str:
    return f'{self.size:,} ({_bytes_repr(self.bytes)})'


TupleArg = TypeVar('TupleArg', bound=tuple)


class PromoteDtypeFn(Protocol):
  """The signature of ``nn.promote_dtype`` and the functions layers accept in its place."""

  def __call__(self, args: TupleArg, /, *, dtype: Any = None, inexact: bool = True) -> TupleArg: ...


class HashableMapping(Mapping[HA, HB], Hashable):
  """A read-only mapping that hashes by content (int and str keys), e.g. a static argument.

  Example:

    >>> from flaxlike.typing import HashableMapping
    >>> m = HashableMapping({'b': 2, 'a': 1})
    >>> hash(m) == hash(HashableMapping({'a': 1, 'b': 2})), m.update({'c': 3})
    (True, {'b': 2, 'a': 1, 'c': 3})
  """

  _mapping: dict[HA, HB] | Mapping[HA, HB]

  def __init__(self, mapping: Mapping[HA, HB], copy: bool = True):
    self._mapping = dict(mapping) if copy else mapping

  def __contains__(self, key: object) -> bool:
    return key in self._mapping

  def __getitem__(self, key: HA) -> HB:
    return self._mapping[key]

  def __iter__(self) -> Iterator[HA]:
    return iter(self._mapping)

  def __len__(self) -> int:
    return len(self._mapping)

  def __hash__(self) -> int:
    def order(item: tuple[Any, Any]) -> tuple[int, Any]:
      # ints before strs, so mixed keys still sort without comparing an int to a str
      key = item[0]
      if isinstance(key, int):
        return (0, key)
      if isinstance(key, str):
        return (1, key)
      raise ValueError(
        f'HashableMapping can only hash int and str keys, got key {key!r} of type '
        f'{type(key).__name__}.'
      )

    return hash(tuple(sorted(self._mapping.items(), key=order)))

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, HashableMapping) and self._mapping == other._mapping

  def __repr__(self) -> str:
    return repr(self._mapping)

  def update(self, other: Mapping[HA, HB]) -> HashableMapping[HA, HB]:
    """A new mapping with ``other``'s entries added or replaced (this one is unchanged)."""
    return HashableMapping({**self._mapping, **other}, copy=False)


F = TypeVar('F', bound=Callable[..., Any])


class BaseConfigContext(abc.ABC):
  """A stack-based setting usable as a context manager and as a decorator.

  A subclass names where its stack lives (``get_stack``) and the value when the stack is
  empty (``get_default``). Constructing it sets the value at once (until the ``with``
  block or decorated call ends it); ``current_value()`` reads the setting.

  Example:

    >>> from flaxlike.typing import BaseConfigContext
    >>> class precision(BaseConfigContext):
    ...   stack = []
    ...   @classmethod
    ...   def get_default(cls):
    ...     return 'default'
    ...   @classmethod
    ...   def get_stack(cls):
    ...     return cls.stack
    >>> with precision('high'):
    ...   print(precision.current_value())
    high
    >>> @precision('low')
    ... def f():
    ...   return precision.current_value()
    >>> f(), precision.current_value()
    ('low', 'default')
  """

  @classmethod
  @abc.abstractmethod
  def get_default(cls) -> Any:
    """The value when no context is active."""

  @classmethod
  @abc.abstractmethod
  def get_stack(cls) -> list:
    """The list that holds the active values, innermost last."""

  def __init__(self, value, /):
    stack = self.get_stack()
    # The value takes effect now (a bare call sets it); ``__enter__`` keeps the previous one
    # below it so that ``__exit__`` restores it, and a decorator pushes it per call instead.
    if stack:
      self.prev_value = stack[-1]
      stack[-1] = value
    else:
      self.prev_value = None
      stack.append(value)
    self.new_value = value

  @classmethod
  def current_value(cls) -> Any:
    """The innermost active value, or ``get_default()``."""
    stack = cls.get_stack()
    return stack[-1] if stack else cls.get_default()

  def __enter__(self):
    if self.prev_value is not None:
      self.get_stack().insert(-1, self.prev_value)

  def __exit__(self, exc_type, exc_value, traceback):
    self.get_stack().pop()

  def __call__(self, f: F) -> F:
    # Used as a decorator: undo the immediate effect, then apply the value per call.
    self.get_stack().pop()
    if self.prev_value is not None:
      self.get_stack().append(self.prev_value)

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
      self.get_stack().append(self.new_value)
      try:
        return f(*args, **kwargs)
      finally:
        self.get_stack().pop()

    return wrapper  # type: ignore[return-value]
