"""Dynamic loss scaling for low-precision (float16) gradients, as ``flax.training``.

In float16 small gradients underflow to zero. Multiplying the loss by a large ``scale``
before differentiating lifts them into range; the gradients are divided by the same
factor afterwards. ``DynamicScale`` adapts the factor during training: it halves it
whenever a gradient overflows to inf/nan and doubles it again after a run of finite
steps.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from flaxlike import struct

_F32_TINY = float(np.finfo(np.float32).tiny)
_F32_MAX = float(np.finfo(np.float32).max)


class DynamicScaleResult(NamedTuple):
  """What the function returned by ``DynamicScale.value_and_grad`` returns.

  Attributes:
    dynamic_scale: the updated ``DynamicScale`` to use for the next step.
    finite: scalar bool array, True when every gradient entry is finite.
    aux: the function's value, unscaled; ``(value, aux_output)`` when ``has_aux``.
    grad: the unscaled gradients, as float32.
  """

  dynamic_scale: DynamicScale
  finite: Any
  aux: Any
  grad: Any


class DynamicScale(struct.PyTreeNode):
  """Dynamic loss scale for mixed-precision training.

  ``value_and_grad`` differentiates ``scale * fun(...)``, divides the value and the
  gradients by ``scale`` and updates the scale:

  * all gradients finite: ``fin_steps`` counts up. A finite step taken when
    ``fin_steps == growth_interval`` (that is, after ``growth_interval`` finite steps in
    a row) multiplies ``scale`` by ``growth_factor`` (capped at the float32 maximum)
    and resets ``fin_steps`` to 0, exactly as Flax does.
  * some gradient inf or nan: ``scale`` is multiplied by ``backoff_factor``, but not
    below ``minimum_scale``, and ``fin_steps`` resets to 0. Skip the update for such a
    step, for example with ``jnp.where(finite, new, old)`` over the state.

  ``growth_factor``, ``backoff_factor``, ``growth_interval`` and ``minimum_scale`` are
  static (part of the tree structure); ``fin_steps`` and ``scale`` are pytree leaves,
  so the object can go through ``jax.jit`` and into a ``TrainState`` or a checkpoint.

  Attributes:
    growth_factor: factor applied to ``scale`` after a run of finite steps.
    backoff_factor: factor applied to ``scale`` after a non-finite step.
    growth_interval: how many finite steps in a row allow the next one to grow the scale.
    fin_steps: finite steps since the last growth or non-finite step.
    scale: the current loss scale.
    minimum_scale: lower bound for ``scale`` on backoff (default: the smallest normal
      float32); None for no bound.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.training.dynamic_scale import DynamicScale
  >>> def loss_fn(w, x):
  ...   return jnp.sum((x * w) ** 2)
  >>> w = jnp.array([1.0, 2.0], jnp.float16)
  >>> x = jnp.array([0.5, 0.25], jnp.float16)
  >>> ds = DynamicScale(growth_interval=1, scale=1024.0)
  >>> ds, finite, loss, grad = ds.value_and_grad(loss_fn)(w, x)
  >>> bool(finite), float(loss), grad.tolist()
  (True, 0.5, [0.5, 0.25])
  >>> int(ds.fin_steps), float(ds.scale)
  (1, 1024.0)
  >>> ds, finite, loss, grad = ds.value_and_grad(loss_fn)(w, x)  # grows the scale
  >>> int(ds.fin_steps), float(ds.scale)
  (0, 2048.0)
  >>> x_inf = jnp.array([jnp.inf, 1.0], jnp.float16)
  >>> ds, finite, _, _ = ds.value_and_grad(loss_fn)(w, x_inf)  # backs off
  >>> bool(finite), int(ds.fin_steps), float(ds.scale)
  (False, 0, 1024.0)
  """

  growth_factor: float = struct.field(pytree_node=False, default=2.0)
  backoff_factor: float = struct.field(pytree_node=False, default=0.5)
  growth_interval: int = struct.field(pytree_node=False, default=2000)
  fin_steps: Any = 0
  scale: Any = 65536.0
  minimum_scale: float | None = struct.field(pytree_node=False, default=_F32_TINY)

  def value_and_grad(
    self,
    fun: Callable[..., Any],
    argnums: int | Sequence[int] = 0,
    has_aux: bool = False,
    axis_name: str | None = None,
  ) -> Callable[..., DynamicScaleResult]:
    """Wraps ``fun`` like ``jax.value_and_grad``, with loss scaling.

    Args:
      fun: the function to differentiate; returns a scalar, or ``(scalar, aux)`` when
        ``has_aux``.
      argnums: which positional argument(s) to differentiate, as in ``jax.grad``.
      has_aux: ``fun`` returns ``(value, aux)``; only ``value`` is scaled.
      axis_name: if given, the gradients are averaged over this mapped axis
        (``lax.pmean``) before the finiteness check, so all replicas agree on it.

    Returns:
      A function with ``fun``'s signature returning ``DynamicScaleResult(dynamic_scale,
      finite, aux, grad)``: the updated scale, whether all gradients are finite, the
      unscaled value (with ``fun``'s aux output when ``has_aux``) and the unscaled
      float32 gradients.
    """

    def scaled_fun(*args):
      out = fun(*args)
      if has_aux:
        value, aux = out
        return self.scale * value, aux
      return self.scale * out

    grad_fn = jax.value_and_grad(scaled_fun, argnums=argnums, has_aux=has_aux)

    @functools.wraps(fun)
    def wrapper(*args) -> DynamicScaleResult:
      out, grad = grad_fn(*args)
      if has_aux:
        out = (out[0] / self.scale, out[1])
      else:
        out = out / self.scale
      grad = jax.tree_util.tree_map(lambda g: jnp.asarray(g, jnp.float32) / self.scale, grad)
      if axis_name is not None:
        grad = lax.pmean(grad, axis_name)
      finite = jnp.array(True)
      for g in jax.tree_util.tree_leaves(grad):
        finite &= jnp.all(jnp.isfinite(g))
      return DynamicScaleResult(self._updated(finite), finite, out, grad)

    return wrapper

  def _updated(self, finite: Any) -> DynamicScale:
    grow = self.fin_steps == self.growth_interval
    grown = jnp.minimum(self.scale * self.growth_factor, _F32_MAX)
    finite_scale = jnp.where(grow, grown, self.scale)
    backed_off = self.scale * self.backoff_factor
    if self.minimum_scale is not None:
      backed_off = jnp.maximum(backed_off, self.minimum_scale)
    scale = jnp.where(finite, finite_scale, backed_off).astype(jnp.float32)
    fin_steps = jnp.where(grow | ~finite, 0, self.fin_steps + 1)
    return self.replace(fin_steps=fin_steps, scale=scale)
