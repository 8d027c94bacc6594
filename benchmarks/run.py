"""Trace-time, compile-time and overhead benchmarks of flaxlike against Flax Linen and raw JAX.

Every workload is written once against a Linen-style namespace ``nn`` and run for each
namespace given with ``--nn`` (``flaxlike`` and, when installed, ``flax.linen``), with
repetitions alternating between them so machine noise hits both alike. When ``haiku`` is
importable, the trace-time workloads that have a plain Haiku equivalent (MLP, both
Transformers, the tiny MLP) run in Haiku too (``--no-haiku`` leaves it out). Raw JAX
versions of the same math are the floor. Prints medians, min-max and ratios, then the
issue-9 and issue-16 targets as met / not met.

    python benchmarks/run.py                      # everything (flax.linen too if importable)
    python benchmarks/run.py --quick              # small shapes, fewer repetitions: a minute
    PYTHONPATH=. .flaxenv/bin/python benchmarks/run.py --nn flaxlike flax.linen

Workloads: trace time of ``init``/``apply`` (100-layer MLP, 12-layer Transformer unrolled
and as ``nn.scan(nn.remat(Block))``, ResNet-50 on 64x64), un-jitted ``apply`` of a tiny
MLP, compile time of a jitted AdamW train step and its steady-state step time (MLP and
both Transformers), jaxpr equation counts, compile time of ``scan(remat)`` vs an
unrolled stack by depth, and, with several namespaces, whether each one's train step
compiles to the same XLA program. Not run by the test suite; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

try:
  from jax.extend.core import subjaxprs as _subjaxprs
except ImportError:  # pragma: no cover - older jax
  _subjaxprs = jax.core.subjaxprs


# -- workloads, written once against `nn` ---------------------------------------------------


def make_mlp(nn: Any, depth: int, width: int) -> Any:
  class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
      for _ in range(depth):
        x = nn.relu(nn.Dense(width)(x))
      return x

  return MLP()


def make_transformer(nn: Any, depth: int, d_model: int, heads: int, scanned: bool = False) -> Any:
  """Pre-LayerNorm Transformer; ``scanned`` stacks the blocks as ``nn.scan(nn.remat(Block))``."""

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
      h = nn.LayerNorm()(x)
      h = nn.MultiHeadDotProductAttention(num_heads=heads)(h, h)
      x = x + h
      h = nn.LayerNorm()(x)
      h = nn.Dense(4 * d_model)(h)
      h = nn.Dense(d_model)(nn.gelu(h))
      return x + h, None

  class Transformer(nn.Module):
    @nn.compact
    def __call__(self, x):
      if scanned:
        stack = nn.scan(
          nn.remat(Block), variable_axes={'params': 0}, split_rngs={'params': True}, length=depth
        )
        x, _ = stack()(x, None)
      else:
        for _ in range(depth):
          x, _ = Block()(x, None)
      return nn.LayerNorm()(x)

  return Transformer()


def make_resnet50(
  nn: Any, num_classes: int = 10, stage_sizes: tuple[int, ...] = (3, 4, 6, 3), width: int = 64
) -> Any:
  """ResNet-50 with BatchNorm; smaller ``stage_sizes``/``width`` give a quick stand-in."""

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
        residual = nn.Conv(self.filters * 4, (1, 1), (self.strides, self.strides), use_bias=False)(
          x
        )
        residual = nn.BatchNorm(use_running_average=False)(residual)
      return nn.relu(residual + y)

  class ResNet50(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.Conv(width, (7, 7), (2, 2), use_bias=False)(x)
      x = nn.relu(nn.BatchNorm(use_running_average=False)(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding='SAME')
      for stage, blocks in enumerate(stage_sizes):
        for b in range(blocks):
          x = Bottleneck(width * 2**stage, strides=2 if stage > 0 and b == 0 else 1)(x)
      return nn.Dense(num_classes)(jnp.mean(x, axis=(1, 2)))

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


# -- Haiku: the same models as a Haiku user writes them --------------------------------------


def haiku_mlp(hk: Any, depth: int, width: int) -> Any:
  """``make_mlp`` in Haiku: ``hk.Linear`` with Linen's default kernel initializer."""
  w_init = hk.initializers.VarianceScaling(1.0, 'fan_in', 'truncated_normal')

  def forward(x):
    for _ in range(depth):
      x = jax.nn.relu(hk.Linear(width, w_init=w_init)(x))
    return x

  return hk.without_apply_rng(hk.transform(forward))


def haiku_transformer(hk: Any, depth: int, d_model: int, heads: int, scanned: bool = False) -> Any:
  """``make_transformer`` in Haiku: the same layers, initializers, epsilon and variance
  formula as Linen's defaults; ``scanned`` stacks the blocks as
  ``hk.layer_stack(hk.remat(Block))``. Haiku's attention projects to ``heads * head_dim``
  and reshapes where Linen's has a ``(d, heads, head_dim)`` kernel: the same parameters and
  math."""
  w_init = hk.initializers.VarianceScaling(1.0, 'fan_in', 'truncated_normal')

  def layer_norm(x):
    return hk.LayerNorm(-1, True, True, eps=1e-6, use_fast_variance=True)(x)

  class Block(hk.Module):
    def __call__(self, x):
      h = layer_norm(x)
      h = hk.MultiHeadAttention(heads, d_model // heads, w_init=w_init)(h, h, h)
      x = x + h
      h = hk.Linear(4 * d_model, w_init=w_init)(layer_norm(x))
      h = hk.Linear(d_model, w_init=w_init)(jax.nn.gelu(h))
      return x + h

  def forward(x):
    if scanned:
      x = hk.layer_stack(depth)(hk.remat(lambda x: Block()(x)))(x)
    else:
      for _ in range(depth):
        x = Block()(x)
    return layer_norm(x)

  return hk.without_apply_rng(hk.transform(forward))


# -- raw JAX floors: the same math on plain dicts ------------------------------------------

_dense_init = jax.nn.initializers.lecun_normal()


def raw_mlp_apply(params: Any, x: Any, depth: int) -> Any:
  for i in range(depth):
    layer = params[f'Dense_{i}']
    x = jax.nn.relu(x @ layer['kernel'] + layer['bias'][None])
  return x


def raw_mlp_init(key: Any, x: Any, depth: int, width: int) -> Any:
  params, fan_in = {}, x.shape[-1]
  for i in range(depth):
    params[f'Dense_{i}'] = {
      'kernel': _dense_init(jax.random.fold_in(key, i), (fan_in, width)),
      'bias': jnp.zeros((width,)),
    }
    fan_in = width
  return raw_mlp_apply(params, x, depth), params


def _layer_norm(p: Any, x: Any) -> Any:
  # Linen's order of operations: one pass for both moments, E[x^2] before E[x], then
  # (x - mean) * (rsqrt(var + eps) * scale) + bias. XLA:CPU is sensitive to it: computing
  # E[x] first, or subtracting the mean in a second pass, makes the 12-layer train step
  # compile 2-4x slower, so the floor would not be the same program.
  mean2 = jnp.mean(jnp.square(x), -1)
  mean = jnp.mean(x, -1)
  var = jnp.maximum(0.0, mean2 - jnp.square(mean))
  centered = x - mean[..., None]
  return centered * (jax.lax.rsqrt(var[..., None] + 1e-6) * p['scale']) + p['bias']


def _layer_norm_init(d: int) -> Any:
  return {'scale': jnp.ones((d,)), 'bias': jnp.zeros((d,))}


def raw_block_init(key: Any, d: int, heads: int) -> Any:
  keys = jax.random.split(key, 6)
  attn = {
    name: {
      'kernel': _dense_init(keys[i], (d, heads, d // heads)),
      'bias': jnp.zeros((heads, d // heads)),
    }
    for i, name in enumerate(('query', 'key', 'value'))
  }
  attn['out'] = {'kernel': _dense_init(keys[3], (heads, d // heads, d)), 'bias': jnp.zeros((d,))}
  return {
    'LayerNorm_0': _layer_norm_init(d),
    'MultiHeadDotProductAttention_0': attn,
    'LayerNorm_1': _layer_norm_init(d),
    'Dense_0': {'kernel': _dense_init(keys[4], (d, 4 * d)), 'bias': jnp.zeros((4 * d,))},
    'Dense_1': {'kernel': _dense_init(keys[5], (4 * d, d)), 'bias': jnp.zeros((d,))},
  }


def _dense(p: Any, x: Any, contract: int = 1) -> Any:
  # lax.dot_general plus bias, as Linen's Dense/DenseGeneral stage it: jnp.einsum stages a
  # nested jit per call and `@` asks for another result type, and either makes XLA:CPU
  # compile a different (slower) program.
  k = p['kernel']
  dims = (tuple(range(x.ndim - contract, x.ndim)), tuple(range(contract)))
  return jax.lax.dot_general(x, k, (dims, ((), ()))) + p['bias']


def raw_block(p: Any, x: Any) -> Any:
  h = _layer_norm(p['LayerNorm_0'], x)
  attn = p['MultiHeadDotProductAttention_0']
  q, k, v = (_dense(attn[n], h) for n in ('query', 'key', 'value'))
  w = jax.nn.softmax(
    jnp.einsum('bqhk,bthk->bhqt', q / np.sqrt(q.shape[-1]).astype(q.dtype), k), axis=-1
  )
  o = jnp.einsum('bhqt,bthk->bqhk', w, v)
  x = x + _dense(attn['out'], o, contract=2)
  h = _layer_norm(p['LayerNorm_1'], x)
  h = jax.nn.gelu(_dense(p['Dense_0'], h))
  return x + _dense(p['Dense_1'], h)


def raw_transformer_apply(params: Any, x: Any, depth: int, scanned: bool = False) -> Any:
  if scanned:
    x, _ = jax.lax.scan(jax.checkpoint(lambda c, p: (raw_block(p, c), None)), x, params['blocks'])
  else:
    for i in range(depth):
      x = raw_block(params[f'Block_{i}'], x)
  return _layer_norm(params['LayerNorm_0'], x)


def raw_transformer_init(key: Any, x: Any, depth: int, heads: int, scanned: bool = False) -> Any:
  d = x.shape[-1]
  if scanned:
    params = {
      'blocks': jax.vmap(lambda k: raw_block_init(k, d, heads))(jax.random.split(key, depth))
    }
  else:
    params = {
      f'Block_{i}': raw_block_init(jax.random.fold_in(key, i), d, heads) for i in range(depth)
    }
  params['LayerNorm_0'] = _layer_norm_init(d)
  return raw_transformer_apply(params, x, depth, scanned), params


def _conv(x: Any, kernel: Any, strides: tuple[int, int] = (1, 1)) -> Any:
  return jax.lax.conv_general_dilated(
    x, kernel, strides, 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )


def _batch_norm(
  p: Any, stats: Any, x: Any, momentum: float = 0.99, eps: float = 1e-5
) -> tuple[Any, Any]:
  """Training-mode batch norm over all but the feature axis: output and updated statistics."""
  mean2 = jnp.mean(jnp.square(x), (0, 1, 2))
  mean = jnp.mean(x, (0, 1, 2))
  var = jnp.maximum(0.0, mean2 - jnp.square(mean))
  updated = {
    'mean': momentum * stats['mean'] + (1 - momentum) * mean,
    'var': momentum * stats['var'] + (1 - momentum) * var,
  }
  return (x - mean) * (jax.lax.rsqrt(var + eps) * p['scale']) + p['bias'], updated


def raw_resnet50_apply(
  variables: Any, x: Any, stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
) -> tuple[Any, Any]:
  """``make_resnet50``'s forward pass on Linen's variable layout: (logits, new batch_stats)."""
  params, stats = variables['params'], variables['batch_stats']
  new_stats: dict[str, Any] = {}

  def norm(name: str, p: Any, s: Any, out: dict[str, Any], y: Any) -> Any:
    y, out[name] = _batch_norm(p[name], s[name], y)
    return y

  x = _conv(x, params['Conv_0']['kernel'], (2, 2))
  x = jax.nn.relu(norm('BatchNorm_0', params, stats, new_stats, x))
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), 'SAME')
  block = 0
  for stage, blocks in enumerate(stage_sizes):
    for b in range(blocks):
      strides = (2, 2) if stage > 0 and b == 0 else (1, 1)
      name = f'Bottleneck_{block}'
      p, s, out = params[name], stats[name], {}
      y = jax.nn.relu(norm('BatchNorm_0', p, s, out, _conv(x, p['Conv_0']['kernel'])))
      y = jax.nn.relu(norm('BatchNorm_1', p, s, out, _conv(y, p['Conv_1']['kernel'], strides)))
      y = norm('BatchNorm_2', p, s, out, _conv(y, p['Conv_2']['kernel']))
      residual = x
      if 'Conv_3' in p:  # the first block of each stage changes the shape
        residual = norm('BatchNorm_3', p, s, out, _conv(x, p['Conv_3']['kernel'], strides))
      x = jax.nn.relu(residual + y)
      new_stats[name] = out
      block += 1
  return _dense(params['Dense_0'], jnp.mean(x, axis=(1, 2))), new_stats


def raw_resnet50_init(
  key: Any,
  x: Any,
  stage_sizes: tuple[int, ...] = (3, 4, 6, 3),
  width: int = 64,
  num_classes: int = 10,
) -> tuple[Any, Any]:
  """Creates ``make_resnet50``'s variables (Linen's initializers and layout) and runs the
  forward pass, as ``init`` does: (logits, variables)."""
  keys = iter(jax.random.split(key, 2 + 4 * sum(stage_sizes)))

  def conv(c_in: int, c_out: int, size: int) -> Any:
    return {'kernel': _dense_init(next(keys), (size, size, c_in, c_out))}

  def norm(c: int) -> tuple[Any, Any]:
    return {'scale': jnp.ones((c,)), 'bias': jnp.zeros((c,))}, {
      'mean': jnp.zeros((c,)),
      'var': jnp.ones((c,)),
    }

  params: dict[str, Any] = {'Conv_0': conv(x.shape[-1], width, 7)}
  stats: dict[str, Any] = {}
  params['BatchNorm_0'], stats['BatchNorm_0'] = norm(width)
  c_in, block = width, 0
  for stage, blocks in enumerate(stage_sizes):
    filters = width * 2**stage
    for b in range(blocks):
      p: dict[str, Any] = {}
      s: dict[str, Any] = {}
      for i, (c0, c1, size) in enumerate(
        [(c_in, filters, 1), (filters, filters, 3), (filters, 4 * filters, 1)]
        + ([(c_in, 4 * filters, 1)] if b == 0 else [])
      ):
        p[f'Conv_{i}'] = conv(c0, c1, size)
        p[f'BatchNorm_{i}'], s[f'BatchNorm_{i}'] = norm(c1)
      params[f'Bottleneck_{block}'], stats[f'Bottleneck_{block}'] = p, s
      c_in, block = 4 * filters, block + 1
  params['Dense_0'] = {
    'kernel': _dense_init(next(keys), (c_in, num_classes)),
    'bias': jnp.zeros((num_classes,)),
  }
  variables = {'params': params, 'batch_stats': stats}
  logits, _ = raw_resnet50_apply(variables, x, stage_sizes)
  return logits, variables


# -- measurement ----------------------------------------------------------------------------


def trace_seconds(fn: Callable[..., Any], *args: Any) -> float:
  # A fresh function object per measurement: make_jaxpr caches on function identity.
  start = time.perf_counter()
  jax.make_jaxpr(lambda *a: fn(*a))(*args)
  return time.perf_counter() - start


def eqn_count(fn: Callable[..., Any], *args: Any) -> int:
  """Equations of the jaxpr of ``fn``, counting those inside scan/remat/pjit bodies."""

  def count(jaxpr: Any) -> int:
    return len(jaxpr.eqns) + sum(count(sub) for sub in _subjaxprs(jaxpr))

  return count(jax.make_jaxpr(fn)(*args).jaxpr)


def call_seconds(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def adamw_step(apply_fn: Callable[[Any, Any], Any]) -> tuple[Any, Callable[..., Any]]:
  """An AdamW train step on a squared-output loss: the optimizer and ``step(p, s, x)``."""
  tx = optax.adamw(1e-3, weight_decay=1e-4)

  def step(params, opt_state, x):
    loss, grads = jax.value_and_grad(lambda p: jnp.mean(apply_fn(p, x) ** 2))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return tx, step


def compile_step_seconds(apply_fn: Callable[[Any, Any], Any], params: Any, x: Any) -> float:
  """Time to trace, lower and compile a fresh jitted AdamW step."""
  tx, step = adamw_step(apply_fn)
  opt_state = jax.eval_shape(tx.init, params)
  start = time.perf_counter()
  jax.jit(step).lower(params, opt_state, x).compile()
  return time.perf_counter() - start


def steady_step_timer(
  apply_fn: Callable[[Any, Any], Any], params: Any, x: Any, steps: int
) -> Callable[[], float]:
  """Compiles the AdamW step once; the returned timer runs ``steps`` steps, returns s/step."""
  tx, step = adamw_step(apply_fn)
  jitted = jax.jit(step)
  state = [params, tx.init(params)]
  jax.block_until_ready(jitted(state[0], state[1], x))  # compile outside the timing

  def timer() -> float:
    start = time.perf_counter()
    for _ in range(steps):
      state[0], state[1], loss = jitted(state[0], state[1], x)
    jax.block_until_ready(loss)
    return (time.perf_counter() - start) / steps

  return timer


Workloads = dict[str, Callable[[], float]]


def trace_time_workloads(
  build_mlp: Callable[[int, int], Any],
  build_transformer: Callable[[int, int, int, bool], Any],
  cfg: dict[str, Any],
  key: Any,
) -> Workloads:
  """The trace-time workloads of the MLPs and Transformers, for any library whose models
  have ``init(key, x)`` and ``apply(variables, x)``, keyed by the row label."""
  w: Workloads = {}
  depth, width, layers, d, heads = (
    cfg['mlp_depth'],
    cfg['mlp_width'],
    cfg['layers'],
    cfg['d_model'],
    cfg['heads'],
  )
  x_mlp, x_tr, x_tiny = cfg['x_mlp'], cfg['x_tr'], cfg['x_tiny']
  mlp = build_mlp(depth, width)
  mlp_vars = mlp.init(key, x_mlp)
  w[f'trace init, {depth}-layer MLP'] = lambda: trace_seconds(mlp.init, key, x_mlp)
  w[f'trace apply, {depth}-layer MLP'] = lambda: trace_seconds(mlp.apply, mlp_vars, x_mlp)
  for scanned, tag in ((False, ''), (True, ' scan(remat)')):
    tr = build_transformer(layers, d, heads, scanned)
    tr_vars = jax.eval_shape(tr.init, key, x_tr)
    w[f'trace init, {layers}-layer Transformer{tag}'] = lambda tr=tr: trace_seconds(
      tr.init, key, x_tr
    )
    w[f'trace apply, {layers}-layer Transformer{tag}'] = lambda tr=tr, v=tr_vars: trace_seconds(
      tr.apply, v, x_tr
    )
  tiny = build_mlp(2, 16)
  tiny_vars = tiny.init(key, x_tiny)
  w['un-jitted apply, tiny MLP'] = lambda: call_seconds(lambda: tiny.apply(tiny_vars, x_tiny))
  return w


def namespace_workloads(nn: Any, cfg: dict[str, Any], key: Any) -> Workloads:
  """Every timed workload of one namespace, keyed by the row label."""
  w = trace_time_workloads(
    lambda depth, width: make_mlp(nn, depth, width),
    lambda layers, d, heads, scanned: make_transformer(nn, layers, d, heads, scanned),
    cfg,
    key,
  )
  if cfg['resnet']:
    resnet = make_resnet50(nn)
    x_img = cfg['x_img']
    rn_vars = jax.eval_shape(resnet.init, key, x_img)
    w['trace init, ResNet-50 64x64'] = lambda: trace_seconds(resnet.init, key, x_img)
    w['trace apply, ResNet-50 64x64'] = lambda: trace_seconds(
      lambda v, x: resnet.apply(v, x, mutable=['batch_stats']), rn_vars, x_img
    )

  depth, heads = cfg['mlp_depth'], cfg['heads']
  train_models = {
    f'{depth}-layer MLP': (make_mlp(nn, depth, cfg['mlp_width']), cfg['x_mlp']),
  }
  xt = cfg['x_train']
  for scanned, tag in ((False, ''), (True, ' scan(remat)')):
    train_models[f'{cfg["train_layers"]}-layer Transformer{tag}'] = (
      make_transformer(nn, cfg['train_layers'], xt.shape[-1], heads, scanned),
      xt,
    )
  for label, (model, x) in train_models.items():
    params = model.init(key, x)['params']
    apply_fn = lambda p, x, m=model: m.apply({'params': p}, x)
    w[f'compile AdamW step, {label}'] = lambda f=apply_fn, p=params, x=x: compile_step_seconds(
      f, p, x
    )
    w[f'AdamW step time, {label}'] = steady_step_timer(apply_fn, params, x, cfg['steps'])
  return w


def raw_workloads(cfg: dict[str, Any], key: Any) -> Workloads:
  """The raw-JAX floor of each workload that has one, under the same labels."""
  w: Workloads = {}
  depth, width, layers, heads = cfg['mlp_depth'], cfg['mlp_width'], cfg['layers'], cfg['heads']
  x_mlp, x_tr, x_tiny = cfg['x_mlp'], cfg['x_tr'], cfg['x_tiny']
  _, mlp_params = raw_mlp_init(key, x_mlp, depth, width)
  w[f'trace init, {depth}-layer MLP'] = lambda: trace_seconds(
    lambda k, x: raw_mlp_init(k, x, depth, width), key, x_mlp
  )
  w[f'trace apply, {depth}-layer MLP'] = lambda: trace_seconds(
    lambda p, x: raw_mlp_apply(p, x, depth), mlp_params, x_mlp
  )
  for scanned, tag in ((False, ''), (True, ' scan(remat)')):
    _, params = jax.eval_shape(
      lambda k, s=scanned: raw_transformer_init(k, x_tr, layers, heads, s), key
    )
    w[f'trace init, {layers}-layer Transformer{tag}'] = lambda s=scanned: trace_seconds(
      lambda k, x: raw_transformer_init(k, x, layers, heads, s), key, x_tr
    )
    w[f'trace apply, {layers}-layer Transformer{tag}'] = lambda s=scanned, p=params: trace_seconds(
      lambda p, x: raw_transformer_apply(p, x, layers, s), p, x_tr
    )
  if cfg['resnet']:
    x_img = cfg['x_img']
    _, rn_vars = jax.eval_shape(lambda k: raw_resnet50_init(k, x_img), key)
    w['trace init, ResNet-50 64x64'] = lambda: trace_seconds(raw_resnet50_init, key, x_img)
    w['trace apply, ResNet-50 64x64'] = lambda: trace_seconds(raw_resnet50_apply, rn_vars, x_img)
  _, tiny_params = raw_mlp_init(key, x_tiny, 2, 16)
  w['un-jitted apply, tiny MLP'] = lambda: call_seconds(
    lambda: raw_mlp_apply(tiny_params, x_tiny, 2)
  )

  xt, n = cfg['x_train'], cfg['train_layers']
  train = {f'{depth}-layer MLP': (lambda p, x: raw_mlp_apply(p, x, depth), mlp_params, x_mlp)}
  for scanned, tag in ((False, ''), (True, ' scan(remat)')):
    _, params = raw_transformer_init(key, xt, n, heads, scanned)
    train[f'{n}-layer Transformer{tag}'] = (
      lambda p, x, s=scanned: raw_transformer_apply(p, x, n, s),
      params,
      xt,
    )
  for label, (apply_fn, params, x) in train.items():
    w[f'compile AdamW step, {label}'] = lambda f=apply_fn, p=params, x=x: compile_step_seconds(
      f, p, x
    )
    w[f'AdamW step time, {label}'] = steady_step_timer(apply_fn, params, x, cfg['steps'])
  return w


def haiku_workloads(hk: Any, cfg: dict[str, Any], key: Any) -> Workloads:
  """The trace-time workloads that have a plain Haiku equivalent, under the same labels."""
  return trace_time_workloads(
    lambda depth, width: haiku_mlp(hk, depth, width),
    lambda layers, d, heads, scanned: haiku_transformer(hk, layers, d, heads, scanned),
    cfg,
    key,
  )


def config(quick: bool) -> dict[str, Any]:
  d, t, layers = (64, 32, 4) if quick else (256, 128, 12)
  train_d, train_t, train_layers = (64, 32, 4) if quick else (128, 64, 12)
  return {
    'mlp_depth': 100,
    'mlp_width': 64,
    'x_mlp': jnp.ones((8, 64)),
    'layers': layers,
    'd_model': d,
    'heads': 8,
    'x_tr': jnp.ones((2, t, d)),
    'x_tiny': jnp.ones((1, 8)),
    'resnet': not quick,
    'x_img': jnp.ones((1, 64, 64, 3)),
    'train_layers': train_layers,
    'x_train': jnp.ones((4, train_t, train_d)),
    'steps': 3 if quick else 10,
  }


def run(
  namespaces: list[str], repeats: int, quick: bool, haiku: Any = None
) -> list[tuple[str, str, list[float]]]:
  """Every workload, repetitions alternating over the namespaces, Haiku (the module, when
  given) and raw JAX: (workload, implementation, seconds per repetition) rows."""
  modules = {name: importlib.import_module(name) for name in namespaces}
  key = jax.random.PRNGKey(0)
  cfg = config(quick)
  workloads = {name: namespace_workloads(nn, cfg, key) for name, nn in modules.items()}
  if haiku is not None:
    workloads['haiku'] = haiku_workloads(haiku, cfg, key)
  workloads['raw JAX'] = raw_workloads(cfg, key)
  results: list[tuple[str, str, list[float]]] = []

  for workload in workloads[namespaces[0]]:
    began = time.perf_counter()
    impls = [n for n in workloads if workload in workloads[n]]
    timings: dict[str, list[float]] = {n: [] for n in impls}
    unjitted = workload.startswith('un-jitted')
    # Warm-up fills caches; compile rows need none (the step timers compiled already).
    for _ in range(3 if unjitted else 0 if workload.startswith('compile') else 1):
      for n in impls:
        workloads[n][workload]()
    for _ in range(repeats * (20 if unjitted else 1)):
      for n in impls:  # alternate so drift hits every implementation alike
        timings[n].append(workloads[n][workload]())
    results.extend((workload, n, ts) for n, ts in timings.items())
    print(f'  ({workload}: {time.perf_counter() - began:.0f} s)', file=sys.stderr, flush=True)

  for n, nn in modules.items():
    mlp = make_mlp(nn, cfg['mlp_depth'], cfg['mlp_width'])
    v = mlp.init(key, cfg['x_mlp'])
    results.append(
      (
        f'jaxpr eqns, apply {cfg["mlp_depth"]}-layer MLP',
        n,
        [float(eqn_count(mlp.apply, v, cfg['x_mlp']))],
      )
    )
    for scanned, tag in ((False, ''), (True, ' scan(remat)')):
      tr = make_transformer(nn, cfg['layers'], cfg['d_model'], cfg['heads'], scanned)
      v = jax.eval_shape(tr.init, key, cfg['x_tr'])
      label = f'jaxpr eqns, apply {cfg["layers"]}-layer Transformer{tag}'
      results.append((label, n, [float(eqn_count(tr.apply, v, cfg['x_tr']))]))
    if cfg['resnet']:
      rn = make_resnet50(nn)
      v = jax.eval_shape(rn.init, key, cfg['x_img'])
      count = eqn_count(
        lambda v, x, rn=rn: rn.apply(v, x, mutable=['batch_stats']), v, cfg['x_img']
      )
      results.append(('jaxpr eqns, apply ResNet-50 64x64', n, [float(count)]))
  return results


def print_table(results: list[tuple[str, str, list[float]]], baseline: str) -> None:
  medians = {(w, n): statistics.median(ts) for w, n, ts in results}
  print(
    f'{"workload":50s} {"namespace":12s} {"median":>12s} {"min-max":>22s} {"vs " + baseline:>14s}'
  )
  for workload, name, ts in results:
    med = medians[(workload, name)]
    base = medians.get((workload, baseline))
    ratio = f'{med / base:.2f}x' if base else ''
    if workload.startswith('jaxpr'):
      print(f'{workload:50s} {name:12s} {med:12.0f} {"":>22s} {ratio:>14s}')
    else:
      span = f'{min(ts) * 1e3:.2f}-{max(ts) * 1e3:.2f} ms'
      print(f'{workload:50s} {name:12s} {med * 1e3:9.2f} ms {span:>22s} {ratio:>14s}')


# Issues 9 and 16: (workload prefix, text it contains, baseline, largest allowed flaxlike/baseline).
TARGETS = [
  ('trace apply', 'MLP', 'raw JAX', 1.5),
  ('trace apply', 'Transformer', 'raw JAX', 1.5),
  ('trace init', 'MLP', 'raw JAX', 2.0),
  ('trace init', 'Transformer', 'raw JAX', 2.0),
  ('un-jitted apply', 'tiny MLP', 'raw JAX', 3.0),
  ('', '', 'flax.linen', 1.0),  # never slower than Linen (and no more equations), anywhere
  ('trace init', 'Transformer', 'haiku', 1.0),  # issue 16: init tracing ahead of Haiku's
]


def print_targets(
  results: list[tuple[str, str, list[float]]],
  noise: float,
  same_program: frozenset[str] = frozenset(),
) -> None:
  """Each target with flaxlike's ratio. A timing ratio over the limit by at most
  ``noise`` is reported as '~met' (within noise); equation counts are exact. Step times of
  the train steps in ``same_program`` (compiled to the same XLA program in every
  namespace) are equal by construction, so they are met whatever the noise says."""
  medians = {(w, n): statistics.median(ts) for w, n, ts in results}
  print(
    f'targets (flaxlike / baseline; "~met": over the limit by less than {noise:.0%}, i.e. noise):'
  )
  for prefix, part, baseline, limit in TARGETS:
    for workload in dict.fromkeys(w for w, _, _ in results):
      if not (workload.startswith(prefix) and part in workload):
        continue
      if (workload, 'flaxlike') not in medians or (workload, baseline) not in medians:
        continue
      ratio = medians[(workload, 'flaxlike')] / medians[(workload, baseline)]
      exact = workload.startswith('jaxpr')
      if ratio <= limit:
        verdict = 'met'
      elif workload.startswith('AdamW step time, ') and workload.split(', ', 1)[1] in same_program:
        verdict = 'met (same XLA program: noise)'
      elif not exact and ratio <= limit * (1 + noise):
        verdict = '~met'
      else:
        verdict = 'NOT MET'
      print(f'  {workload:50s} vs {baseline:10s} {ratio:5.2f}x (<= {limit:.1f}x) {verdict}')


def scan_compile_table(modules: dict[str, Any], depths: tuple[int, ...], repeats: int) -> None:
  """Compile time of value_and_grad versus depth (median of ``repeats``, alternating):
  nn.scan keeps it flat, unrolling grows it linearly."""
  x = jnp.ones((4, 16, 64))

  def compile_seconds(model: Any) -> float:
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    loss = lambda p, x: jnp.mean(model.apply(p, x) ** 2)
    start = time.perf_counter()
    jax.jit(jax.value_and_grad(loss)).lower(params, x).compile()
    return time.perf_counter() - start

  rows: dict[tuple[str, str], list[list[float]]] = {}
  for _ in range(repeats):
    for name, nn in modules.items():
      for scanned in (False, True):
        label = 'scan(remat(Block))' if scanned else 'unrolled'
        times = [compile_seconds(make_block_stack(nn, d, 64, scanned)) for d in depths]
        rows.setdefault((label, name), []).append(times)
  print(
    f'{"compile value_and_grad":28s} {"namespace":12s} '
    + ' '.join(f'{f"depth {d}":>10s}' for d in depths)
  )
  for (label, name), runs in sorted(rows.items()):
    meds = [statistics.median(col) for col in zip(*runs)]
    print(f'{label:28s} {name:12s} ' + ' '.join(f'{t * 1e3:8.0f}ms' for t in meds))


def _program_lines(text: str) -> collections.Counter:
  """The instructions of compiled HLO text without names, ids or debug metadata."""
  text = re.sub(r'metadata=\{[^}]*\}|, stack_frame_id=\d+|HloModule \S+', '', text)
  text = re.sub(r'%[\w.\-]+', '%v', text)
  text = re.sub(r'\b[\w.\-]+\.\d+\b', 'N', text)
  lines = (line.strip() for line in text.splitlines())
  # Source-location tables (file and function names) differ by construction.
  return collections.Counter(
    line
    for line in lines
    if line
    and '"' not in line
    and not re.match(r'\d+ ', line)
    and not re.match(r'(FileNames|FunctionNames|FileLocations|StackFrames)', line)
  )


def compiled_program_table(namespaces: list[str], cfg: dict[str, Any], key: Any) -> frozenset[str]:
  """Prints whether each namespace's AdamW train step compiles to the same XLA program as
  the first one's (names and source locations aside): if so, step times are equal by
  construction and any measured difference is noise. Returns the labels of the models
  whose step compiles to one program in every namespace."""
  models = {
    f'{cfg["mlp_depth"]}-layer MLP': (
      lambda nn: make_mlp(nn, cfg['mlp_depth'], cfg['mlp_width']),
      cfg['x_mlp'],
    ),
  }
  for scanned, tag in ((False, ''), (True, ' scan(remat)')):
    models[f'{cfg["train_layers"]}-layer Transformer{tag}'] = (
      lambda nn, s=scanned: make_transformer(
        nn, cfg['train_layers'], cfg['x_train'].shape[-1], cfg['heads'], s
      ),
      cfg['x_train'],
    )
  print(f'compiled AdamW step vs {namespaces[0]}:')
  same = set()
  for label, (make, x) in models.items():
    programs = {}
    for name in namespaces:
      model = make(importlib.import_module(name))
      params = model.init(key, x)['params']
      tx, step = adamw_step(lambda p, x, m=model: m.apply({'params': p}, x))
      compiled = jax.jit(step).lower(params, tx.init(params), x).compile()
      programs[name] = _program_lines(compiled.as_text())
    first = programs[namespaces[0]]
    all_same = True
    for name in namespaces[1:]:
      differing = sum(((programs[name] - first) + (first - programs[name])).values())
      verdict = f'{differing} instructions differ' if differing else 'identical XLA program'
      print(f'  {label:45s} {name:12s} {verdict}')
      all_same = all_same and not differing
    if all_same:
      same.add(label)
  return frozenset(same)


def optional_haiku() -> Any:
  """The ``haiku`` module when it is importable, else None."""
  try:
    return importlib.import_module('haiku')
  except ImportError:
    return None


def default_namespaces() -> list[str]:
  """flaxlike, and flax.linen when it is importable."""
  try:
    importlib.import_module('flax.linen')
  except ImportError:
    return ['flaxlike']
  return ['flaxlike', 'flax.linen']


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--nn', nargs='+', default=None, help='namespaces to compare')
  parser.add_argument('--repeats', type=int, default=None, help='repetitions (default 5, quick 3)')
  parser.add_argument(
    '--quick', action='store_true', help='small shapes, no ResNet, fewer repetitions'
  )
  parser.add_argument(
    '--no-haiku', action='store_true', help='leave Haiku out even when it is importable'
  )
  parser.add_argument('--noise', type=float, default=0.1, help='tolerance of timing targets')
  parser.add_argument(
    '--scan-depths',
    type=int,
    nargs='*',
    default=None,
    help='depths for the scan-vs-unrolled compile table (default 2 4 8 16, quick 2 8)',
  )
  args = parser.parse_args()
  repeats = args.repeats or (3 if args.quick else 5)
  depths = (
    args.scan_depths if args.scan_depths is not None else ([2, 8] if args.quick else [2, 4, 8, 16])
  )
  namespaces = args.nn or default_namespaces()
  haiku = None if args.no_haiku else optional_haiku()
  print(
    f'jax {jax.__version__}, backend {jax.default_backend()} ({jax.devices()[0].device_kind}), '
    f'{platform.machine()} {platform.processor() or ""}, namespaces {namespaces}'
    + (f', haiku {haiku.__version__}' if haiku is not None else '')
    + f', {repeats} repetitions'
    + (' (quick)' if args.quick else '')
  )
  results = run(namespaces, repeats, args.quick, haiku)
  print_table(results, baseline='raw JAX')
  if 'flax.linen' in namespaces:
    print()
    print_table([r for r in results if r[1] != 'raw JAX'], baseline='flax.linen')
  same_program: frozenset[str] = frozenset()
  if len(namespaces) > 1:
    print()
    same_program = compiled_program_table(namespaces, config(args.quick), jax.random.key(0))
  print()
  print_targets(results, args.noise, same_program)
  if depths:
    print()
    scan_compile_table(
      {n: importlib.import_module(n) for n in namespaces}, tuple(depths), max(1, repeats // 2)
    )


if __name__ == '__main__':
  main()
