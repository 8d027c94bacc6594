"""Checkpoint files: layout, keep/overwrite rules, Flax compatibility, crash safety."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from flaxlike import config, errors, serialization
from flaxlike.training import checkpoints, train_state
from tests.fixtures import make_msgpack_fixtures as fx

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'msgpack')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _msgpack_format(monkeypatch):
  """These tests are about the msgpack file format: pin it although Orbax is installed.

  The environment variable reaches the subprocesses some tests start.
  """
  monkeypatch.setenv('FLAX_USE_ORBAX_CHECKPOINTING', '0')
  with config.temp_flip_flag('flax_use_orbax_checkpointing', False):
    yield


def test_layout_is_to_bytes(tmp_path):
  target = {'w': np.arange(4, dtype=np.float32), 'step': 3}
  path = checkpoints.save_checkpoint(tmp_path, target, step=3)
  assert path == os.path.join(tmp_path, 'checkpoint_3')
  with open(path, 'rb') as f:
    assert f.read() == serialization.to_bytes(target)
  assert os.listdir(tmp_path) == ['checkpoint_3']
  assert checkpoints.latest_checkpoint(tmp_path) == path


def test_keep_and_keep_every_n_steps(tmp_path):
  for step in range(0, 10):
    checkpoints.save_checkpoint(tmp_path, {'s': step}, step, keep=2, keep_every_n_steps=4)
  assert checkpoints.available_steps(tmp_path) == [0, 4, 8, 9]
  for step in range(10, 12):
    checkpoints.save_checkpoint(tmp_path, {'s': step}, step, prefix='other_', keep=1)
  assert checkpoints.available_steps(tmp_path, prefix='other_') == [11]
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 9}
  assert checkpoints.restore_checkpoint(tmp_path, None, step=4) == {'s': 4}


def test_overwrite_rules(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1, keep=5)
  checkpoints.save_checkpoint(tmp_path, {'s': 5}, 5, keep=5)
  with pytest.raises(errors.AlreadyExistsError, match='checkpoint_5'):
    checkpoints.save_checkpoint(tmp_path, {'s': 5}, 5, keep=5)
  with pytest.raises(errors.InvalidCheckpointError, match='step: "3"'):
    checkpoints.save_checkpoint(tmp_path, {'s': 3}, 3, keep=5)
  checkpoints.save_checkpoint(tmp_path, {'s': 3}, 3, keep=5, overwrite=True)
  assert checkpoints.available_steps(tmp_path) == [1, 3]
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 3}


def test_missing_dir_and_step(tmp_path):
  target = {'a': np.zeros(2)}
  assert checkpoints.restore_checkpoint(tmp_path / 'nope', target) is target
  assert checkpoints.latest_checkpoint(tmp_path / 'nope') is None
  checkpoints.save_checkpoint(tmp_path, target, 1)
  with pytest.raises(ValueError, match='checkpoint_7'):
    checkpoints.restore_checkpoint(tmp_path, target, step=7)
  # A file path restores that file.
  assert set(checkpoints.restore_checkpoint(tmp_path / 'checkpoint_1', None)) == {'a'}


def test_strict_restore_and_corrupt_file(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'w': np.zeros(3, np.float32)}, 1)
  with pytest.raises(errors.RestoreMismatchError, match=r'\./w'):
    checkpoints.restore_checkpoint(tmp_path, {'w': np.zeros(2, np.float32)}, strict=True)
  with open(tmp_path / 'checkpoint_1', 'r+b') as f:
    f.truncate(10)
  with pytest.raises(errors.MsgpackDecodeError):
    checkpoints.restore_checkpoint(tmp_path, None)


def test_failed_write_keeps_previous(tmp_path, monkeypatch):
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1)
  with pytest.raises(TypeError):
    checkpoints.save_checkpoint(tmp_path, {'s': 2, 'bad': object()}, 2)
  assert os.listdir(tmp_path) == ['checkpoint_1']

  def boom(*a):
    raise OSError('disk full')

  monkeypatch.setattr(os, 'replace', boom)
  with pytest.raises(OSError, match='disk full'):
    checkpoints.save_checkpoint(tmp_path, {'s': 2}, 2)
  monkeypatch.undo()
  assert os.listdir(tmp_path) == ['checkpoint_1']
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 1}


def test_stale_temp_files_ignored_and_cleaned(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1)
  (tmp_path / '.checkpoint_tmp-abc').write_bytes(b'\x81\xa1s')
  assert checkpoints.available_steps(tmp_path) == [1]
  checkpoints.save_checkpoint(tmp_path, {'s': 2}, 2)
  assert sorted(os.listdir(tmp_path)) == ['checkpoint_2']


def test_natural_sort():
  names = ['c_10', 'c_2', 'c_-1', 'c_1.5', 'c_1e1x', 'c_b']
  assert checkpoints.natural_sort(names) == ['c_-1', 'c_1.5', 'c_2', 'c_10', 'c_1e1x', 'c_b']


def test_reads_flax_checkpoint_dir_and_writes_same_bytes(tmp_path):
  flax_dir = os.path.join(FIXTURES, 'flax_checkpoints')
  assert checkpoints.available_steps(flax_dir) == [1, 2]
  with open(os.path.join(FIXTURES, 'train_state_create.msgpack'), 'rb') as f:
    raw = serialization.msgpack_restore(f.read())
  target = train_state.TrainState.create(
    apply_fn=fx.dense_apply, params=raw['params'], tx=fx.make_optimizer()
  )
  state2 = checkpoints.restore_checkpoint(flax_dir, target, strict=True)
  assert int(state2.step) == 2
  assert int(checkpoints.restore_checkpoint(flax_dir, target, step=1).step) == 1
  # Restoring into a target takes the target's key order (as Flax does), so compare
  # the raw state dict, which keeps the file's order.
  raw1 = checkpoints.restore_checkpoint(flax_dir, None, step=1)
  ours = checkpoints.save_checkpoint(tmp_path, raw1, step=1)
  with open(ours, 'rb') as a, open(os.path.join(flax_dir, 'checkpoint_1'), 'rb') as b:
    assert a.read() == b.read()


WRITER = textwrap.dedent("""
  import sys
  import numpy as np
  from flaxlike.training import checkpoints
  ckpt_dir, start = sys.argv[1], int(sys.argv[2])
  base = np.arange(1 << 21, dtype=np.float32)  # 8 MiB per array, 4 arrays
  print('ready', flush=True)
  step = start
  while True:
    target = {'step': step, 'arrays': [base + step for _ in range(4)]}
    checkpoints.save_checkpoint(ckpt_dir, target, step, keep=2)
    step += 1
""")


def _check_consistent(state):
  step = state['step']
  for arr in state['arrays'].values():
    assert arr.shape == (1 << 21,)
    assert arr[0] == step and arr[-1] == (1 << 21) - 1 + step


def test_sigkill_during_save_leaves_valid_checkpoint(tmp_path):
  rng = random.Random(0)
  script = tmp_path / 'writer.py'
  script.write_text(WRITER)
  ckpt_dir = tmp_path / 'ckpt'
  env = {**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu'}
  deadline = time.monotonic() + 60
  last_step = -1
  kills = 0
  for round_ in range(4):
    start = last_step + 1
    proc = subprocess.Popen(
      [sys.executable, str(script), str(ckpt_dir), str(start)], stdout=subprocess.PIPE, env=env
    )
    try:
      assert proc.stdout.readline() == b'ready\n'
      # The first rounds kill within the first save; later ones after a few saves.
      time.sleep(rng.uniform(0.0, 0.3) + 0.3 * round_)
    finally:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      proc.stdout.close()
    kills += 1
    steps = checkpoints.available_steps(ckpt_dir)
    state = checkpoints.restore_checkpoint(ckpt_dir, None)
    if last_step < 0 and not steps:
      assert state is None  # killed before the first checkpoint completed
      continue
    _check_consistent(state)
    assert state['step'] == max(steps) >= last_step
    for s in steps:
      _check_consistent(checkpoints.restore_checkpoint(ckpt_dir, None, step=s))
    last_step = state['step']
    assert time.monotonic() < deadline
  assert kills == 4
  shutil.rmtree(ckpt_dir, ignore_errors=True)


def _three_checkpoints(tmp_path):
  for step in (1, 2, 3):
    checkpoints.save_checkpoint(
      tmp_path, {'w': np.full(16, step, np.float32), 'step': step}, step, keep=3
    )
  return os.path.join(tmp_path, 'checkpoint_3')


def _truncate(path):
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[: len(data) // 2])


def _flip_header_bytes(path):
  # 0xc1 is the one byte msgpack never uses, so the document cannot decode.
  with open(path, 'r+b') as f:
    f.write(b'\xc1\xff')


@pytest.mark.parametrize('corrupt', [_truncate, _flip_header_bytes])
def test_corrupt_newest_checkpoint_raises_with_path(tmp_path, corrupt):
  newest = _three_checkpoints(tmp_path)
  corrupt(newest)
  target = {'w': np.zeros(16, np.float32), 'step': 0}
  with pytest.raises(errors.CorruptCheckpointError, match=re.escape(newest)) as info:
    checkpoints.restore_checkpoint(tmp_path, target)
  assert isinstance(info.value, errors.FlaxlikeError)
  assert isinstance(info.value.__cause__, errors.MsgpackDecodeError)
  # Naming the corrupt file explicitly, by step or by path, raises the same error.
  with pytest.raises(errors.CorruptCheckpointError, match=re.escape(newest)):
    checkpoints.restore_checkpoint(tmp_path, target, step=3)
  with pytest.raises(errors.CorruptCheckpointError, match=re.escape(newest)):
    checkpoints.restore_checkpoint(newest, target, fallback_to_good=True)


@pytest.mark.parametrize('corrupt', [_truncate, _flip_header_bytes])
def test_fallback_to_good_restores_previous_step(tmp_path, corrupt):
  newest = _three_checkpoints(tmp_path)
  corrupt(newest)
  target = {'w': np.zeros(16, np.float32), 'step': 0}
  with pytest.warns(UserWarning, match=re.escape(newest)):
    restored = checkpoints.restore_checkpoint(tmp_path, target, fallback_to_good=True)
  assert restored['step'] == 2
  np.testing.assert_array_equal(restored['w'], np.full(16, 2, np.float32))


def test_fallback_to_good_without_corruption_does_not_warn(tmp_path):
  _three_checkpoints(tmp_path)
  restored = checkpoints.restore_checkpoint(tmp_path, None, fallback_to_good=True)
  assert restored['step'] == 3
  assert checkpoints.restore_checkpoint(tmp_path / 'none', 'x', fallback_to_good=True) == 'x'


def test_fallback_to_good_raises_when_nothing_decodes(tmp_path):
  _three_checkpoints(tmp_path)
  for step in (1, 2, 3):
    _truncate(os.path.join(tmp_path, f'checkpoint_{step}'))
  with pytest.raises(errors.CorruptCheckpointError, match='no checkpoint in'):
    checkpoints.restore_checkpoint(tmp_path, None, fallback_to_good=True)


def _sharded_params():
  mesh = Mesh(np.array(jax.devices()), ('data',))
  sharding = NamedSharding(mesh, P('data'))
  params = {
    'kernel': jax.device_put(jnp.arange(64.0, dtype=jnp.float32).reshape(16, 4), sharding),
    'bias': jax.device_put(jnp.linspace(-1.0, 1.0, 8, dtype=jnp.bfloat16), sharding),
  }
  return params


def test_sharded_params_round_trip(tmp_path):
  assert jax.device_count() == 8
  params = _sharded_params()
  assert len(params['kernel'].sharding.device_set) == 8
  path = checkpoints.save_checkpoint(tmp_path, {'params': params}, step=1)
  with open(path, 'rb') as f:
    host = {k: np.asarray(v) for k, v in params.items()}
    assert f.read() == serialization.to_bytes({'params': host})
  target = {'params': jax.tree_util.tree_map(jnp.zeros_like, params)}
  restored = checkpoints.restore_checkpoint(tmp_path, target, strict=True)
  for name, value in params.items():
    assert restored['params'][name].dtype == value.dtype
    np.testing.assert_array_equal(restored['params'][name], np.asarray(value))


def test_only_process_zero_writes(tmp_path, monkeypatch):
  params = _sharded_params()
  monkeypatch.setattr(jax, 'process_index', lambda *a, **k: 1)
  path = checkpoints.save_checkpoint(tmp_path / 'ckpts', {'params': params}, step=5)
  assert path == os.path.join(tmp_path, 'ckpts', 'checkpoint_5')
  assert not os.path.exists(tmp_path / 'ckpts')


def test_gather_to_host_uses_allgather_for_non_addressable(monkeypatch):
  params = _sharded_params()
  calls = []
  real = multihost_utils.process_allgather

  def spy(x, tiled=False):
    calls.append((x.shape, tiled))
    return real(x, tiled=tiled)

  monkeypatch.setattr(multihost_utils, 'process_allgather', spy)
  # Fully addressable arrays are fetched without a collective.
  host = checkpoints.gather_to_host(params)
  assert calls == []
  assert all(isinstance(v, np.ndarray) for v in host.values())
  # Arrays that span other processes go through process_allgather (tiled, global shape).
  monkeypatch.setattr(checkpoints, '_is_fully_addressable', lambda x: False)
  host = checkpoints.gather_to_host({'params': params, 'step': 7})
  assert sorted(calls) == [((8,), True), ((16, 4), True)]
  assert host['step'] == 7
  for name, value in params.items():
    assert isinstance(host['params'][name], np.ndarray)
    assert host['params'][name].dtype == value.dtype
    np.testing.assert_array_equal(host['params'][name], np.asarray(value))
