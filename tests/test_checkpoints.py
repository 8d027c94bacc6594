"""Checkpoint files: layout, keep/overwrite rules, Flax compatibility, crash safety."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from flaxlike import errors, serialization
from flaxlike.training import checkpoints, train_state
from tests.fixtures import make_msgpack_fixtures as fx

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'msgpack')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    apply_fn=fx.dense_apply, params=raw['params'], tx=fx.make_optimizer())
  state2 = checkpoints.restore_checkpoint(flax_dir, target, strict=True)
  assert int(state2.step) == 2
  assert int(checkpoints.restore_checkpoint(flax_dir, target, step=1).step) == 1
  # Restoring into a target takes the target's key order (as Flax does), so compare
  # the raw state dict, which keeps the file's order.
  raw1 = checkpoints.restore_checkpoint(flax_dir, None, step=1)
  ours = checkpoints.save_checkpoint(tmp_path, raw1, step=1)
  with open(ours, 'rb') as a, open(os.path.join(flax_dir, 'checkpoint_1'), 'rb') as b:
    assert a.read() == b.read()


WRITER = textwrap.dedent('''
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
''')


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
    proc = subprocess.Popen([sys.executable, str(script), str(ckpt_dir), str(start)],
                            stdout=subprocess.PIPE, env=env)
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
