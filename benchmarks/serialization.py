"""Serialization throughput: flaxlike vs a plain memory copy (and vs Flax when importable).

    .venv/bin/python benchmarks/serialization.py

Large: ~100 MB of float32 in 200 arrays, to_bytes/from_bytes against ``bytes(buffer)``
of the same total size. Small: 20,000 tiny arrays, per-array cost against a bare
``msgpack.packb`` of the same number of small byte strings. Implementations alternate
within each repetition; the table shows medians. Not part of the test suite.
"""

from __future__ import annotations

import statistics
import sys
import time

import msgpack
import numpy as np

from flaxlike import serialization

try:  # pragma: no cover - only where flax is installed (never the project venv)
  import flax.serialization as flax_serialization
except ImportError:
  flax_serialization = None

REPEATS = 5


def timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def bench(cases: dict, repeats: int = REPEATS) -> dict:
  times = {name: [] for name in cases}
  for _ in range(repeats):
    for name, fn in cases.items():  # alternate so drift hits every row alike
      times[name].append(timed(fn))
  return {name: statistics.median(ts) for name, ts in times.items()}


def main():
  rng = np.random.default_rng(0)
  large = {f'layer_{i}': rng.standard_normal(125_000, dtype=np.float32) for i in range(200)}
  nbytes = sum(a.nbytes for a in large.values())
  flat = np.concatenate(list(large.values()))
  small = {f'p{i}': np.full(3, i, np.float32) for i in range(20_000)}
  small_raw = [b'x' * 12 for _ in range(20_000)]

  encoded = serialization.to_bytes(large)
  encoded_small = serialization.to_bytes(small)
  cases = {
    'memcpy (bytes of one buffer)': lambda: bytes(memoryview(flat)),
    'flaxlike to_bytes': lambda: serialization.to_bytes(large),
    'flaxlike from_bytes': lambda: serialization.from_bytes(None, encoded),
  }
  small_cases = {
    'msgpack.packb 20k bin items': lambda: msgpack.packb(small_raw),
    'flaxlike to_bytes': lambda: serialization.to_bytes(small),
    'flaxlike from_bytes': lambda: serialization.from_bytes(None, encoded_small),
  }
  if flax_serialization is not None:
    cases['flax to_bytes'] = lambda: flax_serialization.to_bytes(large)
    cases['flax from_bytes'] = lambda: flax_serialization.msgpack_restore(encoded)
    small_cases['flax to_bytes'] = lambda: flax_serialization.to_bytes(small)
    small_cases['flax from_bytes'] = lambda: flax_serialization.msgpack_restore(encoded_small)

  print(f'large: {nbytes / 1e6:.0f} MB float32 in 200 arrays, median of {REPEATS}')
  print(f'{"case":<32}{"seconds":>10}{"GB/s":>10}')
  for name, t in bench(cases).items():
    print(f'{name:<32}{t:>10.4f}{nbytes / t / 1e9:>10.2f}')
  print(f'\nsmall: 20,000 arrays of 3 float32, median of {REPEATS}')
  print(f'{"case":<32}{"seconds":>10}{"us/array":>10}')
  for name, t in bench(small_cases).items():
    print(f'{name:<32}{t:>10.4f}{t / 20_000 * 1e6:>10.2f}')
  if flax_serialization is None:
    print('\n(flax not importable: flax rows omitted)', file=sys.stderr)


if __name__ == '__main__':
  main()
