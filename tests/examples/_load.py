"""Loads a script from ``examples/`` as a module (the folder is not a package)."""

import importlib.util
import sys
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / 'examples'


def load_example(name: str):
  """Imports ``examples/<name>.py`` once per session under the name ``examples_<name>``.

  ``examples/`` goes on ``sys.path`` first: the scripts import their shared helper
  (``_extras``) by name, as they do when Python runs them from that folder.
  """
  if str(EXAMPLES_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLES_DIR))
  module_name = f'examples_{name}'
  if module_name in sys.modules:
    return sys.modules[module_name]
  spec = importlib.util.spec_from_file_location(module_name, EXAMPLES_DIR / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  # Registered before running so dataclass processing of its Modules can find the module.
  sys.modules[module_name] = module
  spec.loader.exec_module(module)
  return module
