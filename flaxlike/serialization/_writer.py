"""The msgpack writer: a state dict (or any tree of dicts, lists, arrays and scalars) to
Flax's bytes, streamed to a sink or joined into one ``bytes``."""

from __future__ import annotations

import struct as _struct
from collections.abc import Callable
from typing import Any

import jax
import msgpack
import numpy as np

from flaxlike.serialization._format import (
  _BIG,
  _CHUNK_KEY,
  _DTYPES,
  _EXT_COMPLEX,
  _EXT_NDARRAY,
  _EXT_NPSCALAR,
  _SUPPORTED,
  _packed_name,
)
from flaxlike.serialization._state_dict import (
  _KEY_IMPLS,
  _is_key_dtype,
  _key_impl_name,
  _key_state_dict,
)

# msgpack-python's Packer refuses deeper structures with the same limit.
_MAX_ENCODE_DEPTH = 511


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
  if _packed_name(arr.dtype) is None:
    raise ValueError(
      f'dtype {dt} at {_path_str(path)} is not supported: only {_SUPPORTED} '
      f'({", ".join(sorted(_DTYPES))}) are written. Convert the array first, e.g. with '
      '.astype(np.float32).'
    )
  if not arr.flags.c_contiguous:
    arr = np.ascontiguousarray(arr)
  return arr


_LITTLE = np.little_endian


class _Writer:
  """Collects the encoding: small items are batched in a bytearray, large array data
  goes out as buffers so it is copied only once (into the result or the file)."""

  def __init__(self, sink: Callable[[Any], Any] | None, sort_keys: bool, max_chunk_size: int):
    self.sink = sink
    self.sort_keys = sort_keys
    self.max_chunk_size = max_chunk_size
    self.parts: list[Any] = []
    self.small = bytearray()
    # The tree, until its first jax.Array leaf is met (see host()).
    self.prefetch_root: Any = None
    # Whether jax.Array leaves with a cached prefix are read through the buffer protocol
    # (see _encode): decided at the first leaf, turned off at the first refusal.
    self.direct = False

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

  def host(self, x: jax.Array, path: Any) -> np.ndarray:
    """``x`` in host memory. At the first array on an accelerator, the copies of every
    jax.Array leaf of the tree are started together (as ``jax.device_get`` does), so
    that the transfers overlap instead of running one after another as the encoder
    meets the leaves; CPU arrays are read in place."""
    if self.prefetch_root is not None:
      root, self.prefetch_root = self.prefetch_root, None
      self.direct = _on_cpu(x)
      if not self.direct:
        _start_host_copies(root)
    try:
      return np.asarray(x)
    except TypeError as e:  # extended dtypes other than keys have no numpy form
      raise ValueError(
        f'The value at {_path_str(path)} of dtype {x.dtype} cannot be serialized ({e}); '
        'convert it to a numpy dtype first.'
      ) from None


def _on_cpu(x: jax.Array) -> bool:
  return all(d.platform == 'cpu' for d in x.devices())


def _start_host_copies(pytree: Any) -> None:
  try:
    leaves = jax.tree_util.tree_leaves(pytree)
  except (TypeError, ValueError):  # dict keys that do not sort (int and str)
    return
  for x in leaves:
    if isinstance(x, jax.Array) and not _is_key_dtype(x.dtype):
      try:
        x.copy_to_host_async()
      except (TypeError, RuntimeError):  # the encoder reports it, with the path
        pass


def _array_bytes(arr: np.ndarray) -> memoryview:
  # reshape(-1) of a contiguous array is a view; viewing as uint8 gives a buffer even for
  # ml_dtypes types that PEP 3118 cannot describe.
  return arr.reshape(-1).view(np.uint8).data


# Everything written before the data of a small ndarray (ext header and payload header)
# depends only on its shape and dtype; trees of many small arrays repeat a few of them.
_SMALL_PREFIXES: dict[tuple[tuple[int, ...], np.dtype], bytes] = {}
_MAX_CACHED_PREFIXES = 1024
# The same prefixes, with the data size, for the dtypes whose jax.Arrays export their
# bytes through the buffer protocol (numpy's own kinds; XLA refuses the ml_dtypes ones).
_BUFFER_PREFIXES: dict[tuple[tuple[int, ...], np.dtype], tuple[bytes, int]] = {}
_BUFFER_KINDS = frozenset('biufc')


def _pack_ndarray(code: int, arr: np.ndarray, out: _Writer, packer: msgpack.Packer):
  nbytes = arr.nbytes
  head = b'\x93' + packer.pack(list(arr.shape)) + _packed_name(arr.dtype)
  head += _bin_header(nbytes)
  prefix = _ext_header(code, len(head) + nbytes) + head
  out.small += prefix
  if nbytes >= _BIG:
    out.big(_array_bytes(arr))
    return
  out.small += arr.tobytes()
  if code == _EXT_NDARRAY and len(_SMALL_PREFIXES) < _MAX_CACHED_PREFIXES:
    _SMALL_PREFIXES[arr.shape, arr.dtype] = prefix
    if arr.dtype.kind in _BUFFER_KINDS and arr.dtype.isnative and _LITTLE:
      _BUFFER_PREFIXES[arr.shape, arr.dtype] = (prefix, nbytes)


def _pack_chunked(arr: np.ndarray, out: _Writer, packer: msgpack.Packer):
  # Written directly rather than as a dict through _encode: the chunks must not be
  # chunked again (a single element can exceed a lowered threshold).
  per_chunk = max(1, int(out.max_chunk_size / arr.dtype.itemsize))
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


def _append_buffer(x: jax.Array, out: _Writer) -> bool:
  """Appends the encoding of a small jax.Array of a shape and dtype met before straight
  from its buffer, and says whether it did.

  The buffer protocol takes about half the time of building a numpy view (np.asarray),
  which is most of the cost of a tiny leaf. XLA exports only C-ordered single-device CPU
  buffers of numpy's own dtypes; any other array (sharded, deleted, another layout or
  device) is refused with a TypeError before anything is appended, and it and the rest of
  the tree then take the numpy path. (``bytearray.extend`` would iterate an object without
  the buffer protocol; concrete jax arrays have it, and iterating a tracer fails with a
  TypeError too.)
  """
  cached = _BUFFER_PREFIXES.get((x.shape, x.dtype))
  if cached is None or cached[1] > out.max_chunk_size:
    return False
  small = out.small
  start = len(small)
  small += cached[0]
  try:
    small.extend(x)
  except (TypeError, BufferError):
    del small[start:]
    out.direct = False
    return False
  return True


_SCALAR_TYPES = frozenset((type(None), bool, int, float, str, bytes))
# Classes of jax.Array leaves seen holding numbers (not typed keys).
_ARRAY_TYPES: set[type] = set()


def _encode(x: Any, out: _Writer, packer: msgpack.Packer, path: Any, depth: int, in_dict: bool):
  t = type(x)
  if t is not np.ndarray and t in _ARRAY_TYPES:
    # A jax.Array of numbers: appended from its buffer, or its host copy takes the numpy
    # paths below.
    if out.direct and _append_buffer(x, out):
      return
    x = out.host(x, path)
    t = type(x)
  if t is np.ndarray:
    # Fast path for small native arrays seen before (the prefix cache holds only
    # supported native dtypes); chunking needs more than _BIG bytes, so it never applies.
    prefix = _SMALL_PREFIXES.get((x.shape, x.dtype))
    if prefix is not None and x.flags.c_contiguous and _LITTLE and x.nbytes <= out.max_chunk_size:
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
    for k, v in _sorted_items(x) if out.sort_keys else x.items():
      if type(k) not in _SCALAR_TYPES:
        raise TypeError(
          f'can not serialize dict key {k!r} of type {type(k).__name__} at {_path_str(path)}'
        )
      out.small += packer.pack(k)
      # Tiny jax.Array values are most of a big tree: spare them the recursive call.
      if out.direct and type(v) in _ARRAY_TYPES and _append_buffer(v, out):
        continue
      _encode(v, out, packer, (path, k), depth + 1, True)
    return
  if t is list:
    out.small += _array_header(len(x))
    for i, v in enumerate(x):
      if out.direct and type(v) in _ARRAY_TYPES and _append_buffer(v, out):
        continue
      _encode(v, out, packer, (path, i), depth + 1, False)
    return
  if isinstance(x, jax.Array):
    if _is_key_dtype(x.dtype):
      _encode(_typed_key_state(x, path), out, packer, path, depth, in_dict)
      return
    # jax gives typed key arrays a class of their own, so the class of an array of
    # numbers identifies the others without a dtype lookup per leaf.
    _ARRAY_TYPES.add(t)
    _encode(out.host(x, path), out, packer, path, depth, in_dict)
    return
  if isinstance(x, np.ndarray):
    arr = _wire_array(x, path)
    # As in Flax, only arrays at the root or under dict values are chunked; arrays in
    # lists are not, because Flax's reader would not reassemble them there.
    if in_dict and arr.size * arr.dtype.itemsize > out.max_chunk_size:
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


def _sorted_items(x: dict) -> Any:
  """Items in key order, as Flax's ``msgpack_serialize(in_place=False)`` writes them (its
  tree copy sorts dict keys); keys that do not compare (int and str mixed), which Flax
  cannot write at all, keep their insertion order."""
  try:
    return [(k, x[k]) for k in sorted(x)]
  except TypeError:
    return x.items()


def _typed_key_state(key: jax.Array, path: Any) -> dict[str, Any]:
  impl = _key_impl_name(key)
  if impl not in _KEY_IMPLS:
    raise ValueError(
      f'The typed PRNG key at {_path_str(path)} uses the implementation {impl!r}, which '
      f'cannot be saved: only {", ".join(_KEY_IMPLS)} keys are. Save '
      'jax.random.key_data(key) (a uint32 array) instead and rebuild the key with '
      'jax.random.wrap_key_data after restoring.'
    )
  return _key_state_dict(key)


def _serialize(
  pytree: Any, sink: Callable[[Any], Any] | None, *, sort_keys: bool, max_chunk_size: int
) -> bytes | None:
  """Encodes ``pytree``: returns the bytes, or with a ``sink`` hands it the pieces in
  order and returns None."""
  packer = msgpack.Packer(use_bin_type=True, strict_types=True)
  out = _Writer(sink, sort_keys, max_chunk_size)
  out.prefetch_root = pytree
  _encode(pytree, out, packer, '.', 0, True)
  if sink is None:
    return out.result()
  out.flush_small()
  return None
