"""Generic checks over every part-B layer (see descriptors_b.py): jit == eager,
vmap == batching, float64/bfloat16 inputs, numpy inputs, strict rank promotion and a
msgpack round trip of the variables."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlike import serialization
from tests.layers.descriptors_b import DESCRIPTORS_B

IDS = [d.name for d in DESCRIPTORS_B]


def _cast(d, dtype):
  args = list(d.inputs(np.float32))
  for i in d.float_inputs:
    args[i] = jax.tree_util.tree_map(lambda a: np.asarray(a).astype(dtype), args[i])
  return tuple(args)


def _init(d, args):
  args, kwargs = d.call_args(args)
  return d.make().init(jax.random.key(0), *args, **kwargs, **d.init_kwargs)


def _apply(d, variables, args):
  args, kwargs = d.call_args(args)
  rngs = {k: jax.random.key(v) for k, v in d.apply_rngs.items()}
  return d.make().apply(variables, *args, rngs=rngs, mutable=d.mutable, **kwargs,
                        **d.apply_kwargs)


def _assert_close(a, b, tol):
  jax.tree_util.tree_map(
    lambda x, y: np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                            rtol=tol, atol=tol), a, b)


def _is_array(x):
  return isinstance(x, (np.ndarray, jax.Array))


@pytest.mark.parametrize('d', DESCRIPTORS_B, ids=IDS)
def test_jit_eager_numpy_inputs_and_serialization(d):
  args = _cast(d, np.float32)
  with jax.numpy_rank_promotion('raise'):
    variables = _init(d, args)
    eager = _apply(d, variables, args)
    jax_args = jax.tree_util.tree_map(jnp.asarray, args)
    jitted = jax.jit(lambda v, a: _apply(d, v, a))(variables, jax_args)
  _assert_close(eager, jitted, 1e-5)
  _assert_close(eager, _apply(d, variables, jax_args), 0)
  # msgpack round trip of the variables restores an identical layer.
  blank = jax.tree_util.tree_map(jnp.zeros_like, variables)
  restored = serialization.from_bytes(blank, serialization.to_bytes(variables))
  _assert_close(variables, restored, 0)
  _assert_close(eager, _apply(d, restored, args), 0)


@pytest.mark.parametrize('d', [d for d in DESCRIPTORS_B if d.per_example],
                         ids=[d.name for d in DESCRIPTORS_B if d.per_example])
def test_vmap_equals_batching(d):
  args = _cast(d, np.float32)
  variables = _init(d, args)
  batched = _apply(d, variables, args)
  leaves, treedef = jax.tree_util.tree_flatten(args)

  def one(*example_leaves):
    example = jax.tree_util.tree_unflatten(treedef, [e[None] for e in example_leaves])
    out = _apply(d, variables, example)
    return jax.tree_util.tree_map(lambda o: o[0], out)

  mapped = jax.vmap(one)(*leaves)
  _assert_close(batched, mapped, 1e-5)


@pytest.mark.parametrize('d', DESCRIPTORS_B, ids=IDS)
def test_low_and_high_precision_inputs(d):
  ref = _apply(d, _init(d, _cast(d, np.float32)), _cast(d, np.float32))
  bf16_args = _cast(d, jnp.bfloat16)
  out = _apply(d, _init(d, bf16_args), bf16_args)
  assert all(np.all(np.isfinite(np.asarray(x, np.float32)))
             for x in jax.tree_util.tree_leaves(out))
  _assert_close(ref, out, 0.1)
  with jax.enable_x64(True):
    f64_args = _cast(d, np.float64)
    out64 = _apply(d, _init(d, f64_args), f64_args)
  # Only the layer output follows the inputs: stored statistics keep param_dtype.
  main = out64[0] if d.mutable else out64
  for leaf in jax.tree_util.tree_leaves(main):
    assert leaf.dtype == jnp.float64
  if not d.apply_rngs:  # random bits are drawn per float width, so masks differ
    _assert_close(ref, out64, 1e-4)
