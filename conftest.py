"""Doctest and test-session settings: 8 fake CPU devices for SPMD tests, strict numerics."""

import os

# Must happen before jax is imported anywhere in the test session.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402

jax.config.update('jax_numpy_rank_promotion', 'raise')
