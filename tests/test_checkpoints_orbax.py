"""Orbax checkpoints: the default format with orbax-checkpoint installed, as in Linen.

Layout, keep/overwrite rules, the flag and its fallback to msgpack, typed keys, restoring
into shardings on another mesh, Flax 0.12.8's own checkpoints (``tests/fixtures/orbax``),
async saves (returning early, waiting, exit, kill -9).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import flaxlike as nn
from flaxlike import config, errors, serialization
from flaxlike.training import checkpoints, orbax_utils, train_state
from tests import orbax_distributed_worker as mp_worker
from tests import test_distributed
from tests.fixtures import make_orbax_fixtures as fx

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'orbax')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _orbax_format(monkeypatch):
  """Orbax on, whatever a test that ran before left the flag at."""
  monkeypatch.delenv('FLAX_USE_ORBAX_CHECKPOINTING', raising=False)
  with config.temp_flip_flag('flax_use_orbax_checkpointing', True):
    yield


def _assert_tree_equal(got, want):
  got, want = serialization.to_state_dict(got), serialization.to_state_dict(want)
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)

  def check(a, b):
    if isinstance(b, jax.Array) and jax.dtypes.issubdtype(b.dtype, jax.dtypes.prng_key):
      assert jax.random.key_impl(a) == jax.random.key_impl(b)
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  jax.tree_util.tree_map(check, got, want)


def test_flag_default_update_and_env(monkeypatch):
  assert nn.config.flax_use_orbax_checkpointing is True
  nn.config.update('flax_use_orbax_checkpointing', False)
  assert nn.config.flax_use_orbax_checkpointing is False
  code = 'import flaxlike; print(flaxlike.config.flax_use_orbax_checkpointing)'
  env = dict(os.environ, FLAX_USE_ORBAX_CHECKPOINTING='0', PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
  assert out.stdout.strip() == 'False', out.stderr


def test_import_flaxlike_does_not_import_orbax():
  code = 'import sys, flaxlike, flaxlike.training; print("orbax" in sys.modules)'
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
  assert out.stdout.strip() == 'False', out.stderr


def test_layout_latest_and_restore(tmp_path):
  target = {'w': np.arange(4, dtype=np.float32), 'b': jnp.ones(2), 'step': 3}
  path = checkpoints.save_checkpoint(tmp_path, target, step=3)
  assert path == os.path.join(tmp_path, 'checkpoint_3')
  assert os.path.isdir(path) and os.path.isfile(os.path.join(path, '_METADATA'))
  assert os.listdir(tmp_path) == ['checkpoint_3']
  assert checkpoints.latest_checkpoint(tmp_path) == path
  assert checkpoints.available_steps(tmp_path) == [3]
  for source in (tmp_path, path):
    back = checkpoints.restore_checkpoint(source, target=None)
    assert isinstance(back['w'], np.ndarray) and back['w'].dtype == np.float32
    np.testing.assert_array_equal(back['w'], target['w'])
    assert isinstance(back['b'], jax.Array)
    assert back['step'] == 3 and isinstance(back['step'], int)
  fresh = {'w': np.zeros(4, np.float32), 'b': jnp.zeros(2), 'step': 0}
  _assert_tree_equal(checkpoints.restore_checkpoint(tmp_path, fresh, step=3), target)


def test_relative_paths(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = checkpoints.save_checkpoint('ckpts', {'s': 1}, step=1)
  assert path == os.path.join('ckpts', 'checkpoint_1')
  assert checkpoints.restore_checkpoint('ckpts', None) == {'s': 1}
  assert checkpoints.restore_checkpoint(path, {'s': 0}) == {'s': 1}


def test_keep_overwrite_and_errors(tmp_path):
  for s in range(1, 6):
    checkpoints.save_checkpoint(tmp_path, {'s': s}, step=s, keep=2, keep_every_n_steps=3)
  assert checkpoints.available_steps(tmp_path) == [1, 4, 5]
  with pytest.raises(errors.AlreadyExistsError, match='checkpoint_5'):
    checkpoints.save_checkpoint(tmp_path, {'s': 0}, step=5)
  with pytest.raises(errors.InvalidCheckpointError, match='checkpoint_2'):
    checkpoints.save_checkpoint(tmp_path, {'s': 0}, step=2)
  checkpoints.save_checkpoint(tmp_path, {'s': 40}, step=4, overwrite=True, keep=5)
  assert checkpoints.available_steps(tmp_path) == [1, 4]
  assert int(checkpoints.restore_checkpoint(tmp_path, None)['s']) == 40
  checkpoints.save_checkpoint(tmp_path, {'s': 10}, step=10, prefix='other_')
  assert checkpoints.available_steps(tmp_path) == [1, 4]
  assert checkpoints.available_steps(tmp_path, prefix='other_') == [10]
  with pytest.raises(ValueError, match='Matching checkpoint not found'):
    checkpoints.restore_checkpoint(tmp_path, None, step=7)
  with pytest.raises(ValueError, match='Orbax backend only accept pytree'):
    checkpoints.save_checkpoint(tmp_path, np.ones(2), step=11)


def test_flag_off_writes_msgpack_and_both_formats_restore(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, step=1)
  with config.temp_flip_flag('flax_use_orbax_checkpointing', False):
    path = checkpoints.save_checkpoint(tmp_path, {'s': 2}, step=2, keep=2)
    assert os.path.isfile(path)
    # Restoring does not depend on the flag: the Orbax step still reads.
    assert int(checkpoints.restore_checkpoint(tmp_path, None, step=1)['s']) == 1
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 2}
  # An explicit checkpointer means Orbax even with the flag off.
  with config.temp_flip_flag('flax_use_orbax_checkpointing', False):
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
    path = checkpoints.save_checkpoint(
      tmp_path, {'s': 3}, step=3, keep=3, orbax_checkpointer=checkpointer
    )
  assert os.path.isdir(path)
  assert checkpoints.available_steps(tmp_path) == [1, 2, 3]


def test_fallback_to_good_skips_a_corrupt_msgpack_file_to_an_orbax_step(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, step=1, keep=3)
  with config.temp_flip_flag('flax_use_orbax_checkpointing', False):
    path = checkpoints.save_checkpoint(tmp_path, {'s': 2}, step=2, keep=3)
  with open(path, 'r+b') as f:
    f.truncate(3)
  with pytest.warns(UserWarning, match='checkpoint_2'):
    back = checkpoints.restore_checkpoint(tmp_path, None, fallback_to_good=True)
  assert back == {'s': 1}


def test_orbax_step_orbax_cannot_read_is_named_and_fallback_skips_it(tmp_path):
  with config.temp_flip_flag('flax_use_orbax_checkpointing', False):
    checkpoints.save_checkpoint(tmp_path, {'w': np.arange(3.0)}, step=1, keep=3)
  checkpoints.save_checkpoint(tmp_path, {'w': np.arange(3.0) + 1}, step=2, keep=3)
  broken = tmp_path / 'checkpoint_2'
  # A partial copy of the directory: the array data is gone, the metadata is there.
  data = [p for p in broken.rglob('*') if p.is_file() and p.parent.name == 'd']
  assert data
  for p in data:
    p.unlink()
  with pytest.raises(errors.CorruptOrbaxCheckpointError, match='checkpoint_2.*Orbax failed') as e:
    checkpoints.restore_checkpoint(tmp_path, None)
  assert isinstance(e.value, errors.CorruptCheckpointError) and e.value.__cause__ is not None
  with pytest.warns(errors.CheckpointFallbackWarning, match='checkpoint_2'):
    back = checkpoints.restore_checkpoint(tmp_path, None, fallback_to_good=True)
  np.testing.assert_array_equal(back['w'], np.arange(3.0))


def test_garbled_orbax_files_are_corrupt_and_fallback_skips_them(tmp_path):
  for step in (1, 2, 3):
    checkpoints.save_checkpoint(tmp_path, {'w': jnp.arange(3.0) + step}, step=step, keep=3)
  # checkpoint_3: its tree metadata is garbage; checkpoint_2: its data files are.
  (tmp_path / 'checkpoint_3' / '_METADATA').write_bytes(b'\x00garbage' * 8)
  data = [p for p in (tmp_path / 'checkpoint_2').rglob('*') if p.is_file() and p.parent.name == 'd']
  assert data
  for p in data:
    p.write_bytes(bytes((i * 37 + 11) % 256 for i in range(p.stat().st_size)))
  target = {'w': jnp.zeros(3)}  # the saved tree: only the files are at fault
  for step in (3, 2):
    with pytest.raises(errors.CorruptOrbaxCheckpointError, match=f'checkpoint_{step}'):
      checkpoints.restore_checkpoint(tmp_path, target, step=step)
  with pytest.warns(errors.CheckpointFallbackWarning, match='checkpoint_3.*checkpoint_2'):
    back = checkpoints.restore_checkpoint(tmp_path, target, fallback_to_good=True)
  np.testing.assert_array_equal(back['w'], np.arange(3.0) + 1)


def test_target_that_does_not_fit_raises_a_mismatch_never_skipped(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'w': jnp.arange(3.0)}, step=1, keep=3)
  newer = {'w': jnp.arange(3.0), 'extra': {'b': jnp.ones(2)}}
  checkpoints.save_checkpoint(tmp_path, newer, step=2, keep=3)
  target = {'w': jnp.zeros(3)}
  # fallback_to_good must not read a mismatch as "no good checkpoint" and go back a step.
  for fallback in (False, True):
    with pytest.raises(errors.CheckpointTargetMismatchError) as e:
      checkpoints.restore_checkpoint(tmp_path, target, fallback_to_good=fallback)
    message = str(e.value)
    assert 'checkpoint_2' in message and 'not the target: extra/b' in message
    assert isinstance(e.value, errors.RestoreMismatchError) and e.value.__cause__ is not None
    assert not isinstance(e.value, errors.CorruptCheckpointError)
  with pytest.raises(errors.CheckpointTargetMismatchError, match='but not the checkpoint: v'):
    checkpoints.restore_checkpoint(tmp_path, {'w': jnp.zeros(3), 'v': jnp.zeros(1)}, step=1)
  with pytest.raises(
    errors.CheckpointTargetMismatchError,
    match=r'shapes differ at w \(target \(5,\), checkpoint \(3,\)\)',
  ):
    checkpoints.restore_checkpoint(tmp_path, {'w': jnp.zeros(5)}, step=1)


def test_restore_takes_flax_positional_arguments_and_keyword_only_extensions(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'s': 1}, step=1)
  checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
  # Flax's order: ckpt_dir, target, step, prefix, parallel, gda_manager,
  # allow_partial_mpa_restoration, orbax_checkpointer, orbax_transforms.
  back = checkpoints.restore_checkpoint(
    tmp_path, None, 1, 'checkpoint_', True, None, False, checkpointer, None
  )
  assert back == {'s': 1}
  with pytest.raises(TypeError):
    checkpoints.restore_checkpoint(
      tmp_path, None, 1, 'checkpoint_', True, None, False, None, None, True
    )


def test_keep_deletes_msgpack_steps_and_their_digests_after_an_orbax_save(tmp_path):
  with config.temp_flip_flag('flax_use_orbax_checkpointing', False):
    checkpoints.save_checkpoint(tmp_path, {'s': 1}, step=1)
  assert sorted(os.listdir(tmp_path)) == ['.checkpoint_1.sha256', 'checkpoint_1']
  checkpoints.save_checkpoint(tmp_path, {'s': 2}, step=2)
  assert sorted(os.listdir(tmp_path)) == ['checkpoint_2']


def test_without_orbax_saves_msgpack_and_names_the_fix(tmp_path, monkeypatch):
  orbax_dir = checkpoints.save_checkpoint(tmp_path / 'orbax', {'s': 1}, step=1)
  for name in [m for m in sys.modules if m == 'orbax' or m.startswith('orbax.')]:
    monkeypatch.setitem(sys.modules, name, None)
  # The flag is on, but Orbax cannot be imported: the msgpack format it is.
  path = checkpoints.save_checkpoint(tmp_path / 'msgpack', {'s': 2}, step=2)
  assert os.path.isfile(path)
  assert checkpoints.restore_checkpoint(tmp_path / 'msgpack', None) == {'s': 2}
  # The layout detection names the directory, what it is and the fix (no bare ImportError).
  with pytest.raises(
    errors.CheckpointFormatError,
    match=r"checkpoint_1.*this is an Orbax checkpoint.*pip install 'flaxlike\[orbax\]'",
  ):
    checkpoints.restore_checkpoint(orbax_dir, None)


def test_typed_keys_in_train_state_keep_their_implementation(tmp_path):
  class KeyedState(train_state.TrainState):
    key: jax.Array

  params = {'w': jnp.arange(3.0)}
  state = KeyedState.create(
    apply_fn=None, params=params, tx=optax.sgd(0.1), key=jax.random.key(3, impl='rbg')
  )
  checkpoints.save_checkpoint(tmp_path, state, step=0)
  fresh = state.replace(params={'w': jnp.zeros(3)}, key=jax.random.key(0, impl='rbg'))
  back = checkpoints.restore_checkpoint(tmp_path, fresh)
  assert jax.random.key_impl(back.key) == jax.random.key_impl(state.key)
  _assert_tree_equal(back, state)


def test_raw_restore_then_from_state_dict_resumes_a_train_state(tmp_path):
  """Orbax writes empty containers (Adam's EmptyState) as None; they restore as empty."""
  state = train_state.TrainState.create(
    apply_fn=None, params={'w': jnp.arange(2.0)}, tx=optax.adam(0.1)
  )
  checkpoints.save_checkpoint(tmp_path, {'state': state, 'note': np.arange(3)}, step=1)
  raw = checkpoints.restore_checkpoint(tmp_path, None)
  assert raw['state']['opt_state']['1'] is None
  back = serialization.from_state_dict(state, raw['state'], strict=True)
  _assert_tree_equal(back, state)


def test_sharded_restore_onto_another_mesh(tmp_path):
  mesh8 = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ('data', 'model'))
  kernel = jax.device_put(jnp.arange(64.0).reshape(8, 8), NamedSharding(mesh8, P('data', 'model')))
  bias = jax.device_put(jnp.arange(8.0), NamedSharding(mesh8, P('model')))
  checkpoints.save_checkpoint(tmp_path, {'kernel': kernel, 'bias': bias, 'step': 7}, step=7)

  mesh4 = Mesh(np.array(jax.devices()[4:8]), ('x',))
  shardings = {'kernel': NamedSharding(mesh4, P(None, 'x')), 'bias': NamedSharding(mesh4, P())}
  target = {
    'kernel': jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=shardings['kernel']),
    'bias': jax.ShapeDtypeStruct((8,), jnp.float32, sharding=shardings['bias']),
    'step': 0,
  }
  back = checkpoints.restore_checkpoint(tmp_path, target)
  for name in ('kernel', 'bias'):
    assert back[name].sharding == shardings[name]
  assert back['kernel'].addressable_shards[0].data.shape == (8, 2)
  np.testing.assert_array_equal(back['kernel'], np.arange(64.0).reshape(8, 8))
  np.testing.assert_array_equal(back['bias'], np.arange(8.0))
  assert int(back['step']) == 7


def test_sharded_init_output_is_a_restore_target(tmp_path):
  mesh = Mesh(np.array(jax.devices()[:4]), ('model',))
  dense = nn.Dense(
    8, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ('in', 'mlp'))
  )
  rules = (('mlp', 'model'),)
  variables, _ = nn.sharded_init(dense, jax.random.key(0), jnp.ones((1, 4)), mesh=mesh, rules=rules)
  checkpoints.save_checkpoint(tmp_path, variables['params'], step=1)
  other, shardings = nn.sharded_init(
    dense, jax.random.key(1), jnp.ones((1, 4)), mesh=mesh, rules=rules
  )
  back = checkpoints.restore_checkpoint(tmp_path, other['params'])
  assert back['kernel'].sharding == shardings['params']['kernel']
  _assert_tree_equal(back, variables['params'])


def test_restore_args_from_target():
  mesh = Mesh(np.array(jax.devices()[:2]), ('x',))
  sharding = NamedSharding(mesh, P('x'))
  args = orbax_utils.restore_args_from_target(
    {'a': jax.ShapeDtypeStruct((4,), jnp.float32, sharding=sharding), 'n': 1}
  )
  assert isinstance(args['a'], ocp.ArrayRestoreArgs) and args['a'].sharding == sharding
  numpy_args = orbax_utils.restore_args_from_target({'a': np.ones(2)})
  assert numpy_args['a'].restore_type is np.ndarray
  assert set(orbax_utils.save_args_from_target({'a': 1, 'b': [2]})) == {'a', 'b'}


# --- Flax 0.12.8's own Orbax checkpoints ---------------------------------------------


def test_restores_flax_train_state_checkpoints():
  ckpt_dir = os.path.join(FIXTURES, 'flax', 'train_state')
  assert checkpoints.latest_checkpoint(ckpt_dir) == os.path.join(ckpt_dir, 'checkpoint_2')
  assert checkpoints.available_steps(ckpt_dir) == [1, 2]
  step1, step2 = fx.build_train_states(train_state)
  fresh = fx.fresh_train_state(train_state)
  _assert_tree_equal(checkpoints.restore_checkpoint(ckpt_dir, fresh), step2)
  _assert_tree_equal(checkpoints.restore_checkpoint(ckpt_dir, fresh, step=1), step1)
  pointed = checkpoints.restore_checkpoint(os.path.join(ckpt_dir, 'checkpoint_1'), fresh)
  _assert_tree_equal(pointed, step1)
  raw = checkpoints.restore_checkpoint(ckpt_dir, None)
  assert int(raw['step']) == 2
  assert jax.random.key_impl(raw['key']) == jax.random.key_impl(step2.key)
  np.testing.assert_array_equal(
    raw['params']['Dense_0']['kernel'], step2.params['Dense_0']['kernel']
  )


def test_restores_flax_tree_checkpoint():
  back = checkpoints.restore_checkpoint(os.path.join(FIXTURES, 'flax', 'tree'), None)
  want = fx.build_tree()
  np.testing.assert_array_equal(back['f32'], want['f32'])
  assert back['bf16'].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(back['bf16'], np.float32), [1.5, -2.0])
  np.testing.assert_array_equal(back['nested']['u8'], np.arange(3, dtype=np.uint8))
  assert float(back['nested']['scale']) == 2.5 and int(back['nested']['count']) == 11
  _assert_tree_equal(
    checkpoints.restore_checkpoint(os.path.join(FIXTURES, 'flax', 'tree'), want), want
  )


def _metadata_tree(ckpt_path: str) -> dict:
  with open(os.path.join(ckpt_path, '_METADATA')) as f:
    meta = json.load(f)
  return {key: value['value_metadata'] for key, value in meta['tree_metadata'].items()}


def test_writes_the_tree_flax_writes(tmp_path):
  """Same keys, value types and dtypes in the metadata as Flax's checkpoint of the same state."""
  _, step2 = fx.build_train_states(train_state)
  ours = checkpoints.save_checkpoint(tmp_path, step2, step=2)
  theirs = os.path.join(FIXTURES, 'flax', 'train_state', 'checkpoint_2')
  assert _metadata_tree(ours) == _metadata_tree(theirs)
  with open(os.path.join(FIXTURES, 'flax_reads_flaxlike.json')) as f:
    verdict = json.load(f)
  # Recorded by make_orbax_fixtures.py flax-read: Flax restored flaxlike's checkpoints.
  assert verdict['ok'] and verdict['flax'] == '0.12.8'


# --- Async ----------------------------------------------------------------------------


def test_async_save_returns_early_and_next_save_waits(tmp_path):
  checkpointer = ocp.AsyncCheckpointer(ocp.PyTreeCheckpointHandler())
  try:
    state = {'w': jnp.arange(1000.0)}
    path = checkpoints.save_checkpoint(tmp_path, state, step=1, orbax_checkpointer=checkpointer)
    # The write may still run: until it commits only Orbax's temporary directory exists.
    checkpoints.save_checkpoint(
      tmp_path, {'w': state['w'] + 1}, step=2, keep=2, orbax_checkpointer=checkpointer
    )
    assert os.path.isdir(path)  # the second save waited for the first to commit
    checkpointer.wait_until_finished()
    assert checkpoints.available_steps(tmp_path) == [1, 2]
    back = checkpoints.restore_checkpoint(tmp_path, state, orbax_checkpointer=checkpointer)
    np.testing.assert_array_equal(back['w'], np.arange(1000.0) + 1)
  finally:
    checkpointer.close()


_ASYNC_CHILD = textwrap.dedent(
  """
  import os, sys, time
  import jax.numpy as jnp, orbax.checkpoint as ocp
  from flaxlike.training import checkpoints
  ckpt_dir, mode = sys.argv[1], sys.argv[2]
  checkpoints.save_checkpoint(ckpt_dir, {'w': jnp.zeros(4), 'step': 1}, step=1)
  checkpointer = ocp.AsyncCheckpointer(ocp.PyTreeCheckpointHandler())
  big = {'w': jnp.ones((MB << 18,)), 'step': 2}
  checkpoints.save_checkpoint(ckpt_dir, big, step=2, orbax_checkpointer=checkpointer)
  print('returned', flush=True)
  if mode == 'hang':
    time.sleep(600)
  # mode == 'exit': leave at once; the interpreter must wait for the write.
  """
)


def _run_async_child(tmp_path, mode, mb, on_returned):
  """Runs the child; ``on_returned(child)`` once it printed that the save returned."""
  script = tmp_path / 'child.py'
  script.write_text(_ASYNC_CHILD.replace('MB', str(mb)))
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  log = tmp_path / 'child.log'
  with open(log, 'wb') as err:
    child = subprocess.Popen(
      [sys.executable, str(script), str(tmp_path / 'ckpt'), mode],
      stdout=subprocess.PIPE,
      stderr=err,
      env=env,
    )
    with child:
      try:
        line = child.stdout.readline()
        assert line.strip() == b'returned', log.read_text()[-3000:]
        on_returned(child)
      finally:
        if child.poll() is None:
          child.kill()
        child.wait()
  return child.returncode, log.read_text()


def test_interpreter_exit_waits_for_async_write(tmp_path):
  code, log = _run_async_child(tmp_path, 'exit', 8, lambda child: child.wait(timeout=120))
  assert code == 0, log[-3000:]
  back = checkpoints.restore_checkpoint(tmp_path / 'ckpt', None)
  assert int(back['step']) == 2 and back['w'].shape == (8 << 18,)


def test_kill_during_async_write_leaves_previous_checkpoint(tmp_path):
  # The save returned; the write of 64 MB is (very likely) still in flight.
  code, _ = _run_async_child(tmp_path, 'hang', 64, lambda child: child.send_signal(signal.SIGKILL))
  assert code == -signal.SIGKILL
  ckpt_dir = tmp_path / 'ckpt'
  steps = checkpoints.available_steps(ckpt_dir)
  assert steps in ([1], [1, 2]), os.listdir(ckpt_dir)
  back = checkpoints.restore_checkpoint(ckpt_dir, None)
  # Whatever step is the latest is complete: never a partial checkpoint.
  assert int(back['step']) == steps[-1]
  if steps[-1] == 1:
    np.testing.assert_array_equal(back['w'], np.zeros(4))
  else:
    assert back['w'].shape == (64 << 18,) and float(back['w'].min()) == 1.0
  # The next run saves the interrupted step again; Orbax's leftover temporary is replaced.
  checkpoints.save_checkpoint(ckpt_dir, {'w': np.ones(3), 'step': 2}, step=2, overwrite=True)
  assert os.listdir(ckpt_dir) == ['checkpoint_2']
  assert int(checkpoints.restore_checkpoint(ckpt_dir, None)['step']) == 2


# --- Multi-process ------------------------------------------------------------------


def test_two_processes_each_write_their_own_shards_and_restore_here(tmp_path):
  results = test_distributed._run_workers(tmp_path, script=mp_worker.__file__)
  for r in results:
    assert not r['kernel_fully_addressable']
    # Each process held half of every array (the step counters aside), never the whole.
    assert r['addressable_bytes'] < 0.51 * r['global_bytes']
  path = results[0]['path']
  assert sorted(n for n in os.listdir(path) if n.startswith('ocdbt.process_')) == [
    'ocdbt.process_0',
    'ocdbt.process_1',
  ]
  assert checkpoints.latest_checkpoint(tmp_path / 'ckpt') == path

  # Restored in this one process, onto a mesh of another size and layout.
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ('a', 'b'))
  sharding = NamedSharding(mesh, P('a', 'b'))
  shape = (mp_worker.ROWS, mp_worker.COLS)
  kernel = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)
  bias = jax.ShapeDtypeStruct((mp_worker.COLS,), jnp.float32, sharding=NamedSharding(mesh, P()))
  target = train_state.TrainState.create(
    apply_fn=None,
    params={'kernel': jnp.zeros(shape), 'bias': jnp.zeros(shape[1])},
    tx=optax.adam(0.1),
  )
  target = target.replace(
    params={'kernel': kernel, 'bias': bias},
    opt_state=jax.tree_util.tree_map(
      lambda x: (
        jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding) if x.shape == shape else x
      ),
      target.opt_state,
    ),
  )
  back = checkpoints.restore_checkpoint(tmp_path / 'ckpt', target)
  assert int(back.step) == mp_worker.STEP
  assert back.params['kernel'].sharding == sharding
  np.testing.assert_array_equal(
    back.params['kernel'], mp_worker.kernel_values((slice(None), slice(None)))
  )
  np.testing.assert_array_equal(back.params['bias'], np.ones(mp_worker.COLS))
  assert back.opt_state[0].mu['kernel'].sharding == sharding


def test_async_manager_writes_msgpack_in_the_background(tmp_path):
  manager = checkpoints.AsyncManager()
  with config.temp_flip_flag('flax_use_orbax_checkpointing', False):
    first = checkpoints.save_checkpoint(tmp_path, {'s': 1}, 1, async_manager=manager)
  # The flag is back on before the write may have run: the file is msgpack all the same.
  manager.wait_previous_save()
  assert os.path.isfile(first)
  with config.temp_flip_flag('flax_use_orbax_checkpointing', False):
    with pytest.raises(errors.AlreadyExistsError, match='checkpoint_1'):
      checkpoints.save_checkpoint(tmp_path, {'s': 0}, 1, async_manager=manager)
    checkpoints.save_checkpoint(tmp_path, {'s': 2}, 2, keep=2, async_manager=manager)
    checkpoints.save_checkpoint(tmp_path, {'s': 3}, 3, keep=2, async_manager=manager)
  manager.wait_previous_save()
  assert checkpoints.available_steps(tmp_path) == [2, 3]
  assert checkpoints.restore_checkpoint(tmp_path, None) == {'s': 3}

  def failing_write():
    raise OSError('No space left on device')

  manager.save_async(failing_write)
  with pytest.raises(OSError, match='No space left'):
    manager.wait_previous_save()
