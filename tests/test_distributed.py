"""A real two-process run: ``jax.distributed`` over CPU (gloo collectives), data-parallel.

Two subprocesses of ``tests/distributed_worker.py`` form one JAX job with two CPU devices
each. Their per-step losses must equal the same training run in this (single) process, and
the checkpoint that process 0 writes after gathering the cross-process arrays must restore
here to the single-process parameters.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import flaxlike as nn
from flaxlike.training import checkpoints
from tests import distributed_worker as worker

NUM_PROCESSES = 2
LOCAL_DEVICES = 2
TIMEOUT_S = 90


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _kill_running(procs: list[subprocess.Popen]) -> None:
  # Each worker leads its own process group (start_new_session): kill the whole group.
  for p in procs:
    if p.poll() is None:
      os.killpg(p.pid, signal.SIGKILL)
      p.wait()


def _run_workers(out_dir, script: str = worker.__file__) -> list[dict]:
  """Runs the worker processes to completion; returns their results or fails with stderr.

  ``script`` takes ``--process-id/--num-processes/--port/--out`` and writes
  ``out_dir/result_<process id>.json``.
  """
  env = dict(
    os.environ,
    XLA_FLAGS=f'--xla_force_host_platform_device_count={LOCAL_DEVICES}',
    JAX_PLATFORMS='cpu',
  )
  port = _free_port()
  procs = []
  with contextlib.ExitStack() as stack:
    logs = [
      stack.enter_context(open(out_dir / f'worker_{i}.log', 'w+b')) for i in range(NUM_PROCESSES)
    ]
    stack.callback(_kill_running, procs)
    for i, log in enumerate(logs):
      procs.append(
        subprocess.Popen(
          [
            sys.executable,
            script,
            '--process-id',
            str(i),
            '--num-processes',
            str(NUM_PROCESSES),
            '--port',
            str(port),
            '--out',
            str(out_dir),
          ],
          stdout=log,
          stderr=subprocess.STDOUT,
          env=env,
          start_new_session=True,
        )
      )
    deadline = time.monotonic() + TIMEOUT_S
    # Poll rather than wait on one process: if one dies, the other blocks in a collective.
    while time.monotonic() < deadline:
      codes = [p.poll() for p in procs]
      if all(c == 0 for c in codes) or any(c not in (None, 0) for c in codes):
        break
      time.sleep(0.1)
    codes = [p.poll() for p in procs]
    if codes != [0] * NUM_PROCESSES:
      report = []
      for i, log in enumerate(logs):
        log.seek(0)
        report.append(
          f'--- worker {i} (exit code {codes[i]}) ---\n'
          + log.read().decode(errors='replace')[-4000:]
        )
      pytest.fail(
        f'worker processes did not all succeed within {TIMEOUT_S}s (exit code '
        'None: still running, killed):\n' + '\n'.join(report)
      )
  results = []
  for i in range(NUM_PROCESSES):
    with open(out_dir / f'result_{i}.json') as f:
      results.append(json.load(f))
  return results


def _single_process_run():
  """The reference: the same training on one device of this process."""
  variables = worker.Classifier().init(jax.random.key(0), np.zeros((1, worker.IN_FEATURES)))
  initial = worker.create_state(nn.unbox(variables['params']))
  state, losses = initial, []
  step = jax.jit(worker.train_step)
  for x, y in worker.make_batches():
    state, loss = step(state, x, y)
    losses.append(float(loss))
  return initial, state, losses


def test_two_process_data_parallel_matches_single_process_and_checkpoint_restores(
  tmp_path, monkeypatch
):
  # The msgpack path, which gathers; test_checkpoints_orbax.py runs the Orbax one.
  monkeypatch.setenv('FLAX_USE_ORBAX_CHECKPOINTING', '0')
  results = _run_workers(tmp_path)
  initial, reference, reference_losses = _single_process_run()

  for i, r in enumerate(results):
    assert r['process_index'] == i
    assert r['process_count'] == NUM_PROCESSES
    assert r['device_count'] == NUM_PROCESSES * LOCAL_DEVICES
    assert r['local_device_count'] == LOCAL_DEVICES
    # The 'hidden' axis is spread over all four devices, two per process.
    assert r['kernel_spec'] == [None, 'data']
    assert not r['kernel_fully_addressable']
    quarter = worker.HIDDEN // (NUM_PROCESSES * LOCAL_DEVICES)
    assert r['kernel_shard_shapes'] == [[worker.IN_FEATURES, quarter]] * LOCAL_DEVICES
  # Each process fed a different half of every global batch.
  half = worker.GLOBAL_BATCH // NUM_PROCESSES
  assert sorted(r['local_rows'] for r in results) == [[0, half], [half, 2 * half]]

  assert results[0]['losses'] == results[1]['losses']
  np.testing.assert_allclose(results[0]['losses'], reference_losses, rtol=1e-5)
  assert reference_losses[-1] < reference_losses[0]

  # Written by process 0 alone, from arrays gathered across both processes.
  ckpt_dir = tmp_path / 'ckpt'
  assert sorted(p.name for p in ckpt_dir.iterdir()) == [
    f'.checkpoint_{worker.STEPS}.sha256',
    f'checkpoint_{worker.STEPS}',
  ]
  restored = checkpoints.restore_checkpoint(ckpt_dir, target=initial, strict=True)
  assert int(restored.step) == worker.STEPS
  jax.tree_util.tree_map(
    lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6),
    (restored.params, restored.opt_state),
    (reference.params, reference.opt_state),
  )
