"""``TrainState``: parameters, optimizer state and step in one pytree.

Its state dict is ``{'step', 'params', 'opt_state'}`` in that order, as in Flax, so
``to_bytes(state)`` gives Flax's bytes for the same values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

import optax

from flaxlike import struct

_OVERWRITE = '_overwrite_with_gradient'


class TrainState(struct.PyTreeNode):
  """Parameters, an optax optimizer and its state, and a step counter.

  ``apply_fn`` and ``tx`` are static (not serialized, not traced).

  Example:

  >>> import jax, jax.numpy as jnp, optax
  >>> from flaxlike.training import train_state
  >>> params = {'w': jnp.ones(2)}
  >>> state = train_state.TrainState.create(
  ...     apply_fn=lambda v, x: v['params']['w'] @ x, params=params, tx=optax.sgd(0.5))
  >>> grads = jax.grad(lambda p: state.apply_fn({'params': p}, jnp.ones(2)))(state.params)
  >>> state = jax.jit(lambda s, g: s.apply_gradients(grads=g))(state, grads)
  >>> int(state.step), state.params['w'].tolist()
  (1, [0.5, 0.5])
  """

  step: Any
  apply_fn: Callable = struct.field(pytree_node=False)
  params: Any = struct.field(pytree_node=True)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  opt_state: Any = struct.field(pytree_node=True)

  def apply_gradients(self, *, grads: Any, **kwargs) -> TrainState:
    """Applies one optimizer update and increments ``step``.

    If ``grads`` holds an ``'_overwrite_with_gradient'`` collection (as with fp8
    layers), only ``grads['params']`` goes through the optimizer and that collection
    replaces the stored one as is.

    Args:
      grads: gradients with the structure of ``params``.
      **kwargs: other fields to replace at the same time.
    """
    if _OVERWRITE in grads:
      grads_opt, params_opt = grads['params'], self.params['params']
    else:
      grads_opt, params_opt = grads, self.params
    updates, opt_state = self.tx.update(grads_opt, self.opt_state, params_opt)
    new_params = optax.apply_updates(params_opt, updates)
    if _OVERWRITE in grads:
      new_params = {'params': new_params, _OVERWRITE: grads[_OVERWRITE]}
    return self.replace(step=self.step + 1, params=new_params, opt_state=opt_state, **kwargs)

  @classmethod
  def create(
    cls, *, apply_fn: Callable, params: Any, tx: optax.GradientTransformation, **kwargs
  ) -> Self:
    """Creates a state at step 0 with ``opt_state = tx.init(params)``."""
    params_opt = params['params'] if _OVERWRITE in params else params
    return cls(
      step=0, apply_fn=apply_fn, params=params, tx=tx, opt_state=tx.init(params_opt), **kwargs
    )


class TrainStateWithCollections(TrainState):
  """A ``TrainState`` that also carries non-param collections such as ``batch_stats``.

  ``collections`` maps collection names to variables; ``apply`` calls ``apply_fn`` with
  ``{'params': ..., **collections}`` and ``update_collections`` stores what a mutable
  apply returned, so BatchNorm needs no ``TrainState`` subclass. The state dict is
  ``{'step', 'params', 'opt_state', 'collections'}``.

  Example (BatchNorm):

  >>> import jax, jax.numpy as jnp, optax
  >>> import flaxlike as nn
  >>> from flaxlike.training.train_state import TrainStateWithCollections
  >>> class Net(nn.Module):
  ...   @nn.compact
  ...   def __call__(self, x, train):
  ...     x = nn.Dense(3)(x)
  ...     return nn.BatchNorm(use_running_average=not train)(x)
  >>> x = jnp.ones((4, 2))
  >>> variables = Net().init(jax.random.PRNGKey(0), x, train=False)
  >>> state = TrainStateWithCollections.create(
  ...     apply_fn=Net().apply, params=variables['params'], tx=optax.adam(1e-3),
  ...     collections={'batch_stats': variables['batch_stats']})
  >>> @jax.jit
  ... def train_step(state, x):
  ...   def loss_fn(params):
  ...     y, updates = state.apply(x, train=True, params=params, mutable=['batch_stats'])
  ...     return jnp.mean(y ** 2), updates
  ...   grads, updates = jax.grad(loss_fn, has_aux=True)(state.params)
  ...   return state.apply_gradients(grads=grads).update_collections(updates)
  >>> state = train_step(state, x)
  >>> int(state.step), sorted(state.collections)
  (1, ['batch_stats'])
  >>> state.apply(x, train=False).shape  # evaluation uses the stored running stats
  (4, 3)
  """

  collections: Any = struct.field(pytree_node=True, default_factory=dict)

  def variables(self, params: Any = None) -> dict[str, Any]:
    """``{'params': params or self.params, **self.collections}``."""
    return {'params': self.params if params is None else params, **self.collections}

  def apply(self, *args, params: Any = None, **kwargs) -> Any:
    """Calls ``apply_fn(self.variables(params), *args, **kwargs)``.

    Pass ``params`` when differentiating with respect to them and
    ``mutable=['batch_stats']`` to get ``(output, updates)`` back.
    """
    return self.apply_fn(self.variables(params), *args, **kwargs)

  def update_collections(self, updates: Any) -> TrainStateWithCollections:
    """Returns a copy whose collections are replaced by those in ``updates`` (others
    are kept)."""
    return self.replace(collections={**self.collections, **dict(updates)})
