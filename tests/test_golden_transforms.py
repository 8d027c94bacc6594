"""flaxlike vs. recorded Flax Linen fixtures for lifted transforms.

Never imports flax: the fixtures under tests/fixtures/golden/catalogue_transforms were
recorded by tests/fixtures/make_golden.py in a separate environment.
"""

import pytest

from tests.fixtures import catalogue_transforms
from tests.fixtures.golden_check import compare_with_golden, golden_case_names, load_golden

CASES = golden_case_names('catalogue_transforms')


def test_transform_fixtures_present():
  assert len(CASES) >= 20, f'only {len(CASES)} golden cases found; run make golden'
  for name in CASES:
    meta, arrays = load_golden('catalogue_transforms', name)
    assert meta['threefry_partitionable'] is True, name
    keys = {'/'.join(e['path']) for e in meta['variables'] + meta['output']}
    assert keys == set(arrays), name


@pytest.mark.parametrize('name', CASES)
def test_transforms_match_linen(name):
  import jax

  import flaxlike as nn

  with jax.numpy_rank_promotion('allow'):
    compare_with_golden(nn, catalogue_transforms, name)
