"""Flax's small utility modules: ``io``, ``typing``, ``version``, ``traceback_util``, ``nn.meta``."""

import os
import pathlib
import re
import tomllib
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flaxlike
import flaxlike as nn
from flaxlike import errors, io, serialization, struct, traceback_util
from flaxlike import typing as ft
from flaxlike.linen._module import module_class
from flaxlike.training import train_state

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE_DIR = os.path.dirname(flaxlike.__file__) + os.sep


# io


def test_io_file_operations(tmp_path):
  base = tmp_path / 'a' / 'b'
  io.makedirs(base)
  io.makedirs(base)  # an existing directory is fine
  assert io.isdir(base) and io.exists(base)
  with io.GFile(base / 'text.txt', 'w') as f:
    f.write('héllo')
  with io.GFile(base / 'data.bin', 'wb') as f:
    f.write(b'\x00\x01\x02')
  with io.GFile(base / 'text.txt', 'r') as f:
    assert f.read() == 'héllo'
  assert io.getsize(base / 'text.txt') == len('héllo'.encode())
  assert sorted(io.listdir(base)) == ['data.bin', 'text.txt']
  assert sorted(io.glob(str(base / '*.txt'))) == [str(base / 'text.txt')]
  io.copy(base / 'text.txt', base / 'copy.txt')
  with pytest.raises(errors.AlreadyExistsError, match='Trying overwrite an existing file'):
    io.copy(base / 'data.bin', base / 'copy.txt')
  io.copy(base / 'data.bin', base / 'copy.txt', overwrite=True)
  with io.GFile(base / 'copy.txt', 'rb') as f:
    assert f.read() == b'\x00\x01\x02'
  with pytest.raises(errors.AlreadyExistsError):
    io.rename(base / 'text.txt', base / 'copy.txt')
  io.rename(base / 'text.txt', base / 'copy.txt', overwrite=True)
  assert not io.exists(base / 'text.txt') and io.getsize(base / 'copy.txt') == 6
  io.remove(base / 'copy.txt')
  with pytest.raises(io.NotFoundError):
    io.getsize(base / 'copy.txt')
  io.rmtree(tmp_path / 'a')
  assert not io.exists(tmp_path / 'a')


def test_io_has_only_the_local_backend():
  with io.override_mode(io.BackendMode.DEFAULT):
    assert io.io_mode is io.BackendMode.DEFAULT
  with pytest.raises(ValueError, match='only the local filesystem backend.*TensorFlow'):
    io.set_mode(io.BackendMode.TF)
  with pytest.raises(ValueError, match='BackendMode.TF'):
    with io.override_mode(io.BackendMode.TF):
      pass
  assert io.io_mode is io.BackendMode.DEFAULT


# typing


def test_typing_names_match_flax():
  flax_names = (
    'Array PRNGKey RNGSequences Dtype Shape K Key is_key_like Path PathParts Leaf '
    'PrecisionLike DotGeneralT ConvGeneralDilatedT EinsumT PaddingLike LaxPadding Initializer '
    'Collection MutableCollection VariableDict FrozenVariableDict MutableVariableDict '
    'PRNGFoldable T In Out Axis InOutAxis ScanAxis InOutScanAxis Axes LogicalNames AxisName '
    'LogicalRules ArrayPytree LogicalPartitionSpec LogicalPartitionSpecPytree '
    'PartitionSpecPytree Sharding A HA HB PytreeDeque Missing MISSING ShapeDtype '
    'has_shape_dtype SizeBytes TupleArg PromoteDtypeFn HashableMapping F BaseConfigContext'
  ).split()
  assert [name for name in flax_names if not hasattr(ft, name)] == []


def test_library_modules_take_their_aliases_from_typing():
  # The linen layers and lifted transforms annotate with flaxlike.typing's aliases.
  assert nn.linear.Array is ft.Array and nn.linear.PaddingLike is ft.PaddingLike
  assert nn.attention.PRNGKey is ft.PRNGKey and nn.normalization.Axes is ft.Axes
  assert nn.spmd.LogicalRules is ft.LogicalRules and module_class.PRNGKey is ft.PRNGKey
  assert nn.transforms.In is ft.In and flaxlike.core.lift.Out is ft.Out
  redefined = re.compile(r'^(Array|PRNGKey|Dtype|Shape|Initializer|PrecisionLike) = ', re.M)
  offenders = [
    str(path.relative_to(ROOT))
    for path in (ROOT / 'flaxlike' / 'linen').rglob('*.py')
    if redefined.search(path.read_text())
  ]
  assert offenders == []


def test_in_out_markers_work_in_vmap():
  class Scale(nn.Module):
    @nn.compact
    def __call__(self, x):
      return x * self.variable('consts', 'scale', jnp.ones, ()).value

  vmapped = nn.vmap(Scale, variable_axes={'consts': ft.In(0)}, split_rngs={}, in_axes=0)
  x = jnp.ones((3, 2))
  y = vmapped().apply({'consts': {'scale': jnp.arange(3.0)}}, x)
  np.testing.assert_array_equal(np.asarray(y), np.arange(3.0)[:, None] * np.ones((3, 2)))


def test_typing_helpers():
  assert repr(ft.SizeBytes.from_any({'w': np.zeros((1000, 1000), np.float32), 'n': 3})) == (
    '1,000,000 (4.0 MB)'
  )
  assert ft.SizeBytes(2, 8) + ft.SizeBytes(1, 4) == ft.SizeBytes(3, 12)
  assert not ft.SizeBytes(0, 0)
  assert jax.tree.leaves(ft.PytreeDeque([1, {'a': 2}])) == [1, 2]
  mapping = ft.HashableMapping({1: 'a', 'x': 'b'})
  assert hash(mapping) == hash(ft.HashableMapping({'x': 'b', 1: 'a'}))
  with pytest.raises(ValueError, match='int and str keys'):
    hash(ft.HashableMapping({(1,): 2}))
  assert ft.is_key_like('a') and not ft.is_key_like({}) and not ft.is_key_like(object())


# version


def test_the_version_is_defined_once():
  pyproject = tomllib.loads((ROOT / 'pyproject.toml').read_text())
  assert 'version' not in pyproject['project'] and 'version' in pyproject['project']['dynamic']
  attr = pyproject['tool']['setuptools']['dynamic']['version']['attr']
  assert attr == 'flaxlike.version.__version__'
  assert flaxlike.__version__ == flaxlike.version.__version__
  assert re.fullmatch(r'\d+\.\d+\.\d+', flaxlike.__version__)
  defined = [
    str(path.relative_to(ROOT))
    for path in (ROOT / 'flaxlike').rglob('*.py')
    if re.search(r"^__version__ = '", path.read_text(), re.M)
  ]
  assert defined == ['flaxlike/version.py']


# traceback_util


def _frames_of_error_under_jit():
  model = nn.Dense(3)
  variables = model.init(jax.random.key(0), jnp.ones((1, 2)))

  @jax.jit
  def step(x):
    return model.apply(variables, x)  # the kernel is (2, 3): a (1, 5) input fails inside

  with pytest.raises(errors.ScopeParamShapeError) as info:
    step(jnp.ones((1, 5)))
  return [frame.filename for frame in traceback.extract_tb(info.value.__traceback__)]


def test_flaxlike_frames_are_hidden_from_filtered_tracebacks():
  assert flaxlike.config.flax_filter_frames
  files = _frames_of_error_under_jit()
  assert files[-1] == __file__  # the traceback ends in user code
  assert not [f for f in files if f.startswith(PACKAGE_DIR)]
  try:
    traceback_util.show_flaxlike_in_tracebacks()
    files = _frames_of_error_under_jit()
    assert any(f.startswith(PACKAGE_DIR + 'linen') for f in files)
    assert any(f.startswith(PACKAGE_DIR + 'core') for f in files)
    flaxlike.config.update('flax_filter_frames', True)
    assert not [f for f in _frames_of_error_under_jit() if f.startswith(PACKAGE_DIR)]
    traceback_util.show_flax_in_tracebacks()  # Flax's name for the same switch
    assert not flaxlike.config.flax_filter_frames
  finally:
    traceback_util.hide_flax_in_tracebacks()
  assert flaxlike.config.flax_filter_frames


def test_errors_from_init_and_apply_end_in_user_code_without_a_jax_transform():
  class Broken(nn.Module):
    @nn.compact
    def __call__(self, x):
      raise ValueError('user bug')

  def frames():
    with pytest.raises(ValueError, match='user bug') as info:
      Broken().init(jax.random.key(0), jnp.ones(2))
    return [frame.filename for frame in traceback.extract_tb(info.value.__traceback__)]

  files = frames()
  assert files[-1] == __file__ and not [f for f in files if f.startswith(PACKAGE_DIR)]
  try:
    traceback_util.show_flaxlike_in_tracebacks()
    assert any(f.startswith(PACKAGE_DIR + 'linen') for f in frames())
  finally:
    traceback_util.hide_flaxlike_in_tracebacks()


# nn.meta


def test_nn_meta_is_core_meta():
  from flaxlike import linen

  assert nn.meta is flaxlike.core.meta and linen.meta is flaxlike.core.meta
  boxed = nn.Dense(
    2, kernel_init=nn.with_partitioning(nn.initializers.ones_init(), (None, 'model'))
  ).init(jax.random.key(0), jnp.ones((1, 3)))
  assert isinstance(boxed['params']['kernel'], nn.meta.Partitioned)
  unboxed = nn.meta.unbox(boxed)
  np.testing.assert_array_equal(np.asarray(unboxed['params']['kernel']), np.ones((3, 2)))


# Typed PRNG keys and clu-style metrics objects in training state


@struct.dataclass
class Average:
  """A metric in the style of clu.metrics.Average: a pytree with merge and compute."""

  total: jnp.ndarray
  count: jnp.ndarray

  @classmethod
  def empty(cls):
    return cls(total=jnp.zeros((), jnp.float32), count=jnp.zeros((), jnp.int32))

  @classmethod
  def from_model_output(cls, values):
    return cls(total=values.sum(), count=jnp.asarray(values.size, jnp.int32))

  def merge(self, other):
    return type(self)(self.total + other.total, self.count + other.count)

  def compute(self):
    return self.total / self.count


class StateWithRngAndMetrics(train_state.TrainState):
  rng: jax.Array
  metrics: Average


def test_typed_keys_and_metric_objects_live_in_train_state():
  model = nn.Dropout(0.5, deterministic=False)
  state = StateWithRngAndMetrics.create(
    apply_fn=model.apply,
    params={},
    tx=optax.sgd(0.1),
    rng=jax.random.key(0),
    metrics=Average.empty(),
  )

  @jax.jit
  def step(state, x):
    rng, dropout_rng = jax.random.split(state.rng)
    y = state.apply_fn({}, x, rngs={'dropout': dropout_rng})
    metrics = state.metrics.merge(Average.from_model_output(y))
    return state.replace(step=state.step + 1, rng=rng, metrics=metrics)

  x = jnp.ones((4, 8))
  for _ in range(3):
    state = step(state, x)
  # Reference: the same key sequence and dropout masks, outside jit and outside the state.
  rng, total = jax.random.key(0), 0.0
  for _ in range(3):
    rng, dropout_rng = jax.random.split(rng)
    total += float(model.apply({}, x, rngs={'dropout': dropout_rng}).sum())
  assert float(state.metrics.compute()) == pytest.approx(total / 96)
  assert jax.random.key_data(state.rng).tolist() == jax.random.key_data(rng).tolist()
  text = repr(state)
  assert 'rng=Array((), dtype=key<fry>) overlaying:' in text and 'metrics=Average(' in text
  # Checkpoint the key as its data (Flax's msgpack has no key encoding) and rewrap it.
  saved = serialization.to_bytes({'rng': jax.random.key_data(state.rng), 'metrics': state.metrics})
  target = {'rng': jax.random.key_data(jax.random.key(9)), 'metrics': Average.empty()}
  restored = serialization.from_bytes(target, saved)
  assert jax.random.wrap_key_data(restored['rng']) == state.rng
  assert float(restored['metrics'].compute()) == pytest.approx(total / 96)
