"""The msgpack reader: one bounded, streaming parser for files and bytes, and a fast path
for bytes in memory through msgpack's C decoder that hands the parser every document it
cannot decide the same way.

The parser checks every declared length against the bytes that remain before anything is
allocated, limits nesting, copies big array data once (straight into the new array: with
``readinto`` from files, after validation from memory, on a few threads for big trees)
and reports the path and byte offset of any problem. Both paths decode ext payloads with
``_format._decode_ext``.
"""

from __future__ import annotations

import concurrent.futures
import io
import math
import os
import struct as _struct
import threading
from typing import Any

import msgpack
import numpy as np

from flaxlike.errors import MsgpackDecodeError
from flaxlike.serialization._format import (
  _BIG,
  _CHUNK_KEY,
  _EXT_NDARRAY,
  _EXT_NPSCALAR,
  _INT_SIZES,
  _MAX_NDARRAY_HEADER,
  _decode_ext,
  _Invalid,
  _ndarray_header,
  _scalar,
)

_READ_BLOCK = 1 << 16
# When the size of a stream is unknown, large strings and arrays are read in pieces of
# this size so that allocation follows the data actually present, not a declared length.
_UNKNOWN_SIZE_PIECE = 1 << 24


class _Source:
  """Bytes to parse, from memory or from a file, with bounds checks on every read."""

  def __init__(self, data: Any = None, fileobj: Any = None, max_depth: int = 1000):
    self.file = fileobj
    self.max_depth = max_depth
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
  """Parses one msgpack object; iterative so that depth is bounded by ``max_depth``, not by
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
  if len(stack) >= src.max_depth:
    raise src.fail(f'nesting deeper than MAX_DEPTH={src.max_depth}', path)
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


def _read_ext(src: _Source, n: int, path: str) -> Any:
  code = src.byte(path)
  if code >= 0x80:
    raise src.fail(f'reserved ext type {code - 0x100}', path)
  rem = src.remaining()
  if rem is not None and n > rem:
    raise src.fail(f'an ext declares {n} bytes but only {rem} remain (truncated)', path)
  try:
    if n >= _BIG and (code == _EXT_NDARRAY or code == _EXT_NPSCALAR):
      arr = _read_big_ndarray(src, n, path)
      return arr if code == _EXT_NDARRAY else _scalar(arr)
    start = src.pos
    payload = src.take(n, path, 'an ext payload')
    try:
      return _decode_ext(code, payload)
    except _Invalid as e:
      if e.offset is not None:
        src.pos = start + e.offset
      raise
  except _Invalid as e:
    raise src.fail(e.problem, path) from None


def _read_big_ndarray(src: _Source, n: int, path: str) -> np.ndarray:
  """An ndarray ext payload of ``n`` bytes whose data is copied once, straight from the
  input into the new array (for in-memory input, once the whole document validates)."""
  # The header is parsed in place; for files, make sure all of it is buffered first.
  src.need(min(n, _MAX_NDARRAY_HEADER), path, 'an ndarray header')
  start = src.pos
  try:
    shape, dtype, data_pos = _ndarray_header(src.buf, start, start + n)
  except _Invalid as e:
    src.pos = e.offset if e.offset is not None else src.pos
    raise
  src.pos = data_pos
  nbytes = n - (data_pos - start)
  if src.size is None and nbytes > _UNKNOWN_SIZE_PIECE:
    # Stream of unknown size: read the data first so that a lying header cannot make us
    # allocate more than the stream really holds.
    data = bytes(src.take(nbytes, path, 'array data'))
    return np.frombuffer(data, dtype).reshape(shape).copy()
  try:
    arr = np.empty(shape, dtype)
  except (ValueError, MemoryError) as e:
    raise src.fail(f'cannot allocate shape {shape} of {dtype.name} ({e})', path) from None
  if src.file is not None:
    src.read_into(arr.reshape(-1).view(np.uint8).data, path)
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
    if src is None or job is None:
      out_bytes[start:end] = chunk.view(np.uint8)
    else:
      # The chunk's data has not been copied out of the input yet (big arrays of in-memory
      # documents are filled after the whole document validates): copy it straight into
      # its place in the reassembled array instead, still once.
      src.pending[job] = (out_bytes[start:end], src.pending[job][1])
    start = end
  return out


class _UseParser(Exception):
  """Raised inside the C-decoder path for what the parser must decide: a repeated map
  key, nesting beyond the limit, a timestamp (big arrays raise ``_BigArray``)."""


def _unique_keys_map(pairs: list) -> dict:
  # A repeated key keeps only its last value, and the walk below would never see the
  # others; the parser validates every value.
  d = dict(pairs)
  if len(d) != len(pairs):
    raise _UseParser
  return d


def _check_tree(x: Any, level: int, chain: bool, max_depth: int) -> Any:
  """Applies the parser's rules to a tree from the C decoder: nesting within
  ``max_depth`` and no msgpack timestamps (ext -1, which the C decoder converts itself);
  reassembles chunked arrays reached from the root through dicts. Returns ``x`` or its
  reassembled array."""
  if level > max_depth:
    raise _UseParser
  items = x.items() if type(x) is dict else enumerate(x)
  for k, v in items:
    t = type(v)
    if t is dict:
      new = _check_tree(v, level + 1, chain and type(x) is dict, max_depth)
      if new is not v:
        x[k] = new  # same key: allowed while iterating
    elif t is list:
      _check_tree(v, level + 1, False, max_depth)
    elif t is msgpack.Timestamp:
      raise _UseParser
    if type(k) is msgpack.Timestamp:
      raise _UseParser
  if chain and type(x) is dict and _CHUNK_KEY in x:
    return _unchunk(x)
  return x


def _fast_restore(data: Any, max_depth: int) -> Any:
  """Decodes in-memory bytes with msgpack's C decoder: every declared length is bounded
  by the input size before allocation (as in the parser), and anything the parser would
  treat differently raises, so that the caller hands the document to the parser."""
  n = memoryview(data).nbytes
  value = msgpack.unpackb(
    data,
    ext_hook=_decode_ext,
    object_pairs_hook=_unique_keys_map,
    strict_map_key=False,
    max_str_len=n,
    max_bin_len=n,
    max_array_len=n,
    max_map_len=n // 2,
    max_ext_len=n,
  )
  t = type(value)
  if t is dict or t is list:
    return _check_tree(value, 1, True, max_depth)
  if t is msgpack.Timestamp:
    raise _UseParser
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


def _restore_bytes(data: Any, max_depth: int) -> Any:
  """One document from bytes in memory: the C decoder where it gives the parser's result,
  else the parser, which also names the path and offset of anything wrong."""
  try:
    return _fast_restore(data, max_depth)
  except Exception:  # noqa: BLE001 - the parser decides, and names the problem
    pass
  # Outside the except block, so that the parser's error is not shown as raised while
  # handling the C decoder's (which says less).
  return _restore(_Source(data, max_depth=max_depth))


def _read_file(fileobj: Any, max_depth: int) -> Any:
  return _restore(_Source(fileobj=fileobj, max_depth=max_depth))
