"""Conversion of Python objects to and from state dicts and Flax-compatible msgpack bytes.

A state dict is what gets written to disk: containers become dicts with string keys and
leaves stay as they are. Types opt in through ``register_serialization_state``; dicts,
FrozenDicts, lists, tuples, namedtuples, ``jax.tree_util.Partial`` and ``struct``
dataclasses are built in. Lookup uses the exact type, so subclasses register separately.

The package: ``_state_dict`` (state dicts), ``_writer`` (encoding), ``_reader`` (the bounded
parser and the in-memory fast path), ``_format`` (what both directions share: dtypes and
the one decoder of ext payloads). The public names all live here; the settings
``MAX_CHUNK_SIZE`` and ``MAX_DEPTH`` are read from this module at every call, so
``serialization.MAX_CHUNK_SIZE = ...`` works as in Flax.

Wire format (byte-identical to ``flax.serialization.to_bytes``)
----------------------------------------------------------------
The document is one msgpack object, written with msgpack-python's defaults for
``use_bin_type=True``: the smallest int/str/bin/map/array header, floats always float64.

* ``dict`` -> map (keys in insertion order; sorted with ``msgpack_serialize``'s default
  ``in_place=False``, as Flax, unless they do not compare); ``list`` -> array;
  ``None``/``bool``/``int``/``float``/``str``/``bytes`` -> native msgpack. Types are
  matched exactly (``strict_types``): tuples and subclasses of dict/list/int are
  rejected, ``to_bytes`` never produces them because the state dict turns them into dicts.
* ext 1 (ndarray, also 0-d and jax arrays) and ext 3 (numpy scalar) carry the payload
  ``[shape: array of ints, dtype.name: str, data: bin]`` packed as its own msgpack
  document; data is the C-order bytes. dtype names: bool, (u)int8-64, float16/32/64,
  complex64/128, numpy's long double names (``float128``/``complex256`` on x86-64),
  ``datetime64``/``timedelta64`` with an optional unit (``timedelta64[10ms]``) and the
  ml_dtypes names; the reader accepts nothing else. The ext header is fixext1/2/4/8/16
  when the payload length is exactly 1/2/4/8/16, else ext8/ext16/ext32.
* ext 2 (Python ``complex``) carries the msgpack array ``[real, imag]`` of two float64.
* A typed PRNG key array (``jax.random.key``, dtype ``key<fry>``/``key<rbg>``/``key<urbg>``)
  is the map ``{"__prng_key_impl__": impl, "key_data": ndarray}``: the implementation's
  name (``threefry2x32``, ``rbg`` or ``unsafe_rbg``) and ``jax.random.key_data(key)``
  (uint32, shape ``key.shape + impl.key_shape``). No new ext type, so Flax reads the file
  (as that dict). ``from_state_dict`` turns the map back into a typed key wherever it meets
  it at a leaf, and raw key data into a typed key where the target leaf is one.
* An ndarray of more than ``MAX_CHUNK_SIZE`` bytes that sits at the root or under dict
  values (not inside lists, as in Flax) is replaced by the map
  ``{"__msgpack_chunked_array__": True, "shape": {"0": d0, ...}, "chunks": {"0": a0, ...}}``
  whose chunks are 1-d ext-1 arrays of ``max(1, int(MAX_CHUNK_SIZE / itemsize))`` elements.

Where flaxlike differs from Flax, on purpose and without changing what Flax reads:

* arrays are always written little-endian (Flax writes big-endian bytes unconverted and
  reads them back as little-endian);
* ``msgpack_serialize(in_place=False)`` also writes dicts with mixed int/str keys (in
  insertion order), where Flax fails;
* only the dtypes above are written or read; anything else is refused at save time, so
  every file we write can be read back;
* the reader is bounded and strict: every declared length is checked against the bytes
  that remain before anything is allocated, nesting is limited to ``MAX_DEPTH``, and
  every failure is a ``flaxlike.errors.MsgpackDecodeError`` naming the path. Decoded
  arrays are fresh, aligned, writable numpy arrays (the data of arrays of 16 KiB or more
  is copied exactly once from the input, where Flax makes two copies and returns
  read-only views).

The reader has two paths with one behaviour. In-memory documents first go through
msgpack's C decoder (``msgpack.unpackb`` with every length limit set to the input size
and an ``ext_hook`` that decodes small ext payloads with the parser's own decoder); a walk
of the result applies the rules the C decoder lacks (``MAX_DEPTH``, no timestamps) and
reassembles chunked arrays. Whatever that path does not decide as the parser would (a big
array, a repeated map key, any error) goes to the parser, which reads files
incrementally, copies big array data straight into the new array and names the path and
byte offset of any problem. For in-memory documents it validates the whole document first
and then fills the big arrays, on up to four threads when they hold 8 MiB or more. The C
path only ever accepts documents the parser accepts, with the same result (tested on
fuzzed documents).
"""

from __future__ import annotations

from typing import Any

from flaxlike.serialization._reader import _read_file, _restore_bytes
from flaxlike.serialization._state_dict import (
  current_path,
  from_state_dict,
  is_serializable,
  register_serialization_state,
  to_state_dict,
)
from flaxlike.serialization._writer import _serialize

__all__ = [
  'current_path',
  'register_serialization_state',
  'is_serializable',
  'to_state_dict',
  'from_state_dict',
  'MAX_CHUNK_SIZE',
  'MAX_DEPTH',
  'msgpack_serialize',
  'to_bytes',
  'write_bytes',
  'msgpack_restore',
  'from_bytes',
  'read_bytes',
]

# Read at every call (users and tests lower them, as with Flax's MAX_CHUNK_SIZE).
MAX_CHUNK_SIZE = 2**30
"""Arrays larger than this many bytes are split into chunks (Flax's value)."""
MAX_DEPTH = 1000
"""Deepest nesting of maps/arrays the reader accepts."""


def msgpack_serialize(pytree: Any, in_place: bool = False) -> bytes:
  """Encodes a tree of dicts, lists, arrays and scalars as msgpack bytes.

  The output is byte-identical to ``flax.serialization.msgpack_serialize`` with the same
  ``in_place``: ``in_place=True`` writes dict keys in insertion order (what ``to_bytes``
  does), ``in_place=False`` (the default) in sorted order, as Flax's copy of the tree
  sorts them. Dicts whose keys do not compare (int and str mixed), which Flax cannot
  write, keep their insertion order. Unlike Flax, the input is never modified.

  Args:
    pytree: dicts, lists, numpy/jax arrays, numpy scalars and Python scalars.
    in_place: ``False`` sorts dict keys; ``True`` keeps their order (the name is Flax's:
      its ``True`` skips copying the tree and converts it in place).

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
  >>> serialization.msgpack_serialize({'b': 1, 'a': 2})
  b'\\x82\\xa1a\\x02\\xa1b\\x01'
  >>> serialization.msgpack_serialize({'b': 1, 'a': 2}, in_place=True)
  b'\\x82\\xa1b\\x01\\xa1a\\x02'
  >>> serialization.msgpack_serialize({2: 'int key', 'a': 1})
  b'\\x82\\x02\\xa7int key\\xa1a\\x01'
  """
  return _serialize(  # type: ignore[return-value]
    pytree, None, sort_keys=not in_place, max_chunk_size=MAX_CHUNK_SIZE
  )


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
  return _serialize(  # type: ignore[return-value]
    to_state_dict(target), None, sort_keys=False, max_chunk_size=MAX_CHUNK_SIZE
  )


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

  _serialize(to_state_dict(target), sink, sort_keys=False, max_chunk_size=MAX_CHUNK_SIZE)
  if pending:
    writer(pending)


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
  return _restore_bytes(encoded_pytree, MAX_DEPTH)


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
  state = _read_file(fileobj, MAX_DEPTH)
  return state if target is None else from_state_dict(target, state, strict=strict)
