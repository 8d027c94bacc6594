"""Training helpers mirroring ``flax.training``: ``train_state``, ``checkpoints``,
``common_utils``, ``dynamic_scale``, ``early_stopping``, ``lr_schedule``,
``prefetch_iterator``."""

from flaxlike.training import checkpoints as checkpoints
from flaxlike.training import common_utils as common_utils
from flaxlike.training import dynamic_scale as dynamic_scale
from flaxlike.training import early_stopping as early_stopping
from flaxlike.training import lr_schedule as lr_schedule
from flaxlike.training import prefetch_iterator as prefetch_iterator
from flaxlike.training import train_state as train_state
