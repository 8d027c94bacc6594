"""The source tree passes ruff check with the project's rules ([tool.ruff.lint] in
pyproject.toml), is formatted as ruff format would write it, and keeps every library file
short enough to read.

ruff is pinned to one minor version in the test extras, so a new ruff release cannot turn
the suite red on its own.
"""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean():
  result = subprocess.run(
    [sys.executable, '-m', 'ruff', 'check', '--no-cache', '--output-format', 'concise', '.'],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 0, f'ruff found problems:\n{result.stdout}{result.stderr}'


def test_ruff_format_is_clean():
  result = subprocess.run(
    [sys.executable, '-m', 'ruff', 'format', '--check', '--no-cache', '.'],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 0, (
    f'ruff format would change files (run .venv/bin/ruff format .):\n{result.stdout}{result.stderr}'
  )


# A file past this length has grown a second subject; split it along the seam (as
# serialization/ and core/packing.py were) rather than raising the limit.
MAX_LIBRARY_FILE_LINES = 900


def test_no_library_file_is_over_the_length_limit():
  too_long = {}
  for path in sorted((ROOT / 'flaxlike').rglob('*.py')):
    n_lines = len(path.read_text(encoding='utf-8').splitlines())
    if n_lines > MAX_LIBRARY_FILE_LINES:
      too_long[str(path.relative_to(ROOT))] = n_lines
  assert not too_long, (
    f'library files over {MAX_LIBRARY_FILE_LINES} lines: {too_long}; move a self-contained '
    'part into a module of its own'
  )
