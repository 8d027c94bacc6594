"""``RNN`` and ``Bidirectional``: a recurrent cell looped over time with ``nn.scan``.

The cell is a field, so it is adopted as the submodule ``cell`` and its parameters sit
at ``params/cell/...``. By default the parameters are broadcast (one set for every time
step) and created before the loop, as in Linen, so initial values match Linen's.

Padding: with ``seq_lengths``, the carry returned is the one after each sequence's last
valid step, and reversed passes reverse only the valid part of each sequence (padding
stays at the end), so a backward RNN starts at each sequence's last real element.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import random

from flaxlike.core.frozen_dict import FrozenDict
from flaxlike.core.scope import Filter
from flaxlike.linen import transforms
from flaxlike.linen.module import Module
from flaxlike.typing import Array, PRNGKey


def flip_sequences(
  inputs: Any, seq_lengths: Array | None, num_batch_dims: int, time_major: bool
) -> Any:
  """Reverses the first ``seq_lengths[b]`` steps of each sequence, keeping padding last.

  Without ``seq_lengths`` the whole time axis is reversed.

  Example:

  >>> import jax.numpy as jnp
  >>> from flaxlike.linen.recurrent import flip_sequences
  >>> flip_sequences(jnp.array([[1, 2, 3, 0]]), jnp.array([3]), 1, False)
  Array([[3, 2, 1, 0]], dtype=int32)
  """
  time_axis = 0 if time_major else num_batch_dims
  if seq_lengths is None:
    return jax.tree_util.tree_map(lambda x: jnp.flip(x, axis=time_axis), inputs)

  def flip(x):
    steps = x.shape[time_axis]
    lengths = jnp.asarray(seq_lengths)
    # Index t of sequence b reads (L_b - 1 - t) mod T: the valid prefix reversed, then
    # the padding (reversed too, and never read by a length-aware consumer).
    reversed_steps = jnp.arange(steps - 1, -1, -1).reshape((1,) * lengths.ndim + (steps,))
    idx = (reversed_steps + lengths[..., None]) % steps
    if time_major:
      idx = jnp.moveaxis(idx, -1, 0)
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - idx.ndim))
    return jnp.take_along_axis(x, idx, axis=time_axis)

  return jax.tree_util.tree_map(flip, inputs)


def _last_valid_carry(carries: Any, seq_lengths: Array) -> Any:
  """``carries`` stacked over time on axis 0; picks step ``seq_lengths[b] - 1`` per batch."""
  last = jnp.asarray(seq_lengths) - 1

  def pick(x):
    batch_idx = jnp.indices(last.shape)
    return x[(last, *batch_idx)]

  return jax.tree_util.tree_map(pick, carries)


def _concatenate(a: Array, b: Array) -> Array:
  return jnp.concatenate([a, b], axis=-1)


class RNNBase(Module):
  """Marks modules with the ``RNN`` call signature (what ``Bidirectional`` accepts)."""


class RNN(RNNBase):
  """Runs a recurrent cell over the time axis of the inputs.

  Attributes:
    cell: the recurrent cell (e.g. ``nn.LSTMCell(features)``), stored as ``cell``.
    time_major: inputs are ``(time, *batch, *features)`` instead of ``(*batch, time,
      *features)``.
    return_carry: also return the final carry: ``(carry, outputs)``.
    reverse: run from the last valid step to the first.
    keep_order: with ``reverse``, flip the outputs back to the input order.
    unroll: how many steps each scan iteration runs.
    variable_axes: collections with one slice per step (default none).
    variable_broadcast: collections shared by every step (default ``'params'``).
    variable_carry: collections threaded through the steps.
    split_rngs: streams that get a new key per step (default: params shared).

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.RNN(nn.GRUCell(4))
  >>> x = jnp.ones((2, 5, 3))
  >>> variables = layer.init(jax.random.key(0), x)
  >>> layer.apply(variables, x).shape
  (2, 5, 4)
  """

  cell: Any
  time_major: bool = False
  return_carry: bool = False
  reverse: bool = False
  keep_order: bool = False
  unroll: int = 1
  variable_axes: Mapping[Filter, Any] = FrozenDict()
  variable_broadcast: Filter = 'params'
  variable_carry: Filter = False
  split_rngs: Mapping[Filter, bool] = FrozenDict({'params': False})

  def __call__(
    self,
    inputs: Array,
    *,
    initial_carry: Any = None,
    init_key: PRNGKey | None = None,
    seq_lengths: Array | None = None,
    return_carry: bool | None = None,
    time_major: bool | None = None,
    reverse: bool | None = None,
    keep_order: bool | None = None,
  ) -> Any:
    """Returns ``outputs`` (or ``(carry, outputs)`` with ``return_carry``).

    Args:
      inputs: the input sequence.
      initial_carry: the carry before the first step; default from the cell's
        ``initialize_carry(init_key or PRNGKey(0), ...)``.
      init_key: key for the default initial carry.
      seq_lengths: ``(*batch,)`` number of valid steps; the returned carry is taken at
        each sequence's last valid step.
      return_carry, time_major, reverse, keep_order: override the attributes.
    """
    return_carry = self.return_carry if return_carry is None else return_carry
    time_major = self.time_major if time_major is None else time_major
    reverse = self.reverse if reverse is None else reverse
    keep_order = self.keep_order if keep_order is None else keep_order

    num_features = self.cell.num_feature_axes
    time_axis = 0 if time_major else inputs.ndim - (num_features + 1)
    if time_axis < 0:
      raise ValueError(
        f'RNN: inputs of shape {inputs.shape} have no time axis; expected (*batch, time, '
        f'*features) with {num_features} feature axes.'
      )
    batch_dims = inputs.shape[1:-num_features] if time_major else inputs.shape[:time_axis]
    if reverse:
      inputs = flip_sequences(inputs, seq_lengths, len(batch_dims), time_major)
    if initial_carry is None:
      key = random.PRNGKey(0) if init_key is None else init_key
      step_shape = inputs.shape[:time_axis] + inputs.shape[time_axis + 1 :]
      initial_carry = self.cell.initialize_carry(key, step_shape)
    keep_carries = seq_lengths is not None and return_carry

    def step(cell, carry, x):
      carry, y = cell(carry, x)
      if keep_carries:
        return carry, (carry, y)
      return carry, y

    scan = transforms.scan(
      step,
      in_axes=time_axis,
      out_axes=(0, time_axis) if keep_carries else time_axis,
      unroll=self.unroll,
      variable_axes=self.variable_axes,
      variable_broadcast=self.variable_broadcast,
      variable_carry=self.variable_carry,
      split_rngs=self.split_rngs,
    )
    carry, outputs = scan(self.cell, initial_carry, inputs)
    if keep_carries:
      carries, outputs = outputs
      carry = _last_valid_carry(carries, seq_lengths)
    if reverse and keep_order:
      outputs = flip_sequences(outputs, seq_lengths, len(batch_dims), time_major)
    return (carry, outputs) if return_carry else outputs


class Bidirectional(RNNBase):
  """Runs one RNN forwards and another backwards and merges their outputs.

  Attributes:
    forward_rnn: the forward ``RNN``.
    backward_rnn: the backward ``RNN`` (run with ``reverse=True, keep_order=True``, so
      with ``seq_lengths`` it starts at each sequence's last valid step).
    merge_fn: combines the two outputs per step (default: concatenate features).
    time_major: as in ``RNN``.
    return_carry: also return ``(forward_carry, backward_carry)``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> layer = nn.Bidirectional(nn.RNN(nn.GRUCell(4)), nn.RNN(nn.GRUCell(4)))
  >>> x = jnp.ones((2, 5, 3))
  >>> layer.apply(layer.init(jax.random.key(0), x), x).shape
  (2, 5, 8)
  """

  forward_rnn: Any
  backward_rnn: Any
  merge_fn: Callable[[Array, Array], Array] = _concatenate
  time_major: bool = False
  return_carry: bool = False

  def __call__(
    self,
    inputs: Array,
    *,
    initial_carry: Any = None,
    init_key: PRNGKey | None = None,
    seq_lengths: Array | None = None,
    return_carry: bool | None = None,
    time_major: bool | None = None,
    reverse: bool | None = None,
    keep_order: bool | None = None,
  ) -> Any:
    """Returns merged outputs (or ``((carry_fwd, carry_bwd), outputs)``)."""
    del reverse, keep_order  # fixed by construction: forward, then backward kept in order
    return_carry = self.return_carry if return_carry is None else return_carry
    time_major = self.time_major if time_major is None else time_major
    carry_fwd, carry_bwd = (None, None) if initial_carry is None else initial_carry
    key_fwd, key_bwd = (None, None) if init_key is None else tuple(random.split(init_key))
    carry_fwd, out_fwd = self.forward_rnn(
      inputs,
      initial_carry=carry_fwd,
      init_key=key_fwd,
      seq_lengths=seq_lengths,
      return_carry=True,
      time_major=time_major,
      reverse=False,
    )
    carry_bwd, out_bwd = self.backward_rnn(
      inputs,
      initial_carry=carry_bwd,
      init_key=key_bwd,
      seq_lengths=seq_lengths,
      return_carry=True,
      time_major=time_major,
      reverse=True,
      keep_order=True,
    )
    outputs = jax.tree_util.tree_map(self.merge_fn, out_fwd, out_bwd)
    carry = (carry_fwd, carry_bwd)
    return (carry, outputs) if return_carry else outputs


__all__ = ['RNN', 'RNNBase', 'Bidirectional', 'flip_sequences']
