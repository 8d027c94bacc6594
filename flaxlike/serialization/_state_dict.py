"""State dicts: containers as string-keyed dicts, and back into a target's structure.

A state dict is what gets written to disk: containers become dicts with string keys and
leaves stay as they are. Types opt in through ``register_serialization_state``; dicts,
FrozenDicts, lists, tuples, namedtuples, ``jax.tree_util.Partial`` and ``struct``
dataclasses are built in. Lookup uses the exact type, so subclasses register separately.
Typed PRNG keys become ``{'__prng_key_impl__': name, 'key_data': uint32 array}``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxlike.core.frozen_dict import FrozenDict
from flaxlike.errors import RestoreMismatchError


class _PathStack(threading.local):
  def __init__(self):
    self.names: list[str] = []
    # Set by the outermost strict from_state_dict; registered handlers call
    # from_state_dict without a strict argument and must inherit it.
    self.strict = False


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
  _PLAIN_LEAF_TYPES.discard(ty)


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
    if _is_key_array(target):
      if _key_impl_name(target) in _KEY_IMPLS:
        return _key_state_dict(target)
    else:
      _PLAIN_LEAF_TYPES.add(type(target))
    return target
  return handler[0](target)


# Types that to_state_dict returns unchanged (not registered, not tuples, not typed keys),
# learnt as they are met: containers pass their values of these types through without a
# call per leaf, which is a good part of the cost of a tree of many small arrays.
_PLAIN_LEAF_TYPES: set[type] = set()


# Whether leaves of a type are typed key arrays, learnt from the first leaf of each type:
# jax gives key arrays a class of their own (ordinary arrays never have a key dtype), and
# a dtype lookup on every jax.Array leaf would cost more than the rest of to_state_dict.
_KEY_ARRAY_TYPES: dict[type, bool] = {}


def _is_key_array(x: Any) -> bool:
  known = _KEY_ARRAY_TYPES.get(type(x))
  if known is None:
    known = isinstance(x, jax.Array) and _is_key_dtype(x.dtype)
    _KEY_ARRAY_TYPES[type(x)] = known
  return known


# Typed PRNG keys (jax.random.key) are saved as a small dict that Flax reads as it is:
# {'__prng_key_impl__': <implementation name>, 'key_data': <uint32 array>}.
_KEY_MARKER = '__prng_key_impl__'
_KEY_IMPLS = ('threefry2x32', 'rbg', 'unsafe_rbg')


def _is_key_dtype(dtype: Any) -> bool:
  # Ordinary dtypes are np.dtype instances; only extended dtypes need jax's check.
  return (
    dtype is not None
    and not isinstance(dtype, np.dtype)
    and jnp.issubdtype(dtype, jax.dtypes.prng_key)
  )


# The dtype names of the built-in implementations, for targets that are not keys
# themselves (jax.ShapeDtypeStruct), which jax.random.key_impl does not take.
_KEY_IMPL_BY_DTYPE_NAME = {'key<fry>': 'threefry2x32', 'key<rbg>': 'rbg', 'key<urbg>': 'unsafe_rbg'}


def _key_impl_name(key: Any) -> str:
  if isinstance(key, jax.Array):
    return str(jax.random.key_impl(key))
  name: str = key.dtype.name
  return _KEY_IMPL_BY_DTYPE_NAME.get(name, name)


def _key_state_dict(key: jax.Array) -> dict[str, Any]:
  return {_KEY_MARKER: _key_impl_name(key), 'key_data': jax.random.key_data(key)}


def _restore_key(target: Any, state: Any) -> Any:
  """A typed key from a saved key dict (any target leaf) or from raw key data (a typed
  key target, whose implementation it takes)."""
  if type(state) is dict and _KEY_MARKER in state:
    impl, data = state.get(_KEY_MARKER), state.get('key_data')
  else:
    impl, data = _key_impl_name(target), state
  if impl not in _KEY_IMPLS:
    raise ValueError(
      f'The typed PRNG key at path {current_path()} names the implementation {impl!r:.60}; '
      f'only {", ".join(_KEY_IMPLS)} are restored. Restore with target=None to see the '
      'raw data, or save jax.random.key_data(key) instead of the key.'
    )
  try:
    # JAX takes host arrays here too; its annotation names only jax.Array.
    return jax.random.wrap_key_data(np.asarray(data), impl=impl)  # pyright: ignore[reportArgumentType]
  except (TypeError, ValueError) as e:
    raise ValueError(
      f'The typed PRNG key at path {current_path()} cannot be rebuilt from its key data '
      f'({_describe(data)}) for the implementation {impl}: {e}. The data must be the uint32 '
      'array jax.random.key_data gives for that implementation.'
    ) from None


def from_state_dict(target: Any, state: Any, name: str = '.', strict: bool = False) -> Any:
  """Restores ``state`` into the structure of ``target``.

  Args:
    target: an object with the desired structure (e.g. freshly initialised params).
    state: a state dict, as produced by ``to_state_dict`` or read from bytes.
    name: the name of the root in error paths.
    strict: also check that every array leaf of ``state`` has the shape and dtype of
      the corresponding ``target`` leaf (targets may be arrays, numpy scalars or
      ``jax.ShapeDtypeStruct``; Python number targets accept any 0-d value), and reject
      dict keys of ``state`` that ``target`` lacks. Without it, as in Flax, leaves are
      taken as they are and extra keys are ignored.

  Returns:
    A copy of ``target`` holding the values of ``state``.

  Raises:
    RestoreMismatchError: with ``strict=True``, at the first leaf or key that differs.

  Example:

  >>> import numpy as np
  >>> from flaxlike import serialization
  >>> target = {'w': np.zeros((2,), np.float32)}
  >>> serialization.from_state_dict(target, {'w': np.ones((3,), np.float32)})['w'].shape
  (3,)
  >>> serialization.from_state_dict(target, {'w': np.ones((3,), np.float32)}, strict=True)
  Traceback (most recent call last):
  ...
  flaxlike.errors.RestoreMismatchError: Restored value at "./w" does not match the target: expected shape (2,) dtype float32, found shape (3,) dtype float32. ...
  """
  if strict and not _path.strict:
    _path.strict = True
    try:
      return from_state_dict(target, state, name)
    finally:
      _path.strict = False
  handler: tuple[Any, Callable[[Any, Any], Any]] | None
  if _is_namedtuple(target):
    handler = (None, _restore_namedtuple)
  else:
    handler = _STATE_DICT_REGISTRY.get(type(target))
  with _entering(name):
    if handler is None:
      if (type(state) is dict and _KEY_MARKER in state) or (
        _is_key_dtype(getattr(target, 'dtype', None)) and not isinstance(state, dict)
      ):
        state = _restore_key(target, state)
      if _path.strict:
        _check_leaf(target, state)
      return state
    if state is None and isinstance(target, (dict, FrozenDict, list, tuple)) and not target:
      # Orbax stores an empty container (an optimizer's EmptyState, an empty dict) as
      # None, so a raw Orbax restore has None where the target is empty.
      return target
    if _path.strict and not isinstance(state, dict):
      raise _not_a_state_dict(target, state)
    return handler[1](target, state)


def _describe(x: Any) -> str:
  if hasattr(x, 'shape') and hasattr(x, 'dtype'):
    dt = x.dtype
    return f'shape {tuple(x.shape)} dtype {dt if _is_key_dtype(dt) else np.dtype(dt).name}'
  return f'{type(x).__name__} {x!r:.60}'


def _same_dtype(a: Any, b: Any) -> bool:
  if _is_key_dtype(a) or _is_key_dtype(b):
    return a == b
  return np.dtype(a) == np.dtype(b)


def _check_leaf(target: Any, state: Any) -> None:
  if hasattr(target, 'shape') and hasattr(target, 'dtype'):
    if not (hasattr(state, 'shape') and hasattr(state, 'dtype')):
      raise RestoreMismatchError(current_path(), _describe(target), _describe(state))
    if tuple(target.shape) != tuple(state.shape) or not _same_dtype(target.dtype, state.dtype):
      raise RestoreMismatchError(current_path(), _describe(target), _describe(state))
  elif type(target) in (bool, int, float, complex):
    # A step counter is a Python int after create() and a 0-d array after a jitted
    # update; both are the same leaf.
    if isinstance(state, (bool, int, float, complex)):
      return
    if getattr(state, 'shape', None) != ():
      raise RestoreMismatchError(
        current_path(), f'a scalar like {type(target).__name__} {target!r:.60}', _describe(state)
      )


def _dict_state_dict(xs: dict) -> dict[str, Any]:
  str_keys = {str(k) for k in xs}
  if len(str_keys) != len(xs):
    raise ValueError(
      'Dict keys do not have a unique string representation: '
      f'{[k for k in xs]} map to {sorted(str_keys)}.'
    )
  plain = _PLAIN_LEAF_TYPES
  return {str(k): v if type(v) in plain else to_state_dict(v) for k, v in xs.items()}


_STRUCTURE_FIX = (
  'Fix: restore into a target with the structure the data was saved with (the same model '
  'configuration), or convert the state dict first; from_bytes(None, data) shows what the '
  'data holds.'
)


def _set_repr(keys: Any) -> str:
  # Linen prints Python sets; sorting keeps the message stable for several keys.
  return '{' + ', '.join(repr(k) for k in sorted(keys, key=str)) + '}'


def _structure_error(linen_message: str, expected: str, found: str) -> ValueError:
  """The error for a state dict whose structure differs from the target's.

  With ``strict=True`` a ``RestoreMismatchError``; otherwise the ``ValueError`` Linen
  raises, with Linen's exact message (code matches it literally) and the fix as a note
  that tracebacks show.
  """
  if _path.strict:
    return RestoreMismatchError(current_path(), expected, found, linen_message)
  err = ValueError(linen_message)
  err.add_note(f'Expected {expected}, found {found}. {_STRUCTURE_FIX}')
  return err


def _not_a_state_dict(target: Any, state: Any) -> ValueError:
  return _structure_error(
    f'The state dict at path {current_path()} for a {type(target).__name__} must be a dict',
    f'a state dict (dict) for {type(target).__name__}',
    _describe(state),
  )


def _restore_dict(xs: dict, states: dict) -> dict:
  if not hasattr(states, 'keys'):
    raise _not_a_state_dict(xs, states)
  missing = {str(k) for k in xs} - states.keys()
  if missing:
    raise _structure_error(
      'The target dict keys and state dict keys do not match, target dict contains keys '
      f'{_set_repr(missing)} which are not present in state dict at path {current_path()}',
      f'the target keys {sorted(str(k) for k in xs)}',
      f'no entry for {", ".join(f"{current_path()}/{k}" for k in sorted(missing))}',
    )
  if _path.strict and len(states) != len(xs):
    known = {str(k) for k in xs}
    extra = [k for k in states if k not in known]
    raise RestoreMismatchError(
      current_path(),
      f'only the target keys {sorted(known)}',
      f'extra keys {extra} at {", ".join(f"{current_path()}/{k}" for k in extra)}',
    )
  return {k: from_state_dict(v, states[str(k)], name=str(k)) for k, v in xs.items()}


def _list_state_dict(xs) -> dict[str, Any]:
  plain = _PLAIN_LEAF_TYPES
  return {str(i): x if type(x) in plain else to_state_dict(x) for i, x in enumerate(xs)}


def _restore_list(xs: list, states: dict) -> list:
  if not hasattr(states, 'keys'):
    raise _not_a_state_dict(xs, states)
  if len(states) != len(xs):
    raise _structure_error(
      'The size of the list and the state dict do not match, '
      f'got {len(xs)} and {len(states)} at path {current_path()}',
      f'a list of {len(xs)} entries',
      f'{len(states)} entries',
    )
  keys = [str(i) for i in range(len(xs))]
  if any(k not in states for k in keys):
    # Linen fails here with a bare KeyError.
    found = sorted(states, key=str)
    raise _structure_error(
      f'The list entries of the state dict at path {current_path()} must be keyed '
      f'"0".."{len(xs) - 1}"',
      f'the keys {keys}',
      f'the keys {found!r:.200}',
    )
  return [from_state_dict(x, states[k], name=k) for k, x in zip(keys, xs, strict=True)]


def _restore_tuple(xs: tuple, states: dict) -> tuple:
  return tuple(_restore_list(list(xs), states))


def _namedtuple_state_dict(nt) -> dict[str, Any]:
  return {name: to_state_dict(getattr(nt, name)) for name in nt._fields}


def _restore_namedtuple(xs: Any, state_dict: Any) -> Any:
  # Outside strict mode any value reaches here; a non-mapping is reported as the other
  # container handlers report it.
  if not hasattr(state_dict, 'keys'):
    raise _not_a_state_dict(xs, state_dict)
  # Files written before 2022 store namedtuples as {'name', 'fields', 'values'}.
  if set(state_dict) == {'name', 'fields', 'values'}:
    state_dict = {
      state_dict['fields'][str(i)]: state_dict['values'][str(i)]
      for i in range(len(state_dict['fields']))
    }
  sd_keys, tgt_keys = set(state_dict), set(xs._fields)
  if sd_keys != tgt_keys:
    raise _structure_error(
      'The field names of the state dict and the named tuple do not match, got '
      f'{_set_repr(sd_keys)} and {_set_repr(tgt_keys)} at path {current_path()}',
      f'the fields {sorted(tgt_keys)} of {type(xs).__name__}',
      f'the keys {sorted(sd_keys, key=str)!r:.200}',
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
