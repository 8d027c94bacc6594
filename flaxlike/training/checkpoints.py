"""Checkpoints in Flax's layouts: Orbax directories and single-file msgpack checkpoints.

Which format a save writes follows Flax 0.12: with orbax-checkpoint installed
(``flaxlike[orbax]``) and the ``flax_use_orbax_checkpointing`` flag on (its default), or
when an ``orbax_checkpointer`` is passed, the checkpoint is the Orbax directory
``<ckpt_dir>/<prefix><step>`` that Linen writes (see ``_orbax_checkpoints``). Otherwise it is
Flax's legacy msgpack file, described below. Restores read either format, whatever the
flag says.

A msgpack checkpoint is the file ``<ckpt_dir>/<prefix><step>`` holding exactly
``serialization.to_bytes(target)``, so Flax restores ours and we restore Flax's. Beside it,
``save_checkpoint`` writes ``.<prefix><step>.sha256`` (``sha256sum`` format) and
``restore_checkpoint`` checks it, so bytes that changed on storage are caught even when
they still decode. Flax lists only names that start with the prefix, so it never mistakes
the hidden digest file for a checkpoint; a checkpoint without a digest file (written by
Flax) restores unverified.

Writes are atomic: the bytes go to hidden temporary files in the same directory
(``.<prefix>tmp-*``), which are flushed and fsynced, then renamed over the final names with
``os.replace``, and the directory is fsynced. A crash at any moment leaves the previous
checkpoints intact and never a partial file under a checkpoint name; leftover temporary
files are ignored by every reader and removed by the next ``save_checkpoint``.

In a multi-process run every process calls ``save_checkpoint``: arrays that are not fully
addressable are first gathered to host memory on every process (a collective), then only
process 0 writes, as in Flax. Only one job should save into a directory at a time.

Orbax checkpoints are written the Orbax way instead: into a temporary sibling directory
renamed when every process has finished, each process writing only its own shards.
Deleting old checkpoints (``keep``, ``keep_every_n_steps``, ``overwrite``) follows the same
rules, and the same warnings, for both formats, counting checkpoints of both layouts.

Which reader handles a path is decided in one place, ``_reader_for``: a checkpoint that
exists but cannot be read with what is installed (an Orbax directory without
``orbax-checkpoint``, an unknown layout, another file format) raises
``CheckpointFormatError``, never a silent fresh start.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from flaxlike import errors, serialization
from flaxlike.training import _orbax_checkpoints
from flaxlike.training._checkpoint_files import (
  _DIGEST_SUFFIX,
  _MAX_LISTINGS,
  _TMP_TAG,
  _checkpoint_layout,
  _checkpoints,
  _digest_path,
  _discard_temps,
  _fsync_dir,
  _has_gda_placeholder,
  _HashingReader,
  _HashingWriter,
  _is_single_checkpoint_dir,
  _new_temp,
  _step_of,
)

_NUM_RE = re.compile(r'([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)')
_UNSIGNED_NUM_RE = re.compile(r'((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)')
_ORBAX_INSTALL = f'Reading it needs orbax-checkpoint: {_orbax_checkpoints.INSTALL_HINT}.'


def natural_sort(file_list: Iterable[str], signed: bool = True) -> list[str]:
  """Sorts strings so that embedded numbers compare as numbers.

  Example:

  >>> from flaxlike.training import checkpoints
  >>> checkpoints.natural_sort(['ckpt_10', 'ckpt_9', 'ckpt_1.5'])
  ['ckpt_1.5', 'ckpt_9', 'ckpt_10']
  """
  num_re = _NUM_RE if signed else _UNSIGNED_NUM_RE

  def key(s: str):
    # re.split with one group alternates text, number, text, ...: compare position by
    # position with numbers as floats.
    parts = num_re.split(s)
    return [float(p) if i % 2 else p for i, p in enumerate(parts)]

  return sorted(file_list, key=key)


#################################################
# Listing
#################################################


def available_steps(
  ckpt_dir: str, prefix: str = 'checkpoint_', step_type: Callable[[str], Any] = int
) -> list[Any]:
  """Steps of the checkpoints in ``ckpt_dir`` (files and Orbax directories), ascending.

  Example:

  >>> import tempfile
  >>> from flaxlike.training import checkpoints
  >>> d = tempfile.mkdtemp()
  >>> for step in (1, 2, 10):
  ...   _ = checkpoints.save_checkpoint(d, {'x': step}, step, keep=5)
  >>> checkpoints.available_steps(d)
  [1, 2, 10]
  """
  return [step_type(s) for s, _ in _checkpoints(os.fspath(ckpt_dir), prefix)]


def latest_checkpoint(ckpt_dir: str, prefix: str = 'checkpoint_') -> str | None:
  """Path of the checkpoint with the highest step, or None if there is none.

  Both layouts count, as in Flax: msgpack files and Orbax checkpoint directories named
  ``<prefix><step>``.

  Example:

  >>> import os, tempfile
  >>> from flaxlike.training import checkpoints
  >>> d = tempfile.mkdtemp()
  >>> _ = checkpoints.save_checkpoint(d, {'x': 1}, step=1)
  >>> os.path.basename(checkpoints.latest_checkpoint(d))
  'checkpoint_1'
  """
  found = _checkpoints(os.fspath(ckpt_dir), prefix)
  return found[-1][1] if found else None


#################################################
# Saving
#################################################


def _write_checkpoint(path: str, target: Any, prefix: str) -> list[str]:
  """Atomically writes ``to_bytes(target)`` to ``path`` and its digest file beside it.

  Order: both files are written to temporary names and fsynced; an existing digest at
  ``path`` is removed (so an old digest never pairs with new bytes); the checkpoint is
  renamed into place; then its digest. A crash between the two renames leaves a complete
  checkpoint without a digest, which restores unverified, never one that looks corrupt.

  Returns:
    Problems that did not stop the save (the digest could not be committed), for the
    caller's warning. Errors before the checkpoint is committed propagate, after the
    temporary files are removed.
  """
  ckpt_dir = os.path.dirname(path)
  digest_path = _digest_path(path)
  temps: list[str] = []
  try:
    fd, tmp = _new_temp(ckpt_dir, prefix)
    temps.append(tmp)
    with os.fdopen(fd, 'wb') as f:
      hashing = _HashingWriter(f)
      serialization.write_bytes(hashing, target)
      f.flush()
      os.fsync(f.fileno())
    fd, tmp_digest = _new_temp(ckpt_dir, prefix)
    temps.append(tmp_digest)
    with os.fdopen(fd, 'w') as f:
      f.write(f'{hashing.hash.hexdigest()}  {os.path.basename(path)}\n')
      f.flush()
      os.fsync(f.fileno())
    if os.path.lexists(digest_path):  # never let the old digest pair with the new bytes
      os.remove(digest_path)
    if os.path.isdir(path):  # overwrite=True over an Orbax checkpoint of this step
      shutil.rmtree(path)
    os.replace(tmp, path)
    temps.remove(tmp)
  except BaseException as e:
    _discard_temps(temps, e)
    raise
  problems = []
  try:
    os.replace(tmp_digest, digest_path)
  except OSError as e:
    problems.append(
      f'digest "{digest_path}" not written ({e!r}); the checkpoint restores unverified'
    )
    _discard_temps([tmp_digest], e)
  _fsync_dir(ckpt_dir)
  return problems


def _remove_checkpoint(path: str, problems: list[str]) -> None:
  """Deletes a checkpoint (file or Orbax directory), then its digest file."""
  try:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
  except FileNotFoundError:
    pass
  except OSError as e:
    problems.append(f'"{path}" ({e!r})')
    return  # keep the digest: the checkpoint is still there
  try:
    os.remove(_digest_path(path))
  except FileNotFoundError:
    pass
  except OSError as e:
    problems.append(f'"{_digest_path(path)}" ({e!r})')


def _tidy_directory(ckpt_dir: str, prefix: str, problems: list[str]) -> None:
  """Removes leftover temporary files and digests whose checkpoint is gone."""
  try:
    names = os.listdir(ckpt_dir)
  except OSError as e:
    problems.append(f'"{ckpt_dir}" could not be listed ({e!r})')
    return
  for name in names:
    stale = name.startswith(f'.{prefix}{_TMP_TAG}')
    if not stale and name.startswith('.') and name.endswith(_DIGEST_SUFFIX):
      ckpt_name = name[1 : -len(_DIGEST_SUFFIX)]
      stale = _step_of(ckpt_name, prefix) is not None and not os.path.exists(
        os.path.join(ckpt_dir, ckpt_name)
      )
    if stale:
      try:
        os.remove(os.path.join(ckpt_dir, name))
      except FileNotFoundError:
        pass
      except OSError as e:
        problems.append(f'"{os.path.join(ckpt_dir, name)}" ({e!r})')


def _remove_outdated(
  ckpt_dir: str, prefix: str, keep: int, keep_every_n_steps: int | None, problems: list[str]
) -> None:
  """Deletes the checkpoints beyond the newest ``keep`` (keeping one per
  ``keep_every_n_steps``); failures go to ``problems``, never raise."""
  found = _checkpoints(ckpt_dir, prefix)
  if len(found) <= keep:
    return
  last_kept = -float('inf')
  # Flax's slice: keep=0 selects nothing, so it never deletes the checkpoint just saved.
  for step, path in found[:-keep]:
    if keep_every_n_steps and step - last_kept >= keep_every_n_steps:
      last_kept = step
      continue
    _remove_checkpoint(path, problems)


def _is_fully_addressable(x: jax.Array) -> bool:
  return x.is_fully_addressable


def _gather_leaf(x: Any) -> Any:
  if not isinstance(x, jax.Array) or jnp.issubdtype(x.dtype, jax.dtypes.extended):
    return x
  if _is_fully_addressable(x):
    return np.asarray(jax.device_get(x))
  # A collective: every process must reach this call for the same leaves, in order.
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _map_state(state: Any) -> Any:
  # Not tree_map: that sorts dict keys, and the file must keep the state dict's order.
  if isinstance(state, dict):
    return {k: _map_state(v) for k, v in state.items()}
  return _gather_leaf(state)


def gather_to_host(target: Any) -> dict[str, Any] | Any:
  """The state dict of ``target`` with every ``jax.Array`` copied to host numpy.

  Arrays that span devices of other processes (not fully addressable) are assembled
  with ``multihost_utils.process_allgather``, which is a collective: in a multi-process
  run every process must call this with the same structure. Other leaves, and key
  arrays, are kept as they are; the key order of the state dict is kept too, so
  ``to_bytes`` of the result equals ``to_bytes(target)``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  >>> from flaxlike.training import checkpoints
  >>> mesh = Mesh(jax.devices(), ('data',))
  >>> x = jax.device_put(jnp.arange(8.0), NamedSharding(mesh, P('data')))
  >>> checkpoints.gather_to_host({'x': x, 'step': 1})
  {'x': array([0., 1., 2., 3., 4., 5., 6., 7.], dtype=float32), 'step': 1}
  """
  return _map_state(serialization.to_state_dict(target))


def save_checkpoint(
  ckpt_dir: str | os.PathLike,
  target: Any,
  step: int | float,
  prefix: str = 'checkpoint_',
  keep: int = 1,
  overwrite: bool = False,
  keep_every_n_steps: int | None = None,
  async_manager: AsyncManager | None = None,
  orbax_checkpointer: Any = None,
) -> str:
  """Saves ``target`` as the checkpoint ``<ckpt_dir>/<prefix><step>``.

  With orbax-checkpoint installed and ``flax_use_orbax_checkpointing`` on (the default),
  or when ``orbax_checkpointer`` is given, the checkpoint is an Orbax directory, as Linen
  writes it. Otherwise it is one msgpack file holding ``to_bytes(target)``, written
  atomically, with a SHA-256 digest of it in ``<ckpt_dir>/.<prefix><step>.sha256`` (a name
  Flax never lists), which ``restore_checkpoint`` verifies.

  Args:
    ckpt_dir: directory (created if missing).
    target: any serializable object (params, a ``TrainState``, ...); for Orbax, a
      pytree (wrap a lone array in a dict).
    step: training step, part of the file name.
    prefix: file name prefix.
    keep: how many of the newest checkpoints to keep; older ones are deleted.
    overwrite: allow saving a step that exists or is older than the newest one; the
      existing checkpoint is replaced and every newer checkpoint is deleted, so the saved
      one becomes the latest.
    keep_every_n_steps: additionally keep one old checkpoint every this many steps.
    async_manager: an ``AsyncManager``: in the msgpack format the file is written in its
      background thread and this call returns once the arrays are on the host; with
      Orbax, only the manager's previous save is waited for.
    orbax_checkpointer: the ``orbax.checkpoint.Checkpointer`` that writes the checkpoint
      (default: a synchronous one). With an ``AsyncCheckpointer`` the call returns once
      the arrays are copied off the devices and the write goes on in the background;
      the next save, ``wait_until_finished()`` and interpreter exit wait for it.

  In a multi-process run all processes must call this. In the msgpack format arrays that
  are not fully addressable are gathered collectively and only process 0 writes, as in
  Flax; with Orbax each process writes its own shards (see
  ``save_checkpoint_multiprocess``).

  A failed save raises its own error (a full disk, a directory that turned read-only)
  and leaves the previous checkpoints as they were, without temporary files wherever the
  directory still allows deleting them. Once the new checkpoint is committed the save
  has succeeded: if deleting old checkpoints or leftover files fails then, a
  ``CheckpointCleanupWarning`` names the files and the reason instead of an error.

  Returns:
    The path of the written checkpoint.

  Raises:
    AlreadyExistsError: the step exists and ``overwrite`` is False.
    InvalidCheckpointError: a newer step exists and ``overwrite`` is False.
    OSError: the checkpoint could not be written, or with ``overwrite`` a newer
      checkpoint could not be deleted (the new one is then written but is not the latest;
      a note on the error says so).

  Example:

  >>> import os, tempfile, numpy as np, flaxlike
  >>> from flaxlike.training import checkpoints
  >>> d = tempfile.mkdtemp()
  >>> with flaxlike.config.temp_flip_flag('flax_use_orbax_checkpointing', False):
  ...   path = checkpoints.save_checkpoint(d, {'w': np.ones(2)}, step=3)
  >>> sorted(os.listdir(d))
  ['.checkpoint_3.sha256', 'checkpoint_3']
  >>> checkpoints.restore_checkpoint(d, target=None)
  {'w': array([1., 1.])}
  """
  ckpt_dir = os.fspath(ckpt_dir)
  if async_manager is not None:
    async_manager.wait_previous_save()
  if _orbax_checkpoints.use_orbax(orbax_checkpointer):
    return _save_orbax(
      ckpt_dir, target, step, prefix, keep, overwrite, keep_every_n_steps, orbax_checkpointer, False
    )
  path = os.path.join(ckpt_dir, f'{prefix}{step}')
  # Gather before the process check: the gather is a collective every process joins.
  target = gather_to_host(target)
  if jax.process_index() != 0:
    return path
  if async_manager is not None:
    # The arrays are on the host now; the write goes to the manager's thread. Mistakes
    # in the arguments are reported here, in the caller, not later from the thread.
    _check_new_step(ckpt_dir, prefix, path, step, overwrite)
    async_manager.save_async(
      functools.partial(
        _save_msgpack_in_background,
        ckpt_dir,
        target,
        step,
        prefix,
        keep,
        overwrite,
        keep_every_n_steps,
      )
    )
    return path
  os.makedirs(ckpt_dir, exist_ok=True)
  _check_new_step(ckpt_dir, prefix, path, step, overwrite)
  problems: list[str] = []
  _tidy_directory(ckpt_dir, prefix, problems)
  problems += _write_checkpoint(path, target, prefix)
  _clean_up_after_save(ckpt_dir, prefix, path, step, keep, overwrite, keep_every_n_steps, problems)
  _fsync_dir(ckpt_dir)
  return path


def _check_new_step(
  ckpt_dir: str, prefix: str, path: str, step: Any, overwrite: bool
) -> list[tuple[Any, str]]:
  """Refuses a step that exists or is older than the newest (unless ``overwrite``);
  returns the directory's checkpoints."""
  existing = _checkpoints(ckpt_dir, prefix)
  if not overwrite:
    if os.path.exists(path):
      raise errors.AlreadyExistsError(path)
    if existing and existing[-1][0] > step:
      raise errors.InvalidCheckpointError(path, step)
  return existing


def _clean_up_after_save(
  ckpt_dir: str,
  prefix: str,
  path: str,
  step: Any,
  keep: int,
  overwrite: bool,
  keep_every_n_steps: int | None,
  problems: list[str],
) -> None:
  """After a committed save (either format): with ``overwrite`` deletes the newer
  checkpoints (a failure raises), then the ones beyond ``keep``; other failures, and the
  ``problems`` already met, become one ``CheckpointCleanupWarning``."""
  if overwrite:
    _remove_newer(_checkpoints(ckpt_dir, prefix), step, path)
  _remove_outdated(ckpt_dir, prefix, keep, keep_every_n_steps, problems)
  if problems:
    warnings.warn(
      errors.CheckpointCleanupWarning(
        f'Saved checkpoint "{path}", but could not clean up: {"; ".join(problems)}. '
        'Check the permissions of the directory, then delete these files by hand or let '
        'the next save_checkpoint retry.'
      ),
      stacklevel=3,
    )


def _save_orbax(
  ckpt_dir: str,
  target: Any,
  step: Any,
  prefix: str,
  keep: int,
  overwrite: bool,
  keep_every_n_steps: int | None,
  orbax_checkpointer: Any,
  multiprocess: bool,
) -> str:
  """Writes an Orbax checkpoint, then process 0 deletes old ones by the msgpack rules.

  An async save is not committed yet when this returns: its temporary directory is not
  listed, so the ``keep`` newest committed checkpoints stay until it is, as in Flax.
  """
  path = _orbax_checkpoints.save(
    ckpt_dir,
    target,
    step,
    prefix,
    overwrite,
    orbax_checkpointer,
    functools.partial(_check_new_step, ckpt_dir, prefix, overwrite=overwrite),
    multiprocess=multiprocess,
  )
  if jax.process_index() == 0:
    problems: list[str] = []
    _tidy_directory(ckpt_dir, prefix, problems)
    _clean_up_after_save(
      ckpt_dir, prefix, path, step, keep, overwrite, keep_every_n_steps, problems
    )
  return path


def _save_msgpack_in_background(ckpt_dir, target, step, prefix, keep, overwrite, keep_every_n):
  # `target` holds host arrays only; the format stays the one chosen when the save was
  # requested, whatever the flag says by the time the thread runs.
  with _orbax_checkpoints.msgpack_format():
    save_checkpoint(ckpt_dir, target, step, prefix, keep, overwrite, keep_every_n)


class AsyncManager:
  """Runs msgpack checkpoint writes in a background thread, one at a time, as in Flax.

  Pass it to ``save_checkpoint(..., async_manager=manager)`` while saving in the msgpack
  format: the call copies the arrays to host memory and returns; writing the file and its
  digest, renaming them into place and deleting old checkpoints run in the background.
  The next save through the manager, ``wait_previous_save()`` and interpreter exit wait
  for the write, and an error it raised is raised again by the next of those. For Orbax
  saves use an ``orbax.checkpoint.AsyncCheckpointer`` as ``orbax_checkpointer`` instead; a
  manager given to an Orbax save only waits for its own previous write.

  Example:

  >>> import tempfile, numpy as np, flaxlike
  >>> from flaxlike.training import checkpoints
  >>> manager, d = checkpoints.AsyncManager(), tempfile.mkdtemp()
  >>> with flaxlike.config.temp_flip_flag('flax_use_orbax_checkpointing', False):
  ...   path = checkpoints.save_checkpoint(d, {'w': np.ones(2)}, 1, async_manager=manager)
  >>> manager.wait_previous_save()
  >>> checkpoints.restore_checkpoint(d, None)
  {'w': array([1., 1.])}
  """

  def __init__(self, max_workers: int = 1):
    self.executor = concurrent.futures.ThreadPoolExecutor(
      max_workers=max_workers, thread_name_prefix='flaxlike-checkpoint'
    )
    self.save_future: concurrent.futures.Future | None = None

  def wait_previous_save(self) -> None:
    """Blocks until the previous save is written; raises the error it failed with."""
    if self.save_future is not None:
      self.save_future.result()

  def save_async(self, task: Callable[[], Any]) -> None:
    """Waits for the previous save, then runs ``task`` in the background."""
    self.wait_previous_save()
    self.save_future = self.executor.submit(task)


def save_checkpoint_multiprocess(
  ckpt_dir: str | os.PathLike,
  target: Any,
  step: int | float,
  prefix: str = 'checkpoint_',
  keep: int = 1,
  overwrite: bool = False,
  keep_every_n_steps: int | None = None,
  async_manager: AsyncManager | None = None,
  gda_manager: Any = None,
  orbax_checkpointer: Any = None,
) -> str:
  """Saves a checkpoint from every process of a multi-process run into a shared directory.

  Every process must call it with the same arguments. With Orbax (the default when
  installed) each process writes only the shards of the arrays that live on its own
  devices, so no process ever holds the whole model; process 0 writes the rest of the
  tree and deletes old checkpoints. The checkpoint appears under its final name once
  every process has written. In the msgpack format (``flax_use_orbax_checkpointing`` off
  or Orbax missing) this is ``save_checkpoint``: arrays are gathered and process 0 writes
  one file. Arguments and errors are those of ``save_checkpoint``; ``gda_manager`` (Flax's
  legacy array writer) is only waited for: its pending write finishes before this save
  starts, and flaxlike never writes the legacy ``_gda`` array directory.

  Returns:
    The path of the checkpoint.

  Example:

  >>> import tempfile, jax, jax.numpy as jnp
  >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  >>> from flaxlike.training import checkpoints
  >>> mesh = Mesh(jax.devices(), ('data',))
  >>> w = jax.device_put(jnp.arange(8.0), NamedSharding(mesh, P('data')))
  >>> d = tempfile.mkdtemp()
  >>> path = checkpoints.save_checkpoint_multiprocess(d, {'w': w}, step=1)
  >>> back = checkpoints.restore_checkpoint(d, target={'w': w})
  >>> back['w'].sharding == w.sharding, back['w'].tolist()
  (True, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
  """
  ckpt_dir = os.fspath(ckpt_dir)
  if async_manager is not None:
    async_manager.wait_previous_save()
  if gda_manager is not None:
    gda_manager.wait_until_finished()
  if _orbax_checkpoints.use_orbax(orbax_checkpointer):
    return _save_orbax(
      ckpt_dir, target, step, prefix, keep, overwrite, keep_every_n_steps, orbax_checkpointer, True
    )
  return save_checkpoint(
    ckpt_dir, target, step, prefix, keep, overwrite, keep_every_n_steps, async_manager
  )


def _remove_newer(existing: list[tuple[Any, str]], step: Any, path: str) -> None:
  """With ``overwrite``, deletes the checkpoints newer than ``step``; a failure raises,
  since the one just saved would not be the latest."""
  problems: list[str] = []
  for s, p in existing:
    if s > step:
      _remove_checkpoint(p, problems)
  if problems:
    raise OSError(
      f'Saved checkpoint "{path}" with overwrite=True, but could not delete the newer '
      f'checkpoint(s) {"; ".join(problems)}, so it is not the latest: restore_checkpoint '
      'would still pick a newer one. Delete them by hand.'
    )


#################################################
# Restoring
#################################################

_Reader = Callable[[str, Any, bool], Any]
"""Restores one checkpoint: ``reader(path, target, strict) -> restored``."""


def _reader_for(
  path: str, orbax_checkpointer: Any = None, orbax_transforms: dict | None = None
) -> _Reader:
  """The one place that decides which reader restores the checkpoint at ``path``.

  Returns a ``_Reader`` for the formats flaxlike reads: msgpack files (Flax's legacy
  layout) and, with orbax-checkpoint installed, Orbax checkpoint directories, read with
  ``orbax_checkpointer`` and ``orbax_transforms``. Everything else that exists raises
  ``CheckpointFormatError`` naming the path, what it looks like and the fix; a path that
  no longer exists raises ``CheckpointVanishedError``. Nothing is ever skipped silently.

  ``_checkpoint_layout`` classifies the path; this function maps each kind to a reader
  or to the error that explains why none is installed. Every restore path (latest,
  ``step=``, a checkpoint path, ``fallback_to_good``) goes through it.
  """
  kind, looks_like = _checkpoint_layout(path)
  if kind == 'msgpack':
    return _restore_msgpack
  if kind == 'orbax':
    if _orbax_checkpoints.orbax_available():
      return functools.partial(
        _restore_orbax, orbax_checkpointer=orbax_checkpointer, orbax_transforms=orbax_transforms
      )
    fix = _ORBAX_INSTALL
  elif kind == 'orbax-unfinished':
    fix = 'The save that wrote it did not finish; restore a finished checkpoint instead.'
  elif kind == 'flax-gda':
    fix = (
      'flaxlike does not read the separate array directory of that legacy format: '
      'restore it with flax 0.12 and save it again with save_checkpoint.'
    )
  else:
    fix = 'Convert it to a checkpoint written by save_checkpoint, or move it out of the directory.'
  raise errors.CheckpointFormatError(path, looks_like, fix)


def _expected_digest(path: str, f: Any) -> str | None:
  """The digest recorded beside ``path``, or None if there is none (a Flax checkpoint).

  ``f`` is the open checkpoint; if ``path`` no longer names that file once the digest is
  read, the checkpoint was deleted or replaced meanwhile (the digest may belong to the
  new one), and ``CheckpointVanishedError`` says so.
  """
  digest_path = _digest_path(path)
  try:
    with open(digest_path, encoding='ascii', errors='replace') as d:
      text = d.read(4096)
  except FileNotFoundError:
    text = None
  try:
    now = os.stat(path)
  except FileNotFoundError:
    raise errors.CheckpointVanishedError(path) from None
  opened = os.fstat(f.fileno())
  if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
    raise errors.CheckpointVanishedError(path, ' (it was replaced by a new save)')
  if text is None:
    return None
  fields = text.split()
  if not fields or not re.fullmatch(r'[0-9a-f]{64}', fields[0]):
    # Never equal to a digest, so the caller reports a mismatch with the digest found.
    return f'unreadable ({text[:80]!r})'
  return fields[0]


def _restore_msgpack(path: str, target: Any, strict: bool) -> Any:
  """Reads a msgpack checkpoint, verifying its digest file when there is one."""
  try:
    f = open(path, 'rb')
  except FileNotFoundError:
    raise errors.CheckpointVanishedError(path) from None
  with f:
    expected = _expected_digest(path, f)
    hasher = None if expected is None else _HashingReader(f)
    try:
      state = serialization.read_bytes(f if hasher is None else hasher, None)
    except errors.MsgpackDecodeError as e:
      if expected is not None and hasher is not None and (found := hasher.hexdigest()) != expected:
        raise errors.CheckpointDigestMismatchError(path, _digest_path(path), expected, found) from e
      raise errors.CorruptCheckpointError(path, e) from e
    if expected is not None and hasher is not None and (found := hasher.hexdigest()) != expected:
      raise errors.CheckpointDigestMismatchError(path, _digest_path(path), expected, found)
  if _has_gda_placeholder(state):
    raise errors.CheckpointFormatError(
      path,
      'a legacy Flax multi-process checkpoint (its arrays were saved apart, in a "_gda" '
      'directory, and the file holds placeholders)',
      'flaxlike does not read that legacy format: restore it with flax 0.12 and save it '
      'again with save_checkpoint.',
    )
  return state if target is None else serialization.from_state_dict(target, state, strict=strict)


def _restore_orbax(
  path: str,
  target: Any,
  strict: bool,
  orbax_checkpointer: Any = None,
  orbax_transforms: dict | None = None,
) -> Any:
  """Reads an Orbax checkpoint directory.

  A read Orbax cannot finish raises ``CheckpointTargetMismatchError`` when ``target``'s
  tree differs from the checkpoint's metadata (never skipped by ``fallback_to_good``),
  else ``CorruptOrbaxCheckpointError`` (which ``fallback_to_good`` skips). With
  ``orbax_transforms`` the trees may differ on purpose, so nothing is compared.
  """
  try:
    state = _orbax_checkpoints.restore(path, target, orbax_checkpointer, orbax_transforms)
  except errors.FlaxlikeError:
    raise
  except Exception as e:
    if not os.path.lexists(path):  # deleted by another process's clean-up meanwhile
      raise errors.CheckpointVanishedError(path) from e
    if target is not None and orbax_transforms is None:
      mismatch = _orbax_checkpoints.tree_mismatch(path, target, orbax_checkpointer)
      if mismatch is not None:
        raise errors.CheckpointTargetMismatchError(path, mismatch, e) from e
    raise errors.CorruptOrbaxCheckpointError(path, e) from e
  if target is None:
    return state
  return serialization.from_state_dict(target, state, strict=strict)


def restore_checkpoint(
  ckpt_dir: str | os.PathLike,
  target: Any,
  step: int | float | None = None,
  prefix: str = 'checkpoint_',
  parallel: bool = True,
  gda_manager: Any = None,
  allow_partial_mpa_restoration: bool = False,
  orbax_checkpointer: Any = None,
  orbax_transforms: dict | None = None,
  *,
  strict: bool = False,
  fallback_to_good: bool = False,
) -> Any:
  """Restores the latest (or the given) checkpoint into ``target``.

  Either format is read, Orbax directories and msgpack files, whatever
  ``flax_use_orbax_checkpointing`` says; Orbax ones need orbax-checkpoint installed. From
  an Orbax checkpoint, arrays of ``target`` that carry a sharding (``jax.Array``s, or
  ``jax.ShapeDtypeStruct``s with ``sharding=`` such as ``nn.sharded_init`` builds) are read
  directly into that sharding, on any mesh; other leaves come back as numpy arrays.

  Args:
    ckpt_dir: the checkpoint directory, or the path of one checkpoint.
    target: the structure to restore into; ``None`` returns the raw state dict.
    step: a specific step; by default the latest.
    prefix: file name prefix.
    parallel: accepted as in Flax. A msgpack file is read in one streaming pass either
      way, array data straight into the arrays and the digest computed on the way.
    gda_manager: accepted as in Flax, where it reads the separate array directory of
      legacy multi-process checkpoints; flaxlike does not read that layout and raises
      ``CheckpointFormatError`` for it.
    allow_partial_mpa_restoration: accepted as in Flax, for that same legacy layout only.
    orbax_checkpointer: the ``orbax.checkpoint.Checkpointer`` that reads an Orbax
      checkpoint (default: a synchronous ``PyTreeCheckpointHandler`` one); an async one
      finishes its pending save first.
    orbax_transforms: Orbax transformations passed on to its ``restore``.
    strict: (keyword-only, a flaxlike extension) check shapes, dtypes and extra keys
      (``serialization.from_state_dict``).
    fallback_to_good: (keyword-only, a flaxlike extension) when ``step`` is None and
      ``ckpt_dir`` is a directory, skip checkpoints that cannot be read (a msgpack file
      that does not decode or whose digest does not match, an Orbax directory Orbax
      cannot read), newest first, and restore the newest good one; a
      ``CheckpointFallbackWarning`` names the skipped ones. Checkpoints in a format that
      cannot be read with what is installed, and a ``target`` that does not fit an Orbax
      checkpoint (``CheckpointTargetMismatchError``), are never skipped.

  When the latest checkpoint of a directory is deleted by another process's clean-up
  between listing and reading, the directory is listed again and the new latest taken.

  Returns:
    The restored object; ``target`` itself, unchanged, when the directory is missing or
    holds no checkpoint (as in Flax).

  Raises:
    ValueError: ``step`` was given and that checkpoint does not exist.
    CorruptCheckpointError: the file cannot be decoded (truncated, corrupted); with
      ``fallback_to_good``, when no checkpoint is good. It subclasses
      ``MsgpackDecodeError``.
    CheckpointDigestMismatchError: the file's bytes differ from its digest file (a
      ``CorruptCheckpointError``).
    CorruptOrbaxCheckpointError: Orbax could not read an Orbax checkpoint (a
      ``CorruptCheckpointError``).
    CheckpointTargetMismatchError: ``target``'s tree (keys, array shapes) differs from
      the Orbax checkpoint's; raised at once, also with ``fallback_to_good`` (a
      ``RestoreMismatchError``).
    CheckpointFormatError: the checkpoint exists but cannot be read with what is
      installed (an Orbax directory without orbax-checkpoint, an unknown layout).
    CheckpointVanishedError: the checkpoint was deleted while being read, and no other
      one took its place.
    RestoreMismatchError: ``strict`` and the data does not fit ``target``.

  Example:

  >>> import tempfile
  >>> from flaxlike.training import checkpoints
  >>> checkpoints.restore_checkpoint(tempfile.mkdtemp(), target={'a': 1})
  {'a': 1}
  """
  # One streaming pass always (see the docstring); the legacy GDA layout is refused by
  # _reader_for, so nothing here reads with a gda_manager.
  del parallel, gda_manager, allow_partial_mpa_restoration
  reader_for = functools.partial(
    _reader_for, orbax_checkpointer=orbax_checkpointer, orbax_transforms=orbax_transforms
  )
  ckpt_dir = os.fspath(ckpt_dir)
  if step is not None:
    path = os.path.join(ckpt_dir, f'{prefix}{step}')
    if not os.path.lexists(path):
      raise ValueError(
        f'Matching checkpoint not found: {path}. Available steps: '
        f'{available_steps(ckpt_dir, prefix, step_type=lambda s: s)}.'
      )
    return reader_for(path)(path, target, strict)
  if not os.path.lexists(ckpt_dir):
    return target
  if os.path.isdir(ckpt_dir) and not _is_single_checkpoint_dir(ckpt_dir, prefix):
    return _restore_latest(ckpt_dir, target, prefix, strict, fallback_to_good, reader_for)
  return reader_for(ckpt_dir)(ckpt_dir, target, strict)


def _restore_latest(
  ckpt_dir: str,
  target: Any,
  prefix: str,
  strict: bool,
  fallback_to_good: bool,
  reader_for: Callable[[str], _Reader] = _reader_for,
) -> Any:
  """Restores the newest (good, with ``fallback_to_good``) checkpoint of a directory,
  listing it again when the chosen checkpoint is deleted under the restore."""
  skipped: list[str] = []
  first_error: errors.CorruptCheckpointError | None = None
  vanished: str | None = None  # the last checkpoint deleted under this restore
  for _ in range(_MAX_LISTINGS):
    found = _checkpoints(ckpt_dir, prefix)
    if not found:
      if vanished is not None:  # they were there a moment ago: never a silent fresh start
        raise errors.CheckpointVanishedError(vanished, ' and no checkpoint is left')
      return target
    candidates = [p for _, p in reversed(found) if p not in skipped]
    for path in candidates:
      try:
        restored = reader_for(path)(path, target, strict)
      except errors.CheckpointVanishedError:
        vanished = path
        break  # list again
      except errors.CorruptCheckpointError as e:
        if not fallback_to_good:
          raise
        skipped.append(path)
        first_error = first_error or e
        continue
      if skipped:
        warnings.warn(
          errors.CheckpointFallbackWarning(
            f'Skipped corrupt checkpoint(s) {skipped}; restored "{path}" instead.'
          ),
          stacklevel=3,
        )
      return restored
    else:
      raise errors.CorruptCheckpointError(
        found[-1][1],
        f'no checkpoint in "{ckpt_dir}" is good (tried {skipped}); the newest failed '
        f'with: {first_error}',
      ) from first_error
  raise errors.CheckpointVanishedError(
    str(vanished), f' (the latest checkpoint vanished {_MAX_LISTINGS} times in a row)'
  )
