"""Generic checks over every layer descriptor (parts A and B, see descriptors.py):
jit == eager, vmap == batching, float64 / bfloat16 / numpy inputs, strict rank
promotion, a serialization round trip and Linen's parameter tree and initial values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlike import serialization
from tests.fixtures.catalogue_base import flatten_in_order
from tests.fixtures.golden_check import load_golden
from tests.layers.descriptors import DESCRIPTORS

IDS = [d.name for d in DESCRIPTORS]


def _cast(d, dtype):
  args = list(d.inputs(np.float32))
  for i in d.float_inputs:
    args[i] = jax.tree_util.tree_map(lambda a: np.asarray(a).astype(dtype), args[i])
  return tuple(args)


def _init(d, args, seed=0):
  pos, kw = d.call_args(args)
  return d.make().init(jax.random.PRNGKey(seed), *pos, **kw, **d.init_kwargs)


def _apply(d, variables, args):
  pos, kw = d.call_args(args)
  rngs = {k: jax.random.key(v) for k, v in d.apply_rngs.items()}
  return d.make().apply(variables, *pos, rngs=rngs, mutable=d.mutable, **kw, **d.apply_kwargs)


def _out(d, result):
  return result[0] if d.mutable is not False else result


def _assert_close(a, b, tol):
  jax.tree_util.tree_map(
    lambda x, y: np.testing.assert_allclose(
      np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=tol, atol=tol
    ),
    a,
    b,
  )


def _float_leaves(tree):
  return [
    x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
  ]


def _expected_dtype(d, args, variables):
  """Layers compute in the promotion of their float inputs and float params."""
  floats = [a for i in d.float_inputs for a in jax.tree_util.tree_leaves(args[i])]
  floats += _float_leaves(variables.get('params', {}))
  return jnp.result_type(*floats) if floats else None


# Rank promotion is 'raise' for the whole suite (conftest): every check below would
# fail if a layer relied on implicit rank promotion.
def test_rank_promotion_is_strict():
  assert jax.config.jax_numpy_rank_promotion == 'raise'


@pytest.mark.parametrize('d', DESCRIPTORS, ids=IDS)
def test_jit_equals_eager_and_numpy_inputs(d):
  args = _cast(d, np.float32)
  variables = _init(d, args)
  eager = _apply(d, variables, args)
  jax_args = jax.tree_util.tree_map(jnp.asarray, args)
  jitted = jax.jit(lambda v, a: _apply(d, v, a))(variables, jax_args)
  _assert_close(eager, jitted, 1e-5)
  # numpy and jax inputs give identical results.
  _assert_close(eager, _apply(d, variables, jax_args), 0)


_PER_EXAMPLE = [d for d in DESCRIPTORS if d.per_example]


@pytest.mark.parametrize('d', _PER_EXAMPLE, ids=[d.name for d in _PER_EXAMPLE])
def test_vmap_equals_batching(d):
  args = _cast(d, np.float32)
  variables = _init(d, args)
  batched = _out(d, _apply(d, variables, args))
  one = lambda t: jax.tree_util.tree_map(lambda a: a[None], t)
  vmapped = jax.vmap(lambda a: _out(d, _apply(d, variables, one(a))))(
    jax.tree_util.tree_map(jnp.asarray, args)
  )
  vmapped = jax.tree_util.tree_map(lambda a: a[:, 0], vmapped)
  _assert_close(batched, vmapped, 1e-5)


_FLOAT = [d for d in DESCRIPTORS if d.float_inputs]


@pytest.mark.parametrize('d', _FLOAT, ids=[d.name for d in _FLOAT])
def test_float64_inputs_compute_in_float64(d):
  with jax.enable_x64(True):
    args = _cast(d, np.float64)
    variables = _init(d, args)
    out = _out(d, _apply(d, variables, args))
    want = _expected_dtype(d, args, variables)
    assert want == jnp.float64
    for leaf in _float_leaves(out):
      assert leaf.dtype == want, f'{d.name}: output dtype {leaf.dtype}, expected {want}'
    # float32 params keep their dtype when the inputs are float64.
    for leaf in _float_leaves(variables.get('params', {})):
      assert leaf.dtype == jnp.float32
    ref = _out(d, _apply(d, variables, _cast(d, np.float32)))
  _assert_close(out, ref, 1e-4)


_BF16 = [d for d in DESCRIPTORS if d.float_inputs and getattr(d, 'supports_bf16', True)]


@pytest.mark.parametrize('d', _BF16, ids=[d.name for d in _BF16])
def test_bfloat16_inputs_follow_promotion(d):
  args = _cast(d, jnp.bfloat16)
  variables = _init(d, args)
  out = _out(d, _apply(d, variables, args))
  want = _expected_dtype(d, args, variables)
  for leaf in _float_leaves(out):
    assert leaf.dtype == want, f'{d.name}: output dtype {leaf.dtype}, expected {want}'


@pytest.mark.parametrize('d', DESCRIPTORS, ids=IDS)
def test_serialization_round_trip(d):
  args = _cast(d, np.float32)
  variables = _init(d, args)
  template = jax.tree_util.tree_map(jnp.zeros_like, _init(d, args, seed=1))
  restored = serialization.from_state_dict(template, serialization.to_state_dict(variables))
  if hasattr(serialization, 'to_bytes'):
    restored = serialization.from_bytes(template, serialization.to_bytes(restored))
  _assert_close(variables, restored, 0)
  _assert_close(_apply(d, variables, args), _apply(d, restored, args), 0)


_GOLDEN = [d for d in DESCRIPTORS if getattr(d, 'golden', None)]


@pytest.mark.parametrize('d', _GOLDEN, ids=[d.name for d in _GOLDEN])
def test_params_match_linen(d):
  meta, arrays = load_golden(*d.golden)
  variables = _init(d, _cast(d, np.float32))
  flat = flatten_in_order(variables)
  assert [list(p) for p, _ in flat] == [e['path'] for e in meta['variables']]
  for path, value in flat:
    np.testing.assert_array_equal(value, arrays['/'.join(path)], err_msg='/'.join(path))
