"""The wire format both directions share: ext codes, the dtypes written and read, and the
decoding of ext payloads, used by both reader paths (msgpack's C decoder and the parser).
"""

from __future__ import annotations

import math
import re
from typing import Any

import ml_dtypes  # a dependency of jax
import msgpack
import numpy as np

_CHUNK_KEY = '__msgpack_chunked_array__'
_EXT_NDARRAY, _EXT_COMPLEX, _EXT_NPSCALAR = 1, 2, 3
# Array data at least this big is written as a buffer of its own instead of through the
# small-item buffer, and read by copying straight from the input into the new array.
_BIG = 1 << 14
_INT_SIZES = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}


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
    # x87 extended precision (float128/complex256) on x86-64 Linux, IEEE quad on aarch64
    # Linux, float64 on Windows and macOS: the same name can mean different bits on
    # different machines, as with Flax, which writes these too.
    np.longdouble,
    np.clongdouble,
  ]
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
    # Names newer ml_dtypes releases add are taken where the installed one has them.
    if hasattr(ml_dtypes, name):
      types.append(getattr(ml_dtypes, name))
  return {np.dtype(t).name: np.dtype(t) for t in types}


# Only these names are ever turned into dtypes: np.dtype() on a name from a file could
# build object or structured dtypes.
_DTYPES = _known_dtypes()
# dtype.name is computed in Python by numpy on every access; encode it once per dtype.
_PACKED_NAMES = {dt: msgpack.packb(name) for name, dt in _DTYPES.items()}
_DTYPES_BY_RAW = {name.encode(): dt for name, dt in _DTYPES.items()}

# datetime64/timedelta64 carry their unit in the name ('datetime64[ms]', 'timedelta64[10s]',
# plain 'timedelta64' for the generic unit). They are 8-byte integers underneath; names are
# matched against this pattern before numpy parses them, so nothing else reaches np.dtype.
_TIME_NAME = re.compile(
  rb'(?:datetime64|timedelta64)(?:\[(?:[1-9][0-9]{0,5})?(?:Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as)\])?'
)
_SUPPORTED = (
  'bool, (u)int8-64, float16/32/64, longdouble, complex64/128, clongdouble, '
  'datetime64/timedelta64 (any unit) and the ml_dtypes types'
)


def _dtype_from_name(raw: bytes) -> np.dtype | None:
  """The dtype a file names, or None when it is not one we read."""
  dtype = _DTYPES_BY_RAW.get(raw)
  if dtype is None and _TIME_NAME.fullmatch(raw):
    try:
      dtype = np.dtype(raw.decode())
    except TypeError:  # pragma: no cover - every name the pattern admits is valid
      return None
  return dtype


def _packed_name(dtype: np.dtype) -> bytes | None:
  """The msgpack-encoded name of a dtype we write, or None when it is not one."""
  packed = _PACKED_NAMES.get(dtype)
  if packed is None and dtype.kind in 'mM' and _TIME_NAME.fullmatch(dtype.name.encode()):
    packed = msgpack.packb(dtype.name)
    if len(_PACKED_NAMES) < 1024:
      _PACKED_NAMES[dtype] = packed
  return packed


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
    b = buf[pos]
    if 0xA0 <= b <= 0xBF:  # fixstr: every name we write
      name_len, pos = b & 0x1F, pos + 1
    else:
      name_len, pos = _str_or_bin_len(buf, pos, 'dtype name')
    if name_len > 64:
      raise _Invalid(f'a dtype name of {name_len} bytes', pos)
    raw_name = bytes(buf[pos : pos + name_len])
    pos += name_len
    if buf[pos] == 0xC4:  # bin8: the data of every small array we write
      nbytes, pos = buf[pos + 1], pos + 2
    else:
      nbytes, pos = _str_or_bin_len(buf, pos, 'data')
  except IndexError:
    raise _Invalid('the ndarray header is cut short by the end of its payload', end) from None
  if pos > end:
    raise _Invalid('the ndarray header is longer than its ext payload', end)
  dtype = _dtype_from_name(raw_name)
  if dtype is None:
    raise _Invalid(
      f'unsupported dtype {raw_name!r:.80}; supported: {_SUPPORTED} ({", ".join(sorted(_DTYPES))})',
      start,
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


class _BigArray(Exception):
  """An ndarray payload of ``_BIG`` bytes or more, for the parser's copy-once path."""


def _decode_ext(code: int, payload: Any) -> Any:
  """Decodes an ext payload held in memory (``code`` as msgpack gives it, -128..127).

  ndarrays (1) and numpy scalars (3) come back as fresh, aligned, writable arrays and
  numpy scalars, complex numbers (2) as ``complex``, other application codes (0..127) as
  ``msgpack.ExtType``. The one decoder of ext payloads: it is the C decoder's
  ``ext_hook``, and the parser calls it for payloads under ``_BIG`` bytes.

  Raises:
    _Invalid: for a malformed payload or a reserved (negative) code, with the offset of
      the problem in ``payload`` where there is one.
    _BigArray: for an ndarray payload of ``_BIG`` bytes or more.
  """
  if code == _EXT_NDARRAY or code == _EXT_NPSCALAR:
    n = len(payload)
    if n >= _BIG:
      # Big arrays are read by the parser, which copies their data once, straight from
      # the input into the new array (msgpack's C decoder has copied the payload already).
      raise _BigArray
    shape, dtype, h = _ndarray_header(payload, 0, n)
    # A view of the payload, copied into fresh, aligned, writable memory.
    arr = np.ndarray(shape, dtype, payload, h).copy() if n > h else np.empty(shape, dtype)
    return arr if code == _EXT_NDARRAY else _scalar(arr)
  if code == _EXT_COMPLEX:
    return _complex_from_payload(payload)
  if code < 0:
    raise _Invalid(f'reserved ext type {code}')
  return msgpack.ExtType(code, bytes(payload))


def _scalar(arr: np.ndarray) -> Any:
  if arr.ndim != 0:
    raise _Invalid(f'a numpy scalar (ext 3) has shape {arr.shape}, expected ()')
  return arr[()]
