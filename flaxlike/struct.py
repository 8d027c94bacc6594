"""Frozen dataclasses that are JAX pytrees: ``struct.dataclass``, ``field``, ``PyTreeNode``."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax
from typing_extensions import dataclass_transform

from flaxlike import serialization

_T = TypeVar('_T')


def field(pytree_node: bool = True, *, metadata: dict | None = None, **kwargs):
  """A dataclass field; ``pytree_node=False`` makes it static (part of the treedef).

  Args:
    pytree_node: whether the field is a pytree child (traced, serialized).
    metadata: extra field metadata.
    **kwargs: passed to ``dataclasses.field`` (``default``, ``kw_only``, ...).
  """
  return dataclasses.field(metadata={'pytree_node': pytree_node, **(metadata or {})}, **kwargs)


@dataclass_transform(field_specifiers=(field,), frozen_default=True)  # type: ignore[literal-required]
def dataclass(clz: type[_T] | None = None, **kwargs) -> Any:
  """Makes ``clz`` a frozen dataclass registered as a pytree with keys.

  Fields are pytree children unless declared with ``field(pytree_node=False)``. The
  class gains ``replace(**updates)`` and a state-dict conversion of its pytree fields.
  pyright cannot see ``replace`` on a decorated class (it types the class as written);
  subclass ``PyTreeNode``, or call ``dataclasses.replace``, where that matters
  (docs/porting.md, "Type checkers").

  Example:

  >>> from flaxlike import struct
  >>> @struct.dataclass
  ... class Point:
  ...   x: float
  ...   label: str = struct.field(pytree_node=False, default='p')
  >>> import jax
  >>> jax.tree_util.tree_leaves(Point(1.0))
  [1.0]
  >>> Point(1.0).replace(x=2.0)
  Point(x=2.0, label='p')
  """
  if clz is None:
    return lambda c: dataclass(c, **kwargs)
  if '_flaxlike_dataclass' in clz.__dict__:
    return clz
  kwargs.setdefault('frozen', True)
  # Any: the class gains members (replace, the pytree registration) checkers cannot see.
  data_clz: Any = dataclasses.dataclass(**kwargs)(clz)
  fields = [f for f in dataclasses.fields(data_clz)]
  data_names = tuple(f.name for f in fields if f.metadata.get('pytree_node', True))
  meta_names = tuple(f.name for f in fields if not f.metadata.get('pytree_node', True))
  init_names = {f.name for f in fields if f.init}

  def replace(self, **updates):
    return dataclasses.replace(self, **updates)

  data_clz.replace = replace

  def build(values: dict) -> Any:
    # Fields with init=False cannot go through __init__; set them directly.
    obj = data_clz(**{k: v for k, v in values.items() if k in init_names})
    for k, v in values.items():
      if k not in init_names:
        object.__setattr__(obj, k, v)
    return obj

  def flatten_with_keys(x):
    children = tuple((jax.tree_util.GetAttrKey(n), getattr(x, n)) for n in data_names)
    return children, tuple(getattr(x, n) for n in meta_names)

  def flatten(x):
    return tuple(getattr(x, n) for n in data_names), tuple(getattr(x, n) for n in meta_names)

  def unflatten(meta, children):
    return build({**dict(zip(meta_names, meta)), **dict(zip(data_names, children))})

  jax.tree_util.register_pytree_with_keys(data_clz, flatten_with_keys, unflatten, flatten)

  def to_state_dict(x) -> dict[str, Any]:
    return {n: serialization.to_state_dict(getattr(x, n)) for n in data_names}

  def from_state_dict(x, state: dict) -> Any:
    state = dict(state)
    updates = {}
    for name in data_names:
      if name not in state:
        raise ValueError(
          f'Missing field {name} in state dict while restoring an instance of '
          f'{clz.__name__}, at path {serialization.current_path()}'
        )
      updates[name] = serialization.from_state_dict(getattr(x, name), state.pop(name), name)
    if state:
      raise ValueError(
        f'Unknown field(s) "{sorted(state)}" in state dict while restoring an instance '
        f'of {clz.__name__} at path {serialization.current_path()}'
      )
    return x.replace(**updates)

  serialization.register_serialization_state(data_clz, to_state_dict, from_state_dict)
  data_clz._flaxlike_dataclass = True  # type: ignore[attr-defined]
  return data_clz


@dataclass_transform(field_specifiers=(field,), frozen_default=True)  # type: ignore[literal-required]
class PyTreeNode:
  """Base class whose subclasses become ``struct.dataclass`` automatically.

  Example:

  >>> from flaxlike import struct
  >>> class Pair(struct.PyTreeNode):
  ...   a: int
  ...   b: int
  >>> Pair(1, 2).replace(b=3)
  Pair(a=1, b=3)
  """

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__()
    dataclass(cls, **kwargs)

  def replace(self: _T, **overrides) -> _T:  # replaced per subclass; here for typing
    return dataclasses.replace(self, **overrides)  # type: ignore[type-var]
