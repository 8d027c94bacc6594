"""Multi-device helpers of the ``jax.pmap`` era, with Flax's ``flax.jax_utils`` names.

``replicate`` puts one copy of a pytree on every local device (a leading device axis, as
``jax.pmap`` expects it), ``unreplicate`` takes the first copy back, ``prefetch_to_device``
keeps a few batches already sharded on the devices, and ``pad_shard_unpad`` lets a pmapped
function take a batch whose size the device count does not divide. ``scan_in_dim`` scans
over any axes, and ``partial_eval_by_shape`` evaluates what a function computes without
its inputs. New code can use ``jax.jit`` with ``jax.sharding`` instead: see
``docs/pmap_to_sharding.md``.

Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike import jax_utils
  >>> state = {'w': jnp.ones((2,))}
  >>> replicated = jax_utils.replicate(state)
  >>> replicated['w'].shape == (jax.local_device_count(), 2)
  True
  >>> jax_utils.unreplicate(replicated)['w']
  Array([1., 1.], dtype=float32)
"""

from __future__ import annotations

import collections
import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from flaxlike.core import partial_eval

__all__ = [
  'replicate',
  'unreplicate',
  'pmean',
  'partial_eval_by_shape',
  'prefetch_to_device',
  'scan_in_dim',
  'pad_shard_unpad',
]

# Flax's default axis name for the one-axis mesh that lays the copies out over the devices.
_DEFAULT_AXIS_NAME = '_device_put_sharded'


def _device_axis_sharding(devices: Sequence[Any], axis_name: str) -> jax.sharding.NamedSharding:
  """Splits the leading axis over ``devices``, one row per device (``jax.pmap``'s layout)."""
  mesh = jax.sharding.Mesh(np.array(list(devices)), (axis_name,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis_name))


def replicate(
  tree: Any, devices: Sequence[Any] | None = None, axis_name: str = _DEFAULT_AXIS_NAME
) -> Any:
  """Copies every array of ``tree`` to each device, stacked along a new leading axis.

  The result is what ``jax.pmap`` expects of a replicated argument (row ``i`` lives on
  device ``i``); it replaces ``jax.device_put_replicated``, which JAX removed. Each device
  receives its copy directly: no ``len(devices)``-fold copy is built in host memory.

  Args:
    tree: a pytree of arrays or scalars.
    devices: the devices to copy to (default: ``jax.local_devices()``, the order
      ``jax.pmap`` uses).
    axis_name: the name of the one-axis mesh the result is laid out on.

  Returns:
    The pytree with every leaf of shape ``(len(devices), *leaf.shape)``.

  Example:

    >>> import jax, jax.numpy as jnp
    >>> from flaxlike import jax_utils
    >>> x = jax_utils.replicate(jnp.arange(3.0), devices=jax.local_devices()[:2])
    >>> x.shape, [shard.device.id for shard in x.addressable_shards]
    ((2, 3), [0, 1])
  """
  devices = list(devices) if devices else jax.local_devices()
  sharding = _device_axis_sharding(devices, axis_name)

  def replicate_leaf(x):
    x = x if isinstance(x, jax.Array) else np.asarray(x)
    copies = [jax.device_put(x[None], device) for device in devices]
    return jax.make_array_from_single_device_arrays((len(devices), *x.shape), sharding, copies)

  return jax.tree_util.tree_map(replicate_leaf, tree)


def unreplicate(tree: Any) -> Any:
  """Returns the first copy of a replicated pytree (row 0 of each leaf's leading axis).

  The row is read from the device that holds it, so a sharded array is not gathered
  first. Scalars (0-d leaves) are returned unchanged.

  Args:
    tree: a pytree of arrays with a leading device axis, e.g. from ``replicate`` or the
      output of a ``jax.pmap``-ed function.

  Returns:
    The pytree without the leading axis.

  Example:

    >>> import jax.numpy as jnp
    >>> from flaxlike import jax_utils
    >>> jax_utils.unreplicate({'step': jnp.array([3, 3]), 'scale': jnp.array(2.0)})
    {'scale': Array(2., dtype=float32, weak_type=True), 'step': Array(3, dtype=int32)}
  """

  def first_copy(x):
    if getattr(x, 'ndim', None) == 0:
      return x
    sharding = getattr(x, 'sharding', None)
    if sharding is None or len(sharding.device_set) == 1:
      return x[0]
    for shard in x.addressable_shards:
      start = shard.index[0].start if shard.index else 0
      if not start:  # this shard holds row 0 (``None`` or 0)
        return shard.data[0]
    # Row 0 lives on another process's device: gathering is the only way to read it.
    return x[0]

  return jax.tree_util.tree_map(first_copy, tree)


def pmean(xs: Any, axis_name: Any) -> Any:
  """Deprecated alias of ``jax.lax.pmean`` (warns with ``DeprecationWarning``, as in Flax).

  Args:
    xs: a pytree of arrays.
    axis_name: the mapped axis to average over.

  Returns:
    ``jax.lax.pmean(xs, axis_name)``.

  Example:

    >>> import warnings, jax, jax.numpy as jnp
    >>> from flaxlike import jax_utils
    >>> with warnings.catch_warnings():
    ...   warnings.simplefilter('ignore', DeprecationWarning)
    ...   out = jax.vmap(lambda x: jax_utils.pmean(x, 'i'), axis_name='i')(jnp.arange(4.0))
    >>> out
    Array([1.5, 1.5, 1.5, 1.5], dtype=float32)
  """
  warnings.warn('use jax.lax.pmean instead', DeprecationWarning, stacklevel=2)
  return lax.pmean(xs, axis_name)


def _parse_spec(spec: Any) -> jax.ShapeDtypeStruct:
  """``shape`` or ``(shape, dtype)`` as a ``ShapeDtypeStruct`` (float32 by default)."""
  spec = tuple(spec)
  if len(spec) == 2 and isinstance(spec[0], Iterable):
    return jax.ShapeDtypeStruct(tuple(spec[0]), spec[1])
  return jax.ShapeDtypeStruct(spec, jnp.float32)


def partial_eval_by_shape(fn: Callable[..., Any], input_spec: Iterable[Any], *args, **kwargs):
  """Evaluates ``fn`` on abstract inputs, computing every output that does not need them.

  Like ``jax.eval_shape``, but an output that can be computed without the inputs' values
  (a parameter drawn from a fixed PRNG key, a constant) is returned as a concrete array;
  only the outputs that depend on the inputs become ``jax.ShapeDtypeStruct``.

  Args:
    fn: the function; called as ``fn(*inputs, *args, **kwargs)``.
    input_spec: one ``shape`` or ``(shape, dtype)`` per input (dtype float32 if omitted).
    *args: further positional arguments, passed as they are.
    **kwargs: keyword arguments, passed as they are.

  Returns:
    ``fn``'s output tree with concrete arrays where known and shape structs elsewhere.

  Example:

    >>> import jax, jax.numpy as jnp
    >>> from flaxlike import jax_utils
    >>> def f(x, scale):
    ...   return {'y': x * scale, 'bias': jnp.full((2,), scale, jnp.float32)}
    >>> jax_utils.partial_eval_by_shape(f, [((3, 2), jnp.float32)], 2.0)
    {'bias': Array([2., 2.], dtype=float32), 'y': ShapeDtypeStruct(shape=(3, 2), dtype=float32)}
  """
  input_structs = [_parse_spec(spec) for spec in input_spec]
  return partial_eval.evaluate_known(lambda *inputs: fn(*inputs, *args, **kwargs))(*input_structs)


def prefetch_to_device(
  iterator: Iterable[Any],
  size: int,
  devices: Sequence[Any] | None = None,
  axis_name: str = _DEFAULT_AXIS_NAME,
) -> Iterator[Any]:
  """Shards each batch over the devices and keeps ``size`` batches in flight.

  Transfers overlap with the training step that consumes the previous batch; this matters
  most on GPUs (2 is a good ``size`` there).

  Args:
    iterator: yields pytrees whose leaves have a leading axis of ``len(devices)``.
    size: how many batches to keep on the devices ahead of the consumer.
    devices: where to put the rows (default: ``jax.local_devices()``).
    axis_name: the name of the one-axis mesh the batches are laid out on.

  Yields:
    The batches, row ``i`` of every leaf on device ``i``.

  Example:

    >>> import jax, numpy as np
    >>> from flaxlike import jax_utils
    >>> n = jax.local_device_count()
    >>> batches = (np.full((n, 2), i) for i in range(3))
    >>> [int(b[0, 0]) for b in jax_utils.prefetch_to_device(batches, size=2)]
    [0, 1, 2]
  """
  queue: collections.deque[Any] = collections.deque()
  devices = jax.local_devices() if devices is None else list(devices)
  sharding = _device_axis_sharding(devices, axis_name)

  def put(x):
    if np.ndim(x) == 0 or np.shape(x)[0] != len(devices):
      raise ValueError(
        f'prefetch_to_device: every array of a batch needs a leading axis of '
        f'{len(devices)} (one row per device), got shape {np.shape(x)}. Reshape the batch '
        f'to (num_devices, per_device_batch, ...) first, e.g. with '
        f'flaxlike.training.common_utils.shard.'
      )
    return jax.device_put(x, sharding)

  def enqueue(n):  # adds up to n batches; fewer when the iterator ends
    for data in itertools.islice(iterator, n):
      queue.append(jax.tree_util.tree_map(put, data))

  iterator = iter(iterator)
  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)


def _invert_permutation(perm: Sequence[int]) -> tuple[int, ...]:
  inverse = [0] * len(perm)
  for i, j in enumerate(perm):
    inverse[j] = i
  return tuple(inverse)


def _scan_nested(body_fn, init, xs, unroll: tuple[int, ...]):
  """An n-dimensional scan as n nested ``lax.scan``s (one per entry of ``unroll``)."""
  if len(unroll) == 1:
    return lax.scan(body_fn, init, xs, unroll=unroll[0])
  inner = lambda c, x: _scan_nested(body_fn, c, x, unroll[1:])
  return lax.scan(inner, init, xs, unroll=unroll[0])


def scan_in_dim(
  body_fn: Callable[[Any, Any], tuple[Any, Any]],
  init: Any,
  xs: Any,
  axis: int | Sequence[int] = (0,),
  unroll: int | Sequence[int] = (1,),
  keepdims: bool = False,
) -> tuple[Any, Any]:
  """``jax.lax.scan`` over one or more axes of ``xs`` instead of the leading one.

  With several axes the scan runs over all index combinations, the last axis innermost.
  ``unroll`` is left-padded with ones to one entry per axis, so ``unroll=5`` unrolls the
  innermost loop only.

  Args:
    body_fn: ``(carry, x) -> (carry, y)``.
    init: the initial carry.
    xs: a pytree of arrays to scan over.
    axis: the axis or axes to scan over.
    unroll: loop iterations to unroll per axis, innermost last.
    keepdims: if True, ``body_fn`` sees ``x`` and returns ``y`` with the scanned axes kept
      at size 1 in place; otherwise they are removed.

  Returns:
    ``(final carry, ys)``, where each ``y`` is stacked back along ``axis``.

  Example:

    >>> import jax.numpy as jnp
    >>> from flaxlike import jax_utils
    >>> xs = jnp.arange(6.0).reshape(2, 3)
    >>> carry, ys = jax_utils.scan_in_dim(lambda c, x: (c + x, c + x), jnp.zeros(2), xs, axis=1)
    >>> carry, ys
    (Array([ 3., 12.], dtype=float32), Array([[ 0.,  1.,  3.],
           [ 3.,  7., 12.]], dtype=float32))
  """
  axes = tuple(axis) if isinstance(axis, Iterable) else (axis,)
  unrolls = tuple(unroll) if isinstance(unroll, Iterable) else (unroll,)
  unrolls = (1,) * (len(axes) - len(unrolls)) + unrolls

  def scanned_first(x):  # the scanned axes to the front, in the order given
    return x.transpose(axes + tuple(np.delete(np.arange(x.ndim), axes)))

  def scanned_back(x):
    return x.transpose(_invert_permutation(axes + tuple(np.delete(np.arange(x.ndim), axes))))

  def body(c, x):
    if keepdims:
      x = jax.tree_util.tree_map(lambda a: scanned_back(a.reshape((1,) * len(axes) + a.shape)), x)
    c, y = body_fn(c, x)
    if keepdims:
      y = jax.tree_util.tree_map(scanned_first, y)
      y = jax.tree_util.tree_map(lambda a: a.reshape(a.shape[len(axes) :]), y)
    return c, y

  # keepdims=False: the body's outputs carry no scanned axes, so they come back stacked at
  # the front and are moved to ``axis`` the same way.
  c, ys = _scan_nested(body, init, jax.tree_util.tree_map(scanned_first, xs), unrolls)
  return c, jax.tree_util.tree_map(scanned_back, ys)


def pad_shard_unpad(
  wrapped: Callable[..., Any],
  static_argnums: Sequence[int] = (0,),
  static_argnames: Sequence[str] = (),
  static_return: bool = False,
) -> Callable[..., Any]:
  """Wraps a pmapped function so that any batch size works: pad, shard, call, unpad.

  The batch arguments are padded with zeros to a multiple of the local device count and
  reshaped to ``(devices, per_device_batch, ...)``; the outputs are fetched to the host,
  reshaped back and cut to the original batch size. Padding happens in host memory.

  Args:
    wrapped: the function, usually ``jax.pmap``-ed, e.g. ``f(params, batch)``.
    static_argnums: positional arguments passed through unpadded (default: the first,
      the parameters).
    static_argnames: keyword arguments passed through unpadded.
    static_return: return the outputs as they are (e.g. metrics already reduced over the
      devices) instead of unsharding and unpadding them.

  Returns:
    The wrapped function. It takes one more keyword argument, ``min_device_batch``: pad
    each device's batch to at least this size, so the last, smaller batch does not cause
    a recompile.

  Example:

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from flaxlike import jax_utils
    >>> scale = jax_utils.pad_shard_unpad(jax.pmap(lambda w, x: w * x, in_axes=(None, 0)))
    >>> scale(3.0, np.arange(5.0))  # 5 rows on any number of devices
    array([ 0.,  3.,  6.,  9., 12.], dtype=float32)
  """

  def pad_shard_unpad_wrapper(*args, min_device_batch: int | None = None, **kw):
    num_devices = jax.local_device_count()
    batch_sizes = {}  # batch size -> the first argument that has it, for the error
    for where, tree in [
      (f'argument {i}', a) for i, a in enumerate(args) if i not in static_argnums
    ]:
      for leaf in jax.tree_util.tree_leaves(tree):
        batch_sizes.setdefault(_batch_size(leaf, where), where)
    for k, v in kw.items():
      if k not in static_argnames:
        for leaf in jax.tree_util.tree_leaves(v):
          batch_sizes.setdefault(_batch_size(leaf, f'argument {k!r}'), f'argument {k!r}')
    if len(batch_sizes) != 1:
      raise ValueError(
        f'Inconsistent batch-sizes: {set(batch_sizes)} (first seen in '
        f'{", ".join(f"{w}: {b}" for b, w in batch_sizes.items())}). pad_shard_unpad needs '
        f'the same leading axis on every non-static argument; list the others in '
        f'static_argnums/static_argnames.'
      )
    (batch,) = batch_sizes

    def pad(x):
      per_device, rest = divmod(batch, num_devices)
      per_device += bool(rest)
      if min_device_batch:
        per_device = max(per_device, min_device_batch)
      x = np.asarray(x)
      missing = per_device * num_devices - batch
      if missing:
        x = np.concatenate([x, np.zeros((missing, *x.shape[1:]), x.dtype)])
      return x.reshape(num_devices, per_device, *x.shape[1:])

    args = [
      a if i in static_argnums else jax.tree_util.tree_map(pad, a) for i, a in enumerate(args)
    ]
    kw = {k: v if k in static_argnames else jax.tree_util.tree_map(pad, v) for k, v in kw.items()}
    out = wrapped(*args, **kw)
    if static_return:
      return out

    def unpad(x):
      # Fetched first, then cut: the device sees one output shape per padded size.
      x = jax.device_get(x)
      return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])[:batch]

    return jax.tree_util.tree_map(unpad, out)

  return pad_shard_unpad_wrapper


def _batch_size(leaf: Any, where: str) -> int:
  shape = np.shape(leaf)
  if not shape:
    raise ValueError(
      f'pad_shard_unpad: {where} has a scalar leaf, which has no batch axis to pad. Pass '
      f'it through unchanged by listing it in static_argnums or static_argnames.'
    )
  return shape[0]
