"""One descriptor per layer of part B (normalization, attention, recurrent cells).

``tests/layers/descriptors.py`` appends ``DESCRIPTORS_B`` to its list, so the generic
checks of ``test_descriptors.py`` (jit == eager, vmap == batching, float64 and bfloat16
inputs, numpy inputs, strict rank promotion, serialization round trip) cover these
layers. ``LayerDescriptor`` here has the same fields as the one in ``descriptors.py``;
it is defined again rather than imported because ``descriptors.py`` imports this
module. Inputs always have a leading batch axis.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

import flaxlike as nn


@dataclasses.dataclass(frozen=True)
class LayerDescriptor:
  """How to exercise one layer generically.

  Attributes:
    name: a test id.
    make: ``make() -> Module``.
    inputs: ``inputs(dtype) -> tuple`` of numpy positional arguments (batch first).
    init_kwargs: keyword arguments of ``init``.
    apply_kwargs: keyword arguments of ``apply`` (besides ``rngs``/``mutable``).
    apply_rngs: seeds of the RNG streams ``apply`` needs.
    mutable: the collections ``apply`` may change.
    per_example: whether the output for one example depends on that example only, so
      ``vmap`` over examples equals the batched call (False for batch statistics).
    float_inputs: indices of the inputs that follow the tested dtype (others, e.g.
      masks, keep theirs).
    keyword_inputs: names under which the last inputs are passed as keywords.
    supports_bf16: whether bfloat16 inputs are meaningful for the layer.
    golden: ``(catalogue, case)`` of a Linen fixture with this exact layer and input.
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


def _x(*shape, seed=0):
  return np.random.RandomState(seed).standard_normal(shape)


def _seq(dtype):
  return (_x(2, 5, 4).astype(dtype),)


def _img(dtype):
  return (_x(2, 3, 3, 4, seed=1).astype(dtype),)


def _cell_inputs(cell_fn, x_shape):
  def inputs(dtype):
    x = _x(*x_shape, seed=2).astype(dtype)
    carry = cell_fn().initialize_carry(jax.random.key(0), x.shape)
    carry = jax.tree_util.tree_map(
      lambda c: (np.asarray(c) + _x(*c.shape, seed=3)).astype(dtype), carry)
    return (carry, x)
  return inputs


def _masked_attention_inputs(dtype):
  x = _x(2, 5, 4, seed=4).astype(dtype)
  valid = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  mask = np.asarray(nn.make_attention_mask(valid, valid)) * np.asarray(
    nn.make_causal_mask(valid))
  return (x, mask.astype(bool))


DESCRIPTORS_B: list[LayerDescriptor] = [
  LayerDescriptor('LayerNorm', lambda: nn.LayerNorm(), _seq),
  LayerDescriptor('RMSNorm', lambda: nn.RMSNorm(), _seq),
  LayerDescriptor('BatchNorm_eval', lambda: nn.BatchNorm(use_running_average=True), _seq),
  LayerDescriptor('BatchNorm_train', lambda: nn.BatchNorm(use_running_average=False), _seq,
                  mutable=['batch_stats'], per_example=False),
  LayerDescriptor('GroupNorm', lambda: nn.GroupNorm(num_groups=2), _img),
  LayerDescriptor('InstanceNorm', lambda: nn.InstanceNorm(), _img),
  LayerDescriptor('SpectralNorm', lambda: nn.SpectralNorm(nn.Dense(3)), _seq,
                  init_kwargs={'update_stats': False}, apply_kwargs={'update_stats': True},
                  mutable=['batch_stats'], per_example=False),
  LayerDescriptor('WeightNorm', lambda: nn.WeightNorm(nn.Dense(3)), _seq),
  LayerDescriptor('MultiHeadDotProductAttention',
                  lambda: nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=6),
                  _masked_attention_inputs, keyword_inputs=('mask',)),
  LayerDescriptor('MultiHeadAttention_dropout',
                  lambda: nn.MultiHeadAttention(num_heads=2, dropout_rate=0.3,
                                                broadcast_dropout=False),
                  _seq, init_kwargs={'deterministic': True},
                  apply_kwargs={'deterministic': False}, apply_rngs={'dropout': 1},
                  per_example=False),  # one dropout draw covers the whole batch
  LayerDescriptor('MultiHeadDotProductAttention_normalize_qk',
                  lambda: nn.MultiHeadDotProductAttention(num_heads=2, normalize_qk=True),
                  _seq),
  LayerDescriptor('LSTMCell', lambda: nn.LSTMCell(3), _cell_inputs(lambda: nn.LSTMCell(3), (2, 4)),
                  float_inputs=(0, 1)),
  LayerDescriptor('OptimizedLSTMCell', lambda: nn.OptimizedLSTMCell(3),
                  _cell_inputs(lambda: nn.OptimizedLSTMCell(3), (2, 4)), float_inputs=(0, 1)),
  LayerDescriptor('GRUCell', lambda: nn.GRUCell(3), _cell_inputs(lambda: nn.GRUCell(3), (2, 4)),
                  float_inputs=(0, 1)),
  LayerDescriptor('MGUCell', lambda: nn.MGUCell(3), _cell_inputs(lambda: nn.MGUCell(3), (2, 4)),
                  float_inputs=(0, 1)),
  LayerDescriptor('SimpleCell', lambda: nn.SimpleCell(3),
                  _cell_inputs(lambda: nn.SimpleCell(3), (2, 4)), float_inputs=(0, 1)),
  LayerDescriptor('ConvLSTMCell', lambda: nn.ConvLSTMCell(2, kernel_size=(3,)),
                  _cell_inputs(lambda: nn.ConvLSTMCell(2, kernel_size=(3,)), (2, 5, 3)),
                  float_inputs=(0, 1)),
]
