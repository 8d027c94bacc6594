"""Serialization throughput: flaxlike vs a plain memory copy (and vs Flax when importable).

    .venv/bin/python benchmarks/serialization.py            # both allocator settings
    .venv/bin/python benchmarks/serialization.py --single   # this process's allocator only

Large: 100M float32 parameters (400 MB) in 200 arrays, the tree of the performance issue,
to_bytes/from_bytes against ``bytes(buffer)``, one copy of the same total size into a
fresh buffer (``--params`` picks another size). Peak memory is the most bytes allocated at
once during a call, result included, as a multiple of the data size. Small: 20,000 tiny
arrays, cost per array, as numpy arrays and as ``jax.Array`` leaves (whose cost is mostly
the conversion of each to a host numpy array). Implementations alternate within each repetition; the table shows
medians.

A fresh 400 MB buffer costs page faults unless the allocator keeps freed memory, which
decides how the copy compares with anything else. The default run therefore measures
twice, in child processes: with glibc's defaults, and with ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` raised so that freed memory is reused without faults. Not part
of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import tracemalloc

import jax
import jax.numpy as jnp
import msgpack
import numpy as np

from flaxlike import serialization

try:  # pragma: no cover - only where flax is installed (never the project venv)
  import flax.serialization as flax_serialization
except ImportError:
  flax_serialization = None

REPEATS = 7
LARGE_PARAMS = 100_000_000
LARGE_COUNT = 200
SMALL_COUNT = 20_000
KEEP_FREED_MEMORY = {'MALLOC_MMAP_THRESHOLD_': str(2**32), 'MALLOC_TRIM_THRESHOLD_': str(2**32)}


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


def peak_allocated(fn) -> int:
  """Most bytes held at once by allocations made while ``fn`` runs (Python objects and
  numpy buffers alike, as tracemalloc sees them), its result included."""
  tracemalloc.start()
  try:
    result = fn()
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  del result
  return peak


def measure(params: int) -> None:
  rng = np.random.default_rng(0)
  per_array = params // LARGE_COUNT
  large = {
    f'layer_{i}': rng.standard_normal(per_array, dtype=np.float32) for i in range(LARGE_COUNT)
  }
  nbytes = sum(a.nbytes for a in large.values())
  flat = np.concatenate(list(large.values()))
  small = {f'p{i}': np.full(3, i, np.float32) for i in range(SMALL_COUNT)}
  small_jax = jax.block_until_ready({k: jnp.asarray(v) for k, v in small.items()})
  small_raw = [b'x' * 12 for _ in range(SMALL_COUNT)]

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
    'flaxlike to_bytes, jax.Array': lambda: serialization.to_bytes(small_jax),
    'flaxlike from_bytes': lambda: serialization.from_bytes(None, encoded_small),
  }
  if flax_serialization is not None:
    cases['flax to_bytes'] = lambda: flax_serialization.to_bytes(large)
    cases['flax from_bytes'] = lambda: flax_serialization.msgpack_restore(encoded)
    small_cases['flax to_bytes'] = lambda: flax_serialization.to_bytes(small)
    small_cases['flax to_bytes, jax.Array'] = lambda: flax_serialization.to_bytes(small_jax)
    small_cases['flax from_bytes'] = lambda: flax_serialization.msgpack_restore(encoded_small)

  kept = all(os.environ.get(k) == v for k, v in KEEP_FREED_MEMORY.items())
  print(
    f'allocator: {"keeps freed memory (MALLOC_*_THRESHOLD_=2**32)" if kept else "glibc defaults"}'
  )
  print(f'large: {nbytes / 1e6:.0f} MB float32 in {LARGE_COUNT} arrays, median of {REPEATS}')
  print(f'{"case":<32}{"seconds":>10}{"GB/s":>10}{"vs memcpy":>11}{"peak memory":>13}')
  large_t = bench(cases)
  copy = large_t['memcpy (bytes of one buffer)']
  for name, t in large_t.items():
    # Measured in a run of its own: tracing allocations slows them down.
    peak = peak_allocated(cases[name]) / nbytes
    print(f'{name:<32}{t:>10.4f}{nbytes / t / 1e9:>10.2f}{copy / t:>10.2f}x{peak:>12.2f}x')
  print(f'\nsmall: {SMALL_COUNT:,} arrays of 3 float32, median of {REPEATS}')
  print(f'{"case":<32}{"seconds":>10}{"us/array":>10}')
  for name, t in bench(small_cases).items():
    print(f'{name:<32}{t:>10.4f}{t / SMALL_COUNT * 1e6:>10.2f}')
  if flax_serialization is None:
    print('(flax not importable: flax rows omitted)')


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    '--single', action='store_true', help="measure with this process's allocator only"
  )
  parser.add_argument(
    '--params', type=int, default=LARGE_PARAMS, help='float32 parameters in the large tree'
  )
  args = parser.parse_args()
  if args.single:
    measure(args.params)
    return
  # The allocator reads its settings at start-up, so each setting needs its own process.
  for extra in ({}, KEEP_FREED_MEMORY):
    env = {k: v for k, v in os.environ.items() if k not in KEEP_FREED_MEMORY}
    command = [sys.executable, __file__, '--single', '--params', str(args.params)]
    subprocess.run(command, env={**env, **extra}, check=True)
    print()


if __name__ == '__main__':
  main()
