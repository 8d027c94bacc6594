"""The record that describes how to exercise one layer in the cross-cutting tests.

Shared by ``descriptors.py`` (part A layers) and ``descriptors_b.py`` (part B layers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class LayerDescriptor:
  """How to exercise one layer generically.

  Attributes:
    name: a test id.
    make: ``make() -> Module``.
    inputs: ``inputs(dtype) -> tuple`` of numpy positional arguments (batch first).
    init_kwargs: keyword arguments of ``init``.
    apply_kwargs: keyword arguments of ``apply`` (besides ``rngs``/``mutable``).
    apply_rngs: seeds of the RNG streams ``apply`` needs (``jax.random.key(seed)``).
    mutable: the collections ``apply`` may change.
    per_example: whether one example's output depends on that example only, so vmap
      over examples equals the batched call (False e.g. for a dropout mask drawn for
      the whole batch).
    float_inputs: indices of the inputs that follow the tested dtype (others, e.g.
      integer ids, keep theirs).
    keyword_inputs: names under which the last inputs are passed as keywords.
    supports_bf16: whether bfloat16 inputs are meaningful for the layer.
    golden: ``(catalogue, case)`` of a Linen fixture with this exact layer and input,
      whose parameter names, shapes and initial values must match.
  """

  name: str
  make: Callable[[], Any]
  inputs: Callable[[Any], tuple]
  init_kwargs: dict = dataclasses.field(default_factory=dict)
  apply_kwargs: dict = dataclasses.field(default_factory=dict)
  apply_rngs: dict = dataclasses.field(default_factory=dict)
  mutable: Any = False
  per_example: bool = True
  float_inputs: tuple = (0,)
  keyword_inputs: tuple = ()
  supports_bf16: bool = True
  golden: tuple[str, str] | None = None

  def call_args(self, inputs: tuple) -> tuple[tuple, dict]:
    """Splits ``inputs`` into positional and keyword arguments."""
    n = len(inputs) - len(self.keyword_inputs)
    return tuple(inputs[:n]), dict(zip(self.keyword_inputs, inputs[n:]))
