"""flaxlike vs. fixtures recorded from Flax Linen: one scaffold for every catalogue.

Never imports flax: the fixtures under tests/fixtures/golden/<catalogue>/ were recorded by
tests/fixtures/make_golden.py in a separate environment (``make golden``). Each catalogue
is a module of user-style model code with a ``cases(nn)`` table; each case must give
Linen's collection order, variable paths in insertion order, shapes, dtypes, bit-identical
variables and close outputs (tests/fixtures/golden_check.py).
"""

import dataclasses
import types

import jax
import pytest

import flaxlike
from tests.fixtures import (
  catalogue_core,
  catalogue_layers_a,
  catalogue_layers_b,
  catalogue_transforms,
)
from tests.fixtures.golden_check import compare_with_golden, golden_case_names, load_golden


@dataclasses.dataclass(frozen=True)
class Catalogue:
  """One catalogue and how its cases are compared.

  Attributes:
    module: the catalogue module (``tests.fixtures.catalogue_*``).
    min_cases: fewer recorded cases than this means the fixtures were not generated.
    rank_promotion: ``'allow'`` for catalogues whose model code relies on implicit rank
      promotion, as Linen allows; ``'raise'`` (the suite's setting) for the others.
    rtol: relative tolerance on outputs.
    atol: absolute tolerance on outputs.
    marks: pytest marks for every case of the catalogue.
  """

  module: types.ModuleType
  min_cases: int
  rank_promotion: str = 'allow'
  rtol: float = 1e-6
  atol: float = 1e-6
  marks: tuple = ()

  @property
  def name(self) -> str:
    return self.module.__name__.rsplit('.', 1)[-1]


CATALOGUES = (
  Catalogue(catalogue_core, min_cases=20),
  Catalogue(catalogue_transforms, min_cases=20),
  # Linear, convolutions, embeddings, pooling, dropout, combinators: neither the layers
  # nor the catalogue's model code may rely on implicit rank promotion.
  Catalogue(catalogue_layers_a, min_cases=50, rank_promotion='raise', rtol=2e-5, atol=2e-5),
  # Normalization, attention, recurrent cells. SelfAttention warns about its deprecation,
  # as Linen's does.
  Catalogue(
    catalogue_layers_b,
    min_cases=35,
    rtol=2e-5,
    atol=2e-5,
    marks=(
      pytest.mark.filterwarnings('ignore:SelfAttention will be deprecated:DeprecationWarning'),
    ),
  ),
)

CASES = [
  pytest.param(catalogue, name, id=f'{catalogue.name}/{name}', marks=catalogue.marks)
  for catalogue in CATALOGUES
  for name in golden_case_names(catalogue.name)
]


@pytest.mark.parametrize('catalogue', CATALOGUES, ids=lambda c: c.name)
def test_fixtures_present_and_in_sync_with_the_catalogue(catalogue):
  cases = golden_case_names(catalogue.name)
  assert len(cases) >= catalogue.min_cases, (
    f'only {len(cases)} golden cases found for {catalogue.name}; run make golden'
  )
  assert set(cases) == set(catalogue.module.cases(flaxlike)), (
    f'{catalogue.name} and its recorded fixtures are out of sync; regenerate them with '
    f'tests/fixtures/make_golden.py --only {catalogue.name}'
  )
  for name in cases:
    meta, arrays = load_golden(catalogue.name, name)
    # Values were recorded with partitionable threefry (the JAX default).
    assert meta['threefry_partitionable'] is True, name
    keys = {'/'.join(e['path']) for e in meta['variables'] + meta['output']}
    assert keys == set(arrays), name


@pytest.mark.parametrize('catalogue, name', CASES)
def test_case_matches_linen(catalogue, name):
  with jax.numpy_rank_promotion(catalogue.rank_promotion):
    compare_with_golden(flaxlike, catalogue.module, name, rtol=catalogue.rtol, atol=catalogue.atol)
