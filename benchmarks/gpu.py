"""Accelerator train-step benchmarks: throughput and model FLOPs utilisation (MFU).

    python benchmarks/gpu.py                # GPT-2-small-shaped LM and ResNet-50 on the GPU
    python benchmarks/gpu.py --tiny         # tiny shapes: runs on CPU in seconds (smoke test)
    PYTHONPATH=. .flaxenv/bin/python benchmarks/gpu.py --nn flaxlike flax.linen

Workloads, written once against a Linen-style namespace ``nn`` (as in ``run.py``):

* LM: GPT-2-small shape (12 layers, d=768, 12 heads, T=1024, vocab 50257, tied embedding),
  pre-LayerNorm causal Transformer, AdamW train step, with the blocks unrolled and as
  ``nn.scan`` over one block (``--remat`` wraps the block in ``nn.remat`` in both). Reports
  tokens/s.
* ResNet-50 on 224x224 images, 1000 classes, BatchNorm statistics updated in the step,
  AdamW. Reports images/s.

Each namespace's step is compiled once; repetitions of ``--steps`` steps alternate between
namespaces, and the median step time is reported. MFU = model FLOPs per step / step time /
peak FLOPs of the device. Model FLOPs count the model's math once (forward and backward, not
the recomputation of ``remat``): for the LM ``6 * matmul params + 12 * layers * T * d`` per
token (the PaLM-paper convention, attention counted unmasked), for ResNet-50 three times the
forward FLOPs that XLA's cost analysis reports. The peak is the dense bf16 tensor rate from
``PEAK_FLOPS`` by device kind (MFU is left out for unknown devices, e.g. CPU); compute runs
in ``--dtype`` (default bfloat16) with float32 parameters. Not run by the test suite.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import default_namespaces, make_resnet50

# Dense (no sparsity) bf16 peak FLOP/s per chip, matched as a substring of device_kind,
# first match wins (so the more specific names come first).
PEAK_FLOPS = [
  ('H100 PCIe', 756e12),
  ('H100', 989e12),  # SXM / HBM3
  ('H200', 989e12),
  ('GH200', 989e12),
  ('A100', 312e12),
  ('L40S', 362e12),
  ('L4', 121e12),
  ('A10G', 70e12),
  ('V100', 125e12),  # fp16 tensor cores
  ('TPU v5p', 459e12),
  ('TPU v5 lite', 197e12),
  ('TPU v4', 275e12),
]


def peak_flops(device: Any) -> float | None:
  kind = device.device_kind
  return next((peak for name, peak in PEAK_FLOPS if name in kind), None)


# -- models ----------------------------------------------------------------------------------


def make_lm(
  nn: Any, vocab: int, layers: int, d: int, heads: int, scanned: bool, remat: bool, dtype: Any
) -> Any:
  """GPT-2-style decoder: token + learned position embeddings, pre-LN blocks, tied head."""

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
      mask = nn.make_causal_mask(jnp.ones(x.shape[:2], jnp.int32))
      h = nn.LayerNorm(dtype=dtype)(x)
      h = nn.MultiHeadDotProductAttention(num_heads=heads, dtype=dtype)(h, h, mask=mask)
      x = x + h
      h = nn.LayerNorm(dtype=dtype)(x)
      h = nn.Dense(d, dtype=dtype)(nn.gelu(nn.Dense(4 * d, dtype=dtype)(h)))
      return x + h, None

  block = nn.remat(Block) if remat else Block

  class LM(nn.Module):
    @nn.compact
    def __call__(self, tokens):
      embed = nn.Embed(vocab, d)
      pos = self.param('pos_embedding', nn.initializers.normal(0.02), (tokens.shape[1], d))
      x = (embed(tokens) + pos).astype(dtype)
      if scanned:
        stack = nn.scan(
          block, variable_axes={'params': 0}, split_rngs={'params': True}, length=layers
        )
        x, _ = stack()(x, None)
      else:
        for _ in range(layers):
          x, _ = block()(x, None)
      x = nn.LayerNorm(dtype=dtype)(x)
      return embed.attend(x.astype(jnp.float32))

  return LM()


def lm_flops_per_token(vocab: int, layers: int, d: int, t: int) -> float:
  matmul_params = layers * 12 * d * d + d * vocab
  return 6 * matmul_params + 12 * layers * t * d


# -- train steps -----------------------------------------------------------------------------


def adamw_train_step(loss_fn: Callable[..., Any]) -> tuple[Any, Callable[..., Any]]:
  """``step(params, state, opt_state, batch)`` for ``loss_fn(params, state, batch) ->
  (loss, new_state)`` (``state``: non-trained collections such as batch_stats)."""
  tx = optax.adamw(3e-4, weight_decay=0.1)

  def step(params, state, opt_state, batch):
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), state, opt_state, loss

  return tx, step


def lm_case(nn: Any, args: Any, scanned: bool, key: Any) -> tuple[Callable[[], float], float]:
  """A step timer for the LM and the model FLOPs of one step."""
  model = make_lm(
    nn,
    args.vocab,
    args.layers,
    args.d_model,
    args.heads,
    scanned,
    args.remat,
    jnp.dtype(args.dtype),
  )
  tokens = jax.random.randint(key, (args.batch, args.seq + 1), 0, args.vocab)
  batch = (tokens[:, :-1], tokens[:, 1:])
  params = jax.jit(model.init)(key, batch[0])['params']

  def loss_fn(params, state, batch):
    logits = model.apply({'params': params}, batch[0])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean(), state

  flops = (
    lm_flops_per_token(args.vocab, args.layers, args.d_model, args.seq) * args.batch * args.seq
  )
  return step_timer(loss_fn, params, {}, batch, args.steps), flops


def resnet_case(nn: Any, args: Any, key: Any) -> tuple[Callable[[], float], float]:
  """A step timer for ResNet-50 and the model FLOPs of one step."""
  stages, width = ((1, 1, 1, 1), 8) if args.tiny else ((3, 4, 6, 3), 64)
  model = make_resnet50(nn, num_classes=1000, stage_sizes=stages, width=width)
  images = jax.random.normal(
    key, (args.image_batch, args.image_size, args.image_size, 3), jnp.dtype(args.dtype)
  )
  labels = jax.random.randint(key, (args.image_batch,), 0, 1000)
  variables = jax.jit(model.init)(key, images)
  params, state = variables['params'], {'batch_stats': variables['batch_stats']}

  def loss_fn(params, state, batch):
    logits, state = model.apply({'params': params, **state}, batch[0], mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean(), state

  forward = jax.jit(lambda p, s, x: model.apply({'params': p, **s}, x, mutable=['batch_stats']))
  cost = forward.lower(params, state, images).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost  # a list on older jax
  flops = 3 * float(cost.get('flops', 0.0))
  return step_timer(loss_fn, params, state, (images, labels), args.steps), flops


def step_timer(
  loss_fn: Callable[..., Any], params: Any, state: Any, batch: Any, steps: int
) -> Callable[[], float]:
  """Compiles the step and runs two warm-up steps; the timer runs ``steps`` steps and
  returns seconds per step."""
  tx, step = adamw_train_step(loss_fn)
  jitted = jax.jit(step, donate_argnums=(0, 1, 2))
  carry = [params, state, tx.init(params)]

  def run_steps(n: int) -> None:
    for _ in range(n):
      carry[0], carry[1], carry[2], loss = jitted(carry[0], carry[1], carry[2], batch)
    jax.block_until_ready(loss)

  run_steps(2)

  def timer() -> float:
    start = time.perf_counter()
    run_steps(steps)
    return (time.perf_counter() - start) / steps

  return timer


# -- driver ----------------------------------------------------------------------------------


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--nn', nargs='+', default=None, help='namespaces to compare')
  parser.add_argument('--tiny', action='store_true', help='tiny shapes for a CPU smoke test')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument(
    '--steps', type=int, default=None, help='steps per repetition (default 10, tiny 2)'
  )
  parser.add_argument('--batch', type=int, default=None, help='LM batch (default 8)')
  parser.add_argument('--seq', type=int, default=None, help='LM sequence length (default 1024)')
  parser.add_argument('--image-batch', type=int, default=None, help='ResNet batch (default 128)')
  parser.add_argument('--dtype', default='bfloat16', help='compute dtype')
  parser.add_argument('--remat', action='store_true', help='nn.remat around each LM block')
  parser.add_argument('--only', choices=['lm', 'resnet'], default=None)
  args = parser.parse_args()
  tiny = args.tiny
  args.vocab, args.layers, args.d_model, args.heads = (
    (256, 2, 64, 4) if tiny else (50257, 12, 768, 12)
  )
  args.steps = args.steps or (2 if tiny else 10)
  args.batch = args.batch or (2 if tiny else 8)
  args.seq = args.seq or (32 if tiny else 1024)
  args.image_batch = args.image_batch or (2 if tiny else 128)
  args.image_size = 32 if tiny else 224
  if tiny:
    args.repeats = min(args.repeats, 2)
  namespaces = args.nn or default_namespaces()
  modules = {n: importlib.import_module(n) for n in namespaces}
  device = jax.devices()[0]
  peak = peak_flops(device)
  print(
    f'jax {jax.__version__}, {device.platform} {device.device_kind!r} x{jax.device_count()}, '
    f'peak {f"{peak / 1e12:.0f} TFLOP/s bf16" if peak else "unknown (no MFU)"}, '
    f'compute {args.dtype}, namespaces {namespaces}' + (' (tiny)' if tiny else '')
  )
  if device.platform == 'cpu' and not tiny:
    print(
      'warning: no accelerator; full shapes on CPU take very long (use --tiny)', file=sys.stderr
    )

  key = jax.random.PRNGKey(0)
  cases: dict[str, tuple[str, float]] = {}  # label -> (unit, items per step)
  timers: dict[tuple[str, str], tuple[Callable[[], float], float]] = {}
  remat = ' remat' if args.remat else ''
  lm_name = f'LM {args.layers}x{args.d_model} T={args.seq} B={args.batch}'
  if args.only in (None, 'lm'):
    for scanned in (False, True):
      label = f'{lm_name}, {"nn.scan" if scanned else "unrolled"}{remat}'
      cases[label] = ('tokens/s', args.batch * args.seq)
      for n, nn in modules.items():
        timers[(label, n)] = lm_case(nn, args, scanned, key)
  if args.only in (None, 'resnet'):
    label = f'ResNet-50{" (tiny)" if tiny else ""} {args.image_size}px B={args.image_batch}'
    cases[label] = ('images/s', args.image_batch)
    for n, nn in modules.items():
      timers[(label, n)] = resnet_case(nn, args, key)

  times: dict[tuple[str, str], list[float]] = {k: [] for k in timers}
  for _ in range(args.repeats):
    for k, (timer, _) in timers.items():  # alternate namespaces and workloads
      times[k].append(timer())

  print(
    f'{"train step (AdamW)":44s} {"namespace":11s} {"step ms":>9s} {"min-max":>15s} '
    f'{"throughput":>18s} {"TFLOP/s":>8s} {"MFU":>6s}'
  )
  for (label, n), ts in times.items():
    unit, items = cases[label]
    step = statistics.median(ts)
    flops = timers[(label, n)][1]
    mfu = f'{flops / step / peak:.1%}' if peak and flops else 'n/a'
    span = f'{min(ts) * 1e3:.1f}-{max(ts) * 1e3:.1f}'
    print(
      f'{label:44s} {n:11s} {step * 1e3:9.2f} {span:>15s} {items / step:>9.0f} {unit:8s} '
      f'{flops / step / 1e12:8.2f} {mfu:>6s}'
    )


if __name__ == '__main__':
  main()
