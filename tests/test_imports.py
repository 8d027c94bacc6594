"""The import structure: no cycles inside flaxlike (function-level imports included) and
core never imports linen; and the check itself finds both kinds of problem."""

import pathlib
import subprocess
import sys
import textwrap

from flaxlike._devtools import imports

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_flaxlike_import_structure_is_clean():
  assert imports.check() == []


def test_command_line_exits_zero_on_flaxlike():
  result = subprocess.run(
    [sys.executable, '-m', 'flaxlike._devtools.imports'],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 0, result.stdout + result.stderr


def _package(tmp_path: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
  root = tmp_path / 'flaxlike'
  for name, source in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
  return root


def test_cycle_closed_inside_a_function_is_reported(tmp_path):
  root = _package(
    tmp_path,
    {
      '__init__.py': '',
      'linen/__init__.py': '',
      'linen/a.py': 'from flaxlike.linen import b\n',
      'linen/b.py': 'def f():\n  from . import a\n  return a\n',
    },
  )
  (problem,) = imports.check(root)
  assert 'import cycle among flaxlike.linen.a, flaxlike.linen.b' in problem
  assert 'flaxlike/linen/b.py:2 (inside a function)' in problem
  assert imports.main(['--root', str(root)]) == 1


def test_core_importing_linen_is_reported(tmp_path):
  root = _package(
    tmp_path,
    {
      '__init__.py': 'from flaxlike import core, linen\n',
      'core/__init__.py': '',
      'core/scope.py': 'import flaxlike.linen.module\n',
      'linen/__init__.py': '',
      'linen/module.py': 'from flaxlike.core import scope\n',
    },
  )
  problems = imports.check(root)
  assert any('flaxlike.core.scope imports flaxlike.linen.module' in p for p in problems)
  assert any('import cycle' in p for p in problems)


def test_type_checking_imports_and_package_parents_are_not_edges(tmp_path):
  root = _package(
    tmp_path,
    {
      # The package re-exports everything: importing a submodule runs it, but that is
      # not a cycle of the submodules.
      '__init__.py': 'from flaxlike import low, high\n',
      'low.py': 'from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n  from flaxlike import high\n',
      'high.py': 'from flaxlike import low\n',
    },
  )
  assert imports.check(root) == []
