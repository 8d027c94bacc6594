"""File helpers with the names of ``flax.io`` (``tf.io.gfile``'s API), on the local filesystem.

Flax routes these through TensorFlow's ``gfile`` when TensorFlow is installed (for
``gs://`` paths); flaxlike never uses TensorFlow, so they are thin wrappers over ``open``,
``os``, ``shutil`` and ``glob``. Code written against ``flax.io`` runs unchanged on local
paths.

Example:

  >>> import os, tempfile
  >>> from flaxlike import io
  >>> root = tempfile.mkdtemp()
  >>> io.makedirs(os.path.join(root, 'run', 'logs'))
  >>> with io.GFile(os.path.join(root, 'run', 'notes.txt'), 'w') as f:
  ...   _ = f.write('hello')
  >>> sorted(io.listdir(os.path.join(root, 'run'))), io.getsize(os.path.join(root, 'run', 'notes.txt'))
  (['logs', 'notes.txt'], 5)
  >>> io.rmtree(root); io.exists(root)
  False
"""

from __future__ import annotations

import contextlib
import enum
import glob as glob_module
import os
import shutil
from collections.abc import Iterator
from typing import IO, Any

from flaxlike.errors import AlreadyExistsError

__all__ = [
  'BackendMode',
  'NotFoundError',
  'override_mode',
  'set_mode',
  'GFile',
  'listdir',
  'isdir',
  'copy',
  'rename',
  'exists',
  'makedirs',
  'glob',
  'remove',
  'rmtree',
  'getsize',
]


class BackendMode(enum.Enum):
  """Which file backend Flax uses; flaxlike has the local filesystem (``DEFAULT``) only."""

  DEFAULT = 0
  TF = 1


io_mode = BackendMode.DEFAULT

# What a missing file raises here (Flax: TensorFlow's NotFoundError when it uses gfile).
NotFoundError = FileNotFoundError


def _check_mode(mode: Any) -> BackendMode:
  if mode is not BackendMode.DEFAULT:
    raise ValueError(
      f'flaxlike.io has only the local filesystem backend (BackendMode.DEFAULT), got '
      f'{mode!r}. It never uses TensorFlow: copy remote files (gs://...) locally first.'
    )
  return mode


def set_mode(override: BackendMode) -> None:
  """Sets the backend; only ``BackendMode.DEFAULT`` (the local filesystem) exists here.

  Example:

    >>> from flaxlike import io
    >>> io.set_mode(io.BackendMode.DEFAULT)
  """
  global io_mode
  io_mode = _check_mode(override)


@contextlib.contextmanager
def override_mode(override: BackendMode) -> Iterator[None]:
  """Uses ``override`` as the backend inside a ``with`` block (``DEFAULT`` only).

  Example:

    >>> from flaxlike import io
    >>> with io.override_mode(io.BackendMode.DEFAULT):
    ...   io.exists('/')
    True
  """
  global io_mode
  previous, io_mode = io_mode, _check_mode(override)
  try:
    yield
  finally:
    io_mode = previous


def GFile(name: str | os.PathLike, mode: str) -> IO[Any]:  # noqa: N802  (Flax's name)
  """Opens a file, text mode as UTF-8 (``open(name, mode)`` otherwise).

  Example:

    >>> import os, tempfile
    >>> from flaxlike import io
    >>> path = os.path.join(tempfile.mkdtemp(), 'a.bin')
    >>> with io.GFile(path, 'wb') as f:
    ...   _ = f.write(b'xyz')
    >>> with io.GFile(path, 'rb') as f:
    ...   f.read()
    b'xyz'
  """
  if 'b' in mode:
    return open(name, mode)  # noqa: SIM115  (returned to the caller, who closes it)
  return open(name, mode, encoding='utf-8')  # noqa: SIM115


def listdir(path: str | os.PathLike) -> list[str]:
  """The names of the entries in a directory (``os.listdir``)."""
  return os.listdir(path)


def isdir(path: str | os.PathLike) -> bool:
  """Whether ``path`` is a directory."""
  return os.path.isdir(path)


def exists(path: str | os.PathLike) -> bool:
  """Whether ``path`` exists."""
  return os.path.exists(path)


def copy(src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False) -> None:
  """Copies a file; raises ``flaxlike.errors.AlreadyExistsError`` if ``dst`` exists, unless
  ``overwrite``.

  Example:

    >>> import os, tempfile
    >>> from flaxlike import io, errors
    >>> d = tempfile.mkdtemp()
    >>> src, dst = os.path.join(d, 'a'), os.path.join(d, 'b')
    >>> with io.GFile(src, 'w') as f:
    ...   _ = f.write('1')
    >>> io.copy(src, dst)
    >>> try:
    ...   io.copy(src, dst)
    ... except errors.AlreadyExistsError:
    ...   print('exists')
    exists
    >>> io.copy(src, dst, overwrite=True)
  """
  if os.path.exists(dst) and not overwrite:
    raise AlreadyExistsError(os.fspath(dst))
  shutil.copy(src, dst)


def rename(src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False) -> None:
  """Renames a file or directory; raises ``flaxlike.errors.AlreadyExistsError`` if ``dst``
  exists, unless ``overwrite``."""
  if os.path.exists(dst) and not overwrite:
    raise AlreadyExistsError(os.fspath(dst))
  if overwrite:
    os.replace(src, dst)
  else:
    os.rename(src, dst)


def makedirs(path: str | os.PathLike) -> None:
  """Creates a directory and its missing parents; an existing directory is fine."""
  os.makedirs(path, exist_ok=True)


def glob(pattern: str) -> list[str]:
  """The paths matching a shell pattern (not recursive), without trailing slashes.

  Example:

    >>> import os, tempfile
    >>> from flaxlike import io
    >>> d = tempfile.mkdtemp()
    >>> for name in ('checkpoint_1', 'checkpoint_2', 'other'):
    ...   io.makedirs(os.path.join(d, name))
    >>> sorted(os.path.basename(p) for p in io.glob(os.path.join(d, 'checkpoint_*')))
    ['checkpoint_1', 'checkpoint_2']
  """
  return [path.rstrip('/') for path in glob_module.glob(pattern, recursive=False)]


def remove(path: str | os.PathLike) -> None:
  """Deletes a file (not a directory: use ``rmtree``)."""
  os.remove(path)


def rmtree(path: str | os.PathLike) -> None:
  """Deletes a directory and everything in it."""
  shutil.rmtree(path)


def getsize(path: str | os.PathLike) -> int:
  """The size of a file in bytes."""
  return os.path.getsize(path)
