"""Un-jitted layers give Linen's bits: flaxlike stages a layer's math with
``jax.jit(inline=True)`` (for trace time), so run eagerly that math compiles as one XLA
program where Linen dispatches op by op. The fixture holds what Linen 0.12.8 gives eagerly
for small cases of each layer and dtype (``tests/fixtures/eager_numerics.py --record``;
the same script's sweep compares bigger shapes, jitted too, against flax itself).
"""

import pytest

import flaxlike
from tests.fixtures import eager_numerics

RECORDED = eager_numerics.load_recorded()
CASES = {
  name: (module, shapes, dtype)
  for name, module, shapes, dtype in eager_numerics.cases(flaxlike, full=False)
  if name in eager_numerics.RECORDED
}


def test_the_fixture_holds_every_recorded_case():
  assert sorted(RECORDED) == sorted(eager_numerics.RECORDED) == sorted(CASES)


@pytest.mark.parametrize('name', eager_numerics.RECORDED)
def test_eager_init_and_apply_match_linen_bitwise(name):
  module, shapes, dtype = CASES[name]
  xs = eager_numerics.inputs_for(name, shapes, dtype)
  got = eager_numerics.run(module, None, xs, jit=False)
  assert eager_numerics.bitwise_diff(RECORDED[name], got) == []
