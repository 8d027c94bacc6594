"""The main example: fit a small MLP with init/apply, optax and a jitted training step.

Run with ``make demo``. The data is built here (noisy samples of a sine curve), so the
example needs no download and finishes in seconds on a CPU.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import flaxlike as nn


class MLP(nn.Module):
  """A multi-layer perceptron with a configurable list of hidden widths."""

  hidden: tuple[int, ...] = (64, 64)

  @nn.compact
  def __call__(self, x):
    for width in self.hidden:
      x = nn.tanh(nn.Dense(width)(x))
    return nn.Dense(1)(x)


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.RandomState(seed)
  x = rng.uniform(-3.0, 3.0, size=(n, 1)).astype(np.float32)
  y = (np.sin(x) + 0.05 * rng.randn(n, 1)).astype(np.float32)
  return x, y


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--steps', type=int, default=1500)
  parser.add_argument('--learning-rate', type=float, default=3e-3)
  args = parser.parse_args()

  x_train, y_train = make_data(512, seed=0)
  x_valid, y_valid = make_data(256, seed=1)
  model = MLP()
  params = model.init(jax.random.key(0), x_train[:1])['params']
  n_params = sum(p.size for p in jax.tree_util.tree_leaves(params))
  print(f'MLP with {n_params} parameters:', jax.tree_util.tree_map(jnp.shape, params))

  optimizer = optax.adam(args.learning_rate)
  opt_state = optimizer.init(params)

  def loss_fn(params, x, y):
    return jnp.mean((model.apply({'params': params}, x) - y) ** 2)

  @jax.jit
  def train_step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  baseline = float(np.mean((y_valid - y_train.mean()) ** 2))
  start = time.perf_counter()
  for step in range(1, args.steps + 1):
    params, opt_state, loss = train_step(params, opt_state, x_train, y_train)
    if step % 300 == 0 or step == 1:
      valid = float(jax.jit(loss_fn)(params, x_valid, y_valid))
      print(f'step {step:5d}  train mse {float(loss):.4f}  valid mse {valid:.4f}')
  elapsed = time.perf_counter() - start
  valid = float(loss_fn(params, x_valid, y_valid))
  print(f'done in {elapsed:.1f}s; validation mse {valid:.4f} vs {baseline:.4f} for a constant')
  if not valid < 0.1 * baseline:
    raise SystemExit('training did not converge')


if __name__ == '__main__':
  main()
