"""Trace-time and overhead benchmarks of flaxlike against Flax Linen and raw JAX.

Every workload is written once against a Linen-style namespace ``nn`` and run for each
namespace given with ``--nn`` (``flaxlike`` and, when installed, ``flax.linen``), with
repetitions alternating between them so machine noise hits both alike. Raw JAX versions
of the same math are the floor. Prints medians, min-max and ratios.

    python benchmarks/run.py                      # flaxlike (+ flax.linen if importable)
    PYTHONPATH=. .flaxenv/bin/python benchmarks/run.py --nn flaxlike flax.linen

Not run by the test suite; see benchmarks/README.md for the latest table.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


# -- workloads, written once against `nn` ---------------------------------------------------


def make_mlp(nn: Any, depth: int, width: int) -> Any:
  class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
      for _ in range(depth):
        x = nn.relu(nn.Dense(width)(x))
      return x

  return MLP()


def make_transformer(nn: Any, depth: int, d_model: int, heads: int) -> Any:
  class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.LayerNorm()(x)
      h = nn.MultiHeadDotProductAttention(num_heads=heads)(h, h)
      x = x + h
      h = nn.LayerNorm()(x)
      h = nn.Dense(4 * d_model)(h)
      h = nn.Dense(d_model)(nn.gelu(h))
      return x + h

  class Transformer(nn.Module):
    @nn.compact
    def __call__(self, x):
      for _ in range(depth):
        x = Block()(x)
      return nn.LayerNorm()(x)

  return Transformer()


def make_resnet50(nn: Any) -> Any:
  class Bottleneck(nn.Module):
    filters: int
    strides: int = 1

    @nn.compact
    def __call__(self, x):
      residual = x
      y = nn.Conv(self.filters, (1, 1), use_bias=False)(x)
      y = nn.relu(nn.BatchNorm(use_running_average=False)(y))
      y = nn.Conv(self.filters, (3, 3), (self.strides, self.strides), use_bias=False)(y)
      y = nn.relu(nn.BatchNorm(use_running_average=False)(y))
      y = nn.Conv(self.filters * 4, (1, 1), use_bias=False)(y)
      y = nn.BatchNorm(use_running_average=False)(y)
      if residual.shape != y.shape:
        residual = nn.Conv(self.filters * 4, (1, 1), (self.strides, self.strides), use_bias=False)(x)
        residual = nn.BatchNorm(use_running_average=False)(residual)
      return nn.relu(residual + y)

  class ResNet50(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.Conv(64, (7, 7), (2, 2), use_bias=False)(x)
      x = nn.relu(nn.BatchNorm(use_running_average=False)(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding='SAME')
      for stage, blocks in enumerate((3, 4, 6, 3)):
        for b in range(blocks):
          x = Bottleneck(64 * 2**stage, strides=2 if stage > 0 and b == 0 else 1)(x)
      return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))

  return ResNet50()


def make_block_stack(nn: Any, depth: int, d_model: int, scanned: bool) -> Any:
  """A residual MLP-block stack, unrolled or as ``nn.scan(nn.remat(Block))``."""

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
      h = nn.LayerNorm()(x)
      h = nn.Dense(d_model)(nn.gelu(nn.Dense(4 * d_model)(h)))
      return x + h, None

  class Stack(nn.Module):
    @nn.compact
    def __call__(self, x):
      if scanned:
        body = nn.scan(
          nn.remat(Block), variable_axes={'params': 0}, split_rngs={'params': True}, length=depth
        )
        x, _ = body()(x, None)
      else:
        for _ in range(depth):
          x, _ = Block()(x, None)
      return x

  return Stack()


def compile_seconds(model: Any, x: Any) -> float:
  """Time to trace, lower and compile a jitted loss-and-gradient step."""
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)

  def loss(p, x):
    return jnp.mean(model.apply(p, x) ** 2)

  start = time.perf_counter()
  jax.jit(jax.value_and_grad(loss)).lower(params, x).compile()
  return time.perf_counter() - start


def scan_compile_table(modules: dict[str, Any], depths: tuple[int, ...]) -> None:
  """Compile time versus depth: nn.scan keeps it flat, unrolling grows it linearly."""
  x = jnp.ones((4, 16, 64))
  print(f'{"compile value_and_grad":28s} {"namespace":12s} ' + ' '.join(f'{f"depth {d}":>10s}' for d in depths))
  for name, nn in modules.items():
    for scanned in (False, True):
      times = [compile_seconds(make_block_stack(nn, d, 64, scanned), x) for d in depths]
      label = 'scan(remat(Block))' if scanned else 'unrolled'
      print(f'{label:28s} {name:12s} ' + ' '.join(f'{t * 1e3:8.0f}ms' for t in times))


# -- raw JAX floors -------------------------------------------------------------------------


def raw_mlp_apply(params: Any, x: Any, depth: int) -> Any:
  for i in range(depth):
    layer = params[f'Dense_{i}']
    x = jax.nn.relu(x @ layer['kernel'] + layer['bias'][None])
  return x


def raw_mlp_init(key: Any, x: Any, depth: int, width: int) -> Any:
  init = jax.nn.initializers.lecun_normal()
  params, fan_in = {}, x.shape[-1]
  for i in range(depth):
    params[f'Dense_{i}'] = {
      'kernel': init(jax.random.fold_in(key, 2 * i), (fan_in, width)),
      'bias': jnp.zeros((width,)),
    }
    fan_in = width
  return raw_mlp_apply(params, x, depth), params


def _layer_norm(p: Any, x: Any) -> Any:
  mean = x.mean(-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + 1e-6) * p['scale'] + p['bias']


def raw_transformer_apply(params: Any, x: Any, depth: int) -> Any:
  for i in range(depth):
    p = params[f'Block_{i}']
    h = _layer_norm(p['LayerNorm_0'], x)
    attn = p['MultiHeadDotProductAttention_0']
    q, k, v = (jnp.einsum('btd,dhk->bthk', h, attn[n]['kernel']) + attn[n]['bias'] for n in ('query', 'key', 'value'))
    w = jax.nn.softmax(jnp.einsum('bqhk,bthk->bhqt', q / np.sqrt(q.shape[-1]), k), axis=-1)
    o = jnp.einsum('bhqt,bthk->bqhk', w, v)
    x = x + jnp.einsum('bqhk,hkd->bqd', o, attn['out']['kernel']) + attn['out']['bias']
    h = _layer_norm(p['LayerNorm_1'], x)
    h = jax.nn.gelu(h @ p['Dense_0']['kernel'] + p['Dense_0']['bias'])
    x = x + h @ p['Dense_1']['kernel'] + p['Dense_1']['bias']
  return _layer_norm(params['LayerNorm_0'], x)


# -- measurement ----------------------------------------------------------------------------


def trace_seconds(fn: Callable[..., Any], *args: Any) -> float:
  # A fresh function object per measurement: make_jaxpr caches on function identity.
  start = time.perf_counter()
  jax.make_jaxpr(lambda *a: fn(*a))(*args)
  return time.perf_counter() - start


def eqn_count(fn: Callable[..., Any], *args: Any) -> int:
  def count(jaxpr: Any) -> int:
    total = 0
    for eqn in jaxpr.eqns:
      total += 1
      for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, 'subjaxprs') else []:
        total += count(sub)
    return total

  return count(jax.make_jaxpr(fn)(*args).jaxpr)


def call_seconds(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def run(namespaces: list[str], repeats: int, quick: bool) -> list[tuple[str, str, list[float]]]:
  modules = {name: importlib.import_module(name) for name in namespaces}
  key = jax.random.PRNGKey(0)
  results: list[tuple[str, str, list[float]]] = []

  depth = 100
  x_mlp = jnp.ones((8, 64))
  d_model, t_len, layers = (64, 32, 4) if quick else (256, 128, 12)
  x_tr = jnp.ones((2, t_len, d_model))
  x_img = jnp.ones((1, 64, 64, 3))
  workloads: dict[str, dict[str, Callable[[], float]]] = {}

  for name, nn in modules.items():
    mlp = make_mlp(nn, depth, 64)
    mlp_vars = mlp.init(key, x_mlp)
    tr = make_transformer(nn, layers, d_model, 8)
    tr_vars = tr.init(key, x_tr)
    tiny = make_mlp(nn, 2, 16)
    x_tiny = jnp.ones((1, 8))
    tiny_vars = tiny.init(key, x_tiny)
    w = workloads.setdefault(name, {})
    w['trace init, 100-layer MLP'] = lambda mlp=mlp: trace_seconds(mlp.init, key, x_mlp)
    w['trace apply, 100-layer MLP'] = lambda mlp=mlp, v=mlp_vars: trace_seconds(mlp.apply, v, x_mlp)
    w[f'trace init, {layers}-layer Transformer'] = lambda tr=tr: trace_seconds(tr.init, key, x_tr)
    w[f'trace apply, {layers}-layer Transformer'] = lambda tr=tr, v=tr_vars: trace_seconds(tr.apply, v, x_tr)
    w['un-jitted apply, tiny MLP'] = lambda m=tiny, v=tiny_vars: call_seconds(lambda: m.apply(v, x_tiny))
    if not quick:
      resnet = make_resnet50(nn)
      rn_vars = jax.eval_shape(resnet.init, key, x_img)
      w['trace init, ResNet-50 64x64'] = lambda r=resnet: trace_seconds(r.init, key, x_img)
      w['trace apply, ResNet-50 64x64'] = lambda r=resnet, v=rn_vars: trace_seconds(
        lambda v, x: r.apply(v, x, mutable=['batch_stats']), v, x_img
      )

  first = next(iter(modules.values()))
  mlp_params = make_mlp(first, depth, 64).init(key, x_mlp)['params']
  tr_params = make_transformer(first, layers, d_model, 8).init(key, x_tr)['params']
  tiny_params = make_mlp(first, 2, 16).init(key, jnp.ones((1, 8)))['params']
  raw = {
    'trace init, 100-layer MLP': lambda: trace_seconds(lambda k, x: raw_mlp_init(k, x, depth, 64), key, x_mlp),
    'trace apply, 100-layer MLP': lambda: trace_seconds(lambda p, x: raw_mlp_apply(p, x, depth), mlp_params, x_mlp),
    f'trace apply, {layers}-layer Transformer': lambda: trace_seconds(
      lambda p, x: raw_transformer_apply(p, x, layers), tr_params, x_tr
    ),
    'un-jitted apply, tiny MLP': lambda: call_seconds(lambda: raw_mlp_apply(tiny_params, jnp.ones((1, 8)), 2)),
  }

  names = list(workloads[namespaces[0]])
  for workload in names:
    timings: dict[str, list[float]] = {n: [] for n in namespaces}
    timings['raw JAX'] = []
    warm = 3 if workload.startswith('un-jitted') else 1
    for _ in range(warm):
      for n in namespaces:
        workloads[n][workload]()
      if workload in raw:
        raw[workload]()
    reps = repeats * (20 if workload.startswith('un-jitted') else 1)
    for _ in range(reps):
      for n in namespaces:
        timings[n].append(workloads[n][workload]())
      if workload in raw:
        timings['raw JAX'].append(raw[workload]())
    for n, ts in timings.items():
      if ts:
        results.append((workload, n, ts))

  for n, nn in modules.items():
    mlp = make_mlp(nn, depth, 64)
    v = mlp.init(key, x_mlp)
    results.append(('jaxpr eqns, apply 100-layer MLP', n, [float(eqn_count(mlp.apply, v, x_mlp))]))
    tr = make_transformer(nn, layers, d_model, 8)
    v = tr.init(key, x_tr)
    results.append((f'jaxpr eqns, apply {layers}-layer Transformer', n, [float(eqn_count(tr.apply, v, x_tr))]))
  return results


def print_table(results: list[tuple[str, str, list[float]]], baseline: str) -> None:
  medians = {(w, n): statistics.median(ts) for w, n, ts in results}
  print(f'{"workload":42s} {"namespace":12s} {"median":>12s} {"min-max":>22s} {"vs " + baseline:>10s}')
  for workload, name, ts in results:
    is_count = workload.startswith('jaxpr')
    med = medians[(workload, name)]
    base = medians.get((workload, baseline))
    ratio = f'{med / base:.2f}x' if base else ''
    if is_count:
      print(f'{workload:42s} {name:12s} {med:12.0f} {"":>22s} {ratio:>10s}')
    else:
      span = f'{min(ts) * 1e3:.2f}-{max(ts) * 1e3:.2f} ms'
      print(f'{workload:42s} {name:12s} {med * 1e3:9.2f} ms {span:>22s} {ratio:>10s}')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--nn', nargs='+', default=None, help='namespaces to compare')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--quick', action='store_true', help='small shapes, no ResNet')
  parser.add_argument('--scan-depths', type=int, nargs='*', default=[2, 4, 8, 16],
                      help='depths for the scan-vs-unrolled compile-time table (none: skip)')
  args = parser.parse_args()
  namespaces = args.nn
  if namespaces is None:
    namespaces = ['flaxlike']
    try:
      importlib.import_module('flax.linen')
      namespaces.append('flax.linen')
    except ImportError:
      pass
  print(f'jax {jax.__version__}, backend {jax.default_backend()}, namespaces {namespaces}')
  results = run(namespaces, args.repeats, args.quick)
  print_table(results, baseline='raw JAX')
  if 'flax.linen' in namespaces:
    print()
    print_table([r for r in results if r[1] != 'raw JAX'], baseline='flax.linen')
  if args.scan_depths:
    print()
    scan_compile_table({n: importlib.import_module(n) for n in namespaces}, tuple(args.scan_depths))


if __name__ == '__main__':
  main()
