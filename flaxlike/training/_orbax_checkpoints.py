"""The Orbax side of ``flaxlike.training.checkpoints``: writing and reading one checkpoint.

A checkpoint written here is Flax's Orbax layout: a directory ``<ckpt_dir>/<prefix><step>``
written by ``orbax.checkpoint.Checkpointer(PyTreeCheckpointHandler(use_compression=False))``
(or by the checkpointer the caller passes). Flax's default compresses the array data with
zstd; ours stores it raw, which Flax reads as well (see ``default_save_checkpointer``).
Orbax writes into a temporary sibling directory and renames it when every process has
finished, so a crash leaves the previous checkpoints as they were. In a multi-process run
each process writes only the shards of its own devices; nothing is gathered. Everything around one checkpoint (which format a path is
in, the ``keep`` rules, errors for unreadable checkpoints) is decided in ``checkpoints``
for both formats alike.

Orbax is an optional dependency (``flaxlike[orbax]``). Nothing here imports it at module
import time, so ``import flaxlike`` stays free of it: ``import_orbax`` is called by the
functions that need it.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from flaxlike import serialization
from flaxlike.configurations import config
from flaxlike.serialization._state_dict import _KEY_MARKER

INSTALL_HINT = "pip install 'flaxlike[orbax]'"

_CheckNewStep = Callable[[str, Any], Any]
_local = threading.local()


def import_orbax() -> Any:
  """Returns the ``orbax.checkpoint`` module, or raises ImportError saying how to get it.

  Example:

  >>> from flaxlike.training import _orbax_checkpoints
  >>> _orbax_checkpoints.import_orbax().__name__
  'orbax.checkpoint'
  """
  try:
    # Imported on use: orbax-checkpoint is an optional dependency and slow to import.
    import orbax.checkpoint as ocp
  except ImportError as e:
    raise ImportError(
      f'Orbax checkpointing needs the orbax-checkpoint package, which is not installed '
      f'({e}). Install it with {INSTALL_HINT}, or save in the msgpack format with '
      "flaxlike.config.update('flax_use_orbax_checkpointing', False)."
    ) from e
  return ocp


def orbax_available() -> bool:
  """Whether orbax-checkpoint is installed (and not hidden), without importing it.

  Example:

  >>> from flaxlike.training import _orbax_checkpoints
  >>> _orbax_checkpoints.orbax_available()
  True
  """
  try:
    return importlib.util.find_spec('orbax.checkpoint') is not None
  except (ImportError, ValueError):  # a parent package is missing or hidden
    return False


def use_orbax(orbax_checkpointer: Any = None) -> bool:
  """Whether a save goes through Orbax.

  It does when a checkpointer is given, or when the ``flax_use_orbax_checkpointing`` flag
  is on (the default) and orbax-checkpoint is installed; otherwise saves use the msgpack
  file format.
  """
  if orbax_checkpointer is not None:
    return True
  if getattr(_local, 'force_msgpack', False):
    return False
  return bool(config.flax_use_orbax_checkpointing) and orbax_available()


@contextlib.contextmanager
def msgpack_format() -> Iterator[None]:
  """Saves in this thread use the msgpack format while the block runs.

  A background msgpack write must not switch format because the global flag changed
  after the save was requested; a thread-local override, so other threads keep the flag.
  """
  previous = getattr(_local, 'force_msgpack', False)
  _local.force_msgpack = True
  try:
    yield
  finally:
    _local.force_msgpack = previous


# Async checkpointers whose pending write the interpreter waits for at exit. Weak, so a
# checkpointer the program dropped is not kept alive only for this.
_pending: weakref.WeakSet = weakref.WeakSet()
_pending_lock = threading.Lock()
_atexit_registered = False


def _wait_for_pending_saves() -> None:
  for checkpointer in list(_pending):
    checkpointer.wait_until_finished()


def _track_async(checkpointer: Any) -> None:
  global _atexit_registered
  with _pending_lock:
    _pending.add(checkpointer)
    if not _atexit_registered:
      # Orbax finishes a write on thread pools. At interpreter exit, concurrent.futures
      # stops its pools from a threading-shutdown hook that runs before any `atexit`
      # function, and the write then hangs on work it can no longer schedule. Hooks of
      # this kind run last-registered first, so waiting here (registered after Orbax
      # imported concurrent.futures) lets the write finish while the pools still work.
      register = getattr(threading, '_register_atexit', atexit.register)
      register(_wait_for_pending_saves)
      _atexit_registered = True


def _is_async(ocp: Any, checkpointer: Any) -> bool:
  return isinstance(checkpointer, ocp.AsyncCheckpointer)


def default_save_checkpointer(ocp: Any) -> Any:
  """The checkpointer a save uses when the caller passes none: Flax's, without compression.

  Flax's default ``PyTreeCheckpointHandler()`` compresses array chunks with zstd. For the
  float data of a model that saves a few percent of disk (8% on random float32) and costs
  most of the time of a save and of a restore on the CPU: in benchmarks/checkpoint.py (1 GB
  ``TrainState``, 2 cores) a restore read 0.92 GB of zstd chunks in 1.4-1.6 s and 1.0 GB of
  raw chunks in 0.6-0.7 s, and a synchronous save took 10.8 s against 5.8 s. The codec is
  recorded in each array's metadata, so Flax (and any Orbax reader) reads either kind.
  """
  return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_compression=False))


def _host_local_to_numpy(x: Any) -> Any:
  """A process-local ``jax.Array`` (a value every process holds its own copy of, such as
  an optimizer step count created outside ``jit``) as numpy; other leaves unchanged.

  Orbax refuses to save arrays that are not global in a multi-process run; as numpy they
  are written once, by process 0. Arrays that span processes are left to Orbax, which
  writes each process's shards from that process.
  """
  # Called in multi-process runs only, where "fully addressable" means process-local.
  if (
    isinstance(x, jax.Array)
    and x.is_fully_addressable
    and not jnp.issubdtype(x.dtype, jax.dtypes.extended)
  ):
    return np.asarray(x)
  return x


def save(
  ckpt_dir: str,
  target: Any,
  step: Any,
  prefix: str,
  overwrite: bool,
  orbax_checkpointer: Any,
  check_new_step: _CheckNewStep,
  multiprocess: bool,
) -> str:
  """Saves ``target`` as the Orbax checkpoint ``<ckpt_dir>/<prefix><step>``.

  ``check_new_step(path, step)`` raises when the step may not be saved (the caller's
  rule, the same for both formats). Every process of a multi-process run must call
  this; each writes its own shards and process 0 writes the metadata. Deleting old
  checkpoints is left to the caller.
  """
  ocp = import_orbax()
  path = os.path.join(ckpt_dir, f'{prefix}{step}')
  if orbax_checkpointer is None:
    orbax_checkpointer = default_save_checkpointer(ocp)
  elif _is_async(ocp, orbax_checkpointer):
    # The previous write must be committed before the directory is inspected or changed.
    orbax_checkpointer.wait_until_finished()
  if multiprocess:
    multihost_utils.sync_global_devices('flaxlike:checkpoint:start_save')
  is_leaf = jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(target))
  if is_leaf and not isinstance(
    getattr(orbax_checkpointer, 'handler', None), ocp.ArrayCheckpointHandler
  ):
    raise ValueError(
      'Orbax backend only accept pytree as save target. '
      f'Saving {type(target).__name__} to "{path}": wrap it in a dict ({{"value": x}}), '
      'or save in the msgpack format with '
      "flaxlike.config.update('flax_use_orbax_checkpointing', False)."
    )
  if jax.process_count() > 1:
    target = jax.tree_util.tree_map(_host_local_to_numpy, target)
  check_new_step(path, step)
  if multiprocess:
    # Every process has checked the directory before any of them changes it.
    multihost_utils.sync_global_devices('flaxlike:checkpoint:checked')
  # Orbax takes absolute paths only; the caller's spelling is what is returned.
  orbax_checkpointer.save(os.path.abspath(path), target, force=overwrite)
  if _is_async(ocp, orbax_checkpointer):
    _track_async(orbax_checkpointer)
  return path


def _raw_restore_args(ocp: Any, checkpointer: Any, path: str) -> Any:
  """Restore args for ``target=None``: arrays on this process's first device.

  Without them Orbax would re-create the saved shardings, which fails (or warns) when the
  checkpoint comes from another topology; numpy arrays and scalars come back as saved.
  """
  metadata = checkpointer.metadata(path)
  tree = getattr(metadata, 'item_metadata', metadata)
  tree = getattr(tree, 'tree', tree)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def args_for(m: Any) -> Any:
    # ScalarMetadata subclasses ArrayMetadata: Python scalars come back as Python scalars.
    if isinstance(m, ocp.metadata.ArrayMetadata) and not isinstance(m, ocp.metadata.ScalarMetadata):
      if m.sharding is None:
        return ocp.RestoreArgs(restore_type=np.ndarray)
      return ocp.ArrayRestoreArgs(sharding=device)
    return ocp.RestoreArgs()

  return jax.tree_util.tree_map(args_for, tree)


def restore(
  path: str,
  target: Any,
  orbax_checkpointer: Any = None,
  orbax_transforms: dict | None = None,
) -> Any:
  """Reads the Orbax checkpoint directory ``path`` as a state dict shaped by ``target``.

  Arrays of ``target`` that carry a sharding (``jax.Array``s, ``jax.ShapeDtypeStruct``s
  with ``sharding=``) are read straight into that sharding; with ``target=None`` the raw
  state dict comes back, arrays on this process's first device. The caller puts the
  state dict into ``target`` (``serialization.from_state_dict``).
  """
  ocp = import_orbax()
  path = os.path.abspath(path)  # Orbax takes absolute paths only
  if orbax_checkpointer is None:
    orbax_checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
  elif _is_async(ocp, orbax_checkpointer):
    orbax_checkpointer.wait_until_finished()
  handler = getattr(orbax_checkpointer, 'handler', None)
  is_pytree = isinstance(handler, ocp.PyTreeCheckpointHandler)
  kwargs: dict[str, Any] = {}
  if target is not None:
    # Imported on use: orbax_utils imports orbax-checkpoint, an optional dependency.
    from flaxlike.training import orbax_utils

    kwargs['restore_args'] = orbax_utils.restore_args_from_target(target)
    transforms = orbax_utils.maybe_construct_transformations(target, orbax_transforms)
    # An empty mapping means "restore every leaf as saved", which is what no transforms
    # do too, without Orbax's notice that its transformations API is being replaced.
    if is_pytree and transforms:
      kwargs['transforms'] = transforms
  elif is_pytree:
    kwargs['restore_args'] = _raw_restore_args(ocp, orbax_checkpointer, path)
  restored = orbax_checkpointer.restore(path, item=target, **kwargs)
  state = serialization.to_state_dict(restored)
  # Orbax stores typed PRNG keys natively, and Flax's raw restore hands them back as keys;
  # the state dict spells them as key dicts, so turn those back (a target does it itself).
  return _typed_keys(state) if target is None else state


def _key_text(path: tuple) -> str:
  """A key path as ``params/Dense_0/kernel``: dict keys, attribute names and list indices
  alike, which is how the same leaf is named in a target and in Orbax's metadata tree."""
  return jax.tree_util.keystr(path, simple=True, separator='/')


def _array_shape(x: Any) -> tuple | None:
  """The shape of an array leaf, or None where shapes are not compared (typed PRNG keys
  are stored with their key data's shape, scalars and other leaves have none)."""
  shape, dtype = getattr(x, 'shape', None), getattr(x, 'dtype', None)
  if shape is None or dtype is None:
    return None
  try:
    if jnp.issubdtype(dtype, jax.dtypes.extended):
      return None
  except TypeError:  # a dtype numpy does not know
    return None
  return tuple(shape)


def tree_mismatch(path: str, target: Any, orbax_checkpointer: Any = None) -> dict | None:
  """How ``target``'s tree differs from the checkpoint's, or None when it matches.

  Called after Orbax failed to restore ``path`` into ``target``, to tell a target that
  does not fit (the caller's mistake) from files that cannot be read (corruption).
  Compares the leaf paths and array shapes of ``target`` with the checkpoint's metadata;
  a ``None`` in the target stands for whatever the checkpoint holds there (Orbax keeps
  the saved value). Returns ``{'only_in_target': [...], 'only_in_checkpoint': [...],
  'shapes': [(key, target_shape, saved_shape), ...]}`` with the differences, or None when
  there are none or the metadata itself cannot be read (then the files are at fault).
  """
  ocp = import_orbax()
  checkpointer = orbax_checkpointer or default_save_checkpointer(ocp)
  try:
    metadata = checkpointer.metadata(os.path.abspath(path))
    tree = getattr(metadata, 'item_metadata', metadata)
    tree = getattr(tree, 'tree', tree)
    saved = {_key_text(p): m for p, m in jax.tree_util.tree_flatten_with_path(tree)[0]}
  except Exception:  # unreadable metadata: not a question of the target
    return None
  if not isinstance(tree, (dict, list, tuple)):
    return None
  leaves = jax.tree_util.tree_flatten_with_path(target, is_leaf=lambda x: x is None)[0]
  wanted = {_key_text(p): x for p, x in leaves}
  anything = [k for k, x in wanted.items() if x is None]

  def under_anything(key: str) -> bool:
    return any(key == k or key.startswith(k + '/') for k in anything)

  only_in_target = sorted(k for k, x in wanted.items() if x is not None and k not in saved)
  only_in_checkpoint = sorted(k for k in saved if k not in wanted and not under_anything(k))
  shapes = []
  for key in sorted(set(wanted) & set(saved)):
    mine, theirs = _array_shape(wanted[key]), _array_shape(saved[key])
    if mine is not None and theirs is not None and mine != theirs:
      shapes.append((key, mine, theirs))
  if not (only_in_target or only_in_checkpoint or shapes):
    return None
  return {
    'only_in_target': only_in_target,
    'only_in_checkpoint': only_in_checkpoint,
    'shapes': shapes,
  }


def _typed_keys(state: Any) -> Any:
  if type(state) is not dict:
    return state
  if _KEY_MARKER in state:
    # A leaf target: the key dict names its own implementation.
    return serialization.from_state_dict(None, state)
  return {k: _typed_keys(v) for k, v in state.items()}
