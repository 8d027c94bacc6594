"""Conversion of Python objects to and from state dicts and Flax-compatible msgpack bytes.

A state dict is what gets written to disk: containers become dicts with string keys and
leaves stay as they are. Types opt in through ``register_serialization_state``; dicts,
FrozenDicts, lists, tuples, namedtuples, ``jax.tree_util.Partial`` and ``struct``
dataclasses are built in. Lookup uses the exact type, so subclasses register separately.

Wire format (byte-identical to ``flax.serialization.to_bytes``)
----------------------------------------------------------------
The document is one msgpack object, written with msgpack-python's defaults for
``use_bin_type=True``: the smallest int/str/bin/map/array header, floats always float64.

* ``dict`` -> map (keys written as given, in insertion order); ``list`` -> array;
  ``None``/``bool``/``int``/``float``/``str``/``bytes`` -> native msgpack. Types are
  matched exactly (``strict_types``): tuples and subclasses of dict/list/int are
  rejected, ``to_bytes`` never produces them because the state dict turns them into dicts.
* ext 1 (ndarray, also 0-d and jax arrays) and ext 3 (numpy scalar) carry the payload
  ``[shape: array of ints, dtype.name: str, data: bin]`` packed as its own msgpack
  document; data is the C-order bytes. The ext header is fixext1/2/4/8/16 when the
  payload length is exactly 1/2/4/8/16, else ext8/ext16/ext32.
* ext 2 (Python ``complex``) carries the msgpack array ``[real, imag]`` of two float64.
* An ndarray of more than ``MAX_CHUNK_SIZE`` bytes that sits at the root or under dict
  values (not inside lists, as in Flax) is replaced by the map
  ``{"__msgpack_chunked_array__": True, "shape": {"0": d0, ...}, "chunks": {"0": a0, ...}}``
  whose chunks are 1-d ext-1 arrays of ``max(1, int(MAX_CHUNK_SIZE / itemsize))`` elements.

Where flaxlike differs from Flax, on purpose and without changing what Flax reads:

* arrays are always written little-endian (Flax writes big-endian bytes unconverted and
  reads them back as little-endian);
* ``msgpack_serialize(in_place=False)`` keeps every dict's insertion order instead of
  sorting the keys (Flax sorts, and fails on mixed int/str keys);
* only bool, (u)int8-64, float16/32/64, complex64/128 and the ml_dtypes types
  (bfloat16, float8_*, int4, ...) are written or read; anything else is refused at save
  time, so every file we write can be read back;
* the reader is bounded and strict: every declared length is checked against the bytes
  that remain before anything is allocated, nesting is limited to ``MAX_DEPTH``, and
  every failure is a ``flaxlike.errors.MsgpackDecodeError`` naming the path. Decoded
  arrays are fresh, aligned, writable numpy arrays (arrays of ``_BIG`` bytes or more are
  copied exactly once from the input, where Flax makes two copies and returns read-only
  views).

The reader has two paths with one behaviour. In-memory documents first go through
msgpack's C decoder, with every length limit set to the input size and an ``ext_hook``
that decodes small arrays (their validated headers cached by their bytes); a walk of the
result then applies the rules the C decoder lacks (``MAX_DEPTH``, no timestamps) and
reassembles chunked arrays. Anything else (a big array, any error) hands the document to
our own parser, which reads files incrementally, copies big array data straight into the
new array and names the path and byte offset of any problem. For in-memory documents it
validates the whole document first and then fills the big arrays, on up to four threads
when they hold 8 MiB or more. The C path only ever accepts
documents the parser accepts, with the same result (tested on fuzzed documents).
"""

from __future__ import annotations

import concurrent.futures
import io
import math
import os
import struct as _struct
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import jax
import msgpack
import numpy as np

from flaxlike.core.frozen_dict import FrozenDict
from flaxlike.errors import MsgpackDecodeError, RestoreMismatchError


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
  if _is_namedtuple(target):
    handler = (None, _restore_namedtuple)
  else:
    handler = _STATE_DICT_REGISTRY.get(type(target))
  with _entering(name):
    if handler is None:
      if _path.strict:
        _check_leaf(target, state)
      return state
    if state is None and isinstance(target, (dict, FrozenDict, list, tuple)) and not target:
      # Orbax stores an empty container (an optimizer's EmptyState, an empty dict) as
      # None, so a raw Orbax restore has None where the target is empty.
      return target
    if _path.strict and not isinstance(state, dict):
      raise RestoreMismatchError(
        current_path(), f'a state dict (dict) for {type(target).__name__}', _describe(state)
      )
    return handler[1](target, state)


def _describe(x: Any) -> str:
  if hasattr(x, 'shape') and hasattr(x, 'dtype'):
    return f'shape {tuple(x.shape)} dtype {np.dtype(x.dtype).name}'
  return f'{type(x).__name__} {x!r:.60}'


def _check_leaf(target: Any, state: Any) -> None:
  if hasattr(target, 'shape') and hasattr(target, 'dtype'):
    if not (hasattr(state, 'shape') and hasattr(state, 'dtype')):
      raise RestoreMismatchError(current_path(), _describe(target), _describe(state))
    if tuple(target.shape) != tuple(state.shape) or np.dtype(target.dtype) != np.dtype(state.dtype):
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
  return {str(k): to_state_dict(v) for k, v in xs.items()}


def _restore_dict(xs: dict, states: dict) -> dict:
  missing = [str(k) for k in xs if str(k) not in states]
  if missing:
    paths = ', '.join(f'{current_path()}/{k}' for k in missing)
    raise ValueError(
      f'The target dict keys and state dict keys do not match, target dict contains '
      f'keys {missing} which are not present in state dict at path {paths}'
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


#################################################
# msgpack encoding
#################################################

# Module attributes read at call time, so tests can lower them.
MAX_CHUNK_SIZE = 2**30
"""Arrays larger than this many bytes are split into chunks (Flax's value)."""
MAX_DEPTH = 1000
"""Deepest nesting of maps/arrays the reader accepts."""

_CHUNK_KEY = '__msgpack_chunked_array__'
_EXT_NDARRAY, _EXT_COMPLEX, _EXT_NPSCALAR = 1, 2, 3
# msgpack-python's Packer refuses deeper structures with the same limit.
_MAX_ENCODE_DEPTH = 511
# Array data at least this big is handed to the output as a buffer instead of being
# copied into the small-item buffer first.
_BIG = 1 << 14


def _known_dtypes() -> dict[str, np.dtype]:
  types: list[Any] = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
  ]
  try:
    import ml_dtypes
  except ImportError:  # pragma: no cover - jax always ships ml_dtypes
    ml_dtypes = None
  for name in (
    'bfloat16',
    'float8_e3m4',
    'float8_e4m3',
    'float8_e4m3b11fnuz',
    'float8_e4m3fn',
    'float8_e4m3fnuz',
    'float8_e5m2',
    'float8_e5m2fnuz',
    'float8_e8m0fnu',
    'float4_e2m1fn',
    'float6_e2m3fn',
    'float6_e3m2fn',
    'int2',
    'int4',
    'uint2',
    'uint4',
  ):
    if hasattr(ml_dtypes, name):
      types.append(getattr(ml_dtypes, name))
  return {np.dtype(t).name: np.dtype(t) for t in types}


# Only these names are ever turned into dtypes: np.dtype() on a name from a file could
# build object or structured dtypes.
_DTYPES = _known_dtypes()
# dtype.name is computed in Python by numpy on every access; encode it once per dtype.
_PACKED_NAMES = {dt: msgpack.packb(name) for name, dt in _DTYPES.items()}
_DTYPES_BY_RAW = {name.encode(): dt for name, dt in _DTYPES.items()}


def _map_header(n: int) -> bytes:
  if n < 16:
    return bytes((0x80 | n,))
  if n < 0x10000:
    return b'\xde' + n.to_bytes(2, 'big')
  return b'\xdf' + n.to_bytes(4, 'big')


def _array_header(n: int) -> bytes:
  if n < 16:
    return bytes((0x90 | n,))
  if n < 0x10000:
    return b'\xdc' + n.to_bytes(2, 'big')
  return b'\xdd' + n.to_bytes(4, 'big')


def _bin_header(n: int) -> bytes:
  if n < 0x100:
    return b'\xc4' + n.to_bytes(1, 'big')
  if n < 0x10000:
    return b'\xc5' + n.to_bytes(2, 'big')
  if n < 0x100000000:
    return b'\xc6' + n.to_bytes(4, 'big')
  raise ValueError(f'{n} bytes do not fit a msgpack bin (limit 2**32 - 1)')


_FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def _ext_header(code: int, n: int) -> bytes:
  if n in _FIXEXT:
    return bytes((_FIXEXT[n], code))
  if n < 0x100:
    return bytes((0xC7, n, code))
  if n < 0x10000:
    return b'\xc8' + n.to_bytes(2, 'big') + bytes((code,))
  if n < 0x100000000:
    return b'\xc9' + n.to_bytes(4, 'big') + bytes((code,))
  raise ValueError(f'an ext payload of {n} bytes does not fit msgpack (limit 2**32 - 1)')


def _path_str(path: Any) -> str:
  """Formats a lazy path: '.' or nested ``(parent, key)`` pairs (built per entry because
  formatting strings for every leaf would dominate the encoding of small arrays)."""
  keys = []
  while type(path) is tuple:
    path, key = path
    keys.append(str(key))
  return '/'.join([path, *reversed(keys)])


def _wire_array(x: Any, path: Any) -> np.ndarray:
  """``x`` as a C-contiguous little-endian ndarray of a supported dtype, copying only
  when the layout or byte order requires it."""
  arr = np.asarray(x)
  dt = arr.dtype
  if dt.hasobject or dt.isalignedstruct:
    raise ValueError(f'Object and structured arrays cannot be serialized (at {_path_str(path)}).')
  if dt.byteorder == '>' or (dt.byteorder == '=' and not _LITTLE):
    arr = arr.astype(dt.newbyteorder('<'))
  if arr.dtype not in _PACKED_NAMES:
    raise ValueError(
      f'dtype {dt} at {_path_str(path)} is not supported: only bool, (u)int8-64, '
      f'float16/32/64, complex64/128 and ml_dtypes types ({", ".join(sorted(_DTYPES))}) are '
      'written. Convert the array first, e.g. with .astype(np.float32).'
    )
  if not arr.flags.c_contiguous:
    arr = np.ascontiguousarray(arr)
  return arr


_LITTLE = np.little_endian


class _Writer:
  """Collects the encoding: small items are batched in a bytearray, large array data
  goes out as buffers so it is copied only once (into the result or the file)."""

  def __init__(self, sink: Callable[[Any], Any] | None):
    self.sink = sink
    self.parts: list[Any] = []
    self.small = bytearray()

  def flush_small(self):
    if self.small:
      if self.sink is None:
        self.parts.append(bytes(self.small))
      else:
        self.sink(self.small)
      self.small = bytearray()

  def big(self, buf: memoryview):
    self.flush_small()
    if self.sink is None:
      self.parts.append(buf)
    else:
      self.sink(buf)

  def result(self) -> bytes:
    self.flush_small()
    return b''.join(self.parts)


def _array_bytes(arr: np.ndarray) -> memoryview:
  # reshape(-1) of a contiguous array is a view; viewing as uint8 gives a buffer even for
  # ml_dtypes types that PEP 3118 cannot describe.
  return memoryview(arr.reshape(-1).view(np.uint8))


# Everything written before the data of a small ndarray (ext header and payload header)
# depends only on its shape and dtype; trees of many small arrays repeat a few of them.
_SMALL_PREFIXES: dict[tuple[tuple[int, ...], np.dtype], bytes] = {}
_MAX_CACHED_PREFIXES = 1024


def _pack_ndarray(code: int, arr: np.ndarray, out: _Writer, packer: msgpack.Packer):
  nbytes = arr.nbytes
  head = b'\x93' + packer.pack(list(arr.shape)) + _PACKED_NAMES[arr.dtype]
  head += _bin_header(nbytes)
  prefix = _ext_header(code, len(head) + nbytes) + head
  out.small += prefix
  if nbytes >= _BIG:
    out.big(_array_bytes(arr))
    return
  out.small += arr.tobytes()
  if code == _EXT_NDARRAY and len(_SMALL_PREFIXES) < _MAX_CACHED_PREFIXES:
    _SMALL_PREFIXES[arr.shape, arr.dtype] = prefix


def _pack_chunked(arr: np.ndarray, out: _Writer, packer: msgpack.Packer):
  # Written directly rather than as a dict through _encode: the chunks must not be
  # chunked again (a single element can exceed a lowered threshold).
  per_chunk = max(1, int(MAX_CHUNK_SIZE / arr.dtype.itemsize))
  flat = arr.reshape(-1)
  starts = range(0, flat.size, per_chunk)
  out.small += _map_header(3) + packer.pack(_CHUNK_KEY) + packer.pack(True)
  out.small += packer.pack('shape') + _map_header(arr.ndim)
  for i, d in enumerate(arr.shape):
    out.small += packer.pack(str(i)) + packer.pack(int(d))
  out.small += packer.pack('chunks') + _map_header(len(starts))
  for i, start in enumerate(starts):
    out.small += packer.pack(str(i))
    _pack_ndarray(_EXT_NDARRAY, flat[start : start + per_chunk], out, packer)


_SCALAR_TYPES = frozenset((type(None), bool, int, float, str, bytes))


def _encode(x: Any, out: _Writer, packer: msgpack.Packer, path: Any, depth: int, in_dict: bool):
  t = type(x)
  if t is np.ndarray:
    # Fast path for small native arrays seen before (the prefix cache holds only
    # supported native dtypes); chunking needs more than _BIG bytes, so it never applies.
    prefix = _SMALL_PREFIXES.get((x.shape, x.dtype))
    if prefix is not None and x.flags.c_contiguous and _LITTLE and x.nbytes <= MAX_CHUNK_SIZE:
      out.small += prefix
      out.small += x.tobytes()
      return
  elif t in _SCALAR_TYPES:
    out.small += packer.pack(x)
    return
  if depth > _MAX_ENCODE_DEPTH:
    raise ValueError(f'Nesting deeper than {_MAX_ENCODE_DEPTH} levels at {_path_str(path)}.')
  if t is dict:
    out.small += _map_header(len(x))
    for k, v in x.items():
      if type(k) not in _SCALAR_TYPES:
        raise TypeError(
          f'can not serialize dict key {k!r} of type {type(k).__name__} at {_path_str(path)}'
        )
      out.small += packer.pack(k)
      _encode(v, out, packer, (path, k), depth + 1, True)
    return
  if t is list:
    out.small += _array_header(len(x))
    for i, v in enumerate(x):
      _encode(v, out, packer, (path, i), depth + 1, False)
    return
  if isinstance(x, (np.ndarray, jax.Array)):
    arr = _wire_array(x, path)
    # As in Flax, only arrays at the root or under dict values are chunked; arrays in
    # lists are not, because Flax's reader would not reassemble them there.
    if in_dict and arr.size * arr.dtype.itemsize > MAX_CHUNK_SIZE:
      _pack_chunked(arr, out, packer)
    else:
      _pack_ndarray(_EXT_NDARRAY, arr, out, packer)
    return
  if isinstance(x, np.generic):
    _pack_ndarray(_EXT_NPSCALAR, _wire_array(x, path), out, packer)
    return
  if isinstance(x, complex):
    payload = b'\x92\xcb' + _struct.pack('>d', x.real) + b'\xcb' + _struct.pack('>d', x.imag)
    out.small += _ext_header(_EXT_COMPLEX, len(payload)) + payload
    return
  if t is bytearray or t is memoryview:
    out.small += packer.pack(x)
    return
  raise TypeError(
    f"can not serialize '{t.__name__}' object at {_path_str(path)}: msgpack_serialize takes "
    'dicts, lists, arrays and scalars; convert other containers with to_state_dict '
    '(to_bytes does).'
  )


def _serialize(pytree: Any, sink: Callable[[Any], Any] | None) -> bytes | None:
  packer = msgpack.Packer(use_bin_type=True, strict_types=True)
  out = _Writer(sink)
  _encode(pytree, out, packer, '.', 0, True)
  if sink is None:
    return out.result()
  out.flush_small()
  return None


def msgpack_serialize(pytree: Any, in_place: bool = False) -> bytes:
  """Encodes a tree of dicts, lists, arrays and scalars as msgpack bytes.

  The output is byte-identical to ``flax.serialization.msgpack_serialize(pytree,
  in_place=True)``. Unlike Flax, ``in_place=False`` neither sorts dict keys nor fails on
  mixed int/str keys: keys are always written in insertion order, and the input is
  never modified whatever ``in_place`` says (the argument is kept for compatibility).

  Args:
    pytree: dicts, lists, numpy/jax arrays, numpy scalars and Python scalars.
    in_place: accepted for compatibility with Flax; has no effect.

  Returns:
    The encoded bytes.

  Raises:
    TypeError: for tuples, dict subclasses and other types msgpack cannot encode.
    ValueError: for object, structured or otherwise unsupported dtypes.

  Example:

  >>> import numpy as np
  >>> from flaxlike import serialization
  >>> serialization.msgpack_serialize({'s': np.float32(1.5)}).hex()
  '81a173d8039390a7666c6f61743332c4040000c03f'
  >>> serialization.msgpack_serialize({2: 'int key', 'a': 1})
  b'\\x82\\x02\\xa7int key\\xa1a\\x01'
  """
  del in_place
  return _serialize(pytree, None)  # type: ignore[return-value]


def to_bytes(target: Any) -> bytes:
  """Serializes ``target`` to Flax-compatible msgpack bytes.

  Equivalent to ``msgpack_serialize(to_state_dict(target))``; the array data is copied
  once, into the returned bytes.

  Example:

  >>> import numpy as np
  >>> from flaxlike import serialization
  >>> data = serialization.to_bytes({'a': np.arange(3, dtype=np.int8)})
  >>> data.hex()
  '81a161c70d01939103a4696e7438c403000102'
  """
  return _serialize(to_state_dict(target), None)  # type: ignore[return-value]


def write_bytes(fileobj: Any, target: Any) -> None:
  """Writes ``to_bytes(target)`` to a binary file object as a stream.

  Array data goes straight from the arrays to ``fileobj.write`` (as memoryviews); the
  document is never assembled in memory. Small items are batched into writes of up to
  about a megabyte.

  Args:
    fileobj: anything with ``write(buffer)``, opened in binary mode.
    target: the object to serialize.

  Example:

  >>> import io, numpy as np
  >>> from flaxlike import serialization
  >>> f = io.BytesIO()
  >>> serialization.write_bytes(f, {'a': np.ones(2)})
  >>> f.getvalue() == serialization.to_bytes({'a': np.ones(2)})
  True
  """
  writer = fileobj.write
  pending = bytearray()

  def sink(buf):
    nonlocal pending
    if isinstance(buf, bytearray) and len(buf) < (1 << 20):
      pending += buf
      if len(pending) < (1 << 20):
        return
      buf = pending
      pending = bytearray()
    elif pending:
      writer(pending)
      pending = bytearray()
    writer(buf)

  _serialize(to_state_dict(target), sink)
  if pending:
    writer(pending)


#################################################
# msgpack decoding
#################################################

_READ_BLOCK = 1 << 16
# When the size of a stream is unknown, large strings and arrays are read in pieces of
# this size so that allocation follows the data actually present, not a declared length.
_UNKNOWN_SIZE_PIECE = 1 << 24


class _Source:
  """Bytes to parse, from memory or from a file, with bounds checks on every read."""

  def __init__(self, data: Any = None, fileobj: Any = None):
    self.file = fileobj
    self.pos = 0  # position in self.buf
    self.base = 0  # stream offset of self.buf[0]
    # In-memory big array data: (destination bytes, source offset), copied at the end.
    self.pending: list[tuple[np.ndarray, int]] = []
    # id() of each array whose data is still pending -> its index in `pending`, so that a
    # chunked array reassembled before the copies run can take over its chunks' copies.
    self.deferred: dict[int, int] = {}
    if fileobj is None:
      self.buf = data if isinstance(data, bytes) else memoryview(data).cast('B')
      self.size: int | None = len(self.buf)
    else:
      self.buf = b''
      self.size = _stream_size(fileobj)
      if self.size is not None:
        self.base = fileobj.tell()

  def offset(self) -> int:
    return self.base + self.pos

  def remaining(self) -> int | None:
    # For files, `size` is the end offset and `base` starts at the initial position.
    return None if self.size is None else self.size - self.offset()

  def fail(self, problem: str, path: str | None) -> MsgpackDecodeError:
    return MsgpackDecodeError(problem, path, self.offset())

  def need(self, n: int, path: str, what: str) -> None:
    if self.pos + n <= len(self.buf):
      return
    rem = self.remaining()
    if rem is not None and n > rem:
      raise self.fail(f'{what} needs {n} bytes but only {rem} remain (truncated data)', path)
    if self.file is None:
      raise self.fail(f'{what} needs {n} bytes but the data ends (truncated data)', path)
    parts = [bytes(self.buf[self.pos :])]
    have = len(parts[0])
    while have < n:
      piece = self.file.read(max(_READ_BLOCK, min(n - have, _UNKNOWN_SIZE_PIECE)))
      if not piece:
        self.base += self.pos
        self.buf, self.pos = b''.join(parts), 0
        raise self.fail(f'{what} needs {n} bytes but the file ends (truncated data)', path)
      parts.append(piece)
      have += len(piece)
    self.base += self.pos
    self.buf, self.pos = b''.join(parts), 0

  def take(self, n: int, path: str, what: str) -> Any:
    self.need(n, path, what)
    start = self.pos
    self.pos += n
    return self.buf[start : self.pos]

  def byte(self, path: str) -> int:
    if self.pos < len(self.buf):
      b = self.buf[self.pos]
    else:
      self.need(1, path, 'a msgpack header')
      b = self.buf[self.pos]
    self.pos += 1
    return b

  def uint(self, nbytes: int, path: str) -> int:
    return int.from_bytes(self.take(nbytes, path, 'a length or integer'), 'big')

  def read_into(self, out: memoryview, path: str) -> None:
    """Fills ``out`` (bytes) from the stream, copying straight into it."""
    n = out.nbytes
    rem = self.remaining()
    if rem is not None and n > rem:
      raise self.fail(f'array data needs {n} bytes but only {rem} remain (truncated)', path)
    avail = min(n, len(self.buf) - self.pos)
    out[:avail] = memoryview(self.buf)[self.pos : self.pos + avail]
    self.pos += avail
    done = avail
    if done == n:
      return
    self.base += self.pos
    self.buf, self.pos = b'', 0
    while done < n:
      got = self.file.readinto(out[done:]) if hasattr(self.file, 'readinto') else None
      if got is None:
        piece = self.file.read(min(n - done, _UNKNOWN_SIZE_PIECE))
        got = len(piece)
        out[done : done + got] = piece
      if not got:
        raise self.fail(f'array data needs {n} bytes but the file ends (truncated)', path)
      done += got
      self.base += got


def _stream_size(f: Any) -> int | None:
  """End offset of a seekable stream (to bound declared lengths), None otherwise."""
  try:
    here = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(here)
    return end
  except (AttributeError, OSError, ValueError):
    return None


class _Frame:
  __slots__ = ('chain', 'container', 'is_map', 'key', 'left', 'path')

  def __init__(self, container, left, path, chain):
    self.container = container
    self.is_map = type(container) is dict
    self.left = left
    self.key = _NO_KEY
    self.path = path
    self.chain = chain  # reached from the root through dicts only (chunk reassembly)


_NO_KEY = object()
_PUSHED = object()


def _decode(src: _Source) -> Any:
  """Parses one msgpack object; iterative so that depth is bounded by MAX_DEPTH, not by
  Python's recursion limit."""
  stack: list[_Frame] = []
  while True:
    if stack:
      top = stack[-1]
      if top.left == 0:
        stack.pop()
        value = top.container
        if top.is_map and top.chain and _CHUNK_KEY in value:
          try:
            value = _unchunk(value, src)
          except _Invalid as e:
            raise src.fail(e.problem, top.path) from None
      else:
        if not top.is_map:
          value = _read_value(src, f'{top.path}/{len(top.container)}', stack, False, False)
        elif top.key is _NO_KEY:
          value = _read_value(src, top.path, stack, True, False)
        else:
          value = _read_value(src, f'{top.path}/{top.key}', stack, False, top.chain)
        if value is _PUSHED:
          continue
    else:
      value = _read_value(src, '.', stack, False, True)
      if value is _PUSHED:
        continue
    if not stack:
      return value
    parent = stack[-1]
    if not parent.is_map:
      parent.container.append(value)
      parent.left -= 1
    elif parent.key is _NO_KEY:
      try:
        hash(value)
      except TypeError:
        raise src.fail(
          f'a map key of type {type(value).__name__} is not hashable', parent.path
        ) from None
      parent.key = value
    else:
      parent.container[parent.key] = value
      parent.key = _NO_KEY
      parent.left -= 1


def _push(src, stack, container, n, path, is_key, chain, min_bytes):
  kind = 'map' if min_bytes == 2 else 'array'
  if is_key:
    raise src.fail(f'a map key is a {kind}; keys must be scalars', path)
  if len(stack) >= MAX_DEPTH:
    raise src.fail(f'nesting deeper than MAX_DEPTH={MAX_DEPTH}', path)
  rem = src.remaining()
  if rem is not None and n * min_bytes > rem:
    raise src.fail(f'a {kind} declares {n} entries but only {rem} bytes remain', path)
  stack.append(_Frame(container, n, path, chain))
  return _PUSHED


def _read_str(src, n, path):
  raw = src.take(n, path, 'a string')
  try:
    return str(raw, 'utf-8')
  except UnicodeDecodeError as e:
    raise src.fail(f'a string is not valid UTF-8 ({e.reason})', path) from None


_INT_SIZES = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_SINT_SIZES = {0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
_FIXEXT_SIZES = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}


def _read_value(src: _Source, path: str, stack, is_key: bool, chain: bool) -> Any:
  b = src.byte(path)
  if b <= 0x7F:
    return b
  if b >= 0xE0:
    return b - 0x100
  if b >= 0xA0 and b <= 0xBF:
    return _read_str(src, b & 0x1F, path)
  if b <= 0x8F:
    return _push(src, stack, {}, b & 0x0F, path, is_key, chain, 2)
  if b <= 0x9F:
    return _push(src, stack, [], b & 0x0F, path, is_key, False, 1)
  if b == 0xC0:
    return None
  if b == 0xC2:
    return False
  if b == 0xC3:
    return True
  if b in _INT_SIZES:
    return src.uint(_INT_SIZES[b], path)
  if b in _SINT_SIZES:
    return int.from_bytes(src.take(_SINT_SIZES[b], path, 'an integer'), 'big', signed=True)
  if b == 0xCB:
    return _struct.unpack('>d', src.take(8, path, 'a float64'))[0]
  if b == 0xCA:
    return _struct.unpack('>f', src.take(4, path, 'a float32'))[0]
  if b in (0xD9, 0xDA, 0xDB):
    return _read_str(src, src.uint((1, 2, 4)[b - 0xD9], path), path)
  if b in (0xC4, 0xC5, 0xC6):
    return bytes(src.take(src.uint((1, 2, 4)[b - 0xC4], path), path, 'a bin'))
  if b in _FIXEXT_SIZES:
    return _read_ext(src, _FIXEXT_SIZES[b], path)
  if b in (0xC7, 0xC8, 0xC9):
    return _read_ext(src, src.uint((1, 2, 4)[b - 0xC7], path), path)
  if b in (0xDC, 0xDD):
    return _push(src, stack, [], src.uint((2, 4)[b - 0xDC], path), path, is_key, False, 1)
  if b in (0xDE, 0xDF):
    return _push(src, stack, {}, src.uint((2, 4)[b - 0xDE], path), path, is_key, chain, 2)
  raise src.fail(f'byte 0x{b:02x} is not a msgpack type', path)


class _Invalid(Exception):
  """A malformed payload found by a helper that does not know the document path; the
  caller turns it into a MsgpackDecodeError naming the path (``offset`` is relative to
  the buffer the helper was given, or None)."""

  def __init__(self, problem: str, offset: int | None = None):
    super().__init__(problem)
    self.problem = problem
    self.offset = offset


# The longest ndarray header the format allows: array marker, shape array32 of 64 uint64
# dims, a str32 dtype name of 64 bytes and a bin32 data header.
_MAX_NDARRAY_HEADER = 1 + 5 + 64 * 9 + 5 + 64 + 5


def _ndarray_header(buf: Any, pos: int, end: int) -> tuple[tuple[int, ...], np.dtype, int]:
  """Parses the ``[shape, dtype name, data]`` header of an ext 1/3 payload in
  ``buf[pos:end]`` and returns the shape, the dtype and where the data starts. The data is
  checked to fill the rest of the payload exactly and to match shape and dtype.

  Raises:
    _Invalid: with the offset in ``buf`` of the problem.
  """
  start = pos
  try:
    if buf[pos] != 0x93:
      raise _Invalid('an ndarray payload must be a msgpack array of 3 items', pos)
    b = buf[pos + 1]
    pos += 2
    if 0x90 <= b <= 0x9F:
      ndim = b & 0x0F
    elif b == 0xDC or b == 0xDD:
      k = 2 if b == 0xDC else 4
      ndim = int.from_bytes(buf[pos : pos + k], 'big')
      pos += k
    else:
      raise _Invalid(f'an ndarray shape must be an array, found byte 0x{b:02x}', pos - 1)
    if ndim > 64:
      raise _Invalid(f'an ndarray declares {ndim} dimensions (numpy allows 64)', pos)
    shape = []
    for _ in range(ndim):
      b = buf[pos]
      pos += 1
      if b <= 0x7F:
        shape.append(b)
      elif b in _INT_SIZES:
        k = _INT_SIZES[b]
        shape.append(int.from_bytes(buf[pos : pos + k], 'big'))
        pos += k
      else:
        raise _Invalid(
          f'an array dimension must be a non-negative integer, found byte 0x{b:02x}', pos - 1
        )
    # Old writers packed the dtype name as str or bin, and the data as str; all accepted.
    name_len, pos = _str_or_bin_len(buf, pos, 'dtype name')
    if name_len > 64:
      raise _Invalid(f'a dtype name of {name_len} bytes', pos)
    raw_name = bytes(buf[pos : pos + name_len])
    pos += name_len
    nbytes, pos = _str_or_bin_len(buf, pos, 'data')
  except IndexError:
    raise _Invalid('the ndarray header is cut short by the end of its payload', end) from None
  if pos > end:
    raise _Invalid('the ndarray header is longer than its ext payload', end)
  dtype = _DTYPES_BY_RAW.get(raw_name)
  if dtype is None:
    raise _Invalid(
      f'unsupported dtype {raw_name!r:.80}; supported: {", ".join(sorted(_DTYPES))}', start
    )
  if pos + nbytes != end:
    raise _Invalid(
      f'the ext payload is {end - start} bytes but its ndarray header ({pos - start} bytes) '
      f'declares {nbytes} bytes of data',
      pos,
    )
  shape_t = tuple(shape)
  expected = math.prod(shape_t) * dtype.itemsize
  if expected != nbytes:
    raise _Invalid(
      f'shape {shape_t} of {dtype.name} needs {expected} bytes but the payload has {nbytes}',
      pos,
    )
  return shape_t, dtype, pos


def _str_or_bin_len(buf: Any, pos: int, what: str) -> tuple[int, int]:
  b = buf[pos]
  if 0xA0 <= b <= 0xBF:
    return b & 0x1F, pos + 1
  if 0xC4 <= b <= 0xC6 or 0xD9 <= b <= 0xDB:
    k = (1, 2, 4)[(b - 0xC4) if b <= 0xC6 else (b - 0xD9)]
    if pos + 1 + k > len(buf):
      raise IndexError
    return int.from_bytes(buf[pos + 1 : pos + 1 + k], 'big'), pos + 1 + k
  raise _Invalid(f'the ndarray payload {what} has msgpack type byte 0x{b:02x}', pos)


def _complex_from_payload(payload: bytes) -> complex:
  try:
    parts = msgpack.unpackb(payload)
  except Exception as e:  # noqa: BLE001 - any msgpack failure means a corrupt payload
    raise _Invalid(f'a complex (ext 2) payload is not msgpack ({e})') from None
  if type(parts) is not list or len(parts) != 2 or not all(type(p) in (int, float) for p in parts):
    raise _Invalid('a complex (ext 2) payload must be [real, imag]')
  return complex(parts[0], parts[1])


def _read_ext(src: _Source, n: int, path: str) -> Any:
  code = src.byte(path)
  if code >= 0x80:
    raise src.fail(f'reserved ext type {code - 0x100}', path)
  rem = src.remaining()
  if rem is not None and n > rem:
    raise src.fail(f'an ext declares {n} bytes but only {rem} remain (truncated)', path)
  try:
    if code == _EXT_NDARRAY or code == _EXT_NPSCALAR:
      arr = _read_ndarray(src, n, path)
      if code == _EXT_NDARRAY:
        return arr
      if arr.ndim != 0:
        raise _Invalid(f'a numpy scalar (ext 3) has shape {arr.shape}, expected ()')
      return arr[()]
    payload = bytes(src.take(n, path, 'an ext payload'))
    return (
      _complex_from_payload(payload) if code == _EXT_COMPLEX else msgpack.ExtType(code, payload)
    )
  except _Invalid as e:
    raise src.fail(e.problem, path) from None


def _read_ndarray(src: _Source, n: int, path: str) -> np.ndarray:
  # The header is parsed in place; for files, make sure all of it is buffered first.
  src.need(min(n, _MAX_NDARRAY_HEADER), path, 'an ndarray header')
  start = src.pos
  try:
    shape, dtype, h = _ndarray_header_cached(src.buf, start, n)
  except _Invalid as e:
    src.pos = e.offset if e.offset is not None else src.pos
    raise
  src.pos = start + h
  nbytes = n - h
  if src.size is None and nbytes > _UNKNOWN_SIZE_PIECE:
    # Stream of unknown size: read the data first so that a lying header cannot make us
    # allocate more than the stream really holds.
    data = bytes(src.take(nbytes, path, 'array data'))
    return np.frombuffer(data, dtype).reshape(shape).copy()
  try:
    arr = np.empty(shape, dtype)
  except (ValueError, MemoryError) as e:
    raise src.fail(f'cannot allocate shape {shape} of {dtype.name} ({e})', path) from None
  if nbytes:
    if src.file is not None:
      src.read_into(memoryview(arr.reshape(-1).view(np.uint8)), path)
    elif nbytes < _BIG:
      arr.reshape(-1).view(np.uint8)[:] = np.frombuffer(
        src.take(nbytes, path, 'array data'), np.uint8
      )
    else:
      src.need(nbytes, path, 'array data')
      src.deferred[id(arr)] = len(src.pending)
      src.pending.append((arr.reshape(-1).view(np.uint8), src.pos))
      src.pos += nbytes
  return arr


# Below this many bytes of big-array data, threads cost more than they save.
_PARALLEL_COPY_MIN_BYTES = 1 << 23
_copy_pool: Any = None
_copy_pool_lock = threading.Lock()


def _copy_pending(src: _Source) -> None:
  """Fills the big arrays of an in-memory document from its buffer.

  The copies run on a few threads when there is enough data: numpy releases the GIL
  while it copies, and on most machines several cores move memory (and take the first-
  touch page faults of fresh arrays) faster than one.
  """
  global _copy_pool
  pending, src.pending = src.pending, []
  if not pending:
    return
  buf = src.buf

  def copy(jobs):
    for dst, pos in jobs:
      np.copyto(dst, np.frombuffer(buf, np.uint8, dst.size, pos))

  total = sum(dst.size for dst, _ in pending)
  workers = min(4, os.cpu_count() or 1, len(pending))
  if workers < 2 or total < _PARALLEL_COPY_MIN_BYTES:
    copy(pending)
    return
  with _copy_pool_lock:
    if _copy_pool is None:
      _copy_pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix='flaxlike-copy')
  # Contiguous runs of about equal bytes, one per worker, so each reads sequentially.
  shares, share, filled = [], [], 0
  for job in pending:
    share.append(job)
    filled += job[0].size
    if filled * workers >= total * (len(shares) + 1) and len(shares) < workers - 1:
      shares.append(share)
      share = []
  shares.append(share)
  for future in [_copy_pool.submit(copy, jobs) for jobs in shares if jobs]:
    future.result()


def _unchunk(d: dict, src: _Source | None = None) -> np.ndarray:
  shape_d, chunks_d = d.get('shape'), d.get('chunks')
  if type(shape_d) is not dict or type(chunks_d) is not dict or not chunks_d:
    raise _Invalid('a chunked array needs "shape" and non-empty "chunks" maps')
  try:
    shape = tuple(shape_d[str(i)] for i in range(len(shape_d)))
    chunks = [chunks_d[str(i)] for i in range(len(chunks_d))]
  except KeyError as e:
    raise _Invalid(f'a chunked array lacks the entry {e}') from None
  if not all(type(s) is int and s >= 0 for s in shape):
    raise _Invalid(f'a chunked array has an invalid shape {shape!r:.80}')
  if not all(
    isinstance(c, np.ndarray) and c.ndim == 1 and c.dtype == chunks[0].dtype for c in chunks
  ):
    raise _Invalid('the chunks of a chunked array must be 1-d arrays of one dtype')
  total = sum(c.size for c in chunks)
  if total != math.prod(shape):
    raise _Invalid(f'chunks hold {total} elements but the shape is {shape}')
  out = np.empty(shape, chunks[0].dtype)
  out_bytes = out.reshape(-1).view(np.uint8)
  start = 0
  for chunk in chunks:
    end = start + chunk.nbytes
    job = src.deferred.pop(id(chunk), None) if src is not None else None
    if job is None:
      out_bytes[start:end] = chunk.view(np.uint8)
    else:
      # The chunk's data has not been copied out of the input yet (big arrays of in-memory
      # documents are filled after the whole document validates): copy it straight into
      # its place in the reassembled array instead, still once.
      src.pending[job] = (out_bytes[start:end], src.pending[job][1])
    start = end
  return out


class _SlowPath(Exception):
  """Raised inside the C-decoder fast path for anything it does not handle itself: the
  bounded Python parser then decodes the document, or reports exactly what is wrong."""


# Validated ndarray headers by their exact bytes, and the header length last seen for each
# payload length: a tree of many small arrays repeats a few headers, and a header's parse
# depends only on its bytes and the payload length, so a hit needs no parsing.
_HEADERS: dict[bytes, tuple[tuple[int, ...], np.dtype, int, int]] = {}
_HEADER_LEN_BY_SIZE: dict[int, int] = {}
_MAX_CACHED_HEADERS = 1024


def _small_ext(code: int, payload: bytes) -> Any:
  """ext_hook of the C decoder: decodes small ext payloads exactly as ``_read_ext`` does."""
  if code == _EXT_NDARRAY or code == _EXT_NPSCALAR:
    n = len(payload)
    if n >= _BIG:
      # Big arrays go through the parser, which copies their data once, straight from the
      # input into the new array; the C decoder has already made one copy by now.
      raise _SlowPath
    # _ndarray_header_cached's lookup, inlined: this runs once per small array.
    h = _HEADER_LEN_BY_SIZE.get(n)
    hit = None if h is None else _HEADERS.get(payload[:h])
    if hit is not None and hit[3] == n:
      shape, dtype = hit[0], hit[1]
    else:
      shape, dtype, h = _ndarray_header_cached(payload, 0, n)
    if h == n:  # no data: zero-size array
      arr = np.zeros(shape, dtype)
    else:
      arr = np.ndarray(shape, dtype, payload, h).copy()
    if code == _EXT_NDARRAY:
      return arr
    if arr.ndim != 0:
      raise _SlowPath
    return arr[()]
  if code == _EXT_COMPLEX:
    return _complex_from_payload(payload)
  if code < 0:
    raise _SlowPath
  return msgpack.ExtType(code, payload)


def _ndarray_header_cached(buf: Any, start: int, n: int) -> tuple[tuple[int, ...], np.dtype, int]:
  """``_ndarray_header`` of the ext payload ``buf[start:start + n]`` through the cache:
  (shape, dtype, header length)."""
  h = _HEADER_LEN_BY_SIZE.get(n)
  if h is not None:
    hit = _HEADERS.get(bytes(buf[start : start + h]))
    if hit is not None and hit[3] == n:
      return hit[0], hit[1], h
  shape, dtype, data_pos = _ndarray_header(buf, start, start + n)
  if len(_HEADERS) >= _MAX_CACHED_HEADERS:
    _HEADERS.clear()
    _HEADER_LEN_BY_SIZE.clear()
  h = data_pos - start
  _HEADERS[bytes(buf[start:data_pos])] = (shape, dtype, h, n)
  _HEADER_LEN_BY_SIZE[n] = h
  return shape, dtype, h


def _check_tree(x: Any, level: int, chain: bool) -> Any:
  """Applies the parser's rules to a tree from the C decoder: nesting within MAX_DEPTH and
  no msgpack timestamps (ext -1, which the C decoder converts itself); reassembles chunked
  arrays reached from the root through dicts. Returns ``x`` or its reassembled array."""
  if level > MAX_DEPTH:
    raise _SlowPath
  if type(x) is dict:
    for k, v in x.items():
      t = type(v)
      if t is dict:
        new = _check_tree(v, level + 1, chain)
        if new is not v:
          x[k] = new  # same key: allowed while iterating
      elif t is list:
        _check_tree(v, level + 1, False)
      elif t is _Timestamp:
        raise _SlowPath
      if type(k) is _Timestamp:
        raise _SlowPath
    if chain and _CHUNK_KEY in x:
      return _unchunk(x)
  else:
    for v in x:
      t = type(v)
      if t is dict or t is list:
        _check_tree(v, level + 1, False)
      elif t is _Timestamp:
        raise _SlowPath
  return x


_Timestamp = msgpack.Timestamp


def _fast_restore(data: Any) -> Any:
  """Decodes in-memory bytes with msgpack's C decoder. Every declared length is bounded
  by the input size before allocation (as in the parser), and anything the parser would
  treat differently raises, so the caller falls back to the parser."""
  n = memoryview(data).nbytes
  value = msgpack.unpackb(
    data,
    ext_hook=_small_ext,
    strict_map_key=False,
    max_str_len=n,
    max_bin_len=n,
    max_array_len=n,
    max_map_len=n // 2,
    max_ext_len=n,
  )
  t = type(value)
  if t is dict or t is list:
    return _check_tree(value, 1, True)
  if t is _Timestamp:
    raise _SlowPath
  return value


def _restore(src: _Source) -> Any:
  try:
    value = _decode(src)
  except MsgpackDecodeError:
    raise
  except RecursionError:  # pragma: no cover - the parser is iterative
    raise src.fail('nesting too deep', None) from None
  rem = src.remaining()
  if src.file is None or rem is not None:
    if rem:
      raise src.fail(f'{rem} bytes follow the end of the document', None)
  elif src.pos < len(src.buf) or src.file.read(1):
    raise src.fail('data follows the end of the document', None)
  _copy_pending(src)
  return value


def msgpack_restore(encoded_pytree: bytes) -> Any:
  """Decodes bytes written by ``msgpack_serialize``/``to_bytes`` (ours or Flax's).

  Maps come back as dicts (int keys allowed), arrays as writable numpy arrays (each
  copied once out of the input; never jax arrays), numpy scalars as numpy scalars,
  complex numbers as ``complex`` and unknown ext types as ``msgpack.ExtType``. Chunked
  arrays are reassembled.

  Args:
    encoded_pytree: bytes-like input.

  Returns:
    The decoded tree.

  Raises:
    MsgpackDecodeError: for anything but one complete valid document: truncation,
      corruption, trailing bytes, unsupported dtypes, nesting beyond ``MAX_DEPTH``.

  Example:

  >>> from flaxlike import serialization
  >>> serialization.msgpack_restore(bytes.fromhex('81a163c7130292cb3ff0000000000000cb4000000000000000'))
  {'c': (1+2j)}
  >>> serialization.msgpack_restore(b'\\x81\\xa1a')
  Traceback (most recent call last):
  ...
  flaxlike.errors.MsgpackDecodeError: Invalid msgpack data (at "./a", byte offset 3): a msgpack header needs 1 bytes but only 0 remain (truncated data). ...
  """
  try:
    return _fast_restore(encoded_pytree)
  except Exception:  # noqa: BLE001 - the parser decides, and names the problem
    return _restore(_Source(encoded_pytree))


def from_bytes(target: Any, encoded_bytes: Any, strict: bool = False) -> Any:
  """Restores ``target``'s structure from msgpack bytes (or a binary file object).

  Args:
    target: the structure to restore into; ``None`` returns the raw state dict.
    encoded_bytes: bytes from ``to_bytes`` (ours or Flax's), or a file object, which is
      then read as a stream like ``read_bytes``.
    strict: check shapes, dtypes and extra keys (see ``from_state_dict``).

  Example:

  >>> import numpy as np
  >>> from flaxlike import serialization
  >>> params = {'w': np.zeros(3, np.float32), 'layers': [np.int32(0)]}
  >>> data = serialization.to_bytes({'w': np.ones(3, np.float32), 'layers': [np.int32(7)]})
  >>> serialization.from_bytes(params, data)
  {'w': array([1., 1., 1.], dtype=float32), 'layers': [np.int32(7)]}
  """
  if hasattr(encoded_bytes, 'read'):
    return read_bytes(encoded_bytes, target, strict=strict)
  state = msgpack_restore(encoded_bytes)
  return state if target is None else from_state_dict(target, state, strict=strict)


def read_bytes(fileobj: Any, target: Any = None, strict: bool = False) -> Any:
  """Reads a document from a binary file object with bounded memory.

  The file is parsed incrementally: small items go through a 64 KiB read buffer and
  array data is read straight into each freshly allocated array (``readinto``), so peak
  memory is the restored tree plus one buffer, never a second copy of the file. For
  seekable files every declared length is checked against the file size first.

  Args:
    fileobj: a binary file object positioned at the start of the document; it is read
      to its end.
    target: the structure to restore into; ``None`` returns the raw state dict.
    strict: check shapes, dtypes and extra keys (see ``from_state_dict``).

  Example:

  >>> import io, numpy as np
  >>> from flaxlike import serialization
  >>> f = io.BytesIO()
  >>> serialization.write_bytes(f, {'step': 3, 'w': np.arange(2.0)})
  >>> _ = f.seek(0)
  >>> serialization.read_bytes(f)
  {'step': 3, 'w': array([0., 1.])}
  """
  state = _restore(_Source(fileobj=fileobj))
  return state if target is None else from_state_dict(target, state, strict=strict)
