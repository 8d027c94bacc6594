"""The functional engine of flaxlike: scopes, variable collections, RNG streams, metadata.

Nothing here knows about Modules; a model is a plain function ``fn(scope, *args)``.
"""

from typing import Any

from flaxlike.core import lift as lift
from flaxlike.core import meta as meta
from flaxlike.core import nn as nn
from flaxlike.core import partial_eval as partial_eval
from flaxlike.core.frozen_dict import FrozenDict as FrozenDict
from flaxlike.core.frozen_dict import copy as copy
from flaxlike.core.frozen_dict import freeze as freeze
from flaxlike.core.frozen_dict import pop as pop
from flaxlike.core.frozen_dict import pretty_repr as pretty_repr
from flaxlike.core.frozen_dict import unfreeze as unfreeze
from flaxlike.core.meta import AxisMetadata as AxisMetadata
from flaxlike.core.meta import Partitioned as Partitioned
from flaxlike.core.meta import unbox as unbox
from flaxlike.core.meta import with_partitioning as with_partitioning
from flaxlike.core.scope import CollectionFilter as CollectionFilter
from flaxlike.core.scope import DenyList as DenyList
from flaxlike.core.scope import Filter as Filter
from flaxlike.core.scope import LazyRng as LazyRng
from flaxlike.core.scope import Scope as Scope
from flaxlike.core.scope import Variable as Variable
from flaxlike.core.scope import apply as apply
from flaxlike.core.scope import bind as bind
from flaxlike.core.scope import filter_to_set as filter_to_set
from flaxlike.core.scope import group_collections as group_collections
from flaxlike.core.scope import in_filter as in_filter
from flaxlike.core.scope import init as init
from flaxlike.core.scope import intersect_filters as intersect_filters
from flaxlike.core.scope import lazy_init as lazy_init
from flaxlike.core.scope import subtract_filters as subtract_filters
from flaxlike.core.scope import union_filters as union_filters

# Flax's ``flax.core.Array``: the annotation for arrays in functional layer signatures.
Array = Any
