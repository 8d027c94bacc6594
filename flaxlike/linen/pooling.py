"""Pooling functions over the spatial axes of channels-last inputs.

The functions live in :mod:`flaxlike.core.nn.pooling` (pure array math, shared by the
functional layers of ``flaxlike.core.nn``); this module keeps Linen's import path.

Example:

>>> import jax.numpy as jnp
>>> from flaxlike.linen import pooling
>>> pooling.max_pool(jnp.ones((1, 4, 4, 2)), (2, 2), strides=(2, 2)).shape
(1, 2, 2, 2)
"""

from flaxlike.core.nn.pooling import avg_pool as avg_pool
from flaxlike.core.nn.pooling import max_pool as max_pool
from flaxlike.core.nn.pooling import min_pool as min_pool
from flaxlike.core.nn.pooling import pool as pool

__all__ = ['pool', 'avg_pool', 'max_pool', 'min_pool']
