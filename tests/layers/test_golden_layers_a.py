"""flaxlike vs. recorded Flax Linen fixtures for the layers catalogue, part A
(linear, convolutions, embeddings, pooling, dropout, combinators).

Never imports flax: the fixtures under tests/fixtures/golden/ were recorded
by tests/fixtures/make_golden.py in a separate environment.
"""

import pytest

import flaxlike
from tests.fixtures import catalogue_layers_a
from tests.fixtures.golden_check import compare_with_golden, golden_case_names, load_golden

CASES = golden_case_names('catalogue_layers_a')


def test_layers_a_fixtures_present():
  assert len(CASES) >= 50, f'only {len(CASES)} golden cases found; run make golden'
  assert set(CASES) == set(catalogue_layers_a.cases(flaxlike)), (
    'catalogue and recorded fixtures are out of sync; regenerate them with '
    'tests/fixtures/make_golden.py --only catalogue_layers_a'
  )
  for name in CASES:
    meta, arrays = load_golden('catalogue_layers_a', name)
    assert meta['threefry_partitionable'] is True, name
    keys = {'/'.join(e['path']) for e in meta['variables'] + meta['output']}
    assert keys == set(arrays), name


# Runs with rank promotion set to 'raise' (conftest): neither these layers nor the
# catalogue's model code may rely on implicit rank promotion.
@pytest.mark.parametrize('name', CASES)
def test_layers_a_matches_linen(name):
  compare_with_golden(flaxlike, catalogue_layers_a, name, rtol=2e-5, atol=2e-5)
