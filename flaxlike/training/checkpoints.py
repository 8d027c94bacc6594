"""Single-file msgpack checkpoints, compatible with Flax's legacy (non-Orbax) format.

A checkpoint is the file ``<ckpt_dir>/<prefix><step>`` holding exactly
``serialization.to_bytes(target)``, so Flax restores ours and we restore Flax's.

Writes are atomic: the bytes go to a hidden temporary file in the same directory
(``.<prefix>tmp-*``), which is flushed and fsynced, then renamed over the final name with
``os.replace``, and the directory is fsynced. A crash at any moment leaves the previous
checkpoints intact and never a partial file under a checkpoint name; leftover temporary
files are ignored by every reader and removed by the next ``save_checkpoint``.

In a multi-process run every process calls ``save_checkpoint``: arrays that are not fully
addressable are first gathered to host memory on every process (a collective), then only
process 0 writes, as in Flax. Only one job should save into a directory at a time.

``restore_checkpoint`` raises ``CorruptCheckpointError`` naming the file when a checkpoint
cannot be decoded (torn or corrupted on storage); ``fallback_to_good=True`` instead takes
the newest checkpoint that decodes and warns about the skipped files.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from flaxlike import errors, serialization
from flaxlike.training import _orbax_checkpoints

_TMP_TAG = 'tmp-'
_NUM_RE = re.compile(r'([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)')
_UNSIGNED_NUM_RE = re.compile(r'((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)')


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


def _step_of(name: str, prefix: str) -> int | float | None:
  if not name.startswith(prefix):
    return None
  rest = name[len(prefix) :]
  if re.fullmatch(r'-?\d+', rest):
    return int(rest)
  if re.fullmatch(r'-?\d+\.\d*(?:[eE][-+]?\d+)?|-?\d+[eE][-+]?\d+', rest):
    return float(rest)
  return None


def _checkpoints(ckpt_dir: str, prefix: str) -> list[tuple[Any, str]]:
  """(step, path) of every checkpoint file, oldest first."""
  try:
    names = os.listdir(ckpt_dir)
  except (FileNotFoundError, NotADirectoryError):
    return []
  found = []
  for name in names:
    step = _step_of(name, prefix)
    path = os.path.join(ckpt_dir, name)
    if step is not None and (os.path.isfile(path) or os.path.isdir(path)):
      found.append((step, path))
  found.sort(key=lambda sp: sp[0])
  return found


def available_steps(ckpt_dir: str, prefix: str = 'checkpoint_', step_type: type = int) -> list[Any]:
  """Steps of the checkpoints in ``ckpt_dir``, ascending.

  Example:

  >>> import tempfile
  >>> from flaxlike.training import checkpoints
  >>> d = tempfile.mkdtemp()
  >>> for step in (1, 2, 10):
  ...   _ = checkpoints.save_checkpoint(d, {'x': step}, step, keep=5)
  >>> checkpoints.available_steps(d)
  [1, 2, 10]
  """
  return [step_type(s) for s, _ in _checkpoints(ckpt_dir, prefix)]


def latest_checkpoint(ckpt_dir: str, prefix: str = 'checkpoint_') -> str | None:
  """Path of the checkpoint with the highest step, or None if there is none."""
  found = _checkpoints(ckpt_dir, prefix)
  return found[-1][1] if found else None


def _fsync_dir(path: str) -> None:
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:  # pragma: no cover - platforms without directory fds
    return
  try:
    os.fsync(fd)
  except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
    pass
  finally:
    os.close(fd)


def _remove_stale_temps(ckpt_dir: str, prefix: str) -> None:
  for name in os.listdir(ckpt_dir):
    if name.startswith(f'.{prefix}{_TMP_TAG}'):
      try:
        os.remove(os.path.join(ckpt_dir, name))
      except FileNotFoundError:
        pass


def _is_fully_addressable(x: jax.Array) -> bool:
  return x.is_fully_addressable


def _gather_leaf(x: Any) -> Any:
  if not isinstance(x, jax.Array) or jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended):
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
  async_manager: Any = None,
  orbax_checkpointer: Any = None,
) -> str:
  """Saves ``target`` as the checkpoint ``<ckpt_dir>/<prefix><step>``.

  With orbax-checkpoint installed and ``flax_use_orbax_checkpointing`` on (the default),
  or when ``orbax_checkpointer`` is given, the checkpoint is an Orbax directory, as
  Linen writes it. Otherwise it is one msgpack file holding ``to_bytes(target)``,
  written atomically.

  Args:
    ckpt_dir: directory (created if missing).
    target: any serializable object (params, a ``TrainState``, ...); for Orbax, a
      pytree (wrap a lone array in a dict).
    step: training step, part of the file name.
    prefix: file name prefix.
    keep: how many of the newest checkpoints to keep; older ones are deleted.
    overwrite: allow saving a step that exists or is older than the newest one; the
      existing file is replaced and every newer checkpoint is deleted, so the saved one
      becomes the latest.
    keep_every_n_steps: additionally keep one old checkpoint every this many steps.
    async_manager: an ``AsyncManager``: in the msgpack format the file is written in its
      background thread and this call returns once the arrays are on the host; with
      Orbax, only the manager's previous save is waited for.
    orbax_checkpointer: the ``orbax.checkpoint.Checkpointer`` that writes the checkpoint
      (default: a synchronous one). With an ``AsyncCheckpointer`` the call returns once
      the arrays are copied off the devices and the write goes on in the background;
      the next save, ``wait_until_finished()`` and interpreter exit wait for it.

  In a multi-process run all processes must call this. In the msgpack format arrays that
  are not fully addressable are gathered collectively and only process 0 writes; with
  Orbax each process writes its own shards (see ``save_checkpoint_multiprocess``).

  Returns:
    The path of the written checkpoint.

  Raises:
    AlreadyExistsError: the step exists and ``overwrite`` is False.
    InvalidCheckpointError: a newer step exists and ``overwrite`` is False.

  Example:

  >>> import tempfile, numpy as np
  >>> from flaxlike.training import checkpoints
  >>> d = tempfile.mkdtemp()
  >>> path = checkpoints.save_checkpoint(d, {'w': np.ones(2)}, step=3)
  >>> checkpoints.restore_checkpoint(d, target=None)
  {'w': array([1., 1.])}
  """
  ckpt_dir = os.fspath(ckpt_dir)
  if async_manager is not None:
    async_manager.wait_previous_save()
  if _orbax_checkpoints.use_orbax(orbax_checkpointer):
    return _orbax_checkpoints.save(
      ckpt_dir,
      target,
      step,
      prefix,
      keep,
      overwrite,
      keep_every_n_steps,
      orbax_checkpointer,
      _checkpoints,
      multiprocess=False,
    )
  path = os.path.join(ckpt_dir, f'{prefix}{step}')
  # Gather before the process check: the gather is a collective every process joins.
  target = gather_to_host(target)
  if jax.process_index() != 0:
    return path
  if async_manager is not None:
    # The arrays are on the host now; the write goes to the manager's thread. Mistakes
    # in the arguments are reported here, in the caller, not later from the thread.
    if not overwrite:
      if os.path.exists(path):
        raise errors.AlreadyExistsError(path)
      existing = _checkpoints(ckpt_dir, prefix)
      if existing and existing[-1][0] > step:
        raise errors.InvalidCheckpointError(path, step)
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
  existing = _checkpoints(ckpt_dir, prefix)
  if not overwrite:
    if os.path.exists(path):
      raise errors.AlreadyExistsError(path)
    if existing and existing[-1][0] > step:
      raise errors.InvalidCheckpointError(path, step)
  _remove_stale_temps(ckpt_dir, prefix)

  fd, tmp = tempfile.mkstemp(dir=ckpt_dir, prefix=f'.{prefix}{_TMP_TAG}')
  try:
    with os.fdopen(fd, 'wb') as f:
      serialization.write_bytes(f, target)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.remove(tmp)
    except FileNotFoundError:
      pass
    raise
  _fsync_dir(ckpt_dir)

  if overwrite:
    for s, p in existing:
      if s > step:
        os.remove(p)
  found = _checkpoints(ckpt_dir, prefix)
  if len(found) > keep:
    last_kept = -float('inf')
    for s, p in found[: len(found) - keep]:
      if keep_every_n_steps and s - last_kept >= keep_every_n_steps:
        last_kept = s
        continue
      os.remove(p)
  _fsync_dir(ckpt_dir)
  return path


def _save_msgpack_in_background(ckpt_dir, target, step, prefix, keep, overwrite, keep_every_n):
  # `target` holds host arrays only; the format stays the one chosen when the save was
  # requested, whatever the flag says by the time the thread runs.
  with _orbax_checkpoints.msgpack_format():
    save_checkpoint(ckpt_dir, target, step, prefix, keep, overwrite, keep_every_n)


class AsyncManager:
  """Runs msgpack checkpoint writes in a background thread, one at a time, as in Flax.

  Pass it to ``save_checkpoint(..., async_manager=manager)`` while saving in the msgpack
  format: the call copies the arrays to host memory and returns; writing the file,
  renaming it into place and deleting old checkpoints run in the background. The next
  save through the manager, ``wait_previous_save()`` and interpreter exit wait for the
  write, and an error it raised is raised again by the next of those. For Orbax saves
  use an ``orbax.checkpoint.AsyncCheckpointer`` as ``orbax_checkpointer`` instead; a
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
  async_manager: Any = None,
  orbax_checkpointer: Any = None,
) -> str:
  """Saves a checkpoint from every process of a multi-process run into a shared directory.

  Every process must call it with the same arguments. With Orbax (the default when
  installed) each process writes only the shards of the arrays that live on its own
  devices, so no process ever holds the whole model; process 0 writes the rest of the
  tree and deletes old checkpoints. The checkpoint appears under its final name once
  every process has written. In the msgpack format (``flax_use_orbax_checkpointing`` off
  or Orbax missing) this is ``save_checkpoint``: arrays are gathered and process 0 writes
  one file. Arguments and errors are those of ``save_checkpoint``.

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
  if _orbax_checkpoints.use_orbax(orbax_checkpointer):
    return _orbax_checkpoints.save(
      ckpt_dir,
      target,
      step,
      prefix,
      keep,
      overwrite,
      keep_every_n_steps,
      orbax_checkpointer,
      _checkpoints,
      multiprocess=True,
    )
  return save_checkpoint(
    ckpt_dir, target, step, prefix, keep, overwrite, keep_every_n_steps, async_manager
  )


def restore_checkpoint(
  ckpt_dir: str | os.PathLike,
  target: Any,
  step: int | float | None = None,
  prefix: str = 'checkpoint_',
  strict: bool = False,
  fallback_to_good: bool = False,
  orbax_checkpointer: Any = None,
  orbax_transforms: dict | None = None,
) -> Any:
  """Restores the latest (or the given) checkpoint into ``target``.

  Args:
    ckpt_dir: the checkpoint directory, or the path of one checkpoint file.
    target: the structure to restore into; ``None`` returns the raw state dict.
    step: a specific step; by default the latest.
    prefix: file name prefix.
    strict: check shapes, dtypes and extra keys (``serialization.from_state_dict``).
    fallback_to_good: when ``step`` is None and ``ckpt_dir`` is a directory, skip
      checkpoints that cannot be decoded, newest first, and restore the newest one that
      decodes; a ``UserWarning`` names the skipped files.
    orbax_checkpointer: the ``orbax.checkpoint.Checkpointer`` that reads an Orbax
      checkpoint (default: a synchronous ``PyTreeCheckpointHandler`` one); an async one
      finishes its pending save first.
    orbax_transforms: Orbax transformations passed on to its ``restore``.

  Either format is read, whatever ``flax_use_orbax_checkpointing`` says. From an Orbax
  checkpoint, arrays of ``target`` that carry a sharding (``jax.Array``s, or
  ``jax.ShapeDtypeStruct``s with ``sharding=`` such as ``nn.sharded_init`` builds) are
  read directly into that sharding, on any mesh; other leaves come back as numpy arrays.

  Returns:
    The restored object; ``target`` itself, unchanged, when the directory is missing or
    holds no checkpoint (as in Flax).

  Raises:
    ValueError: ``step`` was given and that checkpoint does not exist.
    CorruptCheckpointError: the file cannot be decoded (truncated, corrupted); with
      ``fallback_to_good``, when no checkpoint decodes. It subclasses
      ``MsgpackDecodeError``.
    RestoreMismatchError: ``strict`` and the data does not fit ``target``.

  Example:

  >>> import tempfile
  >>> from flaxlike.training import checkpoints
  >>> checkpoints.restore_checkpoint(tempfile.mkdtemp(), target={'a': 1})
  {'a': 1}
  """
  ckpt_dir = os.fspath(ckpt_dir)
  if os.path.isfile(ckpt_dir) or _orbax_checkpoints.is_orbax_checkpoint(ckpt_dir):
    path = ckpt_dir
  elif step is not None:
    path = os.path.join(ckpt_dir, f'{prefix}{step}')
    if not os.path.exists(path):
      raise ValueError(
        f'Matching checkpoint not found: {path}. Available steps: '
        f'{available_steps(ckpt_dir, prefix, step_type=lambda s: s)}.'
      )
  elif fallback_to_good:
    return _restore_newest_good(ckpt_dir, target, prefix, strict)
  else:
    path = latest_checkpoint(ckpt_dir, prefix)
    if path is None:
      return target
  if _orbax_checkpoints.is_orbax_checkpoint(path):
    return _orbax_checkpoints.restore(path, target, orbax_checkpointer, orbax_transforms, strict)
  return _restore_file(path, target, strict)


def _restore_file(path: str, target: Any, strict: bool) -> Any:
  if _orbax_checkpoints.is_orbax_checkpoint(path):
    # fallback_to_good walks both formats; Orbax commits by rename, so it has no torn steps.
    return _orbax_checkpoints.restore(path, target, strict=strict)
  with open(path, 'rb') as f:
    try:
      return serialization.read_bytes(f, target, strict=strict)
    except errors.CorruptCheckpointError:
      raise
    except errors.MsgpackDecodeError as e:
      raise errors.CorruptCheckpointError(path, e) from e


def _restore_newest_good(ckpt_dir: str, target: Any, prefix: str, strict: bool) -> Any:
  found = _checkpoints(ckpt_dir, prefix)
  if not found:
    return target
  skipped: list[str] = []
  first_error = None
  for _, path in reversed(found):
    try:
      restored = _restore_file(path, target, strict)
    except errors.CorruptCheckpointError as e:
      skipped.append(path)
      first_error = first_error or e
      continue
    if skipped:
      warnings.warn(
        f'Skipped corrupt checkpoint file(s) {skipped}; restored "{path}" instead.',
        stacklevel=3,
      )
    return restored
  raise errors.CorruptCheckpointError(
    found[-1][1],
    f'no checkpoint in "{ckpt_dir}" decodes (tried {skipped}); the newest '
    f'failed with: {first_error}',
  ) from first_error
