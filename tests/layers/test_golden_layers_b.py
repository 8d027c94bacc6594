"""flaxlike vs. recorded Flax Linen fixtures for the layers catalogue, part B
(normalization, attention, recurrent cells).

Never imports flax: the fixtures under tests/fixtures/golden/ were recorded
by tests/fixtures/make_golden.py in a separate environment.
"""

import pytest

from tests.fixtures import catalogue_layers_b
from tests.fixtures.golden_check import compare_with_golden, golden_case_names, load_golden

CASES = golden_case_names('catalogue_layers_b')


def test_layers_b_fixtures_present():
  assert len(CASES) >= 35, f'only {len(CASES)} golden cases found; run make golden'
  assert set(CASES) == set(catalogue_layers_b.cases(__import__('flaxlike'))), (
    'catalogue and recorded fixtures are out of sync; regenerate them'
  )
  for name in CASES:
    meta, arrays = load_golden('catalogue_layers_b', name)
    assert meta['threefry_partitionable'] is True, name
    keys = {'/'.join(e['path']) for e in meta['variables'] + meta['output']}
    assert keys == set(arrays), name


# SelfAttention warns about its deprecation, as Linen's does.
@pytest.mark.filterwarnings('ignore:SelfAttention will be deprecated:DeprecationWarning')
@pytest.mark.parametrize('name', CASES)
def test_layers_b_matches_linen(name):
  import jax

  import flaxlike as nn

  with jax.numpy_rank_promotion('allow'):
    compare_with_golden(nn, catalogue_layers_b, name, rtol=2e-5, atol=2e-5)
