"""Combinators: ``Sequential``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flaxlike.linen.module import Module, compact


class Sequential(Module):
  """Calls ``layers`` in order, each on the previous one's output.

  A tuple output is passed to the next layer as positional arguments and a dict
  output as keyword arguments; anything else as the single argument. Modules created
  outside any module are adopted as ``layers_0``, ``layers_1``, ... (a non-module
  callable such as ``nn.relu`` uses up its index).

  Attributes:
    layers: the modules or callables to chain (at least one).

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> model = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(2)])
  >>> params = model.init(jax.random.key(0), jnp.ones((1, 3)))['params']
  >>> list(params)
  ['layers_0', 'layers_2']
  """

  layers: Sequence[Callable[..., Any]]

  def __post_init__(self) -> None:
    if not isinstance(self.layers, Sequence):
      raise ValueError(
        f"Sequential: 'layers' must be a sequence (list or tuple) of callables, got "
        f"'{type(self.layers).__name__}'; wrap a single layer as [layer]."
      )
    super().__post_init__()

  @compact
  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    if not self.layers:
      raise ValueError(
        f'Empty Sequential module {self.name!r}: pass at least one callable in layers.'
      )
    outputs = self.layers[0](*args, **kwargs)
    for layer in self.layers[1:]:
      if isinstance(outputs, tuple):
        outputs = layer(*outputs)
      elif isinstance(outputs, Mapping):
        outputs = layer(**outputs)
      else:
        outputs = layer(outputs)
    return outputs
