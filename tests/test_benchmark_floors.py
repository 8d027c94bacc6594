"""The raw-JAX floors of ``benchmarks/run.py`` compute what the module workloads compute,
on the same variables, so a ratio against a floor measures the library and not different
math. Small shapes; the benchmark itself is not run."""

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike as nn


def _load_benchmark():
  path = Path(__file__).resolve().parents[1] / 'benchmarks' / 'run.py'
  spec = importlib.util.spec_from_file_location('benchmarks_run', path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclass processing looks the module up by name
  spec.loader.exec_module(module)
  return module


bench = _load_benchmark()
KEY = jax.random.key(0)


@pytest.fixture(autouse=True)
def _implicit_rank_promotion():
  # The floors are written as plain JAX users write it, broadcasting biases implicitly; the
  # suite otherwise raises on rank promotion to keep the library explicit.
  with jax.numpy_rank_promotion('allow'):
    yield


def _close(actual, expected):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=1e-6)


def _shapes(tree):
  return jax.tree_util.tree_map(jnp.shape, tree)


def _random_variables(model, x):
  """Variables of ``model``'s layout filled with seeded normals: the floors must agree on any
  values, and compiling the initializers' random draws is what makes ``init`` slow here."""
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(
    lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype),
    jax.eval_shape(model.init, KEY, x),
  )


def test_raw_mlp_is_the_module_mlp():
  x = jax.random.normal(jax.random.key(1), (4, 8))
  model = bench.make_mlp(nn, 5, 16)
  variables = _random_variables(model, x)
  _close(bench.raw_mlp_apply(variables['params'], x, 5), model.apply(variables, x))
  _, raw_params = jax.eval_shape(lambda k: bench.raw_mlp_init(k, x, 5, 16), KEY)
  assert _shapes(raw_params) == _shapes(variables['params'])


@pytest.mark.parametrize('scanned', [False, True], ids=['unrolled', 'scan_remat'])
def test_raw_transformer_is_the_module_transformer(scanned):
  x = jax.random.normal(jax.random.key(1), (2, 8, 32))
  model = bench.make_transformer(nn, 2, 32, 4, scanned)
  module_params = _random_variables(model, x)['params']
  raw_params = dict(module_params)
  if scanned:  # the raw floor keeps the stacked block parameters under one plain name
    raw_params['blocks'] = raw_params.pop('ScanCheckpointBlock_0')
  raw_apply = jax.jit(bench.raw_transformer_apply, static_argnums=(2, 3))
  _close(raw_apply(raw_params, x, 2, scanned), jax.jit(model.apply)({'params': module_params}, x))
  _, raw_init_params = jax.eval_shape(
    lambda k: bench.raw_transformer_init(k, x, 2, 4, scanned), KEY
  )
  assert _shapes(raw_init_params) == _shapes(raw_params)


def test_raw_resnet_is_the_module_resnet_with_batch_statistics():
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  stages = (1, 1)  # each stage's first block: projection shortcut, stride 2 in the second
  model = bench.make_resnet50(nn, stage_sizes=stages, width=8)
  variables = _random_variables(model, x)
  # Jitted: eagerly, each of the many small ops would compile on its own.
  logits, updated = jax.jit(lambda v, x: model.apply(v, x, mutable=['batch_stats']))(variables, x)
  raw_logits, raw_stats = jax.jit(bench.raw_resnet50_apply, static_argnums=2)(variables, x, stages)
  _close(raw_logits, logits)
  jax.tree_util.tree_map(_close, raw_stats, updated['batch_stats'])
  _, raw_variables = jax.eval_shape(lambda k: bench.raw_resnet50_init(k, x, stages, width=8), KEY)
  assert _shapes(raw_variables) == _shapes(variables)
