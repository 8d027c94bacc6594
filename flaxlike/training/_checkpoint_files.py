"""How checkpoints lie on disk: names, listing, layouts, digests and temporary files.

The private helpers behind ``flaxlike.training.checkpoints``: which names in a directory
are checkpoints (``<prefix><step>``) and which are digests, temporary files or unfinished
Orbax saves; what layout a checkpoint path is in (msgpack file, Orbax directory, legacy
Flax multi-process checkpoint, a foreign file); and the hashing file wrappers and
temporary-file handling the atomic writer and the verifying reader share.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from typing import Any

from flaxlike import errors

_TMP_TAG = 'tmp-'
# How often a directory is listed again when what it held changed under a read.
_MAX_LISTINGS = 10
_DIGEST_SUFFIX = '.sha256'
# Entries of a directory that make it one Orbax checkpoint (Flax 0.12's default layout)
# rather than a directory holding checkpoints. The first three are the ones Flax checks;
# the others are what Orbax 0.12 writes at the top of a checkpoint as well.
_ORBAX_MARKERS = (
  'checkpoint',
  '_METADATA',
  'manifest.ocdbt',
  '_CHECKPOINT_METADATA',
  '_sharding',
  'ocdbt.process_0',
)
# Orbax writes into '<name>.orbax-checkpoint-tmp-<n>' and renames when done.
_ORBAX_TMP_INFIX = '.orbax-checkpoint-tmp-'
# Legacy Flax multi-process checkpoints keep arrays in '<path>_gda' and leave this
# placeholder string in the msgpack file.
_GDA_SUFFIX = '_gda'
_GDA_PLACEHOLDER = '//GDAPlaceholder:'


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
  """(step, path) of every checkpoint, oldest first: files and directories alike.

  Only names ``<prefix><number>`` count, so digest files (hidden), temporary files,
  Orbax's unfinished ``*.orbax-checkpoint-tmp-*`` directories and legacy ``*_gda``
  directories are never taken for checkpoints.
  """
  found: list[tuple[Any, str]] = []
  for _ in range(_MAX_LISTINGS):
    try:
      names = os.listdir(ckpt_dir)
    except (FileNotFoundError, NotADirectoryError):
      return []
    found, gone = [], False
    for name in names:
      step = _step_of(name, prefix)
      if step is None:
        continue
      path = os.path.join(ckpt_dir, name)
      if os.path.exists(path):
        found.append((step, path))
      else:
        gone = True
    if not gone:
      break
    # A checkpoint listed a moment ago was deleted by a concurrent save's clean-up, which
    # renames the new step in first: list again, or a restore could see no step at all.
  found.sort(key=lambda sp: sp[0])
  return found


def _digest_path(path: str) -> str:
  head, name = os.path.split(path)
  # Hidden, so that it never starts with the checkpoint prefix: Flax lists '<prefix>*'.
  return os.path.join(head, f'.{name}{_DIGEST_SUFFIX}')


class _HashingWriter:
  """Passes writes through to a file and feeds the same bytes to SHA-256."""

  def __init__(self, f: Any):
    self._f = f
    self.hash = hashlib.sha256()

  def write(self, buf: Any) -> int:
    self.hash.update(buf)
    return self._f.write(buf)


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


def _new_temp(ckpt_dir: str, prefix: str) -> tuple[int, str]:
  """Creates a hidden temporary file; mode 0o666 less the umask, as Flax's files get."""
  while True:
    tmp = os.path.join(ckpt_dir, f'.{prefix}{_TMP_TAG}{secrets.token_hex(8)}')
    try:
      return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
    except FileExistsError:  # pragma: no cover - 64 random bits collided
      continue


def _discard_temps(temps: list[str], error: BaseException) -> None:
  """Removes temporary files after a failed save without hiding the save's error.

  A removal that fails too (the directory turned read-only) is recorded as a note on
  ``error``, which the caller re-raises: the caller sees why the save failed, and the
  note names the leftover file, which readers ignore and the next save removes. Removing
  a name needs a writable directory, but emptying the file needs only the file's own
  permission, so the leftover is truncated to 0 bytes: it holds no disk space meanwhile
  (unless the whole file system turned read-only, where nothing can be changed).
  """
  for tmp in temps:
    try:
      os.remove(tmp)
    except FileNotFoundError:
      pass
    except OSError as cleanup:
      try:
        os.truncate(tmp, 0)
        size = 'emptied to 0 bytes'
      except OSError:
        size = 'left as written'
      error.add_note(
        f'Removing the temporary file "{tmp}" also failed ({cleanup!r}); it was {size}. '
        'Readers ignore it and the next save_checkpoint into this directory removes it.'
      )


def _sniff(path: str) -> str | None:
  """What a file that is not a msgpack document looks like, from its first bytes."""
  try:
    with open(path, 'rb') as f:
      head = f.read(8)
  except FileNotFoundError:
    raise errors.CheckpointVanishedError(path) from None
  # None of these can start a complete msgpack document longer than a few bytes.
  if head.startswith(b'PK\x03\x04'):
    return (
      'a zip archive (such as a PyTorch .pt file or a NumPy .npz file), not a msgpack checkpoint'
    )
  if head.startswith(b'\x93NUMPY'):
    return 'a NumPy .npy file, not a msgpack checkpoint'
  if head.startswith(b'\x89HDF\r\n\x1a\n'):
    return 'an HDF5 file (such as a Keras .h5 file), not a msgpack checkpoint'
  if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
    return 'a Python pickle, not a msgpack checkpoint'
  return None


def _checkpoint_layout(path: str) -> tuple[str, str]:
  """Classifies what is at ``path``: ``(kind, what it looks like)``.

  Kinds: ``'msgpack'`` (a file, Flax's legacy format), ``'orbax'`` (an Orbax checkpoint
  directory), ``'orbax-unfinished'``, ``'flax-gda'`` (a legacy Flax multi-process
  checkpoint with arrays in ``<path>_gda``), ``'foreign-file'``, ``'unknown'``.
  """
  kind, looks_like = _classify(path)
  # Deleted while being looked at (another process's clean-up): say so, not 'unknown'.
  if kind == 'unknown' and not os.path.lexists(path):
    raise errors.CheckpointVanishedError(path)
  return kind, looks_like


def _classify(path: str) -> tuple[str, str]:
  if not os.path.lexists(path):
    raise errors.CheckpointVanishedError(path)
  if os.path.isdir(path):
    if _ORBAX_TMP_INFIX in os.path.basename(path):
      return 'orbax-unfinished', 'an unfinished Orbax save (a temporary directory)'
    if any(os.path.lexists(os.path.join(path, m)) for m in _ORBAX_MARKERS):
      return 'orbax', (
        'an Orbax checkpoint (a directory with _METADATA, manifest.ocdbt, ..., as Flax '
        "0.12's save_checkpoint writes by default)"
      )
    return 'unknown', 'a directory named like a checkpoint, in no layout flaxlike knows'
  if not os.path.isfile(path):
    return 'unknown', 'neither a regular file nor a directory'
  if os.path.isdir(path + _GDA_SUFFIX):
    return 'flax-gda', (
      f'a legacy Flax multi-process checkpoint whose arrays are in "{path}{_GDA_SUFFIX}" '
      '(written by save_checkpoint_multiprocess with a gda_manager)'
    )
  foreign = _sniff(path)
  if foreign is not None:
    return 'foreign-file', foreign
  return 'msgpack', 'a msgpack checkpoint'


class _HashingReader:
  """A binary file that feeds every byte read to SHA-256; read in one forward pass."""

  def __init__(self, f: Any):
    self._f = f
    self.hash = hashlib.sha256()

  def read(self, n: int = -1) -> bytes:
    data = self._f.read(n)
    self.hash.update(data)
    return data

  def readinto(self, buf: Any) -> int:
    n = self._f.readinto(buf)
    if n:
      self.hash.update(memoryview(buf).cast('B')[:n])
    return n

  def tell(self) -> int:
    return self._f.tell()

  def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
    # Only used to learn the size (to the end and straight back), between reads.
    return self._f.seek(offset, whence)

  def hexdigest(self) -> str:
    """The digest of the whole file: reads whatever the parser left unread first."""
    while self.read(1 << 20):
      pass
    return self.hash.hexdigest()


def _has_gda_placeholder(state: Any) -> bool:
  if isinstance(state, dict):
    return any(_has_gda_placeholder(v) for v in state.values())
  return isinstance(state, str) and state.startswith(_GDA_PLACEHOLDER)


def _is_single_checkpoint_dir(path: str, prefix: str) -> bool:
  """Whether the directory ``path`` is one checkpoint rather than a directory of them.

  It is when it has Orbax's top-level files, or when it holds no checkpoints but is
  named ``<prefix><step>`` and is not empty (a checkpoint in a layout that must not be
  mistaken for an empty checkpoint directory).
  """
  if any(os.path.lexists(os.path.join(path, m)) for m in _ORBAX_MARKERS):
    return True
  if _checkpoints(path, prefix):
    return False
  return _step_of(os.path.basename(os.path.normpath(path)), prefix) is not None and bool(
    os.listdir(path)
  )
