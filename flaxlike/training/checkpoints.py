"""Single-file msgpack checkpoints, compatible with Flax's legacy (non-Orbax) format.

A checkpoint is the file ``<ckpt_dir>/<prefix><step>`` holding exactly
``serialization.to_bytes(target)``, so Flax restores ours and we restore Flax's.

Writes are atomic: the bytes go to a hidden temporary file in the same directory
(``.<prefix>tmp-*``), which is flushed and fsynced, then renamed over the final name with
``os.replace``, and the directory is fsynced. A crash at any moment leaves the previous
checkpoints intact and never a partial file under a checkpoint name; leftover temporary
files are ignored by every reader and removed by the next ``save_checkpoint``. Only one
process should save into a directory at a time.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Iterable

from flaxlike import errors, serialization

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
  rest = name[len(prefix):]
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
    if step is not None and os.path.isfile(path):
      found.append((step, path))
  found.sort(key=lambda sp: sp[0])
  return found


def available_steps(ckpt_dir: str, prefix: str = 'checkpoint_', step_type: type = int
                    ) -> list[Any]:
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


def save_checkpoint(
  ckpt_dir: str | os.PathLike,
  target: Any,
  step: int | float,
  prefix: str = 'checkpoint_',
  keep: int = 1,
  overwrite: bool = False,
  keep_every_n_steps: int | None = None,
) -> str:
  """Atomically writes ``to_bytes(target)`` to ``<ckpt_dir>/<prefix><step>``.

  Args:
    ckpt_dir: directory (created if missing).
    target: any serializable object (params, a ``TrainState``, ...).
    step: training step, part of the file name.
    prefix: file name prefix.
    keep: how many of the newest checkpoints to keep; older ones are deleted.
    overwrite: allow saving a step that exists or is older than the newest one; the
      existing file is replaced and every newer checkpoint is deleted, so the saved one
      becomes the latest.
    keep_every_n_steps: additionally keep one old checkpoint every this many steps.

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
  os.makedirs(ckpt_dir, exist_ok=True)
  path = os.path.join(ckpt_dir, f'{prefix}{step}')
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


def restore_checkpoint(
  ckpt_dir: str | os.PathLike,
  target: Any,
  step: int | float | None = None,
  prefix: str = 'checkpoint_',
  strict: bool = False,
) -> Any:
  """Restores the latest (or the given) checkpoint into ``target``.

  Args:
    ckpt_dir: the checkpoint directory, or the path of one checkpoint file.
    target: the structure to restore into; ``None`` returns the raw state dict.
    step: a specific step; by default the latest.
    prefix: file name prefix.
    strict: check shapes, dtypes and extra keys (``serialization.from_state_dict``).

  Returns:
    The restored object; ``target`` itself, unchanged, when the directory is missing or
    holds no checkpoint (as in Flax).

  Raises:
    ValueError: ``step`` was given and that checkpoint does not exist.
    MsgpackDecodeError: the file is corrupt.
    RestoreMismatchError: ``strict`` and the data does not fit ``target``.

  Example:

  >>> import tempfile
  >>> from flaxlike.training import checkpoints
  >>> checkpoints.restore_checkpoint(tempfile.mkdtemp(), target={'a': 1})
  {'a': 1}
  """
  ckpt_dir = os.fspath(ckpt_dir)
  if os.path.isfile(ckpt_dir):
    path = ckpt_dir
  elif step is not None:
    path = os.path.join(ckpt_dir, f'{prefix}{step}')
    if not os.path.isfile(path):
      raise ValueError(
        f'Matching checkpoint not found: {path}. Available steps: '
        f'{available_steps(ckpt_dir, prefix, step_type=lambda s: s)}.'
      )
  else:
    path = latest_checkpoint(ckpt_dir, prefix)
    if path is None:
      return target
  with open(path, 'rb') as f:
    return serialization.read_bytes(f, target, strict=strict)
