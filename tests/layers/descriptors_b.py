"""One descriptor per layer of part B (normalization, attention, recurrent cells).

``tests/layers/descriptors.py`` appends ``DESCRIPTORS_B`` to its list, so the generic
checks of ``test_descriptors.py`` (jit == eager, vmap == batching, float64 and bfloat16
inputs, numpy inputs, strict rank promotion, serialization round trip) cover these
layers. ``LayerDescriptor`` comes from ``descriptor_base.py``, shared with part A.
Inputs always have a leading batch axis.
"""

from __future__ import annotations

import jax
import numpy as np

import flaxlike as nn
from tests.layers.descriptor_base import LayerDescriptor


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
      lambda c: (np.asarray(c) + _x(*c.shape, seed=3)).astype(dtype), carry
    )
    return (carry, x)

  return inputs


def _masked_attention_inputs(dtype):
  x = _x(2, 5, 4, seed=4).astype(dtype)
  valid = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  mask = np.asarray(nn.make_attention_mask(valid, valid)) * np.asarray(nn.make_causal_mask(valid))
  return (x, mask.astype(bool))


DESCRIPTORS_B: list[LayerDescriptor] = [
  LayerDescriptor('LayerNorm', lambda: nn.LayerNorm(), _seq),
  LayerDescriptor('RMSNorm', lambda: nn.RMSNorm(), _seq),
  LayerDescriptor('BatchNorm_eval', lambda: nn.BatchNorm(use_running_average=True), _seq),
  LayerDescriptor(
    'BatchNorm_train',
    lambda: nn.BatchNorm(use_running_average=False),
    _seq,
    mutable=['batch_stats'],
    per_example=False,
  ),
  LayerDescriptor('GroupNorm', lambda: nn.GroupNorm(num_groups=2), _img),
  LayerDescriptor('InstanceNorm', lambda: nn.InstanceNorm(), _img),
  LayerDescriptor(
    'SpectralNorm',
    lambda: nn.SpectralNorm(nn.Dense(3)),
    _seq,
    init_kwargs={'update_stats': False},
    apply_kwargs={'update_stats': True},
    mutable=['batch_stats'],
    per_example=False,
  ),
  LayerDescriptor('WeightNorm', lambda: nn.WeightNorm(nn.Dense(3)), _seq),
  LayerDescriptor(
    'MultiHeadDotProductAttention',
    lambda: nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=6),
    _masked_attention_inputs,
    keyword_inputs=('mask',),
  ),
  LayerDescriptor(
    'MultiHeadAttention_dropout',
    lambda: nn.MultiHeadAttention(num_heads=2, dropout_rate=0.3, broadcast_dropout=False),
    _seq,
    init_kwargs={'deterministic': True},
    apply_kwargs={'deterministic': False},
    apply_rngs={'dropout': 1},
    per_example=False,
  ),  # one dropout draw covers the whole batch
  LayerDescriptor(
    'MultiHeadDotProductAttention_normalize_qk',
    lambda: nn.MultiHeadDotProductAttention(num_heads=2, normalize_qk=True),
    _seq,
  ),
  LayerDescriptor(
    'LSTMCell',
    lambda: nn.LSTMCell(3),
    _cell_inputs(lambda: nn.LSTMCell(3), (2, 4)),
    float_inputs=(0, 1),
  ),
  LayerDescriptor(
    'OptimizedLSTMCell',
    lambda: nn.OptimizedLSTMCell(3),
    _cell_inputs(lambda: nn.OptimizedLSTMCell(3), (2, 4)),
    float_inputs=(0, 1),
  ),
  LayerDescriptor(
    'GRUCell',
    lambda: nn.GRUCell(3),
    _cell_inputs(lambda: nn.GRUCell(3), (2, 4)),
    float_inputs=(0, 1),
  ),
  LayerDescriptor(
    'MGUCell',
    lambda: nn.MGUCell(3),
    _cell_inputs(lambda: nn.MGUCell(3), (2, 4)),
    float_inputs=(0, 1),
  ),
  LayerDescriptor(
    'SimpleCell',
    lambda: nn.SimpleCell(3),
    _cell_inputs(lambda: nn.SimpleCell(3), (2, 4)),
    float_inputs=(0, 1),
  ),
  LayerDescriptor(
    'ConvLSTMCell',
    lambda: nn.ConvLSTMCell(2, kernel_size=(3,)),
    _cell_inputs(lambda: nn.ConvLSTMCell(2, kernel_size=(3,)), (2, 5, 3)),
    float_inputs=(0, 1),
  ),
]
