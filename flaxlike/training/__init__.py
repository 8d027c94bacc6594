"""Training helpers mirroring ``flax.training``: ``train_state``, ``checkpoints``,
``common_utils``, ``dynamic_scale``."""

from flaxlike.training import checkpoints as checkpoints
from flaxlike.training import common_utils as common_utils
from flaxlike.training import dynamic_scale as dynamic_scale
from flaxlike.training import train_state as train_state
