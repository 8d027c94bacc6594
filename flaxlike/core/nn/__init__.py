"""The functional layer library: layers as functions ``fn(scope, x, ...)`` of a scope.

These are Flax's ``flax.core.nn`` layers. They declare the same params as the Linen
layers (``kernel``, ``bias``, ``scale``, ...) and compute the same values, but need no
Module: compose them with ``scope.child`` and transform them with ``flaxlike.core.lift``.

Example:

>>> import jax, jax.numpy as jnp
>>> from flaxlike.core import init, nn
>>> def mlp(scope, x):
...   x = nn.relu(scope.child(nn.dense, 'hidden')(x, 8))
...   return scope.child(nn.dense, 'out')(x, 1)
>>> y, variables = init(mlp)(jax.random.key(0), jnp.ones((2, 3)))
>>> jax.tree_util.tree_map(jnp.shape, variables['params'])
{'hidden': {'bias': (8,), 'kernel': (3, 8)}, 'out': {'bias': (1,), 'kernel': (8, 1)}}
"""

from jax.nn import celu as celu
from jax.nn import elu as elu
from jax.nn import gelu as gelu
from jax.nn import glu as glu
from jax.nn import leaky_relu as leaky_relu
from jax.nn import log_sigmoid as log_sigmoid
from jax.nn import log_softmax as log_softmax
from jax.nn import relu as relu
from jax.nn import sigmoid as sigmoid
from jax.nn import silu as silu
from jax.nn import soft_sign as soft_sign
from jax.nn import softmax as softmax
from jax.nn import softplus as softplus
from jax.nn import swish as swish
from jax.numpy import tanh as tanh

from flaxlike.core.nn import attention as attention
from flaxlike.core.nn import initializers as initializers
from flaxlike.core.nn import linear as linear
from flaxlike.core.nn import normalization as normalization
from flaxlike.core.nn import pooling as pooling
from flaxlike.core.nn import stochastic as stochastic
from flaxlike.core.nn.attention import dot_product_attention as dot_product_attention
from flaxlike.core.nn.attention import (
  multi_head_dot_product_attention as multi_head_dot_product_attention,
)
from flaxlike.core.nn.linear import Embedding as Embedding
from flaxlike.core.nn.linear import conv as conv
from flaxlike.core.nn.linear import conv_transpose as conv_transpose
from flaxlike.core.nn.linear import default_embed_init as default_embed_init
from flaxlike.core.nn.linear import default_kernel_init as default_kernel_init
from flaxlike.core.nn.linear import dense as dense
from flaxlike.core.nn.linear import dense_general as dense_general
from flaxlike.core.nn.linear import embedding as embedding
from flaxlike.core.nn.normalization import batch_norm as batch_norm
from flaxlike.core.nn.normalization import group_norm as group_norm
from flaxlike.core.nn.normalization import layer_norm as layer_norm
from flaxlike.core.nn.pooling import avg_pool as avg_pool
from flaxlike.core.nn.pooling import max_pool as max_pool
from flaxlike.core.nn.stochastic import dropout as dropout
