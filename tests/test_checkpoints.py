"""Checkpoint files: layout, keep/overwrite rules, Flax compatibility, crash safety."""

from __future__ import annotations

import errno
import hashlib
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
  assert sorted(os.listdir(tmp_path)) == ['.checkpoint_3.sha256', 'checkpoint_3']
  assert checkpoints.latest_checkpoint(tmp_path) == path
  # The digest file is in sha256sum's format, so `sha256sum -c` checks it as well.
  digest = hashlib.sha256(serialization.to_bytes(target)).hexdigest()
  assert (tmp_path / '.checkpoint_3.sha256').read_text() == f'{digest}  checkpoint_3\n'
  # Files get the usual permissions (umask), as Flax's do, not a temporary file's 0600.
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_keep_and_keep_every_n_steps(tmp_path):
  for step in range(0, 10):
    checkpoints.save_checkpoint(tmp_path, {'s': step}, step, keep=2, keep_every_n_steps=4)
  assert checkpoints.available_steps(tmp_path) == [0, 4, 8, 9]
  for step in range(10, 12):
    checkpoints.save_checkpoint(tmp_path, {'s': step}, step, prefix='other_', keep=1)
  assert checkpoints.available_steps(tmp_path, prefix='other_') == [11]
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 9}
  assert checkpoints.restore_checkpoint(tmp_path, None, step=4) == {'s': 4}
  # keep=0 deletes nothing (Flax's rule), never the checkpoint just written.
  for step in range(3):
    checkpoints.save_checkpoint(tmp_path, {'s': step}, step, prefix='zero_', keep=0)
  assert checkpoints.available_steps(tmp_path, prefix='zero_') == [0, 1, 2]


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
  before = sorted(os.listdir(tmp_path))
  assert before == ['.checkpoint_1.sha256', 'checkpoint_1']
  with pytest.raises(TypeError):
    checkpoints.save_checkpoint(tmp_path, {'s': 2, 'bad': object()}, 2)
  assert sorted(os.listdir(tmp_path)) == before

  def boom(*a):
    raise OSError('disk full')

  monkeypatch.setattr(os, 'replace', boom)
  with pytest.raises(OSError, match='disk full'):
    checkpoints.save_checkpoint(tmp_path, {'s': 2}, 2)
  monkeypatch.undo()
  assert sorted(os.listdir(tmp_path)) == before
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 1}


def test_stale_temp_files_ignored_and_cleaned(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1)
  (tmp_path / '.checkpoint_tmp-abc').write_bytes(b'\x81\xa1s')
  assert checkpoints.available_steps(tmp_path) == [1]
  checkpoints.save_checkpoint(tmp_path, {'s': 2}, 2)
  assert sorted(os.listdir(tmp_path)) == ['.checkpoint_2.sha256', 'checkpoint_2']


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


#################################################
# Save robustness (issue 15)
#
# The tests run as root, where chmod cannot make a directory read-only, so failures are
# injected for real where the OS allows it (RLIMIT_FSIZE makes write() fail with EFBIG
# mid-file) and by making os.replace/os.remove raise what a read-only directory raises.
#################################################


def test_write_error_mid_save_leaves_no_temp_and_raises_it(tmp_path):
  import resource

  checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1)
  before = sorted(os.listdir(tmp_path))
  big = {'w': np.ones(1 << 16, np.float32)}  # 256 KiB, over the limit set below
  old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
  # Without this the kernel's SIGXFSZ would kill the test process instead of failing write.
  old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, old_limit[1]))
  try:
    with pytest.raises(OSError) as info:
      checkpoints.save_checkpoint(tmp_path, big, 2)
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)
  assert info.value.errno == errno.EFBIG
  assert sorted(os.listdir(tmp_path)) == before
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 1}


def _read_only_dir(monkeypatch, failing):
  """Makes the named os functions fail as in a directory that turned read-only."""

  def fail(name):
    def raiser(*args, **kwargs):
      if not os.path.lexists(args[0]):
        raise FileNotFoundError(errno.ENOENT, 'No such file or directory', args[0])
      raise PermissionError(errno.EACCES, f'{name}: directory is read-only', args[0])

    return raiser

  for name in failing:
    monkeypatch.setattr(os, name, fail(name))


def test_directory_turns_read_only_at_commit_raises_the_save_error(tmp_path, monkeypatch):
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1)
  before = sorted(os.listdir(tmp_path))
  # Renaming fails, and so does deleting the temporary file afterwards.
  _read_only_dir(monkeypatch, ['replace', 'remove'])
  with pytest.raises(PermissionError, match='replace: directory is read-only') as info:
    checkpoints.save_checkpoint(tmp_path, {'s': 2}, 2)
  monkeypatch.undo()
  # The clean-up error is chained as a note naming the leftover, not raised instead.
  notes = ' '.join(getattr(info.value, '__notes__', []))
  assert 'remove: directory is read-only' in notes and '.checkpoint_tmp-' in notes
  assert 'emptied to 0 bytes' in notes
  leftovers = sorted(set(os.listdir(tmp_path)) - set(before))
  assert leftovers and all(n.startswith('.checkpoint_tmp-') for n in leftovers)
  # Emptying needs no write access to the directory: the leftovers hold no disk space.
  assert all(os.path.getsize(tmp_path / n) == 0 for n in leftovers)
  # Readers ignore them; the next save (the directory writable again) removes them.
  assert checkpoints.available_steps(tmp_path) == [1]
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 1}
  checkpoints.save_checkpoint(tmp_path, {'s': 2}, 2)
  assert sorted(os.listdir(tmp_path)) == ['.checkpoint_2.sha256', 'checkpoint_2']


def test_failed_commit_removes_temps_when_it_can(tmp_path, monkeypatch):
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1)
  before = sorted(os.listdir(tmp_path))
  _read_only_dir(monkeypatch, ['replace'])
  with pytest.raises(PermissionError, match='replace'):
    checkpoints.save_checkpoint(tmp_path, {'s': 2}, 2)
  monkeypatch.undo()
  assert sorted(os.listdir(tmp_path)) == before


def test_save_into_a_file_path_raises_and_writes_nothing(tmp_path):
  (tmp_path / 'ckpt').write_text('not a directory')
  with pytest.raises(FileExistsError):
    checkpoints.save_checkpoint(tmp_path / 'ckpt', {'s': 1}, 1)
  assert os.listdir(tmp_path) == ['ckpt']


def test_failed_clean_up_of_old_steps_warns_and_the_save_succeeds(tmp_path, monkeypatch):
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1)
  old = os.path.join(tmp_path, 'checkpoint_1')
  real_remove = os.remove

  def remove(path, *args, **kwargs):
    if os.fspath(path) == old:
      raise PermissionError(errno.EACCES, 'Permission denied', path)
    return real_remove(path, *args, **kwargs)

  monkeypatch.setattr(os, 'remove', remove)
  with pytest.warns(errors.CheckpointCleanupWarning) as record:
    path = checkpoints.save_checkpoint(tmp_path, {'s': 2}, 2)
  message = str(record[0].message)
  assert f'Saved checkpoint "{path}"' in message
  assert re.search(re.escape(old) + r'.*Permission denied', message)
  monkeypatch.undo()
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 2}
  # The old checkpoint keeps its digest while it exists; the next save removes both.
  assert os.path.exists(os.path.join(tmp_path, '.checkpoint_1.sha256'))
  checkpoints.save_checkpoint(tmp_path, {'s': 3}, 3)
  assert sorted(os.listdir(tmp_path)) == ['.checkpoint_3.sha256', 'checkpoint_3']


def test_overwrite_that_cannot_delete_newer_steps_raises(tmp_path, monkeypatch):
  for step in (1, 5):
    checkpoints.save_checkpoint(tmp_path, {'s': step}, step, keep=5)
  newer = os.path.join(tmp_path, 'checkpoint_5')
  real_remove = os.remove

  def remove(path, *args, **kwargs):
    if os.fspath(path) == newer:
      raise PermissionError(errno.EACCES, 'Permission denied', path)
    return real_remove(path, *args, **kwargs)

  monkeypatch.setattr(os, 'remove', remove)
  with pytest.raises(OSError, match='not the latest'):
    checkpoints.save_checkpoint(tmp_path, {'s': 3}, 3, keep=5, overwrite=True)
  monkeypatch.undo()
  assert checkpoints.available_steps(tmp_path) == [1, 3, 5]
  assert checkpoints.restore_checkpoint(tmp_path, None, step=3) == {'s': 3}


#################################################
# Restore racing another process's clean-up
#################################################


def test_restore_lists_again_when_the_latest_vanishes(tmp_path, monkeypatch):
  for step in (1, 2, 3):
    checkpoints.save_checkpoint(tmp_path, {'s': step}, step, keep=3)
  real_read = checkpoints._restore_msgpack
  opened = []

  def race_then_read(path, target, strict):
    opened.append(os.path.basename(path))
    if len(opened) == 1:
      # Between this restore's listing and its open, another process saves step 4 with
      # keep=1, deleting the checkpoint this restore chose.
      checkpoints.save_checkpoint(tmp_path, {'s': 4}, 4, keep=1)
    return real_read(path, target, strict)

  monkeypatch.setattr(checkpoints, '_restore_msgpack', race_then_read)
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 4}
  assert opened == ['checkpoint_3', 'checkpoint_4']


def test_restore_raises_named_error_when_every_checkpoint_vanishes(tmp_path, monkeypatch):
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1)
  real_read = checkpoints._restore_msgpack

  def delete_then_read(path, target, strict):
    for name in os.listdir(tmp_path):
      os.remove(tmp_path / name)
    return real_read(path, target, strict)

  monkeypatch.setattr(checkpoints, '_restore_msgpack', delete_then_read)
  path = os.path.join(tmp_path, 'checkpoint_1')
  with pytest.raises(errors.CheckpointVanishedError, match=re.escape(path)) as info:
    checkpoints.restore_checkpoint(tmp_path, None)
  # Not a silent fresh start, and still a FileNotFoundError for existing handlers.
  assert isinstance(info.value, FileNotFoundError)


def test_restore_notices_a_checkpoint_replaced_while_reading_its_digest(tmp_path, monkeypatch):
  path = checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1)
  real_expected = checkpoints._expected_digest
  replaced = []

  def replace_then_check(p, f):
    if not replaced:
      # After this restore opened the file, a save with overwrite=True replaces it (and
      # its digest): the new digest must not be checked against the old bytes.
      replaced.append(True)
      checkpoints.save_checkpoint(tmp_path, {'s': 2}, 1, overwrite=True)
    return real_expected(p, f)

  monkeypatch.setattr(checkpoints, '_expected_digest', replace_then_check)
  with pytest.raises(errors.CheckpointVanishedError, match='replaced'):
    checkpoints.restore_checkpoint(path, None)
  # Restoring the directory lists again and reads the new file.
  replaced.clear()
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 2}


def test_listing_that_loses_its_checkpoints_is_taken_again(tmp_path, monkeypatch):
  # The race the concurrent test below hits now and then, made certain: the listing still
  # names step 0, which a concurrent save (having renamed step 1 in) deleted before the
  # restore looked at it. The restore must list again and read step 1, never find "no
  # checkpoint" and hand back the target.
  checkpoints.save_checkpoint(tmp_path, {'s': 0}, 0, keep=2)
  stale = os.listdir(tmp_path)
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1, keep=1)
  real_listdir = os.listdir
  listings = []

  def listdir_stale_twice(path):
    # Twice: the restore first asks whether the directory is itself one checkpoint.
    listings.append(path)
    return stale if len(listings) <= 2 else real_listdir(path)

  monkeypatch.setattr(os, 'listdir', listdir_stale_twice)
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 1}
  assert len(listings) > 2


def test_restore_concurrent_with_saves_never_fails(tmp_path):
  import threading

  def payload(step):
    return {'step': step, 'w': np.full(256, step, np.int32)}

  checkpoints.save_checkpoint(tmp_path, payload(0), 0, keep=1)
  stop = threading.Event()
  saver_errors = []

  def saver():
    try:
      for step in range(1, 100_000):
        if stop.is_set():
          return
        checkpoints.save_checkpoint(tmp_path, payload(step), step, keep=1)
    except BaseException as e:  # noqa: BLE001 - reported by the main thread
      saver_errors.append(e)

  thread = threading.Thread(target=saver)
  thread.start()
  try:
    last = -1
    for _ in range(300):
      state = checkpoints.restore_checkpoint(tmp_path, None)
      assert (state['w'] == state['step']).all()
      assert state['step'] >= last
      last = state['step']
  finally:
    stop.set()
    thread.join()
  assert not saver_errors
  assert last > 0


#################################################
# Bit-rot detection
#################################################


def _random_state(seed, n=3000):
  rng = np.random.default_rng(seed)
  return {
    'params': {
      'kernel': rng.standard_normal((n,)).astype(np.float32),
      'bias': rng.integers(1, 100, size=(n // 4,), dtype=np.int32),
    },
    'step': 7,
  }


def test_flipped_data_byte_that_still_decodes_is_detected(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'w': np.arange(16, dtype=np.float32)}, 1, keep=2)
  path = checkpoints.save_checkpoint(
    tmp_path, {'w': np.arange(16, dtype=np.float32) + 1}, 2, keep=2
  )
  with open(path, 'r+b') as f:
    f.seek(-1, os.SEEK_END)  # the last byte of the array's data
    byte = f.read(1)
    f.seek(-1, os.SEEK_END)
    f.write(bytes([byte[0] ^ 0x40]))
  with open(path, 'rb') as f:
    serialization.msgpack_restore(f.read())  # still decodes: only the digest can tell
  with pytest.raises(errors.CheckpointDigestMismatchError) as info:
    checkpoints.restore_checkpoint(tmp_path, None)
  message = str(info.value)
  with open(path, 'rb') as f:
    found = hashlib.sha256(f.read()).hexdigest()
  expected = (tmp_path / '.checkpoint_2.sha256').read_text().split()[0]
  assert path in message and found in message and expected in message
  assert 'fallback_to_good=True' in message
  assert isinstance(info.value, errors.CorruptCheckpointError)
  with pytest.warns(errors.CheckpointFallbackWarning, match=re.escape(path)):
    good = checkpoints.restore_checkpoint(tmp_path, None, fallback_to_good=True)
  np.testing.assert_array_equal(good['w'], np.arange(16, dtype=np.float32))


def test_every_random_corruption_is_detected(tmp_path):
  path = checkpoints.save_checkpoint(tmp_path, _random_state(0), 1)
  with open(path, 'rb') as f:
    pristine = f.read()
  assert len(pristine) > 3 * 4096
  rng = random.Random(15)
  decoded_anyway = 0
  for trial in range(400):
    data = bytearray(pristine)
    kind = trial % 8
    if kind < 4:
      for _ in range(rng.randint(1, 3)):  # flip bits of one to three bytes
        data[rng.randrange(len(data))] ^= rng.randint(1, 255)
    elif kind < 7:  # zero one 4 KiB page, as a lost or unwritten disk block would
      page = rng.randrange(len(data) // 4096 + 1) * 4096
      data[page : page + 4096] = bytes(len(data[page : page + 4096]))
    elif trial % 16 == 7:  # cut short
      del data[rng.randrange(len(data)) :]
    else:  # bytes appended
      data += bytes([rng.randrange(256)]) * rng.randint(1, 4096)
    if data == pristine:
      continue
    with open(path, 'wb') as f:
      f.write(data)
    try:
      serialization.msgpack_restore(bytes(data))
      decoded_anyway += 1
    except errors.MsgpackDecodeError:
      pass
    with pytest.raises(errors.CorruptCheckpointError, match=re.escape(path)):
      checkpoints.restore_checkpoint(tmp_path, None)
  # Most corruptions still decode; only the digest catches those.
  assert decoded_anyway > 100


def test_checkpoint_bytes_are_flax_layout_and_flax_listing_ignores_digests(tmp_path):
  import pathlib

  state = _random_state(1, n=64)
  for step in (1, 2):
    checkpoints.save_checkpoint(tmp_path, state, step, keep=2)
  names = os.listdir(tmp_path)
  # Flax 0.12.8 lists '<prefix>*' entries (pathlib's match), natural-sorted; the digest
  # files must not be among them, or Flax would restore or delete them as checkpoints.
  flax_listed = checkpoints.natural_sort(
    [n for n in names if pathlib.PurePath(n).match('checkpoint_*')]
  )
  assert flax_listed == ['checkpoint_1', 'checkpoint_2']
  assert sorted(set(names) - set(flax_listed)) == [
    '.checkpoint_1.sha256',
    '.checkpoint_2.sha256',
  ]
  with open(tmp_path / 'checkpoint_2', 'rb') as f:
    assert f.read() == serialization.to_bytes(state)


def test_checkpoint_without_digest_restores(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1)
  os.remove(tmp_path / '.checkpoint_1.sha256')
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 1}


def test_garbled_digest_file_is_a_mismatch(tmp_path):
  path = checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1)
  (tmp_path / '.checkpoint_1.sha256').write_text('not a digest\n')
  with pytest.raises(errors.CheckpointDigestMismatchError, match='unreadable'):
    checkpoints.restore_checkpoint(path, None)


def test_orphan_digests_are_removed_and_overwrite_keeps_digest_right(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1, keep=5)
  checkpoints.save_checkpoint(tmp_path, {'s': 2}, 2, keep=5)
  os.remove(tmp_path / 'checkpoint_1')  # deleted by a tool that does not know digests
  checkpoints.save_checkpoint(tmp_path, {'s': 9}, 2, keep=5, overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ['.checkpoint_2.sha256', 'checkpoint_2']
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 9}


#################################################
# Checkpoints that cannot be read are never skipped
#################################################


def _hide_orbax(monkeypatch):
  monkeypatch.setitem(sys.modules, 'orbax', None)
  monkeypatch.setitem(sys.modules, 'orbax.checkpoint', None)


def _fake_orbax_checkpoint(path):
  """The layout Flax 0.12.8's default save_checkpoint (Orbax 0.12, OCDBT) writes."""
  os.makedirs(os.path.join(path, 'd'))
  os.makedirs(os.path.join(path, 'ocdbt.process_0', 'd'))
  os.makedirs(os.path.join(path, 'array_metadatas'))
  for name in (
    '_CHECKPOINT_METADATA',
    '_METADATA',
    '_sharding',
    'manifest.ocdbt',
    'commit_success.txt',
  ):
    with open(os.path.join(path, name), 'w') as f:
      f.write('{}')
  with open(os.path.join(path, 'ocdbt.process_0', 'manifest.ocdbt'), 'wb') as f:
    f.write(b'\0' * 16)


def test_orbax_checkpoint_without_orbax_raises_named_error(tmp_path, monkeypatch):
  _hide_orbax(monkeypatch)
  checkpoints.save_checkpoint(tmp_path, {'s': 3}, 3)
  orbax_dir = os.path.join(tmp_path, 'checkpoint_5')
  _fake_orbax_checkpoint(orbax_dir)
  assert checkpoints.latest_checkpoint(tmp_path) == orbax_dir
  assert checkpoints.available_steps(tmp_path) == [3, 5]
  expected = (
    re.escape(orbax_dir) + r".*this is an Orbax checkpoint.*pip install 'flaxlike\[orbax\]'"
  )
  for where, kwargs in [
    (tmp_path, {}),  # the parent directory: the latest is the Orbax one, never step 3
    (orbax_dir, {}),  # the checkpoint directory itself
    (tmp_path, {'step': 5}),
    (tmp_path, {'fallback_to_good': True}),  # unreadable is not corrupt: never skipped
  ]:
    with pytest.raises(errors.CheckpointFormatError, match=expected):
      checkpoints.restore_checkpoint(where, {'s': 0}, **kwargs)
  assert checkpoints.restore_checkpoint(tmp_path, None, step=3) == {'s': 3}


def test_orbax_checkpoint_alone_without_orbax(tmp_path, monkeypatch):
  _hide_orbax(monkeypatch)
  _fake_orbax_checkpoint(tmp_path / 'checkpoint_5')
  with pytest.raises(errors.CheckpointFormatError, match='Orbax'):
    checkpoints.restore_checkpoint(tmp_path, None)
  # A msgpack save next to it follows Flax's rules: the Orbax step counts as newer.
  with pytest.raises(errors.InvalidCheckpointError):
    checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1)


@pytest.mark.parametrize(
  'make, looks_like',
  [
    (lambda p: os.makedirs(p / 'weights'), 'no layout flaxlike knows'),
    (lambda p: os.makedirs(p), 'no layout flaxlike knows'),
  ],
)
def test_unknown_checkpoint_directory_raises(tmp_path, make, looks_like):
  make(tmp_path / 'checkpoint_7')
  for where in (tmp_path, tmp_path / 'checkpoint_7'):
    if where != tmp_path and not os.listdir(where):
      # An empty directory given directly holds no checkpoint: the target comes back.
      assert checkpoints.restore_checkpoint(where, 'target') == 'target'
      continue
    with pytest.raises(errors.CheckpointFormatError, match=looks_like):
      checkpoints.restore_checkpoint(where, None)


@pytest.mark.parametrize(
  'head, looks_like',
  [
    (b'\x80\x04\x95\x10\x00', 'pickle'),
    (b'PK\x03\x04\x14\x00', 'zip archive'),
    (b'\x93NUMPY\x01\x00', 'npy'),
  ],
)
def test_file_in_another_format_raises(tmp_path, head, looks_like):
  (tmp_path / 'checkpoint_2').write_bytes(head + b'\0' * 64)
  with pytest.raises(errors.CheckpointFormatError, match=looks_like):
    checkpoints.restore_checkpoint(tmp_path, None)


def test_legacy_flax_multiprocess_checkpoint_raises(tmp_path):
  # Flax's save_checkpoint_multiprocess with a gda_manager leaves placeholders in the
  # msgpack file and the arrays in '<path>_gda'; neither may come back as strings.
  placeholder = {'params': {'w': '//GDAPlaceholder:params/w'}}
  path = checkpoints.save_checkpoint(tmp_path, placeholder, 4)
  with pytest.raises(errors.CheckpointFormatError, match='multi-process'):
    checkpoints.restore_checkpoint(tmp_path, None)
  os.makedirs(path + '_gda')
  assert checkpoints.available_steps(tmp_path) == [4]
  with pytest.raises(errors.CheckpointFormatError, match=re.escape(path + '_gda')):
    checkpoints.restore_checkpoint(path, None)


def test_restore_accepts_flax_positional_parallel(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1)
  for parallel in (True, False):
    assert checkpoints.restore_checkpoint(tmp_path, None, None, 'checkpoint_', parallel) == {'s': 1}
