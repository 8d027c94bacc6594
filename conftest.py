"""Doctest and test-session settings: 8 fake CPU devices for SPMD tests, strict numerics."""

import os

# Must happen before jax is imported anywhere in the test session.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402

jax.config.update('jax_numpy_rank_promotion', 'raise')

# tests/typing/ is a sample of user code for the type checker (tests/test_typing.py runs
# basedpyright over it); one file there holds deliberate mistakes, so pytest, which would
# import every .py file for --doctest-modules, leaves the directory alone.
collect_ignore = ['tests/typing']
