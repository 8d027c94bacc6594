"""One training loop written twice: pmap with ``flaxlike.jax_utils``, then ``jax.jit`` with
``jax.sharding``. Both give the same parameters.

The pmap version is the data-parallel loop of Flax's older examples: the state is copied
to every device (``jax_utils.replicate``), each batch is split into one slice per device
(``common_utils.shard``) and prefetched (``jax_utils.prefetch_to_device``), the gradients
and the BatchNorm statistics are averaged across devices by name (``lax.pmean`` and
``BatchNorm(axis_name=...)``), and the state is read back with ``jax_utils.unreplicate``.
Evaluation on a set whose size the device count does not divide goes through
``jax_utils.pad_shard_unpad``.

The sharded version keeps one global state and one global batch: the state is replicated
and the batch split over a one-axis mesh with ``NamedSharding``s, and ``jax.jit`` does
the rest. There are no per-device copies, no axis names and no ``pmean``: the loss is the
mean over the global batch, so its gradient and BatchNorm's statistics are already global.

On one machine without accelerators it runs on 8 fake CPU devices (it sets
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` when XLA_FLAGS is unset)::

  python examples/pmap_to_sharding.py --steps 50

See docs/pmap_to_sharding.md for the recipe, side by side.
"""

from __future__ import annotations

import argparse
import functools
import os

if 'XLA_FLAGS' not in os.environ:
  # Must happen before jax is imported; it has no effect on real accelerators.
  os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import flaxlike as nn
from flaxlike import jax_utils
from flaxlike.training import common_utils, train_state


class MLP(nn.Module):
  """Dense, BatchNorm, ReLU, Dense. ``axis_name`` is only needed under pmap."""

  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    # No bias before BatchNorm: it would get an exactly-zero gradient, which Adam turns into
    # +-lr steps of float noise, and the two loops would drift apart on it.
    x = nn.Dense(32, use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.axis_name)(x)
    return nn.Dense(1)(nn.relu(x))


class TrainState(train_state.TrainState):
  batch_stats: Any


def make_data(num_examples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A smooth regression target of 4 inputs."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(num_examples, 4)).astype(np.float32)
  y = np.sin(x @ np.array([1.0, -2.0, 0.5, 1.5], np.float32))[:, None]
  return x, y


def batches(x, y, batch_size: int, steps: int):
  for step in range(steps):
    start = (step * batch_size) % (len(x) - batch_size + 1)
    yield {'x': x[start : start + batch_size], 'y': y[start : start + batch_size]}


def create_state(learning_rate: float) -> TrainState:
  variables = MLP().init(jax.random.key(0), jnp.ones((1, 4)), train=False)
  return TrainState.create(
    apply_fn=MLP().apply,
    params=variables['params'],
    batch_stats=variables['batch_stats'],
    tx=optax.adam(learning_rate),
  )


def loss_and_grads(model: MLP, state: TrainState, batch):
  def loss_fn(params):
    pred, updates = model.apply(
      {'params': params, 'batch_stats': state.batch_stats},
      batch['x'],
      train=True,
      mutable=['batch_stats'],
    )
    return jnp.mean((pred - batch['y']) ** 2), updates['batch_stats']

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return loss, batch_stats, grads


# The pmap-era loop.


@functools.partial(jax.pmap, axis_name='batch')
def pmap_train_step(state: TrainState, batch):
  # Each device sees its slice; BatchNorm averages its statistics over 'batch'.
  loss, batch_stats, grads = loss_and_grads(MLP(axis_name='batch'), state, batch)
  grads = jax.lax.pmean(grads, 'batch')  # the global-batch gradient
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return state, jax.lax.pmean(loss, 'batch')


def train_with_pmap(state: TrainState, data, steps: int, batch_size: int):
  state = jax_utils.replicate(state)  # one copy per device, leading axis = devices
  sharded = map(common_utils.shard, batches(*data, batch_size, steps))
  losses = []
  for batch in jax_utils.prefetch_to_device(sharded, size=2):
    state, loss = pmap_train_step(state, batch)
    losses.append(float(jax_utils.unreplicate(loss)))
  return jax_utils.unreplicate(state), losses


def evaluate_with_pmap(state: TrainState, x: np.ndarray) -> np.ndarray:
  variables = jax_utils.replicate({'params': state.params, 'batch_stats': state.batch_stats})
  predict = jax.pmap(lambda v, x: MLP().apply(v, x, train=False))
  # The replicated variables (argument 0) pass through; x is padded to a multiple of the
  # device count, split, and the predictions cut back to len(x).
  return jax_utils.pad_shard_unpad(predict)(variables, x)


# The same loop on jax.jit and jax.sharding.


@jax.jit
def jit_train_step(state: TrainState, batch):
  loss, batch_stats, grads = loss_and_grads(MLP(), state, batch)
  return state.apply_gradients(grads=grads, batch_stats=batch_stats), loss


def train_with_sharding(state: TrainState, data, steps: int, batch_size: int):
  mesh = Mesh(np.array(jax.devices()), ('batch',))
  replicated = NamedSharding(mesh, PartitionSpec())
  split = NamedSharding(mesh, PartitionSpec('batch'))
  state = jax.device_put(state, replicated)  # one global state, a copy on every device
  losses = []
  for batch in batches(*data, batch_size, steps):
    state, loss = jit_train_step(state, jax.device_put(batch, split))
    losses.append(float(loss))
  return state, losses


def evaluate_with_sharding(state: TrainState, x: np.ndarray) -> np.ndarray:
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  return np.asarray(jax.jit(lambda v, x: MLP().apply(v, x, train=False))(variables, x))


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--steps', type=int, default=50)
  parser.add_argument('--batch-size', type=int, default=64, help='the global batch')
  parser.add_argument('--learning-rate', type=float, default=1e-2)
  parser.add_argument('--eval-examples', type=int, default=101)
  args = parser.parse_args(argv)
  devices = jax.local_device_count()
  if args.batch_size % devices:
    parser.error(f'--batch-size must be a multiple of the {devices} devices')

  data = make_data(2048, seed=0)
  x_eval, y_eval = make_data(args.eval_examples, seed=1)
  pmap_state, pmap_losses = train_with_pmap(
    create_state(args.learning_rate), data, args.steps, args.batch_size
  )
  jit_state, jit_losses = train_with_sharding(
    create_state(args.learning_rate), data, args.steps, args.batch_size
  )
  pmap_pred = evaluate_with_pmap(pmap_state, x_eval)
  jit_pred = evaluate_with_sharding(jit_state, x_eval)
  param_diff = max(
    float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    for a, b in zip(jax.tree.leaves(pmap_state.params), jax.tree.leaves(jit_state.params))
  )
  print(f'{devices} devices, global batch {args.batch_size}, {args.steps} steps')
  for step in sorted({0, args.steps // 2, args.steps - 1}):
    print(f'step {step:4d}  loss pmap {pmap_losses[step]:.5f}  jit+sharding {jit_losses[step]:.5f}')
  eval_mse = float(np.mean((jit_pred - y_eval) ** 2))
  print(f'largest parameter difference: {param_diff:.2e}; eval MSE {eval_mse:.4f}')
  return {
    'pmap_losses': pmap_losses,
    'jit_losses': jit_losses,
    'param_diff': param_diff,
    'pmap_pred': pmap_pred,
    'jit_pred': jit_pred,
    'eval_mse': eval_mse,
  }


if __name__ == '__main__':
  main()
