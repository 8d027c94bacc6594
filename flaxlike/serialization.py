"""Conversion of Python objects to and from state dicts (nested ``{str: ...}`` dicts).

A state dict is what gets written to disk: containers become dicts with string keys and
leaves stay as they are. Types opt in through ``register_serialization_state``; dicts,
FrozenDicts, lists, tuples, namedtuples, ``jax.tree_util.Partial`` and ``struct``
dataclasses are built in. Lookup uses the exact type, so subclasses register separately.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable

import jax

from flaxlike.core.frozen_dict import FrozenDict


class _PathStack(threading.local):
  def __init__(self):
    self.names: list[str] = []


_path = _PathStack()


def current_path() -> str:
  """The '/'-joined path of the state dict entry being restored, for error messages."""
  return '/'.join(_path.names)


@contextmanager
def _entering(name: str):
  _path.names.append(name)
  try:
    yield
  finally:
    _path.names.pop()


_STATE_DICT_REGISTRY: dict[type, tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]] = {}


def register_serialization_state(
  ty: type,
  ty_to_state_dict: Callable[[Any], dict[str, Any]],
  ty_from_state_dict: Callable[[Any, dict[str, Any]], Any],
  override: bool = False,
) -> None:
  """Registers how instances of ``ty`` convert to and from a state dict.

  Args:
    ty: the exact type to register (subclasses are not covered).
    ty_to_state_dict: ``fn(obj) -> dict`` with string keys.
    ty_from_state_dict: ``fn(target, state_dict) -> obj`` restoring into ``target``.
    override: replace an existing registration instead of raising ValueError.
  """
  if ty in _STATE_DICT_REGISTRY and not override:
    raise ValueError(
      f'A serialization handler for "{ty.__name__}" is already registered; pass '
      'override=True to replace it.'
    )
  _STATE_DICT_REGISTRY[ty] = (ty_to_state_dict, ty_from_state_dict)


def _is_namedtuple(x: Any) -> bool:
  return isinstance(x, tuple) and hasattr(type(x), '_fields')


def is_serializable(target: Any) -> bool:
  """Whether ``target``'s type has a registered state-dict conversion."""
  return _is_namedtuple(target) or type(target) in _STATE_DICT_REGISTRY


def to_state_dict(target: Any) -> Any:
  """Returns ``target`` as a state dict; unregistered values are returned unchanged.

  Example:

  >>> from flaxlike import serialization
  >>> serialization.to_state_dict({'a': [1, 2], 3: (4,)})
  {'a': {'0': 1, '1': 2}, '3': {'0': 4}}
  """
  if _is_namedtuple(target):
    return _namedtuple_state_dict(target)
  handler = _STATE_DICT_REGISTRY.get(type(target))
  if handler is None:
    return target
  return handler[0](target)


def from_state_dict(target: Any, state: Any, name: str = '.') -> Any:
  """Restores ``state`` into the structure of ``target``.

  Args:
    target: an object with the desired structure (e.g. freshly initialised params).
    state: a state dict, as produced by ``to_state_dict`` or read from bytes.
    name: the name of the root in error paths.

  Returns:
    A copy of ``target`` holding the values of ``state``.
  """
  if _is_namedtuple(target):
    handler = (None, _restore_namedtuple)
  else:
    handler = _STATE_DICT_REGISTRY.get(type(target))
  if handler is None:
    return state
  with _entering(name):
    return handler[1](target, state)


def _dict_state_dict(xs: dict) -> dict[str, Any]:
  str_keys = {str(k) for k in xs}
  if len(str_keys) != len(xs):
    raise ValueError(
      'Dict keys do not have a unique string representation: '
      f'{[k for k in xs]} map to {sorted(str_keys)}.'
    )
  return {str(k): to_state_dict(v) for k, v in xs.items()}


def _restore_dict(xs: dict, states: dict) -> dict:
  missing = [str(k) for k in xs if str(k) not in states]
  if missing:
    paths = ', '.join(f'{current_path()}/{k}' for k in missing)
    raise ValueError(
      f'The target dict keys and state dict keys do not match, target dict contains '
      f'keys {missing} which are not present in state dict at path {paths}'
    )
  return {k: from_state_dict(v, states[str(k)], name=str(k)) for k, v in xs.items()}


def _list_state_dict(xs) -> dict[str, Any]:
  return {str(i): to_state_dict(x) for i, x in enumerate(xs)}


def _restore_list(xs: list, states: dict) -> list:
  if len(states) != len(xs):
    raise ValueError(
      f'The size of the list and the state dict do not match at path {current_path()}: '
      f'the target has {len(xs)} entries, the state dict {len(states)}.'
    )
  return [from_state_dict(x, states[str(i)], name=str(i)) for i, x in enumerate(xs)]


def _restore_tuple(xs: tuple, states: dict) -> tuple:
  return tuple(_restore_list(list(xs), states))


def _namedtuple_state_dict(nt) -> dict[str, Any]:
  return {name: to_state_dict(getattr(nt, name)) for name in nt._fields}


def _restore_namedtuple(xs, state_dict: dict):
  # Files written before 2022 store namedtuples as {'name', 'fields', 'values'}.
  if set(state_dict) == {'name', 'fields', 'values'}:
    state_dict = {
      state_dict['fields'][str(i)]: state_dict['values'][str(i)]
      for i in range(len(state_dict['fields']))
    }
  sd_keys, tgt_keys = set(state_dict), set(xs._fields)
  if sd_keys != tgt_keys:
    raise ValueError(
      'The field names of the state dict and the named tuple do not match at path '
      f'{current_path()}: got {sorted(sd_keys)}, expected {sorted(tgt_keys)}.'
    )
  fields = {k: from_state_dict(getattr(xs, k), v, name=k) for k, v in state_dict.items()}
  return type(xs)(**fields)


def _restore_frozen_dict(xs: FrozenDict, states: dict) -> FrozenDict:
  return FrozenDict(_restore_dict(xs.unfreeze(), states), __unsafe_skip_copy__=True)


def _partial_state_dict(p: jax.tree_util.Partial) -> dict[str, Any]:
  return {'args': to_state_dict(p.args), 'keywords': to_state_dict(p.keywords)}


def _restore_partial(p: jax.tree_util.Partial, state: dict) -> jax.tree_util.Partial:
  args = from_state_dict(p.args, state['args'], name='args')
  keywords = from_state_dict(p.keywords, state['keywords'], name='keywords')
  return jax.tree_util.Partial(p.func, *args, **keywords)


register_serialization_state(dict, _dict_state_dict, _restore_dict)
register_serialization_state(list, _list_state_dict, _restore_list)
register_serialization_state(tuple, _list_state_dict, _restore_tuple)
register_serialization_state(
  FrozenDict, lambda fd: _dict_state_dict(fd._dict), _restore_frozen_dict
)
register_serialization_state(jax.tree_util.Partial, _partial_state_dict, _restore_partial)
