"""flaxlike vs. recorded Flax Linen fixtures for the core catalogue.

Never imports flax: the fixtures under tests/fixtures/golden/ were recorded
by tests/fixtures/make_golden.py in a separate environment.
"""

import pytest

from tests.fixtures import catalogue_core
from tests.fixtures.golden_check import compare_with_golden, golden_case_names, load_golden

CASES = golden_case_names('catalogue_core')


def test_core_fixtures_present():
  assert len(CASES) >= 20, f'only {len(CASES)} golden cases found; run make golden'
  for name in CASES:
    meta, arrays = load_golden('catalogue_core', name)
    # Values were recorded with partitionable threefry (the JAX default).
    assert meta['threefry_partitionable'] is True, name
    keys = {'/'.join(e['path']) for e in meta['variables'] + meta['output']}
    assert keys == set(arrays), name


@pytest.mark.parametrize('name', CASES)
def test_core_matches_linen(name):
  import jax

  import flaxlike as nn

  # The catalogue is user-style model code that relies on implicit rank promotion, as
  # Linen allows; the suite otherwise runs with promotion set to raise.
  with jax.numpy_rank_promotion('allow'):
    compare_with_golden(nn, catalogue_core, name)
