"""One process of the two-process Orbax save driven by ``tests/test_checkpoints_orbax.py``.

Not collected by pytest (no ``test_`` prefix). Started like ``distributed_worker.py``:

  python tests/orbax_distributed_worker.py --process-id I --num-processes N --port P --out DIR

Each process joins the ``jax.distributed`` job, builds only its own columns of a kernel
sharded over every device of the job (``jax.make_array_from_callback``: the whole kernel
never exists anywhere), puts it in a ``TrainState`` with Adam (whose moments are sharded
the same way) and calls ``checkpoints.save_checkpoint_multiprocess`` with the gather
helpers disabled, so a save that tried to assemble the model on one host would fail.
Process ``I`` writes ``DIR/result_I.json``: what it held and its peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flaxlike.training import checkpoints, train_state

ROWS = 64
COLS = 1024
STEP = 3


def kernel_values(index: tuple[slice, ...]) -> np.ndarray:
  """The kernel's entries at ``index`` (value = row * COLS + column), without the rest."""
  rows = np.arange(ROWS)[index[0]]
  cols = np.arange(COLS)[index[1]]
  return (rows[:, None] * COLS + cols[None, :]).astype(np.float32)


_allgather = multihost_utils.process_allgather


def _refusing_model_gathers(in_tree, *args, **kwargs):
  """``process_allgather`` for the small values of barriers; refuses model arrays."""
  for leaf in jax.tree_util.tree_leaves(in_tree):
    if np.size(leaf) >= COLS:
      raise AssertionError(f'the save gathered a model array {np.shape(leaf)} onto one host')
  return _allgather(in_tree, *args, **kwargs)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--process-id', type=int, required=True)
  parser.add_argument('--num-processes', type=int, required=True)
  parser.add_argument('--port', type=int, required=True)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  jax.distributed.initialize(
    coordinator_address=f'localhost:{args.port}',
    num_processes=args.num_processes,
    process_id=args.process_id,
  )
  mesh = Mesh(np.array(jax.devices()), ('data',))
  sharding = NamedSharding(mesh, PartitionSpec(None, 'data'))
  kernel = jax.make_array_from_callback((ROWS, COLS), sharding, kernel_values)
  bias = jax.device_put(np.ones(COLS, np.float32), NamedSharding(mesh, PartitionSpec('data')))
  state = train_state.TrainState.create(
    apply_fn=None, params={'kernel': kernel, 'bias': bias}, tx=optax.adam(0.1)
  ).replace(step=STEP)

  multihost_utils.process_allgather = _refusing_model_gathers
  path = checkpoints.save_checkpoint_multiprocess(os.path.join(args.out, 'ckpt'), state, STEP)

  leaves = [x for x in jax.tree_util.tree_leaves(state) if isinstance(x, jax.Array)]
  result = {
    'path': path,
    'global_bytes': sum(x.nbytes for x in leaves),
    'addressable_bytes': sum(s.data.nbytes for x in leaves for s in x.addressable_shards),
    'kernel_fully_addressable': kernel.is_fully_addressable,
    'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }
  with open(os.path.join(args.out, f'result_{args.process_id}.json'), 'w') as f:
    json.dump(result, f)
  jax.distributed.shutdown()


if __name__ == '__main__':
  main()
