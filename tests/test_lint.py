"""The source tree passes ruff check with the project's rules ([tool.ruff.lint] in
pyproject.toml) and is formatted as ruff format would write it.

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
