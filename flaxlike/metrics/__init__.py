"""Metrics logging, as ``flax.metrics``: ``flaxlike.metrics.tensorboard`` (an optional extra).

The package imports nothing, so ``import flaxlike.metrics`` works without the extra.
"""
