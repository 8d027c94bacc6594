"""Sharded training of a small decoder-only Transformer on 8 fake CPU devices.

The same AdamW steps run on one device (the reference), data parallel on a ``('data',)``
mesh, tensor parallel on a ``('model',)`` mesh and on a 2x4 ``('data', 'model')`` mesh. The
parameters are built with ``nn.sharded_init`` from logical axis annotations; every run must
give the reference loss curve and final parameters, and every parameter must be laid out as
the logical axis rules say (the expected specs below are written out by hand).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import flaxlike as nn

VOCAB, EMBED, MLP_DIM, HEADS, HEAD_DIM, LAYERS = 32, 16, 32, 4, 4, 2
BATCH, LENGTH, STEPS = 8, 16, 4


def _annotated(init, names):
  return nn.with_logical_partitioning(init, names)


_kernel = nn.initializers.lecun_normal()
_zeros, _ones = nn.initializers.zeros_init(), nn.initializers.ones_init()


def _layer_norm():
  return nn.LayerNorm(
    scale_init=_annotated(_ones, ('embed',)), bias_init=_annotated(_zeros, ('embed',))
  )


class DecoderBlock(nn.Module):
  """Pre-norm causal self-attention and MLP, each with a residual connection."""

  @nn.compact
  def __call__(self, x, mask):
    h = _layer_norm()(x)
    x = x + nn.MultiHeadDotProductAttention(
      num_heads=HEADS,
      qkv_features=HEADS * HEAD_DIM,
      kernel_init=_annotated(_kernel, ('embed', 'heads', 'kv')),
      out_kernel_init=_annotated(_kernel, ('heads', 'kv', 'embed')),
      # No projection biases: the key bias gets an exactly-zero gradient (softmax ignores a
      # per-query constant), so AdamW would amplify float noise into +-lr steps and no two
      # summation orders would agree.
      use_bias=False,
      deterministic=True,
    )(h, mask=mask)
    h = _layer_norm()(x)
    h = nn.Dense(
      MLP_DIM,
      kernel_init=_annotated(_kernel, ('embed', 'mlp')),
      bias_init=_annotated(_zeros, ('mlp',)),
    )(h)
    h = nn.Dense(
      EMBED,
      kernel_init=_annotated(_kernel, ('mlp', 'embed')),
      bias_init=_annotated(_zeros, ('embed',)),
    )(nn.gelu(h))
    return x + h


class Decoder(nn.Module):
  """Token and position embeddings, ``LAYERS`` blocks, a final norm and a vocabulary head."""

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(
      VOCAB,
      EMBED,
      embedding_init=_annotated(nn.initializers.normal(1.0), ('vocab', 'embed')),
    )(tokens)
    # 'length' has no rule in any configuration: the position table stays replicated on it.
    position = self.param(
      'position',
      _annotated(nn.initializers.normal(0.02), ('length', 'embed')),
      (LENGTH, EMBED),
    )
    x = x + position[None]
    mask = nn.make_causal_mask(tokens)
    for _ in range(LAYERS):
      x = DecoderBlock()(x, mask)
    x = _layer_norm()(x)
    return nn.Dense(
      VOCAB,
      kernel_init=_annotated(_kernel, ('embed', 'vocab')),
      bias_init=_annotated(_zeros, ('vocab',)),
    )(x)


MODEL = Decoder()
# Cheaper LLVM code generation for the jits this file compiles: XLA CPU compile time
# dominates the run, and the SPMD partitioning under test happens before codegen.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
OPTIMIZER = optax.adamw(3e-3, weight_decay=1e-2)


def _loss(params, tokens):
  logits = MODEL.apply({'params': params}, tokens)
  return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()


def _train_step(params, opt_state, tokens):
  loss, grads = jax.value_and_grad(_loss)(params, tokens)
  updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def _batches():
  # Sequences that count up modulo VOCAB from a random start: learnable in a few steps.
  rng = np.random.RandomState(0)
  starts = rng.randint(0, VOCAB, size=(STEPS, BATCH, 1))
  return list((starts + np.arange(LENGTH)) % VOCAB)


def _auto_mesh(shape, names):
  return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))


class Parallelism(NamedTuple):
  """A mesh (shape, axis names), logical axis rules, and the mesh spec each logical name
  tuple must resolve to (Linen's rule: rules in order, each mesh axis used at most once per
  array; names absent here are replicated)."""

  mesh: tuple[tuple[int, ...], tuple[str, ...]]
  rules: tuple[tuple[str, str], ...]
  expected: dict[tuple[str, ...], P]


TENSOR_RULES = (('mlp', 'model'), ('heads', 'model'), ('vocab', 'model'), ('embed', 'model'))
CONFIGS = {
  'data_parallel': Parallelism(mesh=((8,), ('data',)), rules=(('batch', 'data'),), expected={}),
  'tensor_parallel': Parallelism(
    mesh=((4,), ('model',)),
    rules=TENSOR_RULES,
    expected={
      ('vocab', 'embed'): P('model', None),
      ('length', 'embed'): P(None, 'model'),
      ('embed',): P('model'),
      ('embed', 'heads', 'kv'): P(None, 'model', None),
      ('heads', 'kv', 'embed'): P('model', None, None),
      ('embed', 'mlp'): P(None, 'model'),
      ('mlp',): P('model'),
      ('mlp', 'embed'): P('model', None),
      ('embed', 'vocab'): P(None, 'model'),
      ('vocab',): P('model'),
    },
  ),
  'data_and_tensor_parallel': Parallelism(
    mesh=((2, 4), ('data', 'model')),
    rules=(('batch', 'data'),) + TENSOR_RULES[:-1] + (('embed', 'data'),),
    expected={
      ('vocab', 'embed'): P('model', 'data'),
      ('length', 'embed'): P(None, 'data'),
      ('embed',): P('data'),
      ('embed', 'heads', 'kv'): P('data', 'model', None),
      ('heads', 'kv', 'embed'): P('model', None, 'data'),
      ('embed', 'mlp'): P('data', 'model'),
      ('mlp',): P('model'),
      ('mlp', 'embed'): P('model', 'data'),
      ('embed', 'vocab'): P('data', 'model'),
      ('vocab',): P('model'),
    },
  ),
}


@pytest.fixture(scope='module')
def logical_names():
  """Each parameter's logical axis names, read from the boxes of an abstract init."""
  boxed = jax.eval_shape(MODEL.init, jax.random.key(0), jnp.zeros((BATCH, LENGTH), jnp.int32))
  return jax.tree_util.tree_map(
    lambda box: box.names, boxed['params'], is_leaf=lambda x: isinstance(x, nn.Partitioned)
  )


@pytest.fixture(scope='module')
def reference():
  """Initial params, per-step losses and final params of the single-device run."""
  init = jax.jit(MODEL.init, compiler_options=FAST_COMPILE)
  params = initial = nn.unbox(init(jax.random.key(0), _batches()[0])['params'])
  opt_state = OPTIMIZER.init(params)
  step = jax.jit(_train_step, compiler_options=FAST_COMPILE)
  losses = []
  for tokens in _batches():
    params, opt_state, loss = step(params, opt_state, tokens)
    losses.append(float(loss))
  return initial, np.array(losses), params


def _shard_shape(shape, spec, mesh):
  spec = tuple(spec) + (None,) * (len(shape) - len(spec))
  return tuple(size // (1 if axis is None else mesh.shape[axis]) for size, axis in zip(shape, spec))


def _check_layout(arrays, names, expected, mesh, what):
  flat_names = jax.tree_util.tree_leaves_with_path(names, is_leaf=lambda x: isinstance(x, tuple))
  arrays_by_path = dict(jax.tree_util.tree_leaves_with_path(arrays))
  assert set(arrays_by_path) == {path for path, _ in flat_names}
  for path, logical in flat_names:
    arr = arrays_by_path[path]
    spec = expected.get(logical, P())
    where = f'{what}{jax.tree_util.keystr(path)} {logical}'
    assert arr.sharding.is_equivalent_to(NamedSharding(mesh, spec), arr.ndim), (
      f'{where}: {arr.sharding.spec} != {spec}'
    )
    assert {s.data.shape for s in arr.addressable_shards} == {
      _shard_shape(arr.shape, spec, mesh)
    }, where
    assert len(arr.addressable_shards) == mesh.size, where


def _assert_laid_out_as(arr, sharding):
  assert arr.sharding.is_equivalent_to(sharding, arr.ndim), (arr.sharding, sharding)


@pytest.mark.parametrize('config', list(CONFIGS))
def test_sharded_training_matches_single_device(config, logical_names, reference):
  initial, ref_losses, ref_final = reference
  cfg = CONFIGS[config]
  mesh = _auto_mesh(*cfg.mesh)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P('data') if 'data' in mesh.axis_names else P())

  tokens0 = jax.ShapeDtypeStruct((BATCH, LENGTH), jnp.int32)
  variables, shardings = nn.sharded_init(
    MODEL, jax.random.key(0), tokens0, mesh=mesh, rules=cfg.rules
  )
  params = variables['params']
  # Every expected spec is exercised by this model (a typo in the table would not pass).
  used_names = set(jax.tree_util.tree_leaves(logical_names, is_leaf=lambda x: isinstance(x, tuple)))
  assert set(cfg.expected) <= used_names
  _check_layout(params, logical_names, cfg.expected, mesh, 'params')
  jax.tree_util.tree_map(_assert_laid_out_as, params, shardings['params'])
  # Sharded init draws the same numbers as the unsharded one (partitionable threefry).
  jax.tree_util.tree_map(
    lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7),
    params,
    initial,
  )

  opt_shardings = optax.tree_map_params(
    OPTIMIZER,
    lambda _, sharding: sharding,
    jax.eval_shape(OPTIMIZER.init, params),
    shardings['params'],
    transform_non_params=lambda _: replicated,
  )
  opt_init = jax.jit(OPTIMIZER.init, out_shardings=opt_shardings, compiler_options=FAST_COMPILE)
  opt_state = opt_init(params)
  step = jax.jit(
    _train_step,
    in_shardings=(shardings['params'], opt_shardings, batch_sharding),
    out_shardings=(shardings['params'], opt_shardings, replicated),
    donate_argnums=(0, 1),
    compiler_options=FAST_COMPILE,
  )
  losses = []
  for tokens in _batches():
    params, opt_state, loss = step(params, opt_state, jax.device_put(tokens, batch_sharding))
    losses.append(float(loss))

  np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
  assert ref_losses[-1] < ref_losses[0]
  jax.tree_util.tree_map(
    lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5),
    params,
    ref_final,
  )
  _check_layout(params, logical_names, cfg.expected, mesh, 'trained params')
  # The AdamW moments live where their parameters do.
  _check_layout(opt_state[0].mu, logical_names, cfg.expected, mesh, 'adam mu')


def test_reshaped_logical_kernels_apply_under_an_active_mesh_and_rules():
  # DenseGeneral (inside attention) draws its kernel flat and reshapes it; the logical
  # names describe the final shape, so the flat draw must not be constrained with them
  # (Linen 0.12 raises a rank error here). Fresh initializers for every module, as model
  # code usually creates them, so apply re-derives the parameter shapes under the mesh.
  def attention():
    return nn.MultiHeadDotProductAttention(
      num_heads=HEADS,
      use_bias=False,
      kernel_init=_annotated(_kernel, ('embed', 'heads', 'kv')),
      out_kernel_init=_annotated(_kernel, ('heads', 'kv', 'embed')),
    )

  x = jnp.asarray(np.random.RandomState(1).randn(BATCH, 4, EMBED), jnp.float32)
  params = nn.unbox(attention().init(jax.random.key(0), x))
  expected = attention().apply(params, x)
  mesh = _auto_mesh((2, 4), ('data', 'model'))
  with jax.set_mesh(mesh), nn.logical_axis_rules(CONFIGS['data_and_tensor_parallel'].rules):
    got = jax.jit(attention().apply)(params, x)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
