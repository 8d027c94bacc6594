"""Types: basedpyright in standard mode finds no error in flaxlike/ or in the sample of user
code in tests/typing/, and still reports the mistakes marked in tests/typing/reported_errors.py.

The checker's settings are [tool.basedpyright] in pyproject.toml, so `basedpyright` run bare
from the repository root is the same check. basedpyright is pinned to one minor version in
the test extras, so a new release cannot turn the suite red on its own.
"""

import collections
import importlib.util
import json
import pathlib
import re
import subprocess
import sys

import flaxlike
from flaxlike import configurations

ROOT = pathlib.Path(__file__).resolve().parents[1]
TYPING = ROOT / 'tests' / 'typing'

# Errors tolerated in library files, per file, while they are being fixed: the check fails
# when a file has more errors than listed here, and also when it has fewer (lower the
# number, or drop the entry), so the list only ever shrinks. It is empty: every file,
# tests/typing/ included, must check clean.
KNOWN_ERRORS: dict[str, int] = {}


def test_basedpyright_finds_no_errors():
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'basedpyright',
      '--outputjson',
      '--pythonpath',
      sys.executable,
      '--project',
      str(ROOT / 'pyproject.toml'),
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
  )
  report = json.loads(result.stdout)
  errors = [d for d in report['generalDiagnostics'] if d['severity'] == 'error']
  for d in errors:
    d['file'] = pathlib.Path(d['file']).relative_to(ROOT).as_posix()
  counts = collections.Counter(d['file'] for d in errors)
  unexpected = [d for d in errors if counts[d['file']] > KNOWN_ERRORS.get(d['file'], 0)]
  listing = '\n'.join(
    f'{d["file"]}:{d["range"]["start"]["line"] + 1}: {d["message"].splitlines()[0]} '
    f'({d.get("rule", "")})'
    for d in unexpected
  )
  assert not unexpected, f'basedpyright found new error(s):\n{listing}'
  fixed = {f: (n, counts[f]) for f, n in KNOWN_ERRORS.items() if counts[f] < n}
  assert not fixed, f'fewer errors than KNOWN_ERRORS lists (listed, now); lower them: {fixed}'
  checked = report['summary']['filesAnalyzed']
  assert checked >= len(list((ROOT / 'flaxlike').rglob('*.py'))), report['summary']


def test_reported_errors_sample_marks_each_mistake_with_its_rule():
  source = (TYPING / 'reported_errors.py').read_text()
  assert '# pyright: reportUnnecessaryTypeIgnoreComment=error' in source
  marked = re.findall(r'# pyright: ignore\[(\w+)\]', source)
  # Wrong field types and misspelled fields, names and attributes.
  assert marked.count('reportArgumentType') >= 2
  assert marked.count('reportCallIssue') >= 2
  assert marked.count('reportAttributeAccessIssue') >= 2


def test_user_code_sample_runs():
  # Imported as a module, as user code is: classes a transform makes at call time look
  # their defining module up in sys.modules (runpy removes it once the file has run).
  spec = importlib.util.spec_from_file_location('flaxlike_typing_sample', TYPING / 'user_code.py')
  assert spec is not None and spec.loader is not None
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  try:
    spec.loader.exec_module(module)
    assert module.build() == 1.5
  finally:
    del sys.modules[spec.name]


def test_every_config_flag_is_declared_for_type_checkers():
  declared = configurations.Config.__annotations__
  assert set(declared) == set(configurations._FLAG_DEFAULTS)
  for name in declared:
    assert hasattr(flaxlike.config, name)


def test_package_ships_py_typed():
  assert (pathlib.Path(flaxlike.__file__).parent / 'py.typed').is_file()
