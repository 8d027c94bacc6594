"""flaxlike: a purely functional, Linen-style neural-network library for JAX.

``import flaxlike as nn`` gives the whole ``flaxlike.linen`` namespace; the submodules
``core``, ``serialization``, ``struct``, ``traverse_util``, ``errors``, ``training``,
``jax_utils``, ``io``, ``typing``, ``traceback_util``, ``version`` and (imported on demand)
``cursor`` and ``metrics.tensorboard`` mirror Flax's ``flax.X``.
"""

# First, so that flaxlike's frames are hidden from filtered tracebacks from the start.
from flaxlike import traceback_util as traceback_util  # isort: skip
from flaxlike import core as core
from flaxlike import errors as errors
from flaxlike import io as io
from flaxlike import jax_utils as jax_utils
from flaxlike import linen as linen
from flaxlike import serialization as serialization
from flaxlike import struct as struct
from flaxlike import training as training
from flaxlike import traverse_util as traverse_util
from flaxlike import typing as typing
from flaxlike import version as version
from flaxlike.configurations import config as config
from flaxlike.linen import *  # noqa: F403  (the Linen namespace, listed in linen/__init__)
from flaxlike.linen import activation as activation
from flaxlike.linen import attention as attention
from flaxlike.linen import batch_apply as batch_apply
from flaxlike.linen import combinators as combinators
from flaxlike.linen import dtypes as dtypes
from flaxlike.linen import initializers as initializers
from flaxlike.linen import linear as linear
from flaxlike.linen import module as module
from flaxlike.linen import normalization as normalization
from flaxlike.linen import pooling as pooling
from flaxlike.linen import recurrent as recurrent
from flaxlike.linen import spmd as spmd
from flaxlike.linen import stochastic as stochastic
from flaxlike.version import __version__ as __version__
