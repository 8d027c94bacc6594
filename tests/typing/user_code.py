"""User code as a Linen user writes it: basedpyright (standard mode) must find nothing here.

tests/test_typing.py runs the checker over this directory and flaxlike/. Nothing here runs
under pytest (no test_ prefix, and conftest.py keeps --doctest-modules out of tests/typing/);
tests/test_typing.py also executes this file once, so the sample stays working code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import flaxlike
import flaxlike as nn
from flaxlike import struct
from flaxlike.training import train_state


class MLP(nn.Module):
  features: tuple[int, ...]
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.features):
      x = nn.Dense(width, name=f'hidden_{i}')(x)
      x = self.activation(x)
    return x


class Encoder(nn.Module):
  latents: int

  def setup(self) -> None:
    self.proj = nn.Dense(self.latents)
    self.norm = nn.LayerNorm(name='norm')

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.norm(self.proj(x))


class Tied(nn.Module):
  # A submodule passed in as a field, typed as the base class, is callable.
  inner: nn.Module

  def __call__(self, x: jax.Array) -> Any:
    return self.inner(x)


class Cell(nn.Module):
  features: int

  @nn.compact
  def __call__(self, carry: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = nn.tanh(nn.Dense(self.features)(carry) + x)
    return h, h


class Stack(nn.Module, kw_only=True):
  depth: int
  features: int = 3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ScanCell = nn.scan(
      Cell, variable_broadcast='params', split_rngs={'params': False}, in_axes=0, out_axes=0
    )
    carry = jnp.zeros(x.shape[1:])
    _, ys = ScanCell(self.features, name='cell')(carry, x)
    return ys


@struct.dataclass
class Metrics:
  loss: float
  count: int = 0
  label: str = struct.field(pytree_node=False, default='train')


class Counter(struct.PyTreeNode):
  total: int
  scale: float = 1.0


def build() -> float:
  key = jax.random.key(0)
  x = jnp.ones((2, 3))

  mlp = MLP(features=(4, 2), name='mlp')
  variables: dict[str, Any] = mlp.init(key, x)
  y: jax.Array = mlp.apply(variables, x)
  y2, state = mlp.apply(variables, x, mutable=['intermediates'], capture_intermediates=True)
  out, init_vars = mlp.init_with_output(key, x)
  bound = mlp.bind(variables)
  unbound, bound_vars = bound.unbind()
  assert unbound.features == (4, 2)
  assert set(mlp.module_paths(key, x)) == {'', 'hidden_0', 'hidden_1'}
  assert mlp.lazy_init(key, jax.ShapeDtypeStruct((2, 3), jnp.float32))['params']
  assert 'Total Parameters' in mlp.tabulate(key, x)

  encoder = Encoder(latents=2, parent=None)
  tied = Tied(encoder)
  tied_vars = tied.init(key, x)
  stack = Stack(depth=2)
  stack_vars = stack.init(key, jnp.ones((4, 3)))
  clone: Encoder = encoder.clone(latents=5)
  assert clone.latents == 5

  metrics = Metrics(loss=0.5)
  metrics = Metrics(loss=float(metrics.loss) + 1.0, count=metrics.count + 1)
  # pyright cannot see .replace on a @struct.dataclass class (docs/porting.md, "Type
  # checkers"); dataclasses.replace does the same and checks.
  metrics = dataclasses.replace(metrics, count=metrics.count + 1)
  assert metrics.count == 2
  counter = Counter(total=1).replace(total=2)
  assert counter.total == 2

  tx = optax.sgd(0.1)
  ts = train_state.TrainState.create(apply_fn=mlp.apply, params=variables['params'], tx=tx)
  ts = ts.apply_gradients(grads=jax.tree_util.tree_map(jnp.zeros_like, ts.params))
  ts = ts.replace(step=ts.step + 1)
  assert int(ts.step) == 2

  flaxlike.config.update('flax_profile', flaxlike.config.flax_profile)
  depth: int | None = flaxlike.config.flax_max_repr_depth
  assert depth is None or depth > 0
  shapes = [y.shape, y2.shape, out.shape, len(state), len(bound_vars)]
  assert shapes and init_vars and tied_vars and stack_vars
  return float(metrics.loss)


if __name__ == '__main__':
  print(build())
