"""What the examples share: a one-line exit when an optional dependency is missing.

The examples run as scripts (``python examples/demo.py``), so Python puts this folder on
``sys.path`` and they import this file by its name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def install_hint(extra: str) -> str:
  """The command that installs flaxlike's optional dependency group ``extra``.

  Example:

  >>> install_hint('examples')
  "pip install 'flaxlike[examples]' (from a checkout: pip install '.[examples]')"
  """
  return f"pip install 'flaxlike[{extra}]' (from a checkout: pip install '.[{extra}]')"


@contextlib.contextmanager
def needs_extra(extra: str = 'examples') -> Iterator[None]:
  """Turns a failed import inside the block into a one-line exit naming the extra.

  The imports sit at the top of each example, so ``--help`` reports a missing extra the
  same way a run does, instead of a ``ModuleNotFoundError`` traceback.

  Args:
    extra: the optional dependency group of ``pyproject.toml`` that holds the imports.

  Raises:
    SystemExit: a module imported in the block is not installed (exit status 1, the
      message on stderr).

  Example:

  >>> with needs_extra():
  ...   import json
  >>> with needs_extra('examples'):
  ...   import a_module_nobody_installed
  Traceback (most recent call last):
  SystemExit: This example needs a_module_nobody_installed from flaxlike's 'examples' extra: ...
  """
  try:
    yield
  except ModuleNotFoundError as error:
    # error.name is the module that is missing (maybe a dependency of the one imported);
    # its top-level package is what a user installs, and the extra brings in both.
    missing = (error.name or 'a module').partition('.')[0]
    raise SystemExit(
      f"This example needs {missing} from flaxlike's {extra!r} extra: {install_hint(extra)}"
    ) from None
