"""The Orbax side of ``flaxlike.training.checkpoints``: save, restore and detect.

A checkpoint written here is Flax's Orbax layout: a directory ``<ckpt_dir>/<prefix><step>``
written by ``orbax.checkpoint.Checkpointer(PyTreeCheckpointHandler())`` (or by the
checkpointer the caller passes). Orbax writes into a temporary sibling directory and
renames it when every process has finished, so a crash leaves the previous checkpoints
as they were. In a multi-process run each process writes only the shards of its own
devices; nothing is gathered.

Orbax is an optional dependency (``flaxlike[orbax]``). Nothing here imports it at module
import time, so ``import flaxlike`` stays free of it: ``import_orbax`` is called by the
functions that need it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from flaxlike import errors, serialization
from flaxlike.configurations import config

# Files whose presence marks a directory as an Orbax checkpoint (one is enough), as in
# Flax: the legacy single 'checkpoint' file, the PyTree metadata and the OCDBT manifest.
ORBAX_MARKERS = ('checkpoint', '_METADATA', 'manifest.ocdbt')

INSTALL_HINT = "pip install 'flaxlike[orbax]'"

_Listing = Callable[[str, str], list[tuple[Any, str]]]
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
  """Whether orbax-checkpoint can be imported."""
  try:
    import_orbax()
  except ImportError:
    return False
  return True


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


def is_orbax_checkpoint(path: str | os.PathLike) -> bool:
  """Whether ``path`` is a directory holding an Orbax checkpoint.

  Example:

  >>> import tempfile
  >>> from flaxlike.training import _orbax_checkpoints
  >>> _orbax_checkpoints.is_orbax_checkpoint(tempfile.mkdtemp())
  False
  """
  path = os.fspath(path)
  return os.path.isdir(path) and any(
    os.path.exists(os.path.join(path, marker)) for marker in ORBAX_MARKERS
  )


def _remove(path: str) -> None:
  try:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
  except FileNotFoundError:
    # Another process (or a concurrent clean-up) removed it first: the goal is reached.
    pass


def prune(
  found: list[tuple[Any, str]],
  path: str,
  step: Any,
  keep: int,
  overwrite: bool,
  keep_every_n_steps: int | None,
) -> None:
  """Deletes checkpoints (files or directories) as Flax's ``keep`` rules say.

  Args:
    found: ``(step, path)`` of every checkpoint in the directory, oldest first.
    path: the checkpoint just saved.
    step: its step.
    keep: how many of the newest checkpoints stay.
    overwrite: the save replaced newer checkpoints: delete every step above ``step``.
    keep_every_n_steps: also keep one older checkpoint every this many steps.
  """
  if overwrite:
    for s, p in found:
      if s > step and p != path:
        _remove(p)
    found = [(s, p) for s, p in found if s <= step or p == path]
  if len(found) <= keep:
    return
  last_kept = -float('inf')
  for s, p in found[: len(found) - keep]:
    if keep_every_n_steps and s - last_kept >= keep_every_n_steps:
      last_kept = s
      continue
    _remove(p)


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
    and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended)
  ):
    return np.asarray(x)
  return x


def save(
  ckpt_dir: str,
  target: Any,
  step: Any,
  prefix: str,
  keep: int,
  overwrite: bool,
  keep_every_n_steps: int | None,
  orbax_checkpointer: Any,
  list_checkpoints: _Listing,
  multiprocess: bool,
) -> str:
  """Saves ``target`` as the Orbax checkpoint ``<ckpt_dir>/<prefix><step>``.

  ``list_checkpoints(ckpt_dir, prefix)`` lists the directory's checkpoints, oldest first
  (the caller's listing, so both formats are counted by the same rules). Every process
  of a multi-process run must call this; each writes its own shards, process 0 writes
  the metadata and deletes old checkpoints.
  """
  ocp = import_orbax()
  path = os.path.join(ckpt_dir, f'{prefix}{step}')
  if orbax_checkpointer is None:
    orbax_checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
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
  found = list_checkpoints(ckpt_dir, prefix)
  if not overwrite:
    if os.path.exists(path):
      raise errors.AlreadyExistsError(path)
    if found and found[-1][0] > step:
      raise errors.InvalidCheckpointError(path, step)
  if multiprocess:
    # Every process has checked the directory before any of them changes it.
    multihost_utils.sync_global_devices('flaxlike:checkpoint:checked')
  # Orbax takes absolute paths only; the caller's spelling is what is returned.
  orbax_checkpointer.save(os.path.abspath(path), target, force=overwrite)
  if _is_async(ocp, orbax_checkpointer):
    _track_async(orbax_checkpointer)
  if jax.process_index() == 0:
    # An async save is not committed yet: its temporary directory is not listed, so the
    # `keep` newest committed checkpoints stay until it is, as in Flax.
    prune(list_checkpoints(ckpt_dir, prefix), path, step, keep, overwrite, keep_every_n_steps)
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
  strict: bool = False,
) -> Any:
  """Restores the Orbax checkpoint directory ``path`` into ``target``.

  Arrays of ``target`` that carry a sharding (``jax.Array``s, ``jax.ShapeDtypeStruct``s
  with ``sharding=``) are read straight into that sharding; with ``target=None`` the raw
  state dict comes back, arrays on this process's first device.
  """
  try:
    ocp = import_orbax()
  except ImportError as e:
    raise ImportError(
      f'"{path}" is an Orbax checkpoint (a directory with '
      f'{" / ".join(m for m in ORBAX_MARKERS if os.path.exists(os.path.join(path, m)))}) '
      f'and orbax-checkpoint is not installed. Install it with {INSTALL_HINT}.'
    ) from e
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
  restored = serialization.to_state_dict(restored)
  if target is None:
    return restored
  return serialization.from_state_dict(target, restored, strict=strict)
