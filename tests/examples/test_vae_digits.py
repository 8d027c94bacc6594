"""Smoke test of examples/vae_digits.py: the ELBO improves and the 'sample' stream is used."""

import jax
import numpy as np
import pytest

pytest.importorskip('sklearn', reason="the examples need the 'examples' extra")

from flaxlike.errors import InvalidRngError
from tests.examples._load import load_example

vae_digits = load_example('vae_digits')


def test_main_improves_the_test_elbo_and_draws_samples(capsys):
  metrics = vae_digits.main(['--steps', '300', '--log-every', '150', '--num-samples', '3'])
  # An untrained decoder predicts ~0.5 everywhere (~-49 nats); 300 steps reach about -26.
  assert metrics['initial_test_elbo'] < -40
  assert metrics['test_elbo'] > metrics['initial_test_elbo'] + 15
  assert metrics['test_elbo'] < 0  # a bound on a log-likelihood under soft targets
  art = metrics['samples_ascii'].split('\n')
  assert len(art) == 8
  assert set(''.join(art)) <= set(vae_digits.INK)
  assert any(c in vae_digits.INK[5:] for c in ''.join(art))  # some ink was drawn
  assert metrics['samples_ascii'] in capsys.readouterr().out


@pytest.fixture(scope='module')
def model_and_variables():
  model = vae_digits.VAE(hidden=16, latents=3)
  images = vae_digits.load_data(0.25, seed=0)[1][:8]
  keys = {'params': jax.random.key(0), 'sample': jax.random.key(1)}
  variables = jax.jit(model.init)(keys, images)
  return model, variables, images


def test_apply_without_sample_stream_raises_naming_it(model_and_variables):
  model, variables, images = model_and_variables
  with pytest.raises(InvalidRngError, match=r'needs PRNG for "sample"'):
    model.apply(variables, images)
  with pytest.raises(InvalidRngError, match='sample'):
    model.apply(variables, images, rngs={'dropout': jax.random.key(0)})


def test_sample_key_drives_the_reparameterised_noise(model_and_variables):
  model, variables, images = model_and_variables
  out_a = model.apply(variables, images, rngs={'sample': jax.random.key(1)})
  out_a2 = model.apply(variables, images, rngs={'sample': jax.random.key(1)})
  out_b = model.apply(variables, images, rngs={'sample': jax.random.key(2)})
  for x, y in zip(out_a, out_a2):
    np.testing.assert_array_equal(x, y)
  logits_a, mean_a, logvar_a = out_a
  logits_b, mean_b, logvar_b = out_b
  assert not np.allclose(logits_a, logits_b)
  # Only the noise changes: the encoder's mean and log-variance do not.
  np.testing.assert_array_equal(mean_a, mean_b)
  np.testing.assert_array_equal(logvar_a, logvar_b)
  # Decoding from the prior needs no key: generate draws nothing.
  z = np.zeros((2, 3), np.float32)
  pixels = model.apply(variables, z, method=vae_digits.VAE.generate)
  assert pixels.shape == (2, 64) and np.all((0 < pixels) & (pixels < 1))


def test_negative_elbo_matches_numpy_float64():
  rng = np.random.RandomState(0)
  logits, images = rng.randn(4, 64), rng.rand(4, 64)
  mean, logvar = rng.randn(4, 3), 0.3 * rng.randn(4, 3)
  p = 1 / (1 + np.exp(-logits))
  reconstruction = -np.sum(images * np.log(p) + (1 - images) * np.log(1 - p), axis=1)
  # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1 - log s^2) / 2 per dimension.
  kl = 0.5 * np.sum(np.exp(logvar) + mean**2 - 1 - logvar, axis=1)
  got = vae_digits.negative_elbo(*(x.astype(np.float32) for x in (logits, mean, logvar, images)))
  np.testing.assert_allclose(got, reconstruction + kl, rtol=1e-5)


def test_ascii_art_maps_intensity_to_ink_two_characters_per_pixel():
  blank, full = np.zeros((1, 64)), np.ones((1, 64))
  half = np.full((1, 64), 0.5)
  art = vae_digits.ascii_art(np.concatenate([full, blank, half]))
  rows = art.split('\n')
  assert len(rows) == 8
  assert rows[0] == '@' * 16 + ' ' * 3 + ' ' * 16 + ' ' * 3 + vae_digits.INK[4] * 16
