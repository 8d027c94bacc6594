"""Train a small decoder-only Transformer sharded over a device mesh with logical axis names.

The documented sharding path end to end:

1. the model names every parameter dimension logically with
   ``nn.with_logical_partitioning(init, ('embed', 'mlp'))`` and pins activations with
   ``nn.with_logical_constraint``; it never mentions a mesh;
2. ``rules`` map the logical names onto the axes of a ``('data', 'model')`` mesh from
   ``jax.make_mesh``: the batch over 'data'; vocabulary, heads and MLP hidden units over
   'model' (Megatron-style tensor parallelism); with ``--fsdp`` also 'embed' over 'data';
3. ``nn.sharded_init`` creates every parameter directly in its shards and returns the
   matching ``NamedSharding``s;
4. a ``jax.jit`` AdamW step takes and returns parameters in those shardings, on batches
   laid out along 'data'.

On one machine without accelerators it runs on 8 fake CPU devices (it sets
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` when XLA_FLAGS is unset)::

  python examples/sharded_training.py --mesh 2x4 --steps 30
  python examples/sharded_training.py --mesh 8x1            # data parallel only
  python examples/sharded_training.py --mesh 8x1 --fsdp     # fully sharded data parallel

On several hosts, start the same command once per process with the coordinator's
address; ``jax.distributed.initialize`` then makes ``jax.devices()`` list every process's
devices, and the mesh (whose size must be the total device count) spans them all::

  python examples/sharded_training.py --mesh 2x8 \\
      --coordinator host0:1234 --num-processes 2 --process-id 0   # on host0
  python examples/sharded_training.py --mesh 2x8 \\
      --coordinator host0:1234 --num-processes 2 --process-id 1   # on host1

(On managed clusters such as Cloud TPU or SLURM, ``jax.distributed.initialize()`` finds
these values itself.) Each process then generates, or would read from disk, only its own
``batch_size / process_count`` sequences and hands them to
``jax.make_array_from_process_local_data``, which assembles the global batch without
copying data between hosts. ``sharded_init`` runs unchanged: every process computes only
the parameter shards on its own devices. Save checkpoints with
``flaxlike.training.checkpoints.save_checkpoint_multiprocess`` called from every process:
with ``flaxlike[orbax]`` installed each process writes only its own shards (without Orbax,
the arrays are gathered and process 0 writes one file).
"""

from __future__ import annotations

import argparse
import os

if 'XLA_FLAGS' not in os.environ:
  # Must happen before jax is imported; it has no effect on real accelerators.
  os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

import flaxlike as nn

# Logical name -> mesh axis, in priority order; a name without a rule is replicated.
RULES = (
  ('batch', 'data'),
  ('vocab', 'model'),
  ('heads', 'model'),
  ('mlp', 'model'),
)
# Fully sharded data parallel on top: parameters also split their 'embed' axis over 'data'.
FSDP_RULES = (('embed', 'data'),)


def logical(init, *names):
  """``init`` returning a parameter annotated with one logical name per dimension."""
  return nn.with_logical_partitioning(init, names)


def layer_norm() -> nn.LayerNorm:
  return nn.LayerNorm(
    scale_init=logical(nn.initializers.ones_init(), 'embed'),
    bias_init=logical(nn.initializers.zeros_init(), 'embed'),
  )


class Block(nn.Module):
  """A pre-norm Transformer block: causal self-attention, then a GELU MLP.

  Attributes:
    num_heads: attention heads.
    mlp_dim: hidden width of the MLP.
  """

  num_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x, mask):
    embed = x.shape[-1]
    kernel = nn.initializers.xavier_uniform()
    h = layer_norm()(x)
    h = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads,
      kernel_init=logical(kernel, 'embed', 'heads', 'kv'),
      out_kernel_init=logical(kernel, 'heads', 'kv', 'embed'),
      use_bias=False,
      deterministic=True,
    )(h, mask=mask)
    x = nn.with_logical_constraint(x + h, ('batch', 'length', 'embed'))
    h = layer_norm()(x)
    h = nn.Dense(self.mlp_dim, kernel_init=logical(kernel, 'embed', 'mlp'), use_bias=False)(h)
    h = nn.with_logical_constraint(nn.gelu(h), ('batch', 'length', 'mlp'))
    h = nn.Dense(embed, kernel_init=logical(kernel, 'mlp', 'embed'), use_bias=False)(h)
    return nn.with_logical_constraint(x + h, ('batch', 'length', 'embed'))


class Transformer(nn.Module):
  """A decoder-only language model over integer tokens.

  Attributes:
    vocab_size: number of token ids.
    embed_dim: width of the residual stream.
    num_heads: attention heads per block.
    mlp_dim: MLP hidden width.
    num_layers: number of blocks.
    max_len: longest sequence (size of the learned position table).
  """

  vocab_size: int
  embed_dim: int
  num_heads: int
  mlp_dim: int
  num_layers: int
  max_len: int

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(
      self.vocab_size,
      self.embed_dim,
      embedding_init=logical(nn.initializers.normal(1.0), 'vocab', 'embed'),
    )(tokens)
    positions = self.param(
      'positions',
      logical(nn.initializers.normal(0.02), 'length', 'embed'),
      (self.max_len, self.embed_dim),
    )
    x = x + positions[None, : tokens.shape[1]]
    mask = nn.make_causal_mask(tokens)
    for _ in range(self.num_layers):
      x = Block(self.num_heads, self.mlp_dim)(x, mask)
    x = layer_norm()(x)
    logits = nn.Dense(
      self.vocab_size,
      kernel_init=logical(nn.initializers.xavier_uniform(), 'embed', 'vocab'),
      use_bias=False,
    )(x)
    return nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))


def local_batch(step: int, batch_size: int, seq_len: int, vocab_size: int) -> np.ndarray:
  """This process's share of the global batch for ``step``.

  Sequences of arithmetic progressions modulo ``vocab_size`` (random start and stride):
  the next token follows from the previous two, so the loss can fall fast. A real job
  would read its own files here instead.
  """
  rows = batch_size // jax.process_count()
  rng = np.random.default_rng([step, jax.process_index()])
  start = rng.integers(0, vocab_size, size=(rows, 1))
  stride = rng.integers(1, 4, size=(rows, 1))
  return ((start + stride * np.arange(seq_len)) % vocab_size).astype(np.int32)


def parse_mesh(text: str) -> tuple[int, int]:
  try:
    data, model = (int(n) for n in text.lower().split('x'))
  except ValueError:
    raise argparse.ArgumentTypeError(
      f'--mesh expects DATAxMODEL such as 2x4, got {text!r}'
    ) from None
  return data, model


def parse_args(argv):
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    '--mesh',
    type=parse_mesh,
    default=(2, 4),
    help='DATAxMODEL mesh shape; the product must be the device count',
  )
  parser.add_argument(
    '--fsdp', action='store_true', help="also shard the parameters' 'embed' axis over 'data'"
  )
  parser.add_argument('--steps', type=int, default=30)
  parser.add_argument('--batch-size', type=int, default=16)
  parser.add_argument('--seq-len', type=int, default=32)
  parser.add_argument('--vocab-size', type=int, default=64)
  parser.add_argument('--embed-dim', type=int, default=64)
  parser.add_argument('--num-heads', type=int, default=4)
  parser.add_argument('--mlp-dim', type=int, default=128)
  parser.add_argument('--num-layers', type=int, default=2)
  parser.add_argument('--learning-rate', type=float, default=3e-3)
  parser.add_argument('--log-every', type=int, default=10)
  parser.add_argument('--coordinator', help='host:port of process 0, for multi-host runs')
  parser.add_argument('--num-processes', type=int)
  parser.add_argument('--process-id', type=int)
  return parser.parse_args(argv)


def main(argv=None) -> dict:
  """Runs the example; returns the losses and the final parameters and their layout."""
  args = parse_args(argv)
  if args.coordinator:
    jax.distributed.initialize(
      coordinator_address=args.coordinator,
      num_processes=args.num_processes,
      process_id=args.process_id,
    )
  data, model = args.mesh
  if data * model != jax.device_count():
    raise SystemExit(
      f'--mesh {data}x{model} needs {data * model} devices; {jax.device_count()} are available.'
    )
  # Auto axes: the compiler propagates the shardings (jax.make_mesh defaults to Explicit).
  mesh = jax.make_mesh((data, model), ('data', 'model'), axis_types=(AxisType.Auto,) * 2)
  rules = RULES + (FSDP_RULES if args.fsdp else ())
  transformer = Transformer(
    vocab_size=args.vocab_size,
    embed_dim=args.embed_dim,
    num_heads=args.num_heads,
    mlp_dim=args.mlp_dim,
    num_layers=args.num_layers,
    max_len=args.seq_len,
  )
  tokens_shape = jax.ShapeDtypeStruct((args.batch_size, args.seq_len), jnp.int32)
  variables, shardings = nn.sharded_init(
    transformer, jax.random.key(0), tokens_shape, mesh=mesh, rules=rules
  )
  params = variables['params']
  named_params = {
    '/'.join(k.key for k in path): arr for path, arr in jax.tree_util.tree_leaves_with_path(params)
  }
  if jax.process_index() == 0:
    print(f'mesh {dict(mesh.shape)}, rules {rules}')
    for name, arr in named_params.items():
      shard = arr.addressable_shards[0].data.shape
      print(f'  {name:52} {arr.shape!s:13} {arr.sharding.spec!s:24} shard {shard}')

  tx = optax.adamw(args.learning_rate, weight_decay=1e-2)
  # The moments come out of zeros_like with their parameters' shardings.
  opt_state = tx.init(params)

  def loss_fn(params, tokens):
    logits = transformer.apply({'params': params}, tokens)
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()

  def train_step(params, opt_state, tokens):
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  batch_sharding = NamedSharding(mesh, PartitionSpec('data'))
  step = jax.jit(
    train_step,
    in_shardings=(shardings['params'], None, batch_sharding),
    out_shardings=(shardings['params'], None, NamedSharding(mesh, PartitionSpec())),
    donate_argnums=(0, 1),
  )
  losses = []
  # The mesh and rules in context turn on the model's activation constraints.
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    for i in range(args.steps):
      tokens = jax.make_array_from_process_local_data(
        batch_sharding, local_batch(i, args.batch_size, args.seq_len, args.vocab_size)
      )
      params, opt_state, loss = step(params, opt_state, tokens)
      losses.append(float(loss))
      if jax.process_index() == 0 and (i % args.log_every == 0 or i == args.steps - 1):
        print(f'step {i:4d}  loss {losses[-1]:.4f}')
  return {
    'losses': losses,
    'param_specs': {name: arr.sharding.spec for name, arr in named_params.items()},
    'params': params,
    'opt_state': opt_state,
    'mesh': mesh,
  }


if __name__ == '__main__':
  main()
