"""A variational autoencoder on scikit-learn's 8x8 digits, with samples drawn as ASCII art.

It shows a module that needs randomness at apply time:

- the reparameterisation trick ``z = mean + exp(logvar / 2) * eps`` draws ``eps`` from
  ``self.make_rng('sample')``, so every ``apply`` passes ``rngs={'sample': key}`` (a
  fresh key per training step; a fixed key makes evaluation repeatable);
- a ``setup``-defined encoder and decoder, and a second method, ``generate``, called
  with ``apply(..., method=VAE.generate)`` to decode latent vectors drawn from the prior;
- the ELBO: a Bernoulli likelihood of the pixel intensities (scaled to [0, 1] and read
  as probabilities of ink) minus the KL divergence of the encoder's Gaussian from the
  standard normal prior, maximised with optax inside a user-written ``jax.jit`` step.

Run it with::

  pip install '.[examples]'
  python examples/vae_digits.py            # prints the test ELBO and a few samples
  python examples/vae_digits.py --help
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _extras import needs_extra

with needs_extra('examples'):
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

import flaxlike as nn

IMAGE_SIDE = 8
INK = ' .:-=+*#%@'  # darkest last: intensity i in [0, 1] prints as INK[round(i * 9)]


class Encoder(nn.Module):
  """Maps flattened images to the mean and log-variance of a diagonal Gaussian.

  Attributes:
    hidden: width of the hidden layer.
    latents: size of the latent vector.
  """

  hidden: int
  latents: int

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(self.hidden, name='hidden')(x))
    mean = nn.Dense(self.latents, name='mean')(x)
    logvar = nn.Dense(self.latents, name='logvar')(x)
    return mean, logvar


class Decoder(nn.Module):
  """Maps latent vectors to per-pixel Bernoulli logits.

  Attributes:
    hidden: width of the hidden layer.
    pixels: number of output pixels.
  """

  hidden: int
  pixels: int

  @nn.compact
  def __call__(self, z):
    z = nn.relu(nn.Dense(self.hidden, name='hidden')(z))
    return nn.Dense(self.pixels, name='logits')(z)


class VAE(nn.Module):
  """Encoder, reparameterised sample from the ``'sample'`` stream, decoder.

  Attributes:
    hidden: width of the encoder's and decoder's hidden layers.
    latents: size of the latent vector.
    pixels: pixels per image.
  """

  hidden: int = 128
  latents: int = 8
  pixels: int = IMAGE_SIDE * IMAGE_SIDE

  def setup(self):
    self.encoder = Encoder(self.hidden, self.latents)
    self.decoder = Decoder(self.hidden, self.pixels)

  def __call__(self, images):
    """Returns ``(logits, mean, logvar)`` for flattened ``images`` ``(batch, pixels)``."""
    mean, logvar = self.encoder(images)
    eps = jax.random.normal(self.make_rng('sample'), mean.shape, mean.dtype)
    z = mean + jnp.exp(0.5 * logvar) * eps
    return self.decoder(z), mean, logvar

  def generate(self, z):
    """Pixel intensities in [0, 1] decoded from latent vectors ``z``."""
    return nn.sigmoid(self.decoder(z))


def negative_elbo(logits, mean, logvar, images):
  """Per-image ``-ELBO = reconstruction cross-entropy + KL(q(z|x) || N(0, I))`` in nats."""
  reconstruction = optax.sigmoid_binary_cross_entropy(logits, images).sum(axis=-1)
  kl = -0.5 * jnp.sum(1.0 + logvar - mean**2 - jnp.exp(logvar), axis=-1)
  return reconstruction + kl


def load_data(test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Flattened float32 images in [0, 1], split once into train and test with ``seed``."""
  images = (load_digits().data / 16.0).astype(np.float32)
  train, test = train_test_split(images, test_size=test_fraction, random_state=seed)
  return train, test


def make_steps(model: VAE, optimizer: optax.GradientTransformation):
  """The jitted training step and test-ELBO evaluation."""

  def loss_fn(params, images, key):
    logits, mean, logvar = model.apply({'params': params}, images, rngs={'sample': key})
    return jnp.mean(negative_elbo(logits, mean, logvar, images))

  @jax.jit
  def train_step(params, opt_state, images, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, images, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def elbo(params, images, key):
    """Mean single-sample ELBO estimate (higher is better)."""
    return -loss_fn(params, images, key)

  return train_step, elbo


def ascii_art(images: np.ndarray) -> str:
  """Draws ``(n, 64)`` intensities in [0, 1] side by side, two characters per pixel."""
  levels = np.clip(np.rint(images * (len(INK) - 1)), 0, len(INK) - 1).astype(int)
  grids = levels.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
  rows = []
  for r in range(IMAGE_SIDE):
    rows.append('   '.join(''.join(INK[v] * 2 for v in grid[r]) for grid in grids).rstrip())
  return '\n'.join(rows)


def train_and_evaluate(args: argparse.Namespace) -> tuple[Any, dict]:
  """Trains for ``args.steps`` steps; returns the parameters and final metrics."""
  train_images, test_images = load_data(args.test_fraction, args.seed)
  print(f'{len(train_images)} training and {len(test_images)} test images')
  model = VAE(hidden=args.hidden, latents=args.latents)
  init_key, sample_root, eval_key, prior_key = jax.random.split(jax.random.key(args.seed), 4)
  params = model.init({'params': init_key, 'sample': eval_key}, train_images[:1])['params']
  optimizer = optax.adam(args.learning_rate)
  opt_state = optimizer.init(params)
  train_step, elbo = make_steps(model, optimizer)

  initial_elbo = float(elbo(params, test_images, eval_key))
  print(f'initial test ELBO {initial_elbo:.2f} nats')
  batches = np.random.RandomState(args.seed + 1)
  start = time.perf_counter()
  for step in range(1, args.steps + 1):
    idx = batches.randint(0, len(train_images), size=args.batch_size)
    key = jax.random.fold_in(sample_root, step)
    params, opt_state, loss = train_step(params, opt_state, train_images[idx], key)
    if step % args.log_every == 0 or step == args.steps:
      test_elbo = float(elbo(params, test_images, eval_key))
      print(f'step {step:5d}  train -ELBO {float(loss):.2f}  test ELBO {test_elbo:.2f}')
  elapsed = time.perf_counter() - start

  z = jax.random.normal(prior_key, (args.num_samples, args.latents))
  samples = np.asarray(model.apply({'params': params}, z, method=VAE.generate))
  art = ascii_art(samples)
  print(f'{args.num_samples} samples decoded from the prior:\n{art}')
  metrics = {
    'initial_test_elbo': initial_elbo,
    'test_elbo': float(elbo(params, test_images, eval_key)),
    'samples_ascii': art,
    'steps': args.steps,
    'seconds': elapsed,
  }
  print(f'done in {elapsed:.1f}s: test ELBO {metrics["test_elbo"]:.2f} nats per image')
  return params, metrics


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--batch-size', type=int, default=64)
  parser.add_argument('--learning-rate', type=float, default=1e-3)
  parser.add_argument('--hidden', type=int, default=128)
  parser.add_argument('--latents', type=int, default=8)
  parser.add_argument('--test-fraction', type=float, default=0.25)
  parser.add_argument('--num-samples', type=int, default=6, help='samples drawn as ASCII art')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--log-every', type=int, default=500)
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Trains the VAE as the flags say, prints samples; returns the test ELBO and other metrics."""
  _, metrics = train_and_evaluate(parse_args(argv))
  return metrics


if __name__ == '__main__':
  main()
