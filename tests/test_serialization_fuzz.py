"""Hostile input: every corrupted document raises MsgpackDecodeError or decodes, never
anything else, and nothing is allocated beyond what the input can back."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from flaxlike import serialization
from flaxlike.errors import MsgpackDecodeError

FUZZ_EXAMPLES = 3000
FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'msgpack')


def _corpus() -> list[bytes]:
  docs = []
  for name in ('mixed.msgpack', 'chunked_16.msgpack', 'train_state_step1.msgpack'):
    with open(os.path.join(FIXTURES, name), 'rb') as f:
      docs.append(f.read())
  docs.append(
    serialization.msgpack_serialize(
      [{'a': np.arange(3, dtype=np.float32)}, 1 + 2j, np.float32(1), [[[]]], {1: b'x'}]
    )
  )
  # A map with a repeated key: msgpack keeps the last value, so mutations of the first one
  # test that both readers still judge the value msgpack discards.
  first = serialization.msgpack_serialize([[np.int8(1)], {'t': 1 + 2j}], in_place=True)
  docs.append(b'\x82\xa1a' + first + b'\xa1a' + serialization.msgpack_serialize(np.float32(2)))
  return docs


CORPUS = _corpus()


def check(data: bytes) -> None:
  for decode in (serialization.msgpack_restore, lambda d: serialization.read_bytes(io.BytesIO(d))):
    try:
      decode(data)
    except MsgpackDecodeError as e:
      assert 'Invalid msgpack data' in str(e)


@st.composite
def mutated(draw):
  data = bytearray(draw(st.sampled_from(CORPUS)))
  for _ in range(draw(st.integers(1, 3))):
    op = draw(st.sampled_from(['truncate', 'flip', 'splice', 'insert', 'header']))
    pos = draw(st.integers(0, max(0, len(data) - 1)))
    if op == 'truncate':
      del data[pos:]
    elif op == 'flip' and data:
      data[pos] ^= 1 << draw(st.integers(0, 7))
    elif op == 'splice':
      other = draw(st.sampled_from(CORPUS))
      a = draw(st.integers(0, len(other)))
      b = draw(st.integers(a, min(len(other), a + 64)))
      data[pos : pos + draw(st.integers(0, 16))] = other[a:b]
    elif op == 'insert':
      data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    else:
      # Absurd length headers: map32/array32/bin32/ext32/str32 claiming up to 4 GiB.
      head = draw(st.sampled_from([0xDF, 0xDD, 0xC6, 0xC9, 0xDB]))
      data[pos:pos] = bytes([head]) + struct.pack('>I', draw(st.integers(0, 2**32 - 1)))
  return bytes(data)


_runs = {'count': 0}


@settings(
  max_examples=FUZZ_EXAMPLES,
  deadline=None,
  database=None,
  phases=[Phase.explicit, Phase.generate, Phase.shrink],
  suppress_health_check=list(HealthCheck),
)
@given(mutated())
def test_fuzz_mutated_documents(data):
  _runs['count'] += 1
  check(data)


def test_fuzz_ran_all_examples():
  # Hypothesis may stop early when it believes the space is exhausted; make sure the
  # fuzzing above really covered FUZZ_EXAMPLES inputs (tests run in file order).
  assert _runs['count'] >= FUZZ_EXAMPLES


def test_every_truncation_of_every_corpus_document():
  for doc in CORPUS:
    for n in range(len(doc)):
      with pytest.raises(MsgpackDecodeError):
        serialization.msgpack_restore(doc[:n])


def ndarray_ext(shape, name: bytes, data: bytes, declared_len=None) -> bytes:
  payload = (
    b'\x93' + bytes([0x90 | len(shape)]) + b''.join(b'\xce' + struct.pack('>I', d) for d in shape)
  )
  payload += bytes([0xA0 | len(name)]) + name + b'\xc6' + struct.pack('>I', len(data)) + data
  n = len(payload) if declared_len is None else declared_len
  return b'\x81\xa1a\xc9' + struct.pack('>I', n) + b'\x01' + payload


@pytest.mark.parametrize(
  'doc,match',
  [
    (ndarray_ext((2**30,), b'float32', b'\x00' * 8), 'needs 4294967296 bytes'),
    (ndarray_ext((2**31, 2**31), b'float64', b''), r'needs \d+ bytes but the payload has 0'),
    (ndarray_ext((2,), b'object', b'\x00' * 16), 'unsupported dtype'),
    (ndarray_ext((2,), b'O', b'\x00' * 16), 'unsupported dtype'),
    (ndarray_ext((1,), b'V8', b'\x00' * 8), 'unsupported dtype'),
    (ndarray_ext((1,), b'float32', b'\x00' * 4, declared_len=2**31), 'only'),
    (b'\xdd\xff\xff\xff\xff', 'declares 4294967295 entries'),
    (b'\xdf\xff\xff\xff\xff', 'declares 4294967295 entries'),
    (b'\xc6\xff\xff\xff\xff\x00', 'truncated'),
    (b'\xdb\xff\xff\xff\xff\x00', 'truncated'),
    (b'\x81\xa1a\xc7\x03\x02abc', 'complex'),
    (b'\x81\xa1a\xd4\x03\x00', 'ndarray payload'),
    (b'\x81\x91\x00\x00', 'keys must be scalars'),
    (b'\xa2\xff\xfe', 'UTF-8'),
    (b'\xc1', 'not a msgpack type'),
    (b'\x81\xa1a\xd4\xff\x00', 'reserved ext type'),
    (b'\xc0\xc0', 'follow the end'),
    (b'', 'truncated'),
    (
      serialization.msgpack_serialize(
        {'__msgpack_chunked_array__': True, 'shape': {'0': 5}, 'chunks': {'0': np.zeros(2)}}
      ),
      'chunks hold 2',
    ),
    (serialization.msgpack_serialize({'x': {'__msgpack_chunked_array__': True}}), r'at "\./x"'),
  ],
)
def test_hostile_documents(doc, match):
  tracemalloc.start()
  try:
    with pytest.raises(MsgpackDecodeError, match=match):
      serialization.msgpack_restore(doc)
    with pytest.raises(MsgpackDecodeError):
      serialization.read_bytes(io.BytesIO(doc))
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < 1 << 20


def test_error_names_path():
  doc = serialization.to_bytes({'params': {'Dense_0': {'kernel': np.zeros(4, np.float32)}}})
  bad = doc.replace(b'float32', b'floaty2')
  with pytest.raises(MsgpackDecodeError, match=r'at "\./params/Dense_0/kernel"'):
    serialization.msgpack_restore(bad)


def test_depth_limit():
  ok = b'\x91' * 999 + b'\xc0'
  value = serialization.msgpack_restore(ok)
  for _ in range(999):
    value = value[0]
  assert value is None
  for deep in (b'\x91' * 1001 + b'\xc0', b'\x81\xa1k' * 5000 + b'\xc0', b'\x91' * 10**6):
    with pytest.raises(MsgpackDecodeError, match='MAX_DEPTH'):
      serialization.msgpack_restore(deep)


def test_unknown_ext_kept_and_bin_dtype_name_accepted():
  import msgpack

  assert serialization.msgpack_restore(b'\xd4\x09\x07') == msgpack.ExtType(9, b'\x07')
  # Writers with use_bin_type=False stored the dtype name and data as raw strings.
  payload = msgpack.packb([[2], b'int8', b'\x01\x02'], use_bin_type=False)
  arr = serialization.msgpack_restore(msgpack.packb(msgpack.ExtType(1, payload)))
  assert arr.tolist() == [1, 2] and arr.dtype == np.int8
