"""TrainState (plain and with collections) with optax adamw under jit, and common_utils."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flaxlike as nn
from flaxlike import serialization
from flaxlike.training import common_utils, train_state
from tests.fixtures import make_msgpack_fixtures as fx

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'msgpack')


def read(name):
  with open(os.path.join(FIXTURES, name), 'rb') as f:
    return f.read()


def created_state():
  raw = serialization.msgpack_restore(read('train_state_create.msgpack'))
  return train_state.TrainState.create(
    apply_fn=fx.dense_apply, params=raw['params'], tx=fx.make_optimizer()
  )


def test_state_dict_order():
  state = created_state()
  assert list(serialization.to_state_dict(state)) == ['step', 'params', 'opt_state']


def test_create_matches_flax_bytes():
  assert serialization.to_bytes(created_state()) == read('train_state_create.msgpack')


def test_jitted_adamw_step_matches_flax_bytes():
  state = created_state()
  grads = serialization.msgpack_restore(read('grads.msgpack'))
  state1 = jax.jit(lambda s, g: s.apply_gradients(grads=g))(state, grads)
  assert int(state1.step) == 1
  assert serialization.to_bytes(state1) == read('train_state_step1.msgpack')


def test_restore_flax_state_into_our_state():
  target = created_state()
  state1 = serialization.from_bytes(target, read('train_state_step1.msgpack'), strict=True)
  assert isinstance(state1, train_state.TrainState)
  assert int(state1.step) == 1 and state1.tx is target.tx
  x, y = fx.model_inputs()
  # Training continues from the restored state and lowers the loss.
  step = jax.jit(lambda s: s.apply_gradients(grads=jax.grad(fx.loss_fn)(s.params, x, y)))
  losses = []
  for _ in range(20):
    losses.append(float(fx.loss_fn(state1.params, x, y)))
    state1 = step(state1)
  assert losses[-1] < losses[0]


def test_apply_gradients_matches_manual_optax():
  params = {'w': jnp.arange(3.0), 'b': jnp.zeros(())}
  tx = optax.adamw(0.1)
  state = train_state.TrainState.create(apply_fn=None, params=params, tx=tx)
  grads = {'w': jnp.ones(3), 'b': jnp.array(2.0)}
  new = jax.jit(lambda s: s.apply_gradients(grads=grads, apply_fn=None))(state)
  updates, opt_state = tx.update(grads, tx.init(params), params)
  expect = optax.apply_updates(params, updates)
  np.testing.assert_allclose(new.params['w'], expect['w'], rtol=1e-6)
  assert int(new.opt_state[0].count) == int(opt_state[0].count) == 1


def test_overwrite_with_gradient_collection():
  params = {'params': {'w': jnp.ones(2)}, '_overwrite_with_gradient': {'s': jnp.zeros(())}}
  state = train_state.TrainState.create(apply_fn=None, params=params, tx=optax.sgd(1.0))
  grads = {'params': {'w': jnp.ones(2)}, '_overwrite_with_gradient': {'s': jnp.array(5.0)}}
  new = state.apply_gradients(grads=grads)
  assert new.params['params']['w'].tolist() == [0.0, 0.0]
  assert float(new.params['_overwrite_with_gradient']['s']) == 5.0


class BNNet(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.Dense(4)(x)
    return nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)


def test_train_state_with_collections_batchnorm():
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 3))
  variables = BNNet().init(jax.random.PRNGKey(0), x, train=False)
  state = train_state.TrainStateWithCollections.create(
    apply_fn=BNNet().apply,
    params=variables['params'],
    tx=optax.adamw(1e-2),
    collections={'batch_stats': variables['batch_stats']},
  )
  assert list(serialization.to_state_dict(state)) == ['step', 'params', 'opt_state', 'collections']

  @jax.jit
  def train_step(state, x):
    def loss(params):
      y, updates = state.apply(x, train=True, params=params, mutable=['batch_stats'])
      return jnp.mean((y - 1.0) ** 2), updates

    grads, updates = jax.grad(loss, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads).update_collections(updates)

  before = state.collections['batch_stats']['BatchNorm_0']['mean']
  state = train_step(state, x)
  after = state.collections['batch_stats']['BatchNorm_0']['mean']
  assert not np.allclose(before, after)
  assert int(state.step) == 1

  restored = serialization.from_bytes(
    train_state.TrainStateWithCollections.create(
      apply_fn=BNNet().apply,
      params=variables['params'],
      tx=optax.adamw(1e-2),
      collections={'batch_stats': variables['batch_stats']},
    ),
    serialization.to_bytes(state),
    strict=True,
  )
  np.testing.assert_array_equal(restored.collections['batch_stats']['BatchNorm_0']['mean'], after)
  np.testing.assert_allclose(restored.apply(x, train=False), state.apply(x, train=False))


def test_common_utils():
  n = jax.local_device_count()
  assert common_utils.onehot(jnp.array([[1], [0]]), 2, on_value=5.0, off_value=-1.0).tolist() == [
    [[-1.0, 5.0]],
    [[5.0, -1.0]],
  ]
  sharded = common_utils.shard({'x': np.arange(n * 6).reshape(n * 2, 3)})
  assert sharded['x'].shape == (n, 2, 3)
  keys = common_utils.shard_prng_key(jax.random.PRNGKey(0))
  assert keys.shape[0] == n
  metrics = [{'loss': jnp.full((n,), float(i))} for i in range(3)]
  out = common_utils.get_metrics(metrics)
  assert isinstance(out['loss'], np.ndarray) and out['loss'].tolist() == [0.0, 1.0, 2.0]
  stacked = common_utils.stack_forest([{'a': np.zeros(2)}, {'a': np.ones(2)}])
  assert stacked['a'].shape == (2, 2)


def test_strict_rejects_other_model_size():
  state = created_state()
  other = train_state.TrainState.create(
    apply_fn=None,
    params={'kernel': jnp.zeros((4, 5)), 'bias': jnp.zeros(5)},
    tx=fx.make_optimizer(),
  )
  with pytest.raises(nn.errors.RestoreMismatchError, match=r'\./params/kernel.*\(4, 5\).*\(4, 3\)'):
    serialization.from_bytes(other, serialization.to_bytes(state), strict=True)
