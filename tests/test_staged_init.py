"""Staged initializers (flaxlike/core/staged_init.py): under a trace, ``param`` replays a
cached trace of each pure initializer; the jaxpr, and so the parameters, must be exactly
what running the initializer as written gives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike as nn
from flaxlike import core
from flaxlike.core import staged_init


@pytest.fixture
def unstaged(monkeypatch):
  """Runs the body with every initializer called as written (the eager path)."""

  def use_direct_path():
    monkeypatch.setattr(staged_init, '_staged', lambda *args: None)

  return use_direct_path


class Block(nn.Module):
  @nn.compact
  def __call__(self, x, _=None):
    h = nn.MultiHeadDotProductAttention(num_heads=2)(nn.LayerNorm()(x), x)
    partitioned = nn.with_partitioning(nn.initializers.normal(0.02), (None, 'model'))
    h = nn.Dense(x.shape[-1], kernel_init=partitioned)(x + h)
    logical = nn.with_logical_partitioning(nn.initializers.ones, (None, None, 'embed'))
    h = h * self.param('gain', logical, (1, 1, x.shape[-1]))
    return x + h, None


class Model(nn.Module):
  @nn.compact
  def __call__(self, x):
    x, _ = Block()(x)
    x, _ = nn.scan(Block, variable_axes={'params': 0}, split_rngs={'params': True}, length=2)()(
      x, None
    )
    dense = nn.vmap(
      nn.DenseGeneral,
      variable_axes={'params': 0},
      split_rngs={'params': True},
      in_axes=0,
      out_axes=0,
    )
    x = dense((2, 3), axis=-1)(x)
    return nn.Conv(3, (2,))(jnp.reshape(x, x.shape[:2] + (-1,)))


def core_model(scope, x):
  return core.nn.dense_general(scope.push('dg'), x, features=(2, 3), axis=-1, batch_dims=(0,))


@pytest.mark.parametrize('make_key', [jax.random.PRNGKey, jax.random.key], ids=['raw', 'typed'])
@pytest.mark.parametrize('which', ['linen', 'core'])
def test_traced_init_is_the_same_jaxpr_and_values(which, make_key, unstaged):
  key = make_key(0)
  x = jnp.ones((2, 3, 4))
  init = Model().init if which == 'linen' else core.init(core_model)
  staged_jaxpr = str(jax.make_jaxpr(init)(key, x))
  staged = jax.jit(init)(key, x) if which == 'core' else None
  unstaged()
  # The same equations compile to the same program: the same parameters, bit for bit.
  assert str(jax.make_jaxpr(init)(key, x)) == staged_jaxpr
  if staged is not None:  # and, on the small model, the values themselves
    jax.tree.map(np.testing.assert_array_equal, staged, jax.jit(init)(key, x))


_TRACED_SHAPES = []


@staged_init.pure_initializer
def _counted_normal(key, shape, dtype=jnp.float32):
  # A global, not a closure: only closures over plain values are staged.
  _TRACED_SHAPES.append(shape)
  return jax.random.normal(key, shape, dtype)


def test_one_trace_per_initializer_and_arguments():
  class Stack(nn.Module):
    @nn.compact
    def __call__(self, x):
      for _ in range(3):
        x = nn.Dense(4, kernel_init=_counted_normal)(x)
      return x

  params = jax.jit(Stack().init)(jax.random.key(1), jnp.ones((1, 4)))['params']
  assert _TRACED_SHAPES == [(4, 4)]  # three layers, one trace
  kernels = [params[f'Dense_{i}']['kernel'] for i in range(3)]
  assert not np.array_equal(kernels[0], kernels[1])  # each still gets its own key


def test_which_initializers_are_staged():
  args = ((3, 2),)
  # Closures of one factory with equal settings share one staged function.
  lecun = staged_init._staged(nn.initializers.lecun_normal(), args, {})
  assert lecun is staged_init._staged(nn.initializers.lecun_normal(), args, {})
  assert lecun is not staged_init._staged(nn.initializers.lecun_uniform(), args, {})
  # Equal but differently typed settings are different initializers.
  one = staged_init._staged(nn.initializers.normal(1), args, {})
  assert one is not staged_init._staged(nn.initializers.normal(1.0), args, {})
  # Not staged: a user's function, closures over arrays or lists, array arguments.
  assert staged_init._staged(lambda key, shape: jnp.zeros(shape), args, {}) is None
  assert staged_init._staged(nn.initializers.constant(jnp.ones(())), args, {}) is None
  assert staged_init._staged(nn.initializers.zeros, (np.ones(2),), {}) is None
  boxed = nn.with_partitioning(lambda key, shape: jnp.zeros(shape), ('model',))
  assert staged_init._staged(boxed, args, {}) is None
  # Plain values include numpy scalars; boxes of pure initializers are pure.
  assert staged_init._staged(nn.initializers.zeros, ((np.int64(3),),), {}) is not None
  assert staged_init._staged(nn.with_partitioning(nn.initializers.zeros, ('a',)), args, {})


def test_user_initializers_run_as_written_under_jit():
  seen = []

  def user_init(key, shape):
    seen.append(shape)
    return jnp.full(shape, len(seen), jnp.float32)

  class Two(nn.Module):
    @nn.compact
    def __call__(self, x):
      return self.param('a', user_init, (2,)) + self.param('b', user_init, (2,)) + x

  params = jax.jit(Two().init)(jax.random.key(0), jnp.ones((2,)))['params']
  assert params['a'].tolist() == [1, 1] and params['b'].tolist() == [2, 2]
