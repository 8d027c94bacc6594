"""One descriptor per layer configuration, for the generic checks in test_descriptors.py.

Part A (this file): linear layers, convolutions, embeddings, dropout, combinators and
a pooling model.  Part B (``descriptors_b.py``, normalization/attention/recurrent) is
appended to ``DESCRIPTORS`` when present; both files use the same fields, so the
generic tests treat them alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import flaxlike as nn
from tests.layers.descriptor_base import LayerDescriptor


def _x(*shape, seed=0):
  return np.random.RandomState(seed).standard_normal(shape)


def _shape(*shape, seed=0):
  return lambda dtype: (_x(*shape, seed=seed).astype(dtype),)


def _ids(dtype):
  del dtype  # integer ids keep their dtype
  return (np.array([[0, 3, 9], [2, 2, 5]], np.int32),)


def _pool_model():
  class PoolNet(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(3, (3, 3))(x))
      a = nn.avg_pool(x, (2, 2), padding='SAME', count_include_pad=False)
      m = nn.max_pool(x, (2, 2), padding='SAME')
      return nn.pooling.min_pool(a + m, (3, 3), strides=(2, 2), padding='SAME')

  return PoolNet()


def _tied_embed():
  class Tied(nn.Module):
    @nn.compact
    def __call__(self, ids):
      e = nn.Embed(10, 4)
      return e.attend(nn.Dense(4)(e(ids)))

  return Tied()


_A = 'catalogue_layers_a'
_SEQ = _shape(2, 7, 3)
_IMG = _shape(2, 6, 5, 4, seed=1)

DESCRIPTORS_A: list[LayerDescriptor] = [
  LayerDescriptor('Dense', lambda: nn.Dense(3), _shape(2, 4)),
  LayerDescriptor(
    'DenseGeneral_two_axes',
    lambda: nn.DenseGeneral((2, 3), axis=(-2, -1)),
    _shape(2, 4, 5),
    golden=(_A, 'dense_general_two_axes'),
  ),
  LayerDescriptor(
    'DenseGeneral_batch_dims',
    lambda: nn.DenseGeneral(3, axis=(2,), batch_dims=(0, 1), use_bias=False),
    _shape(2, 3, 4, 2),
    per_example=False,  # a kernel per batch index
    golden=(_A, 'dense_general_batch_dims_2'),
  ),
  LayerDescriptor('Einsum', lambda: nn.Einsum((4, 5), '...c,cd->...d'), _shape(2, 3, 4)),
  LayerDescriptor(
    'Einsum_permuted',
    lambda: nn.Einsum((4, 5, 6), 'abc,cde->eabd'),
    _shape(2, 3, 4),
    per_example=False,
  ),  # batch axis moves to position 1
  LayerDescriptor('Conv1D_causal', lambda: nn.Conv(4, (3,), padding='CAUSAL'), _SEQ),
  LayerDescriptor(
    'Conv1D_circular_strided',
    lambda: nn.Conv(4, (3,), strides=2, kernel_dilation=2, padding='CIRCULAR'),
    _SEQ,
  ),
  LayerDescriptor(
    'Conv2D_reflect_groups',
    lambda: nn.Conv(4, (3, 2), padding='REFLECT', feature_group_count=2),
    _IMG,
  ),
  LayerDescriptor(
    'Conv2D_same_strided',
    lambda: nn.Conv(3, (3, 2), strides=(2, 1)),
    _shape(2, 6, 5, 4, seed=1),
    golden=(_A, 'conv2d_same_strided'),
  ),
  LayerDescriptor(
    'Conv2D_input_dilation',
    lambda: nn.Conv(2, (3, 3), input_dilation=(2, 1), padding=((1, 0), 1)),
    _IMG,
  ),
  LayerDescriptor(
    'ConvTranspose_circular',
    lambda: nn.ConvTranspose(3, (3,), strides=(2,), padding='CIRCULAR'),
    _SEQ,
  ),
  LayerDescriptor(
    'ConvTranspose_2d_tk',
    lambda: nn.ConvTranspose(3, (4, 3), strides=(2, 1), transpose_kernel=True),
    _IMG,
  ),
  LayerDescriptor('ConvLocal', lambda: nn.ConvLocal(2, (3, 2), padding='VALID'), _IMG),
  LayerDescriptor(
    'Embed', lambda: nn.Embed(10, 4), _ids, float_inputs=(), golden=(_A, 'embed_lookup')
  ),
  LayerDescriptor(
    'Embed_attend_tied', _tied_embed, _ids, float_inputs=(), golden=(_A, 'embed_attend_tied')
  ),
  LayerDescriptor('Dropout_eval', lambda: nn.Dropout(0.5, deterministic=True), _shape(2, 6)),
  LayerDescriptor(
    'Dropout_train',
    lambda: nn.Dropout(0.5, broadcast_dims=(-1,)),
    _shape(2, 6),
    init_kwargs={'deterministic': True},
    apply_kwargs={'deterministic': False},
    apply_rngs={'dropout': 3},
    per_example=False,
  ),
  LayerDescriptor(
    'Sequential', lambda: nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(2)]), _shape(2, 3, seed=2)
  ),
  LayerDescriptor('PoolNet', _pool_model, _IMG),
]

try:
  from tests.layers.descriptors_b import DESCRIPTORS_B
except ImportError:
  DESCRIPTORS_B = []

DESCRIPTORS: list[Any] = DESCRIPTORS_A + list(DESCRIPTORS_B)
