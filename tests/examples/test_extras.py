"""The examples that need the 'examples' extra say so in one line when it is missing."""

import subprocess
import sys

import pytest

from tests.examples._load import EXAMPLES_DIR

REPO_ROOT = EXAMPLES_DIR.parent

# Runs an example as `python examples/<name>.py --help` does, with some modules made
# unimportable: a None entry in sys.modules makes `import name` raise ModuleNotFoundError.
RUN_WITHOUT = """
import runpy, sys
for name in sys.argv[2:]:
  sys.modules[name] = None
script = sys.argv[1]
sys.path.insert(0, {examples!r})  # as Python does for a script's folder
sys.argv = [script, '--help']
runpy.run_path(script, run_name='__main__')
"""

HINT = (
  "from flaxlike's 'examples' extra: pip install 'flaxlike[examples]' "
  "(from a checkout: pip install '.[examples]')"
)


def run_without(script: str, *missing: str) -> subprocess.CompletedProcess:
  code = RUN_WITHOUT.format(examples=str(EXAMPLES_DIR))
  return subprocess.run(
    [sys.executable, '-c', code, str(EXAMPLES_DIR / script), *missing],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )


@pytest.mark.parametrize(
  'script, missing',
  [
    ('demo.py', 'matplotlib'),
    ('demo.py', 'tqdm'),
    ('digits_cnn.py', 'sklearn'),
    ('vae_digits.py', 'sklearn'),
  ],
)
def test_help_without_the_extra_exits_with_one_line(script, missing):
  result = run_without(script, missing)
  assert result.returncode == 1
  assert result.stdout == ''
  assert result.stderr == f'This example needs {missing} {HINT}\n'


def test_help_with_the_extra_installed():
  pytest.importorskip('matplotlib')
  pytest.importorskip('tqdm')
  result = subprocess.run(
    [sys.executable, str(EXAMPLES_DIR / 'demo.py'), '--help'],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith('usage: demo.py')
  assert '--schedule-steps' in result.stdout
