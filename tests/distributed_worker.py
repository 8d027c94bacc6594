"""One process of the real multi-process training run driven by ``tests/test_distributed.py``.

Not collected by pytest (no ``test_`` prefix). The test starts one of these per process:

  python tests/distributed_worker.py --process-id I --num-processes N --port P --out DIR

with ``XLA_FLAGS=--xla_force_host_platform_device_count=<local devices>`` in the
environment. Each process joins the job through ``jax.distributed.initialize`` (CPU
collectives over gloo), builds the parameters with ``nn.sharded_init`` on a ``('data',)``
mesh spanning every process's devices, feeds only its own slice of each global batch with
``jax.make_array_from_process_local_data``, and trains a few AdamW steps. Process ``I``
writes ``DIR/result_I.json`` (per-step losses and what it saw of the shardings), and all
processes call ``checkpoints.save_checkpoint`` so process 0 can write the gathered state.

The model, data, optimizer and step live here so the test can run the same training in a
single process as the reference.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

import flaxlike as nn
from flaxlike.training import checkpoints, train_state

STEPS = 4
GLOBAL_BATCH = 16
IN_FEATURES = 8
HIDDEN = 32
CLASSES = 4
# Batch over 'data' (data parallel); the hidden axis of the first kernel over 'data' too,
# so that kernel is split across processes (FSDP style) and the checkpoint has to gather it.
RULES = (('batch', 'data'), ('hidden', 'data'))


class Classifier(nn.Module):
  """A two-layer MLP whose first kernel carries logical axis names."""

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(
      HIDDEN,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ('in', 'hidden')),
    )(x)
    return nn.Dense(CLASSES)(nn.gelu(x))


def make_batches(steps: int = STEPS) -> list[tuple[np.ndarray, np.ndarray]]:
  """The global batches, identical in every process (each later keeps its own rows)."""
  rng = np.random.RandomState(0)
  teacher = rng.randn(IN_FEATURES, CLASSES)
  batches = []
  for _ in range(steps):
    x = rng.randn(GLOBAL_BATCH, IN_FEATURES).astype(np.float32)
    batches.append((x, np.argmax(x @ teacher, axis=-1).astype(np.int32)))
  return batches


def make_optimizer() -> optax.GradientTransformation:
  return optax.adamw(1e-2, weight_decay=1e-2)


def create_state(params) -> train_state.TrainState:
  return train_state.TrainState.create(
    apply_fn=Classifier().apply, params=params, tx=make_optimizer()
  )


def train_step(state: train_state.TrainState, x, y):
  """One AdamW step on the mean cross-entropy over the (global) batch."""

  def loss_fn(params):
    logits = state.apply_fn({'params': params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return state.apply_gradients(grads=grads), loss


def init_example() -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((1, IN_FEATURES), jnp.float32)


def _local_rows(sharding: NamedSharding, global_shape: tuple[int, ...]) -> slice:
  """The rows of the global batch that live on this process's devices."""
  starts, stops = [], []
  for index in sharding.addressable_devices_indices_map(global_shape).values():
    starts.append(index[0].start or 0)
    stops.append(global_shape[0] if index[0].stop is None else index[0].stop)
  return slice(min(starts), max(stops))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--process-id', type=int, required=True)
  parser.add_argument('--num-processes', type=int, required=True)
  parser.add_argument('--port', type=int, required=True)
  parser.add_argument('--out', required=True)
  args = parser.parse_args(argv)

  jax.distributed.initialize(
    coordinator_address=f'localhost:{args.port}',
    num_processes=args.num_processes,
    process_id=args.process_id,
  )
  mesh = jax.make_mesh((jax.device_count(),), ('data',), axis_types=(AxisType.Auto,))
  variables, shardings = nn.sharded_init(
    Classifier(), jax.random.key(0), init_example(), mesh=mesh, rules=RULES
  )
  replicated = NamedSharding(mesh, PartitionSpec())
  state_shape = jax.eval_shape(create_state, variables['params'])
  # The AdamW moments are laid out like the parameters they track; the counters and the
  # step are replicated. Creating the state under jit with these out_shardings pins every
  # leaf to the mesh, so the step's in_shardings can name them all.
  state_shardings = state_shape.replace(
    step=replicated,
    params=shardings['params'],
    opt_state=optax.tree_map_params(
      state_shape.tx,
      lambda _, sharding: sharding,
      state_shape.opt_state,
      shardings['params'],
      transform_non_params=lambda _: replicated,
    ),
  )
  state = jax.jit(create_state, out_shardings=state_shardings)(variables['params'])
  batch_sharding = NamedSharding(mesh, PartitionSpec('data'))
  step = jax.jit(
    train_step,
    in_shardings=(state_shardings, batch_sharding, batch_sharding),
    out_shardings=(state_shardings, replicated),
    donate_argnums=0,
  )

  losses = []
  for x, y in make_batches():
    rows = _local_rows(batch_sharding, x.shape)
    # Each process hands over only its own rows; together they form the global batch.
    x_global = jax.make_array_from_process_local_data(batch_sharding, x[rows], x.shape)
    y_global = jax.make_array_from_process_local_data(batch_sharding, y[rows], y.shape)
    state, loss = step(state, x_global, y_global)
    losses.append(float(loss))  # a replicated scalar: every process can read it

  kernel = state.params['Dense_0']['kernel']
  result = {
    'process_index': jax.process_index(),
    'process_count': jax.process_count(),
    'device_count': jax.device_count(),
    'local_device_count': jax.local_device_count(),
    'losses': losses,
    'local_rows': [rows.start, rows.stop],
    'kernel_spec': list(kernel.sharding.spec),
    'kernel_fully_addressable': kernel.is_fully_addressable,
    'kernel_shard_shapes': [list(s.data.shape) for s in kernel.addressable_shards],
  }
  # Every process joins the gather inside save_checkpoint; only process 0 writes.
  checkpoints.save_checkpoint(os.path.join(args.out, 'ckpt'), state, step=STEPS)
  with open(os.path.join(args.out, f'result_{args.process_id}.json'), 'w') as f:
    json.dump(result, f)
  jax.distributed.shutdown()


if __name__ == '__main__':
  main()
