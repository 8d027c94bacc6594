"""The documentation stays true: generated API pages match the code, links resolve.

The doctests in ``docs/**/*.md`` run through pytest's ``--doctest-glob``; this file checks
what doctests cannot: that ``docs/api/`` is exactly what ``docs/api/generate.py`` writes
from the live modules, that every public name has an entry, and that the hand-written
pages only link to files and headings that exist.
"""

import importlib.util
import pathlib
import re
import sys

import pytest

import flaxlike

DOCS = pathlib.Path(__file__).resolve().parents[1] / 'docs'
API = DOCS / 'api'
LINK_RE = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


def _load_generator():
  spec = importlib.util.spec_from_file_location('docs_api_generate', API / 'generate.py')
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


generate = _load_generator()


@pytest.fixture(scope='module')
def rendered():
  return generate.render_pages()


def test_api_pages_equal_generator_output(rendered):
  on_disk = {path.name: path.read_text() for path in API.glob('*.md')}
  assert sorted(on_disk) == sorted(rendered), 'run: .venv/bin/python docs/api/generate.py'
  stale = [name for name in rendered if on_disk[name] != rendered[name]]
  assert not stale, f'{stale} are out of date: run .venv/bin/python docs/api/generate.py'


def _entries() -> set[str]:
  """Names with a reference entry (a ``### `name``` heading or a JAX re-export list)."""
  names = set()
  for path in API.glob('*.md'):
    text = path.read_text()
    names.update(re.findall(r'^### `([^`]+)`$', text, flags=re.MULTILINE))
    for listing in re.findall(
      r'^## Re-exported from .*?\n\n(.*?)$', text, flags=re.MULTILINE | re.DOTALL
    ):
      names.update(re.findall(r'`([^`]+)`', listing))
  return names


def test_every_public_name_of_flaxlike_has_an_entry():
  module_titles = {
    match
    for path in API.glob('*.md')
    for match in re.findall(r'^# `([^`]+)`$', path.read_text(), flags=re.MULTILINE)
  }
  entries = _entries()
  missing = []
  for name in (n for n in dir(flaxlike) if not n.startswith('_')):
    obj = getattr(flaxlike, name)
    if type(obj) is type(flaxlike):
      covered = obj.__name__ in module_titles or any(
        title.startswith(obj.__name__ + '.') for title in module_titles
      )
    else:
      covered = name in entries
    if not covered:
      missing.append(name)
  assert not missing, f'no API entry for flaxlike.{missing}: add them to generate.PAGES'


def test_every_layer_page_covers_its_module_all():
  for module_name in (
    'flaxlike.linen.attention',
    'flaxlike.linen.transforms',
    'flaxlike.core.lift',
    'flaxlike.linen.spmd',
  ):
    module = importlib.import_module(module_name)
    missing = set(getattr(module, '__all__', generate.public_names(module))) - _entries()
    assert not missing, f'{module_name}: {sorted(missing)}'


def test_api_pages_are_deterministic_text_without_doctest_prompts(rendered):
  for name, text in rendered.items():
    assert not re.search(r'0x[0-9a-fA-F]{6,}', text), f'{name} shows a memory address'
    # Examples already run from the source docstrings; a prompt here would run them twice.
    assert not re.search(r'^\s*>>>', text, flags=re.MULTILINE), f'{name} contains a doctest prompt'


def test_docstring_markdown_lists_sections_and_turns_examples_into_code():
  doc = """Adds one.

  Use it as::

    y = add_one(x)

  Args:
    x: the input, which may be a long description
      continued here.
    **kwargs: ignored.

  Returns:
    ``x + 1``.

  Example:

  >>> add_one(1)
  2
  """
  assert generate.docstring_markdown(doc) == (
    'Adds one.\n\n'
    'Use it as:\n\n```\ny = add_one(x)\n```\n\n'
    '**Args:**\n\n'
    '- `x`: the input, which may be a long description continued here.\n'
    '- `**kwargs`: ignored.\n\n'
    '**Returns:** `x + 1`.\n\n'
    '**Example:**\n\n'
    '```python\nadd_one(1)\n# 2\n```'
  )


DEFAULT_INIT = flaxlike.linen.initializers.lecun_normal()  # a closure: its repr has an address


def test_signature_defaults_never_show_addresses():
  def fn(a, init=DEFAULT_INIT, dtype=float, act=lambda x: x):
    return a

  text = generate.signature_text('fn', fn, {'default_init': DEFAULT_INIT})
  assert text == 'fn(a, init = default_init, dtype = builtins.float, act = lambda)'


def _markdown_files():
  return sorted(DOCS.rglob('*.md'))


def _anchor(heading: str) -> str:
  # GitHub's rule: lower case, drop punctuation except '-' and '_', spaces become '-'.
  text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
  return text.replace(' ', '-')


def _anchors(path: pathlib.Path) -> set[str]:
  text = re.sub(r'```.*?```', '', path.read_text(), flags=re.DOTALL)
  return {_anchor(h) for h in re.findall(r'^#+ (.*)$', text, flags=re.MULTILINE)}


@pytest.mark.parametrize('path', _markdown_files(), ids=lambda p: str(p.relative_to(DOCS)))
def test_relative_links_resolve(path):
  text = re.sub(r'```.*?```', '', path.read_text(), flags=re.DOTALL)
  broken = []
  for target in LINK_RE.findall(text):
    if re.match(r'[a-z]+://', target):
      continue
    file_part, _, anchor = target.partition('#')
    linked = (path.parent / file_part).resolve() if file_part else path
    if not linked.exists() or (
      anchor and linked.suffix == '.md' and anchor not in _anchors(linked)
    ):
      broken.append(target)
  assert not broken, f'{path.relative_to(DOCS)} links to missing files or headings: {broken}'


@pytest.mark.parametrize(
  'path',
  [p for p in _markdown_files() if API not in p.parents],
  ids=lambda p: str(p.relative_to(DOCS)),
)
def test_handwritten_python_blocks_are_doctests(path):
  # A ```python block without prompts would never run, so it could silently go stale.
  for block in re.findall(r'```python\n(.*?)```', path.read_text(), flags=re.DOTALL):
    assert block.lstrip().startswith('>>>'), f'untested code block in {path.name}:\n{block}'
