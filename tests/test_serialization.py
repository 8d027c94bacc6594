"""msgpack serialization: Flax's bytes, round trips, chunking, strict restore, streams."""

from __future__ import annotations

import collections
import io
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flaxlike import errors, serialization, struct
from flaxlike.core import FrozenDict
from flaxlike.serialization import _format, _reader
from tests.fixtures import make_msgpack_fixtures as fx

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'msgpack')


def fixture_bytes(name: str) -> bytes:
  with open(os.path.join(FIXTURES, name), 'rb') as f:
    return f.read()


def same(a, b) -> bool:
  """Exact equality: types, dict key order, dtypes, shapes and bytes (NaN-safe)."""
  if type(a) is not type(b):
    return False
  if isinstance(a, dict):
    return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
  if isinstance(a, (list, tuple)):
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
  if isinstance(a, (np.ndarray, np.generic)):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
  if isinstance(a, float):
    return a == b or (math.isnan(a) and math.isnan(b))
  if isinstance(a, complex):
    return same(a.real, b.real) and same(a.imag, b.imag)
  return a == b


# --- spec vectors ----------------------------------------------------------------------

SPEC_VECTORS = [
  (
    {'a': np.arange(6, dtype=np.float32).reshape(2, 3)},
    '81a161c72601939202 03a7666c6f61743332c418000000000000803f0000004000004040000080400000a040',
  ),
  ({'s': np.float32(1.5)}, '81a173 d803 9390a7666c6f61743332c4040000c03f'),
  ({'c': 1 + 2j}, '81a163c7130292cb3ff0000000000000cb4000000000000000'),
  ({'a': np.int64(3)}, '81a161c712039390a5696e743634c4080300000000000000'),
  ({'f': 1.5}, '81a166cb3ff8000000000000'),
  ({'i': 2**40}, '81a169cf0000010000000000'),
  ({'a': -5}, '81a161fb'),
  ({'a': 300}, '81a161cd012c'),
  ({'a': True}, '81a161c3'),
  ({1: 2}, '81a131 02'),
  ([], '80'),
]


@pytest.mark.parametrize('tree,hexbytes', SPEC_VECTORS)
def test_spec_vectors(tree, hexbytes):
  assert serialization.to_bytes(tree).hex() == hexbytes.replace(' ', '')


def test_spec_payloads():
  assert '939102a4626f6f6cc4020100' in serialization.to_bytes({'x': np.array([True, False])}).hex()
  assert (
    '939102a862666c6f61743136c404803f803f'
    in serialization.to_bytes({'x': jnp.ones(2, jnp.bfloat16)}).hex()
  )
  assert serialization.to_bytes((1, 2)) == serialization.to_bytes({'0': 1, '1': 2})


def test_ext_header_sizes():
  # Payload lengths 1/2/4/8/16 use fixext, others ext8/16/32: 16 bytes is the case
  # that occurs (float32 scalar); a 300-byte array needs ext16.
  assert serialization.to_bytes(np.float32(0))[:2] == b'\xd8\x03'
  assert serialization.to_bytes(np.zeros(300, np.uint8))[:1] == b'\xc8'
  assert serialization.to_bytes(np.zeros(70000, np.uint8))[:1] == b'\xc9'


def test_tuple_and_dict_subclass_rejected_like_flax():
  with pytest.raises(TypeError, match="'tuple'"):
    serialization.msgpack_serialize({'a': (1, 2)})
  with pytest.raises(TypeError, match='OrderedDict'):
    serialization.to_bytes({'a': collections.OrderedDict(b=1)})


def test_object_and_unsupported_dtypes_rejected():
  with pytest.raises(ValueError, match='Object'):
    serialization.to_bytes({'a': np.array([object()])})
  with pytest.raises(ValueError, match='not supported'):
    serialization.to_bytes({'a': np.array(['x'])})


# x87 extended precision keeps 10 value bytes in 16: the padding is whatever memory held.
X87_PADDED = (
  {np.dtype(np.longdouble), np.dtype(np.clongdouble)}
  if np.finfo(np.longdouble).nmant == 63
  else set()
)
NUMPY_DTYPES = [
  np.longdouble,
  np.clongdouble,
  'm8',
  'm8[ns]',
  'm8[10ms]',
  'M8',
  'M8[D]',
  'M8[25s]',
  np.longlong,
  np.uintc,
  np.half,
]


@pytest.mark.parametrize('dtype', NUMPY_DTYPES, ids=str)
def test_numpy_dtypes_flax_writes_round_trip(dtype):
  rng = np.random.default_rng(0)
  for shape in [(), (5,), (2, 3)]:
    arr = rng.uniform(-100, 100, size=shape).astype(dtype)
    for x in (arr, arr[()]):
      # Flax's bytes: ext 1 or 3 with [shape, dtype.name, C-order data].
      data = serialization.msgpack_serialize(x)
      expected = _flax_style_packb(x)
      if x.dtype in X87_PADDED:
        n = len(data) - x.nbytes
        assert data[:n] == expected[:n] and len(data) == len(expected)
      else:
        assert data == expected
      for back in (serialization.msgpack_restore(data), serialization.read_bytes(io.BytesIO(data))):
        assert back.dtype == x.dtype and isinstance(back, np.ndarray) == isinstance(x, np.ndarray)
        np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize(
  'name',
  [
    b'datetime64[1000000s]',  # multiplier beyond what we read
    b'datetime64[0s]',
    b'timedelta64[]',
    b'timedelta64[s',
    b'timedelta64[parsec]',
    b'datetime64[D]x',
    b'M8[D]',  # only dtype.name spellings, as written
    b'float128 ',
  ],
)
def test_time_dtype_names_are_whitelisted(name):
  payload = msgpack.packb([[1], name, b'\x00' * 8])
  doc = msgpack.packb({'a': msgpack.ExtType(1, payload)})
  for restore in (serialization.msgpack_restore, lambda d: serialization.read_bytes(io.BytesIO(d))):
    with pytest.raises(errors.MsgpackDecodeError, match=r'at "\./a".*unsupported dtype'):
      restore(doc)


# --- fixtures written by flax ----------------------------------------------------------


def test_reads_flax_mixed_fixture():
  restored = serialization.msgpack_restore(fixture_bytes('mixed.msgpack'))
  with open(os.path.join(FIXTURES, 'expected.json')) as f:
    expected = json.load(f)['mixed']
  # JSON turns tuples into lists; compare through the same describe() flax's side used.
  assert json.loads(json.dumps(fx.describe(restored))) == expected
  assert restored['np_scalars']['bf16'].dtype == ml_dtypes.bfloat16
  assert restored['3'] == {'1': restored['3']['1'], '2': 'two'}


def test_writes_flax_mixed_fixture_bytes():
  assert serialization.to_bytes(fx.build_mixed_tree()) == fixture_bytes('mixed.msgpack')


def test_restore_mixed_into_target_structure():
  target = fx.build_mixed_tree()
  restored = serialization.from_bytes(target, fixture_bytes('mixed.msgpack'), strict=True)
  assert isinstance(restored['namedtuple'], fx.Point)
  assert isinstance(restored['tuple'], tuple)
  assert list(restored[3]) == [1, 2]
  assert same(restored['python'], target['python'])
  np.testing.assert_array_equal(restored['f64_fortran'], target['f64_fortran'])


def test_chunked_fixture(monkeypatch):
  data = fixture_bytes('chunked_16.msgpack')
  restored = serialization.msgpack_restore(data)
  assert same(restored, fx.build_chunk_tree())
  assert restored['a'].flags.writeable
  monkeypatch.setattr(serialization, 'MAX_CHUNK_SIZE', 16)
  assert serialization.to_bytes(fx.build_chunk_tree()) == data


def test_chunk_layout(monkeypatch):
  monkeypatch.setattr(serialization, 'MAX_CHUNK_SIZE', 16)
  raw = msgpack_unpack(serialization.to_bytes({'a': np.arange(10, dtype=np.float32).reshape(2, 5)}))
  entry = raw['a']
  assert list(entry) == ['__msgpack_chunked_array__', 'shape', 'chunks']
  assert entry['shape'] == {'0': 2, '1': 5}
  assert list(entry['chunks']) == ['0', '1', '2']
  # A 16-byte array is at the threshold, not above it.
  assert serialization.to_bytes({'b': np.zeros(4, np.float32)}) == serialization.to_bytes(
    {'b': np.zeros(4, np.float32)}
  )
  assert b'__msgpack' not in serialization.to_bytes({'b': np.zeros(4, np.float32)})
  # Arrays inside lists are not chunked (Flax would not reassemble them there).
  assert b'__msgpack' not in serialization.msgpack_serialize([np.zeros(10, np.float32)])


def msgpack_unpack(data):
  import msgpack

  return msgpack.unpackb(data, raw=False, strict_map_key=False)


def test_chunked_round_trip_lowered_threshold(monkeypatch):
  monkeypatch.setattr(serialization, 'MAX_CHUNK_SIZE', 64)
  tree = {
    'x': np.arange(1000, dtype=np.float64).reshape(10, 100),
    'y': {'z': np.arange(33, dtype=np.int8)},
    'w': np.arange(7, dtype=np.complex128),
  }
  assert same(serialization.msgpack_restore(serialization.to_bytes(tree)), tree)


# Chunk sizes around every size threshold of the reader: small arrays decoded inline,
# big ones (_BIG and up) copied after the document validates, copies on threads
# (_PARALLEL_COPY_MIN_BYTES), file reads in _READ_BLOCK pieces and unknown-size streams
# read in _UNKNOWN_SIZE_PIECE pieces. A chunked array must come back whole from each.
_CHUNK_BYTES = sorted(
  {
    n
    for limit in ('_BIG', '_READ_BLOCK', '_PARALLEL_COPY_MIN_BYTES', '_UNKNOWN_SIZE_PIECE')
    for n in (
      getattr(_reader, limit) - 8,
      getattr(_reader, limit),
      getattr(_reader, limit) + 8,
    )
  }
)


class _UnknownSizeStream(io.RawIOBase):
  """A readable stream that cannot seek, so the reader cannot know its size."""

  def __init__(self, data: bytes):
    self._inner = io.BytesIO(data)

  def readable(self):
    return True

  def readinto(self, b):
    return self._inner.readinto(b)


@pytest.mark.parametrize('chunk_bytes', _CHUNK_BYTES)
@pytest.mark.parametrize('source', ['bytes', 'bytearray', 'memoryview', 'file', 'stream'])
def test_chunked_arrays_restore_at_every_size_threshold(monkeypatch, tmp_path, chunk_bytes, source):
  monkeypatch.setattr(
    _reader,
    '_PARALLEL_COPY_MIN_BYTES',
    min(_reader._PARALLEL_COPY_MIN_BYTES, 2 * chunk_bytes),
  )
  n = 2 * chunk_bytes // 4 + 3  # two full float32 chunks and a short third one
  tree = {
    'w': np.arange(n, dtype=np.float32),
    'b': {'v': np.arange(5, dtype=np.int8)},
    'x': np.arange(n // 2, dtype=np.float32).reshape(-1, 1),
  }
  monkeypatch.setattr(serialization, 'MAX_CHUNK_SIZE', chunk_bytes)
  data = serialization.to_bytes(tree)
  assert len(msgpack_unpack(data)['w']['chunks']) == 3
  monkeypatch.setattr(serialization, 'MAX_CHUNK_SIZE', 2**30)
  if source == 'file':
    path = tmp_path / 'c.msgpack'
    path.write_bytes(data)
    with open(path, 'rb') as f:
      back = serialization.from_bytes(None, f)
  elif source == 'stream':
    back = serialization.from_bytes(None, io.BufferedReader(_UnknownSizeStream(data)))
  else:
    encoded = {'bytes': data, 'bytearray': bytearray(data), 'memoryview': memoryview(data)}
    back = serialization.msgpack_restore(encoded[source])
    assert same(serialization.from_bytes(tree, encoded[source], strict=True), tree)
  assert same(back, tree)
  assert back['w'].flags.writeable and back['w'].flags.owndata


def test_chunked_array_after_reassembly_does_not_alias_input():
  old = serialization.MAX_CHUNK_SIZE
  serialization.MAX_CHUNK_SIZE = _format._BIG
  try:
    data = bytearray(serialization.to_bytes({'w': np.arange(20_000, dtype=np.float32)}))
  finally:
    serialization.MAX_CHUNK_SIZE = old
  back = serialization.msgpack_restore(data)
  data[:] = bytes(len(data))
  np.testing.assert_array_equal(back['w'], np.arange(20_000, dtype=np.float32))


# --- beyond flax -------------------------------------------------------------------------


def test_big_endian_written_little_endian():
  be = np.arange(6, dtype='>i4').reshape(2, 3)
  data = serialization.to_bytes({'a': be})
  assert data == serialization.to_bytes({'a': be.astype('<i4')})
  out = serialization.msgpack_restore(data)['a']
  np.testing.assert_array_equal(out, be)
  assert out.dtype == np.dtype('<i4')
  assert serialization.to_bytes(np.array(2.5, '>f8')) == serialization.to_bytes(np.array(2.5))


def test_mixed_keys_keep_insertion_order():
  tree = {'b': 1, 2: 'x', 'a': {1: None, 'z': 2}}
  for in_place in (False, True):
    data = serialization.msgpack_serialize(tree, in_place=in_place)
    back = serialization.msgpack_restore(data)
    assert list(back) == ['b', 2, 'a'] and list(back['a']) == [1, 'z']
  assert tree == {'b': 1, 2: 'x', 'a': {1: None, 'z': 2}}


def test_in_place_false_sorts_keys_as_flax():
  # Flax copies the tree with jax.tree_util.tree_map, which sorts dict keys; in_place=True
  # (and to_bytes) keeps insertion order. Sortable dicts inside mixed ones are sorted too.
  tree = {
    'b': [{'y': 1, 'x': np.int8(2)}],
    'a': {'z': 2, 'c': 1},
    'm': {2: {'q': 0, 'p': 1}, 'k': 0},
  }
  expected = _flax_style_packb(
    {'a': {'c': 1, 'z': 2}, 'b': [{'x': np.int8(2), 'y': 1}], 'm': {2: {'p': 1, 'q': 0}, 'k': 0}}
  )
  assert serialization.msgpack_serialize(tree) == expected
  assert serialization.msgpack_serialize(tree, in_place=True) == _flax_style_packb(tree)
  assert serialization.to_bytes({'b': 1, 'a': 2}) == b'\x82\xa1b\x01\xa1a\x02'
  assert list(tree) == ['b', 'a', 'm']


def test_restored_arrays_writable_and_aligned():
  data = serialization.to_bytes({'a': np.float32(1), 'b': np.arange(5, dtype=np.float64)})
  b = serialization.msgpack_restore(data)['b']
  assert b.flags.writeable and b.flags.aligned and b.flags.c_contiguous
  b[0] = 9.0


def test_strict_restore_errors():
  target = {
    'params': {'Dense_0': {'kernel': np.zeros((2, 3), np.float32), 'bias': np.zeros(3, np.float32)}}
  }
  good = serialization.to_bytes(target)
  assert same(serialization.from_bytes(target, good, strict=True), target)

  bad_shape = serialization.to_bytes(
    {'params': {'Dense_0': {'kernel': np.zeros((5,), np.float32), 'bias': np.zeros(3, np.float32)}}}
  )
  # Flax's behaviour without strict: the wrong shape goes through silently.
  assert serialization.from_bytes(target, bad_shape)['params']['Dense_0']['kernel'].shape == (5,)
  with pytest.raises(errors.RestoreMismatchError) as e:
    serialization.from_bytes(target, bad_shape, strict=True)
  msg = str(e.value)
  assert './params/Dense_0/kernel' in msg and '(2, 3)' in msg and '(5,)' in msg

  bad_dtype = serialization.to_bytes(jax.tree_util.tree_map(lambda x: x.astype(np.float16), target))
  with pytest.raises(errors.RestoreMismatchError, match='float16'):
    serialization.from_bytes(target, bad_dtype, strict=True)

  extra = serialization.to_bytes({'params': {**target['params'], 'Dense_1': {}}})
  assert 'Dense_1' not in serialization.from_bytes(target, extra)['params']
  with pytest.raises(errors.RestoreMismatchError, match=r'\./params/Dense_1'):
    serialization.from_bytes(target, extra, strict=True)

  with pytest.raises(errors.RestoreMismatchError, match='state dict'):
    serialization.from_state_dict(target, {'params': np.zeros(3)}, strict=True)


def test_strict_through_dataclass_and_python_scalars():
  @struct.dataclass
  class S:
    step: int
    w: np.ndarray

  target = S(0, np.zeros(2, np.float32))
  ok = serialization.to_bytes(S(np.array(5, np.int32), np.ones(2, np.float32)))
  assert int(serialization.from_bytes(target, ok, strict=True).step) == 5
  bad = serialization.to_bytes(S(np.zeros(3, np.int32), np.ones(2, np.float32)))
  with pytest.raises(errors.RestoreMismatchError, match=r'\./step'):
    serialization.from_bytes(target, bad, strict=True)
  # The strict flag does not leak into later non-strict calls.
  assert serialization.from_bytes(target, bad).step.shape == (3,)


STRUCTURE_CASES = [
  # (target, state, Linen's exact message, expected/found details of the strict error)
  (
    {'a': {'b': {'c': [1, 2], 'd': [4, 5]}}},
    {'a': {'b': {'c': {'0': 1, '1': 2}, 'd': {'0': 4}}}},
    'The size of the list and the state dict do not match, got 2 and 1 at path ./a/b/d',
    'expected a list of 2 entries, found 1 entries',
  ),
  (
    (1, (2, 3)),
    {'0': 1, '1': {'0': 2}},
    'The size of the list and the state dict do not match, got 2 and 1 at path ./1',
    'expected a list of 2 entries',
  ),
  (
    {'p': {'Dense_0': 1, 'Dense_1': 2}},
    {'p': {'Dense_0': 1}},
    'The target dict keys and state dict keys do not match, target dict contains keys '
    "{'Dense_1'} which are not present in state dict at path ./p",
    'no entry for ./p/Dense_1',
  ),
  (
    {'l': [1, 2]},
    {'l': {'0': 1, 'x': 2}},
    'The list entries of the state dict at path ./l must be keyed "0".."1"',
    "found the keys ['0', 'x']",
  ),
  (
    collections.namedtuple('P', 'a b')(1, 2),
    {'a': 1, 'c': 2},
    "The field names of the state dict and the named tuple do not match, got {'a', 'c'} and "
    "{'a', 'b'} at path .",
    "expected the fields ['a', 'b'] of P",
  ),
  (
    {'l': [1]},
    {'l': 3},
    'The state dict at path ./l for a list must be a dict',
    'expected a state dict (dict) for list, found int 3',
  ),
]


@pytest.mark.parametrize('target,state,linen,details', STRUCTURE_CASES)
def test_structure_mismatch_errors(target, state, linen, details):
  # Without strict: Linen's ValueError with its exact message (Flax's tests compare it
  # literally); the fix rides along as a note, which tracebacks print.
  with pytest.raises(ValueError) as e:
    serialization.from_state_dict(target, state)
  assert str(e.value) == linen
  assert 'Fix:' in ''.join(e.value.__notes__)
  # strict=True: RestoreMismatchError (still a ValueError) at the first difference, with
  # Linen's wording first, then the path, expected vs found, and the fix.
  data = serialization.msgpack_serialize(state)
  with pytest.raises(errors.RestoreMismatchError) as e:
    serialization.from_bytes(target, data, strict=True)
  msg = str(e.value)
  assert msg.startswith(linen) and details in msg and 'restore with strict=False' in msg
  assert isinstance(e.value, ValueError)


def test_strict_reports_the_first_difference_only():
  target = {'a': [1, 2], 'b': {'c': 1}}
  with pytest.raises(errors.RestoreMismatchError, match=r'at path \./a'):
    serialization.from_state_dict(target, {'a': {'0': 1}, 'b': {}}, strict=True)


def test_strict_accepts_shape_dtype_struct_targets():
  target = {'w': jax.ShapeDtypeStruct((2,), jnp.float32)}
  data = serialization.to_bytes({'w': np.ones(2, np.float32)})
  np.testing.assert_array_equal(serialization.from_bytes(target, data, strict=True)['w'], 1.0)


def test_stream_round_trip_and_file_objects(tmp_path):
  tree = {'a': np.arange(100_000, dtype=np.float32), 'b': [1, 'x'], 'c': {'d': np.int8(3)}}
  path = tmp_path / 'f.msgpack'
  with open(path, 'wb') as f:
    serialization.write_bytes(f, tree)
  assert path.read_bytes() == serialization.to_bytes(tree)
  with open(path, 'rb') as f:
    back = serialization.read_bytes(f, tree, strict=True)
  assert same(back, tree)
  with open(path, 'rb') as f:
    assert same(serialization.from_bytes(tree, f), tree)


class _Unseekable(io.RawIOBase):
  """A pipe-like reader: no seek/tell, short reads."""

  def __init__(self, data, step=1000):
    self.data, self.pos, self.step = data, 0, step

  def readable(self):
    return True

  def readinto(self, b):
    n = min(len(b), self.step, len(self.data) - self.pos)
    b[:n] = self.data[self.pos : self.pos + n]
    self.pos += n
    return n


def test_stream_unseekable_short_reads(monkeypatch):
  monkeypatch.setattr(_reader, '_UNKNOWN_SIZE_PIECE', 4096)
  tree = {'a': np.arange(5000, dtype=np.float64), 'b': 'x' * 300, 'c': np.arange(3)}
  data = serialization.to_bytes(tree)
  assert same(serialization.read_bytes(_Unseekable(data)), tree)
  with pytest.raises(errors.MsgpackDecodeError, match='truncated'):
    serialization.read_bytes(_Unseekable(data[:-5]))
  with pytest.raises(errors.MsgpackDecodeError, match='follows the end'):
    serialization.read_bytes(_Unseekable(data + b'\x00'))


def test_streaming_write_does_not_build_document(monkeypatch):
  big = np.arange(1 << 20, dtype=np.float32)
  writes = []

  class Sink:
    def write(self, buf):
      writes.append((type(buf).__name__, memoryview(buf).nbytes))

  serialization.write_bytes(Sink(), {'a': big, 'b': big})
  # Each array's data goes to the file as its own memoryview, not joined with the rest.
  assert [w for w in writes if w[0] == 'memoryview'] == [('memoryview', big.nbytes)] * 2
  assert sum(n for _, n in writes) == len(serialization.to_bytes({'a': big, 'b': big}))


def test_streaming_read_memory_is_bounded(tmp_path):
  import tracemalloc

  tree = {f'a{i}': np.full(1 << 20, i, np.float32) for i in range(8)}  # 32 MiB
  path = tmp_path / 'big.msgpack'
  with open(path, 'wb') as f:
    serialization.write_bytes(f, tree)
  tracemalloc.start()
  try:
    with open(path, 'rb') as f:
      back = serialization.read_bytes(f)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  total = sum(a.nbytes for a in tree.values())
  assert same(back, tree)
  # The restored arrays plus small buffers; a second full copy would double it.
  assert peak < total + (4 << 20), (peak, total)


def test_frozen_dict_and_partial_round_trip():
  p = jax.tree_util.Partial(jnp.add, np.float32(1), keyword=np.int32(2))
  target = {'fd': FrozenDict({'a': np.zeros(2)}), 'p': p}
  data = serialization.to_bytes({'fd': FrozenDict({'a': np.ones(2)}), 'p': p})
  back = serialization.from_bytes(target, data)
  assert isinstance(back['fd'], FrozenDict) and back['fd']['a'].tolist() == [1.0, 1.0]
  assert back['p'].keywords == {'keyword': np.int32(2)}


# --- property tests: random trees round-trip exactly -------------------------------------

# Long doubles' padding bytes are arbitrary, so byte-exact properties leave them out;
# test_numpy_dtypes_flax_writes_round_trip covers them.
ALL_DTYPES = sorted(n for n, dt in _format._DTYPES.items() if dt not in X87_PADDED)


@st.composite
def arrays(draw):
  dtype = _format._DTYPES[draw(st.sampled_from(ALL_DTYPES))]
  shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
  n = math.prod(shape) * dtype.itemsize
  raw = draw(st.binary(min_size=n, max_size=n))
  arr = np.frombuffer(raw, dtype).reshape(shape).copy()
  if draw(st.booleans()) and arr.ndim == 2:
    arr = np.asfortranarray(arr)
  return arr


scalars = st.one_of(
  st.none(),
  st.booleans(),
  st.integers(-(2**63), 2**64 - 1),
  st.floats(allow_nan=True, allow_infinity=True),
  st.text(max_size=40),
  st.binary(max_size=40),
  st.complex_numbers(allow_nan=True),
  arrays().map(lambda a: a.reshape(-1)[0] if a.size else a[()] if a.ndim == 0 else a),
  arrays(),
)

keys = st.one_of(st.text(max_size=8), st.integers(-5, 300))


def trees(leaves):
  return st.recursive(
    leaves,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(keys, kids, max_size=4)),
    max_leaves=12,
  )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees(scalars))
def test_msgpack_round_trip_property(tree):
  data = serialization.msgpack_serialize(tree, in_place=True)
  assert same(serialization.msgpack_restore(data), tree)
  assert same(serialization.read_bytes(io.BytesIO(data)), tree)


def _as_state(tree):
  if isinstance(tree, dict):
    return {str(k): _as_state(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return {str(i): _as_state(v) for i, v in enumerate(tree)}
  return tree


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees(scalars), st.integers(1, 64))
def test_to_bytes_round_trip_property(tree, chunk):
  if isinstance(tree, dict) and len({str(k) for k in tree}) != len(tree):
    return
  try:
    data = serialization.to_bytes(tree)
  except ValueError:  # keys with equal str(), rejected by to_state_dict as in Flax
    return
  old = serialization.MAX_CHUNK_SIZE
  serialization.MAX_CHUNK_SIZE = chunk
  try:
    chunked = serialization.to_bytes(tree)
  finally:
    serialization.MAX_CHUNK_SIZE = old
  for encoded in (data, chunked):
    assert same(serialization.from_bytes(None, encoded), _as_state(tree))
    restored = serialization.from_bytes(tree, encoded, strict=True)
    assert same(_as_state(restored), _as_state(tree))


# --- fast paths: C decoder with fallback to the parser, cached array headers -------------


def _flax_style_packb(tree):
  """An independent encoder of the wire format: msgpack.packb with ExtType, as Flax does."""
  import msgpack

  def ext(o):
    if isinstance(o, np.ndarray):
      return msgpack.ExtType(1, msgpack.packb([list(o.shape), o.dtype.name, o.tobytes()]))
    if isinstance(o, np.generic):
      return msgpack.ExtType(3, msgpack.packb([[], o.dtype.name, o.tobytes()]))
    if isinstance(o, complex):
      return msgpack.ExtType(2, msgpack.packb([o.real, o.imag]))
    raise TypeError(type(o))

  return msgpack.packb(tree, default=ext, strict_types=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees(scalars))
def test_bytes_match_independent_encoder_property(tree):
  expected = _flax_style_packb(tree)
  # Twice: the second encoding reuses the cached prefixes of the small arrays.
  assert serialization.msgpack_serialize(tree, in_place=True) == expected
  assert serialization.msgpack_serialize(tree, in_place=True) == expected


def test_cached_prefix_not_used_for_other_layouts():
  c = np.arange(6, dtype=np.float32).reshape(2, 3)
  serialization.to_bytes(c)  # caches the prefix of (2, 3) float32
  for other in (np.asfortranarray(c), c.astype('>f4'), np.ones((2, 3), np.int32)):
    assert serialization.to_bytes(other) == _flax_style_packb(
      np.ascontiguousarray(other, other.dtype.newbyteorder('<'))
    )


def test_same_payload_length_different_headers():
  # (1,) int64 and (2,) int32 have payloads of equal length and equal header length.
  tree = {
    'a': np.array([5], np.int64),
    'b': np.array([1, 2], np.int32),
    'c': np.array([7], np.int64),
  }
  back = serialization.msgpack_restore(serialization.to_bytes(tree))
  assert same(back, tree)


@pytest.mark.parametrize('source', ['bytes', 'file'])
def test_cached_big_array_header_does_not_hide_a_corrupt_one(source):
  big = np.arange(5_000, dtype=np.float32)
  tree = {'a': big, 'b': big + 1}
  encoded = serialization.to_bytes(tree)
  restore = (
    (lambda data: serialization.read_bytes(io.BytesIO(data)))
    if source == 'file'
    else (serialization.msgpack_restore)
  )
  assert same(restore(encoded), tree)  # caches the (5000,) float32 header
  second = encoded.rindex(b'float32')
  for wrong, problem in ((b'float33', 'unsupported dtype'), (b'float64', 'needs 40000 bytes')):
    corrupt = encoded[:second] + wrong + encoded[second + len(wrong) :]
    with pytest.raises(errors.MsgpackDecodeError, match=f'at "./b".*{problem}'):
      restore(corrupt)
  assert same(restore(encoded), tree)


def test_mixed_small_and_large_arrays_restore_writable():
  tree = {
    'small': np.arange(3, dtype=np.float32),
    'big': np.arange(10_000, dtype=np.float64),
    'scalar': np.int32(4),
    'nested': [{'s': np.ones((2, 2), np.int8)}],
  }
  back = serialization.msgpack_restore(serialization.msgpack_serialize(tree, in_place=True))
  assert same(back, tree)
  for arr in (back['small'], back['big'], back['nested'][0]['s']):
    assert arr.flags.writeable and arr.flags.aligned and arr.flags.owndata


@pytest.mark.parametrize('min_bytes', [0, 1 << 62])
def test_big_arrays_copied_in_parallel_or_not_restore_the_same(monkeypatch, min_bytes):
  monkeypatch.setattr(_reader, '_PARALLEL_COPY_MIN_BYTES', min_bytes)
  rng = np.random.default_rng(0)
  sizes = [5_000, 70_000, 4_097, 123_457, 9_000, 6_001, 50_000]
  tree = {
    f'a{i}': rng.standard_normal(n).astype(np.float32 if i % 2 else np.float64)
    for i, n in enumerate(sizes)
  }
  tree['tiny'] = np.arange(3, dtype=np.int16)
  encoded = serialization.to_bytes(tree)
  back = serialization.msgpack_restore(encoded)
  assert list(back) == list(tree)
  for name, arr in tree.items():
    np.testing.assert_array_equal(back[name], arr)
    assert back[name].dtype == arr.dtype
    assert back[name].flags.writeable and back[name].flags.owndata
  # The copies come from a buffer the caller may reuse: the arrays must not alias it.
  mutable = bytearray(encoded)
  back = serialization.msgpack_restore(mutable)
  mutable[:] = bytes(len(mutable))
  np.testing.assert_array_equal(back['a3'], tree['a3'])
  # A document cut short after its big arrays is refused, not half restored.
  with pytest.raises(errors.MsgpackDecodeError, match='truncated'):
    serialization.msgpack_restore(encoded[:-1])


@pytest.mark.parametrize(
  'doc',
  [
    b'\x81\xa1t\xd6\xff\x00\x00\x00\x01',  # timestamp value
    b'\x81\xd6\xff\x00\x00\x00\x01\x00',  # timestamp key
    b'\x91\xd7\xff' + bytes(8),  # timestamp in a list
    b'\xd6\xff\x00\x00\x00\x01',  # timestamp at the root
  ],
)
def test_timestamps_rejected_like_other_reserved_ext_types(doc):
  with pytest.raises(errors.MsgpackDecodeError, match='reserved ext type -1'):
    serialization.msgpack_restore(doc)


def test_lowered_max_depth_applies_to_c_decoder(monkeypatch):
  monkeypatch.setattr(serialization, 'MAX_DEPTH', 3)
  assert serialization.msgpack_restore(b'\x81\xa1a\x91\x80') == {'a': [{}]}
  with pytest.raises(errors.MsgpackDecodeError, match='MAX_DEPTH=3'):
    serialization.msgpack_restore(b'\x81\xa1a\x91\x91\x80')


def test_chunked_only_reassembled_through_dicts():
  chunk_map = {
    '__msgpack_chunked_array__': True,
    'shape': {'0': 2},
    'chunks': {'0': np.zeros(2, np.float32)},
  }
  back = serialization.msgpack_restore(
    serialization.msgpack_serialize({'d': {'x': chunk_map}, 'l': [chunk_map]}, in_place=True)
  )
  assert same(back['d']['x'], np.zeros(2, np.float32))
  assert same(back['l'][0], chunk_map)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_c_decoder_never_accepts_what_the_parser_rejects(data):
  from tests.test_serialization_fuzz import mutated

  doc = data.draw(mutated())
  try:
    fast = _reader._fast_restore(doc, serialization.MAX_DEPTH)
  except Exception:  # noqa: BLE001 - the public entry points fall back to the parser
    return
  assert same(fast, _reader._restore(_reader._Source(doc)))


def _deep(levels: int) -> bytes:
  return b'\x91' * levels + b'\x90'


# A map whose key "a" appears twice: msgpack keeps the last value, so a decoder that only
# checks the final tree never sees the first one. Each first value is invalid.
DUPLICATE_KEY_DOCS = {
  'too deep': b'\x82\xa1a' + _deep(8) + b'\xa1a\x01',
  'nested map, too deep': b'\x81\xa1m\x82\xa1a' + _deep(8) + b'\xa1a\x01',
  'timestamp': b'\x82\xa1a\xd6\xff\x00\x00\x00\x01\xa1a\x01',
  'bad chunked array': b'\x82\xa1a\x81\xb9__msgpack_chunked_array__\xc3\xa1a\x01',
  'in a list': b'\x91\x82\xa1a' + _deep(8) + b'\xa1a\x01',
}


@pytest.mark.parametrize('doc', DUPLICATE_KEY_DOCS.values(), ids=DUPLICATE_KEY_DOCS.keys())
def test_duplicate_map_keys_get_one_verdict(monkeypatch, doc):
  monkeypatch.setattr(serialization, 'MAX_DEPTH', 5)
  with pytest.raises(errors.MsgpackDecodeError) as from_memory:
    serialization.msgpack_restore(doc)
  with pytest.raises(errors.MsgpackDecodeError) as from_file:
    serialization.read_bytes(io.BytesIO(doc))
  assert str(from_memory.value) == str(from_file.value)


def test_duplicate_map_keys_with_valid_values_keep_the_last():
  doc = b'\x82\xa1a\x91\x01\xa1a\x02'
  assert serialization.msgpack_restore(doc) == {'a': 2}
  assert serialization.read_bytes(io.BytesIO(doc)) == {'a': 2}


# --- typed PRNG keys ---------------------------------------------------------------------

KEY_IMPLS = ['threefry2x32', 'rbg', 'unsafe_rbg']


@pytest.mark.parametrize('impl', KEY_IMPLS)
def test_typed_keys_round_trip_in_train_state(impl):
  import optax

  from flaxlike.training import train_state

  class KeyedState(train_state.TrainState):
    rng: jax.Array

  def make(seed):
    return KeyedState.create(
      apply_fn=None,
      params={
        'w': jnp.full(2, float(seed)),
        'noise': jax.random.split(jax.random.key(seed, impl=impl), 3),
      },
      tx=optax.sgd(0.1),
      rng=jax.random.key(seed, impl=impl),
    )

  saved, target = make(7), make(0)
  data = serialization.to_bytes(saved)
  for back in (
    serialization.from_bytes(target, data, strict=True),
    serialization.from_bytes(target, io.BytesIO(data), strict=True),
    serialization.from_state_dict(target, serialization.to_state_dict(saved), strict=True),
  ):
    for got, want in ((back.rng, saved.rng), (back.params['noise'], saved.params['noise'])):
      assert got.dtype == want.dtype and str(jax.random.key_impl(got)) == impl
      np.testing.assert_array_equal(jax.random.key_data(got), jax.random.key_data(want))
    np.testing.assert_array_equal(jax.random.uniform(back.rng), jax.random.uniform(saved.rng))
  # The representation: the implementation's name and the uint32 key data, a dict that
  # Flax's reader (msgpack with its ext hook) takes as it is.
  raw = serialization.to_state_dict(saved)['rng']
  assert list(raw) == ['__prng_key_impl__', 'key_data'] and raw['__prng_key_impl__'] == impl
  flax_view = msgpack.unpackb(data, ext_hook=_flax_style_ext_unpack, strict_map_key=False)
  assert flax_view['rng']['__prng_key_impl__'] == impl
  assert flax_view['rng']['key_data'].dtype == np.uint32
  assert flax_view['params']['noise']['key_data'].shape == (
    3,
    *jax.random.key_data(saved.rng).shape,
  )


def _flax_style_ext_unpack(code, payload):
  shape, name, buf = msgpack.unpackb(payload)
  return np.frombuffer(buf, np.dtype(name)).reshape(shape)


def test_typed_keys_in_struct_dataclass_and_msgpack_serialize():
  @struct.dataclass
  class Carry:
    key: jax.Array
    step: int

  saved = Carry(jax.random.key(5, impl='unsafe_rbg'), 3)
  target = Carry(jax.random.key(0, impl='unsafe_rbg'), 0)
  back = serialization.from_bytes(target, serialization.to_bytes(saved), strict=True)
  assert back.key.dtype == saved.key.dtype and back.step == 3
  np.testing.assert_array_equal(jax.random.key_data(back.key), jax.random.key_data(saved.key))
  # msgpack_serialize writes keys in the same form; a marker dict restores into a typed
  # key whatever the target leaf, and raw key data into a typed key target.
  data = serialization.msgpack_serialize({'k': saved.key})
  assert serialization.msgpack_restore(data)['k']['__prng_key_impl__'] == 'unsafe_rbg'
  back = serialization.from_bytes({'k': None}, data)
  assert back['k'].dtype == saved.key.dtype
  raw = {'k': np.asarray(jax.random.key_data(saved.key))}
  back = serialization.from_state_dict({'k': target.key}, raw, strict=True)
  np.testing.assert_array_equal(jax.random.key_data(back['k']), raw['k'])
  shape_only = {'k': jax.eval_shape(lambda: target.key)}
  assert serialization.from_bytes(shape_only, data, strict=True)['k'].dtype == saved.key.dtype


def test_typed_key_errors_name_the_path():
  wrong_impl = serialization.to_bytes({'k': jax.random.key(1, impl='rbg')})
  with pytest.raises(errors.RestoreMismatchError, match=r'"\./k".*key<fry>.*key<rbg>'):
    serialization.from_bytes({'k': jax.random.key(0)}, wrong_impl, strict=True)
  bogus = serialization.msgpack_serialize(
    {'k': {'__prng_key_impl__': 'mersenne', 'key_data': np.zeros(2, np.uint32)}}
  )
  with pytest.raises(ValueError, match=r'at path \./k.*mersenne'):
    serialization.from_bytes({'k': jax.random.key(0)}, bogus)
  short = serialization.msgpack_serialize(
    {'k': {'__prng_key_impl__': 'threefry2x32', 'key_data': np.zeros(3, np.uint32)}}
  )
  with pytest.raises(ValueError, match=r'at path \./k .*uint32'):
    serialization.from_bytes({'k': jax.random.key(0)}, short)

  from jax.extend import random as jex_random

  custom = jex_random.define_prng_impl(
    key_shape=(2,),
    seed=lambda s: jnp.stack([s.astype(jnp.uint32), s.astype(jnp.uint32)]),
    split=lambda k, shape: jnp.broadcast_to(k, (*shape, 2)),
    random_bits=lambda k, bits, shape: jnp.zeros(shape, jnp.uint32),
    fold_in=lambda k, d: k,
    name='constant',
    tag='const',
  )
  key = jax.random.key(0, impl=custom)
  for save in (serialization.to_bytes, serialization.msgpack_serialize):
    with pytest.raises(ValueError, match=r'at \./p/k uses the implementation .*cannot be saved'):
      save({'p': {'k': key}})


def test_jax_array_leaves_write_the_bytes_of_their_numpy_values(monkeypatch):
  host = {
    'a': np.arange(6, dtype=np.float32).reshape(2, 3),
    'b': [np.int8(3), np.ones(3, ml_dtypes.bfloat16)],
    'c': {'big': np.arange(5000, dtype=np.float64), 's': np.float16(2)},
  }
  on_device = jax.tree_util.tree_map(jnp.asarray, host)
  # What the device holds (0-d arrays for scalars, float32 for float64 without x64).
  host = jax.tree_util.tree_map(lambda x: np.array(x), on_device)
  assert serialization.to_bytes(on_device) == serialization.to_bytes(host)
  for in_place in (False, True):
    assert serialization.msgpack_serialize(on_device, in_place) == serialization.msgpack_serialize(
      host, in_place
    )
  # Twice the same small shapes: the second time through the cached prefixes.
  assert serialization.to_bytes(on_device) == serialization.to_bytes(host)
  # Mixed key types (no jax tree order) and chunking of a device array.
  mixed = {1: jnp.ones(2), 'x': jnp.zeros(3, jnp.int32)}
  assert serialization.msgpack_serialize(mixed) == serialization.msgpack_serialize(
    {1: np.ones(2, np.float32), 'x': np.zeros(3, np.int32)}
  )
  monkeypatch.setattr(serialization, 'MAX_CHUNK_SIZE', 16)
  chunked = serialization.to_bytes({'w': jnp.arange(10.0)})
  assert chunked == serialization.to_bytes({'w': np.arange(10.0, dtype=np.float32)})
  assert same(serialization.msgpack_restore(chunked)['w'], np.arange(10.0, dtype=np.float32))


def test_a_type_registered_after_it_was_written_as_a_leaf_uses_its_handler(monkeypatch):
  from flaxlike.serialization import _state_dict

  class Point:
    def __init__(self, x):
      self.x = x

  # Unregistered: a leaf, passed through unchanged (and remembered as a plain leaf type).
  p = Point(1)
  assert serialization.to_state_dict({'p': p})['p'] is p
  monkeypatch.setattr(_state_dict, '_STATE_DICT_REGISTRY', dict(_state_dict._STATE_DICT_REGISTRY))
  serialization.register_serialization_state(
    Point, lambda q: {'x': q.x}, lambda q, s: Point(s['x'])
  )
  assert serialization.to_state_dict({'p': p}) == {'p': {'x': 1}}


def test_tiny_jax_arrays_are_read_from_their_buffers_until_one_is_refused(monkeypatch):
  from jax.experimental.layout import Format, Layout
  from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

  from flaxlike.serialization import _writer

  cpu = jax.devices()[0]
  mesh = jax.make_mesh((2,), ('x',), devices=jax.devices()[:2])
  sharded = jax.device_put(jnp.arange(4.0), NamedSharding(mesh, PartitionSpec('x')))
  column_major = jax.jit(
    lambda x: x.T + 0,
    out_shardings=Format(Layout(major_to_minor=(1, 0)), SingleDeviceSharding(cpu)),
  )(jnp.arange(6.0).reshape(2, 3))
  tiny = [jnp.full(4, i, jnp.float32) for i in range(3)] + [jnp.ones((), jnp.int32)]
  host_calls = []
  real_host = _writer._Writer.host
  monkeypatch.setattr(
    _writer._Writer,
    'host',
    lambda self, x, path: host_calls.append(path) or real_host(self, x, path),
  )
  # The shapes and dtypes are met once, the column-major one's too.
  serialization.to_bytes([*tiny, np.zeros((3, 2), np.float32)])
  cases = [
    ({'t': tiny}, 1),  # only the first leaf, which finds the tree on the CPU
    ({'t': tiny, 'b': jnp.ones(4, jnp.bfloat16)}, 2),  # bfloat16 has no buffer export
    ({'t': tiny, 's': sharded, 'u': tiny}, 6),  # refused: the rest takes the numpy path
    ({'t': tiny, 'c': column_major, 'u': tiny}, 6),
    ({'t': tiny, 'big': jnp.ones(5000), 'u': tiny}, 2),  # not small: not cached
  ]
  for tree, numpy_leaves in cases:
    host_calls.clear()
    data = serialization.to_bytes(tree)
    assert len(host_calls) == numpy_leaves, tree.keys()
    # (jax's tree_map would sort the keys)
    assert data == serialization.to_bytes(
      {k: [np.asarray(x) for x in v] if type(v) is list else np.asarray(v) for k, v in tree.items()}
    )
  monkeypatch.setattr(serialization, 'MAX_CHUNK_SIZE', 8)  # the cached 16-byte arrays chunk
  assert serialization.to_bytes(tiny) == serialization.to_bytes(
    jax.tree_util.tree_map(np.asarray, tiny)
  )


def test_accelerator_leaves_start_their_host_copies_together(monkeypatch):
  from flaxlike.serialization import _writer

  tree = {'a': jnp.ones(2), 'b': [jnp.zeros(2)], 'k': jax.random.key(0), 'n': np.ones(1)}
  started = []
  monkeypatch.setattr(_writer, '_on_cpu', lambda x: False)
  monkeypatch.setattr(_writer, '_start_host_copies', started.append)
  data = serialization.to_bytes(tree)
  assert len(started) == 1  # once, over the whole tree, at the first array
  assert serialization.msgpack_restore(data)['b']['0'].tolist() == [0.0, 0.0]
  monkeypatch.undo()
  # The real one starts copies of the arrays only (not of typed keys or numpy arrays), and
  # leaves trees whose keys do not sort to the encoder.
  _writer._start_host_copies(tree)
  _writer._start_host_copies({1: jnp.ones(2), 'x': jnp.ones(2)})
