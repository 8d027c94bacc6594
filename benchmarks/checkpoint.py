"""Orbax checkpoint costs: async vs synchronous saves, restore throughput, multi-host memory.

    .venv/bin/python benchmarks/checkpoint.py            # a 1 GB TrainState
    .venv/bin/python benchmarks/checkpoint.py --gb 0.25  # smaller, for slow machines

The state is a ``TrainState`` with Adam (parameters, first and second moments: three
equal parts) of ``--gb`` GB in total, every array sharded over 8 host CPU devices.

- Save: ``save_checkpoint`` with the default synchronous checkpointer (array data stored
  raw), and with an ``AsyncCheckpointer(PyTreeCheckpointHandler())`` as Flax's docs build
  it (zstd-compressed chunks), where the training loop is blocked only until the call returns
  (the write goes on in the background and is waited for before the next measurement).
  Target: blocked per async save <= 0.2x a synchronous save.
- Restore: ``restore_checkpoint`` into a target of ``jax.ShapeDtypeStruct``s with the
  shardings, against reading every file of the same checkpoint into memory (the bytes
  any restore must read), once before and once after each restore so both find the page
  cache in the same (warm) state; for the default save's checkpoint and for the
  compressed one. Target: >= 0.7x the read throughput.
- Multi-host: two ``jax.distributed`` processes on localhost, 4 devices each, save the
  state with ``save_checkpoint_multiprocess``; the peak resident memory each process adds
  during the save, against the whole state and the process's own shards.

Medians of ``--repeats`` runs. Not part of the test suite.
"""

from __future__ import annotations

import os

# Before jax is imported: 8 host devices for the single-process measurements.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

from flaxlike.training import checkpoints, train_state  # noqa: E402

ARRAYS = 8  # parameter arrays; each (rows, 1024) float32, rows split over the devices
COLS = 1024


def build_state(gb: float, devices) -> train_state.TrainState:
  """A TrainState of about ``gb`` GB (params + Adam mu + nu), sharded over ``devices``.

  Random values: Orbax compresses what it writes, so constant arrays would measure
  nothing. Each device generates only its own rows.
  """
  mesh = Mesh(np.array(devices), ('data',))
  sharding = NamedSharding(mesh, PartitionSpec('data', None))
  rows = int(gb * 1e9 / 3 / ARRAYS / COLS / 4) // len(devices) * len(devices)
  make = jax.jit(
    lambda key: jax.random.normal(key, (rows, COLS), jnp.float32), out_shardings=sharding
  )
  keys = iter(jax.random.split(jax.random.key(0), 3 * ARRAYS))
  params = {f'w{i}': make(next(keys)) for i in range(ARRAYS)}
  tx = optax.adam(1e-3)
  adam, rest = tx.init(params)[0], tx.init(params)[1:]
  moments = {name: {k: make(next(keys)) for k in params} for name in ('mu', 'nu')}
  state = train_state.TrainState(
    step=0, apply_fn=None, params=params, tx=tx, opt_state=(adam._replace(**moments), *rest)
  )
  jax.block_until_ready(state)
  return state


class PeakRss:
  """Samples this process's resident memory every millisecond while the block runs."""

  def __enter__(self):
    import threading

    self.page = os.sysconf('SC_PAGE_SIZE')
    self.start = self.peak = self._rss()
    self.done = threading.Event()
    self.thread = threading.Thread(target=self._sample, daemon=True)
    self.thread.start()
    return self

  def _rss(self) -> int:
    with open('/proc/self/statm') as f:
      return int(f.read().split()[1]) * self.page

  def _sample(self):
    while not self.done.wait(0.001):
      self.peak = max(self.peak, self._rss())

  def __exit__(self, *exc):
    self.done.set()
    self.thread.join()
    self.peak = max(self.peak, self._rss())


def state_bytes(state) -> int:
  return sum(x.nbytes for x in jax.tree_util.tree_leaves(state) if hasattr(x, 'nbytes'))


def abstract(state):
  return jax.tree_util.tree_map(
    lambda x: (
      jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding) if isinstance(x, jax.Array) else x
    ),
    state,
  )


def read_all_files(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      with open(os.path.join(root, name), 'rb', buffering=0) as f:
        total += len(f.read())
  return total


def measure_restore(workdir: str, step: int, target, times: dict) -> int:
  """Times ``restore_checkpoint`` of ``step`` and reading that checkpoint's files.

  The files are read before and after the restore, so both find the page cache in the
  same state (warm: the checkpoint was just written). Returns the bytes of the files.
  """
  path = os.path.join(workdir, f'checkpoint_{step}')
  for restore_now in (False, True, False):
    t0 = time.perf_counter()
    if restore_now:
      restored = checkpoints.restore_checkpoint(workdir, target, step=step)
      jax.block_until_ready(restored)
      times['restore'].append(time.perf_counter() - t0)
      del restored
    else:
      read_bytes = read_all_files(path)
      times['read'].append(time.perf_counter() - t0)
  return read_bytes


def restore_summary(size: int, read_bytes: int, times: dict) -> dict:
  restore, read = statistics.median(times['restore']), statistics.median(times['read'])
  return {
    'checkpoint_bytes': read_bytes,
    'restore_s': restore,
    'restore_s_min': min(times['restore']),
    'read_files_s': read,
    'read_files_s_min': min(times['read']),
    'restore_GBps': size / restore / 1e9,
    'read_GBps': read_bytes / read / 1e9,
    'restore_over_read_throughput': (size / restore) / (read_bytes / read),
  }


def single_process(gb: float, repeats: int, workdir: str) -> dict:
  import orbax.checkpoint as ocp

  state = build_state(gb, jax.devices()[:8])
  size = state_bytes(state)
  target = abstract(state)
  sync_s, blocked_s, async_total_s = [], [], []
  # The sync saves use save_checkpoint's default checkpointer (array data stored raw); the
  # async ones the AsyncCheckpointer as Flax's docs build it (zstd-compressed chunks), so
  # the restore is measured on both kinds of files.
  raw_times: dict = {'restore': [], 'read': []}
  zstd_times: dict = {'restore': [], 'read': []}
  async_checkpointer = ocp.AsyncCheckpointer(ocp.PyTreeCheckpointHandler())
  step = 0
  for _ in range(repeats):
    step += 1
    t0 = time.perf_counter()
    checkpoints.save_checkpoint(workdir, state.replace(step=step), step, keep=2)
    sync_s.append(time.perf_counter() - t0)

    step += 1
    t0 = time.perf_counter()
    checkpoints.save_checkpoint(
      workdir, state.replace(step=step), step, keep=2, orbax_checkpointer=async_checkpointer
    )
    blocked_s.append(time.perf_counter() - t0)
    async_checkpointer.wait_until_finished()
    async_total_s.append(time.perf_counter() - t0)

    raw_bytes = measure_restore(workdir, step - 1, target, raw_times)
    zstd_bytes = measure_restore(workdir, step, target, zstd_times)
  async_checkpointer.close()
  sync, blocked = statistics.median(sync_s), statistics.median(blocked_s)
  return {
    'state_bytes': size,
    'sync_save_s': sync,
    'async_blocked_s': blocked,
    'async_total_s': statistics.median(async_total_s),
    'blocked_over_sync': blocked / sync,
    'restore_default': restore_summary(size, raw_bytes, raw_times),
    'restore_zstd': restore_summary(size, zstd_bytes, zstd_times),
  }


def worker(args) -> None:
  """One process of the multi-host save (started by ``multi_process``)."""
  jax.distributed.initialize(
    coordinator_address=f'localhost:{args.port}',
    num_processes=2,
    process_id=args.process_id,
  )
  state = build_state(args.gb, jax.devices())
  arrays = [x for x in jax.tree_util.tree_leaves(state) if isinstance(x, jax.Array)]
  own = sum(s.data.nbytes for x in arrays for s in x.addressable_shards)
  t0 = time.perf_counter()
  with PeakRss() as rss:
    checkpoints.save_checkpoint_multiprocess(args.workdir, state, 1)
  seconds = time.perf_counter() - t0
  print(
    json.dumps(
      {
        'process': args.process_id,
        'state_bytes': state_bytes(state),
        'own_shard_bytes': own,
        'rss_before_save': rss.start,
        'peak_rss_during_save': rss.peak,
        'save_s': seconds,
      }
    ),
    flush=True,
  )
  jax.distributed.shutdown()


def multi_process(gb: float, workdir: str) -> list[dict]:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4')
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        __file__,
        '--worker',
        str(i),
        '--port',
        str(port),
        '--gb',
        str(gb),
        '--workdir',
        workdir,
      ],
      stdout=subprocess.PIPE,
      env=env,
    )
    for i in range(2)
  ]
  results = []
  for p in procs:
    out, _ = p.communicate(timeout=1800)
    if p.returncode != 0:
      raise SystemExit(f'worker failed with exit code {p.returncode}')
    results.append(json.loads(out.decode().strip().splitlines()[-1]))
  return results


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--gb', type=float, default=1.0, help='size of the TrainState in GB')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--worker', type=int, default=None, help=argparse.SUPPRESS)
  parser.add_argument('--port', type=int, default=None, help=argparse.SUPPRESS)
  parser.add_argument('--workdir', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker is not None:
    args.process_id = args.worker
    worker(args)
    return
  root = tempfile.mkdtemp(prefix='flaxlike-ckpt-bench-')
  try:
    single = single_process(args.gb, args.repeats, os.path.join(root, 'single'))
    print(f'TrainState {single["state_bytes"] / 1e9:.2f} GB on 8 host devices')
    print(f'  synchronous save         {single["sync_save_s"]:.2f} s')
    print(
      f'  async save, loop blocked {single["async_blocked_s"]:.2f} s '
      f'({single["blocked_over_sync"]:.2f}x synchronous; write done after '
      f'{single["async_total_s"]:.2f} s)'
    )
    for kind, label in (('restore_default', 'default save'), ('restore_zstd', 'zstd chunks')):
      r = single[kind]
      print(
        f'  restore ({label}, {r["checkpoint_bytes"] / 1e9:.2f} GB of files) '
        f'{r["restore_s"]:.2f} s, {r["restore_GBps"]:.2f} GB/s; reading the files '
        f'{r["read_files_s"]:.2f} s, {r["read_GBps"]:.2f} GB/s '
        f'({r["restore_over_read_throughput"]:.2f}x)'
      )
    multi = multi_process(args.gb, os.path.join(root, 'multi'))
    for r in multi:
      added = r['peak_rss_during_save'] - r['rss_before_save']
      print(
        f'  multi-host process {r["process"]}: own shards {r["own_shard_bytes"] / 1e9:.2f} GB of '
        f'{r["state_bytes"] / 1e9:.2f} GB; RSS {r["rss_before_save"] / 1e9:.2f} GB before the '
        f'save, peak +{added / 1e9:.2f} GB during it ({r["save_s"]:.2f} s)'
      )
    print(json.dumps({'single': single, 'multi': multi}))
  finally:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  main()
