"""Parameter initializers: JAX's ``jax.nn.initializers`` plus Linen's ``zeros_init``/``ones_init``.

The initializers live in :mod:`flaxlike.core.nn.initializers`, where both the functional
layers of ``flaxlike.core.nn`` and the Linen layers use them; this module keeps Linen's
import path (``nn.initializers``).

Example:

>>> import jax
>>> from flaxlike.linen import initializers
>>> initializers.lecun_normal()(jax.random.key(0), (3, 2)).shape
(3, 2)
"""

from flaxlike.core.nn.initializers import Initializer as Initializer
from flaxlike.core.nn.initializers import constant as constant
from flaxlike.core.nn.initializers import delta_orthogonal as delta_orthogonal
from flaxlike.core.nn.initializers import glorot_normal as glorot_normal
from flaxlike.core.nn.initializers import glorot_uniform as glorot_uniform
from flaxlike.core.nn.initializers import he_normal as he_normal
from flaxlike.core.nn.initializers import he_uniform as he_uniform
from flaxlike.core.nn.initializers import kaiming_normal as kaiming_normal
from flaxlike.core.nn.initializers import kaiming_uniform as kaiming_uniform
from flaxlike.core.nn.initializers import lecun_normal as lecun_normal
from flaxlike.core.nn.initializers import lecun_uniform as lecun_uniform
from flaxlike.core.nn.initializers import normal as normal
from flaxlike.core.nn.initializers import ones as ones
from flaxlike.core.nn.initializers import ones_init as ones_init
from flaxlike.core.nn.initializers import orthogonal as orthogonal
from flaxlike.core.nn.initializers import truncated_normal as truncated_normal
from flaxlike.core.nn.initializers import uniform as uniform
from flaxlike.core.nn.initializers import variance_scaling as variance_scaling
from flaxlike.core.nn.initializers import xavier_normal as xavier_normal
from flaxlike.core.nn.initializers import xavier_uniform as xavier_uniform
from flaxlike.core.nn.initializers import zeros as zeros
from flaxlike.core.nn.initializers import zeros_init as zeros_init
