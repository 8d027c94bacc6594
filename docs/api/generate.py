"""Writes the API reference pages in ``docs/api/`` from the live modules.

Run by hand after changing a public name, signature or docstring::

  .venv/bin/python docs/api/generate.py

``tests/test_docs.py`` fails while the checked-in pages differ from what this script
produces, so the reference cannot drift from the code. Each page lists a module's public
names with their signatures and docstrings, turned into Markdown. Docstring examples
already run as doctests from the source (``--doctest-modules``), so here they become plain
code blocks (prompts removed, expected output as ``#`` comments) that pytest does not run
a second time. The output is deterministic: no memory addresses, names in source order.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect
import pathlib
import re
import sys
import types
from typing import Any

API_DIR = pathlib.Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Page:
  """One reference page: a module and how to choose the names it documents.

  Attributes:
    module: the dotted module name.
    slug: the page's file name, without ``.md``.
    group: the index section the page is listed under.
    jax_reexports: also list the names the module takes from ``jax`` (activations,
      initializers), as links to JAX's documentation instead of full entries.
    extra: names to document besides the functions and classes the module defines (or
      lists in ``__all__``): constants, and re-exports missing from ``__all__``.
  """

  module: str
  slug: str
  group: str
  jax_reexports: bool = False
  extra: tuple[str, ...] = ()


# A name is documented in full on the first page that lists it; later pages link there
# instead. The engine comes first so its names are documented where they are defined.
PAGES = (
  Page('flaxlike.core.meta', 'core.meta', 'Engine', extra=('PARTITION_NAME',)),
  Page('flaxlike.core.lift', 'core.lift', 'Engine'),
  Page('flaxlike.core.staged_init', 'core.staged_init', 'Engine'),
  Page('flaxlike.core.partial_eval', 'core.partial_eval', 'Engine'),
  Page('flaxlike.core', 'core', 'Engine'),
  Page('flaxlike.core.nn', 'core.nn', 'Engine', jax_reexports=True),
  Page('flaxlike.core.nn.initializers', 'core.nn.initializers', 'Engine', jax_reexports=True),
  Page('flaxlike.linen.module', 'module', 'Modules'),
  Page('flaxlike.linen.transforms', 'transforms', 'Modules'),
  Page('flaxlike.linen.summary', 'summary', 'Modules'),
  Page('flaxlike.linen.spmd', 'spmd', 'Modules'),
  Page('flaxlike.linen.partitioning', 'partitioning', 'Modules'),
  Page('flaxlike.linen.kw_only_dataclasses', 'kw_only_dataclasses', 'Modules', extra=('KW_ONLY',)),
  Page('flaxlike.linen.linear', 'linear', 'Layers'),
  Page('flaxlike.linen.attention', 'attention', 'Layers'),
  Page('flaxlike.linen.normalization', 'normalization', 'Layers'),
  Page(
    'flaxlike.linen.recurrent', 'recurrent', 'Layers', extra=('RNNBase', 'RNN', 'Bidirectional')
  ),
  Page('flaxlike.linen.pooling', 'pooling', 'Layers'),
  Page('flaxlike.linen.activation', 'activation', 'Layers', jax_reexports=True),
  Page('flaxlike.linen.initializers', 'initializers', 'Layers', jax_reexports=True),
  Page('flaxlike.linen.stochastic', 'stochastic', 'Layers'),
  Page('flaxlike.linen.combinators', 'combinators', 'Layers'),
  Page('flaxlike.linen.batch_apply', 'batch_apply', 'Layers'),
  Page('flaxlike.linen.dtypes', 'dtypes', 'Layers'),
  Page(
    'flaxlike.serialization',
    'serialization',
    'Saving and training',
    extra=('MAX_CHUNK_SIZE', 'MAX_DEPTH'),
  ),
  Page('flaxlike.training.train_state', 'training.train_state', 'Saving and training'),
  Page('flaxlike.training.checkpoints', 'training.checkpoints', 'Saving and training'),
  Page('flaxlike.training.orbax_utils', 'training.orbax_utils', 'Saving and training'),
  Page('flaxlike.training.common_utils', 'training.common_utils', 'Saving and training'),
  Page('flaxlike.training.dynamic_scale', 'training.dynamic_scale', 'Saving and training'),
  Page('flaxlike.training.early_stopping', 'training.early_stopping', 'Saving and training'),
  Page('flaxlike.training.lr_schedule', 'training.lr_schedule', 'Saving and training'),
  Page('flaxlike.training.prefetch_iterator', 'training.prefetch_iterator', 'Saving and training'),
  Page('flaxlike.metrics.tensorboard', 'metrics.tensorboard', 'Saving and training'),
  Page('flaxlike.jax_utils', 'jax_utils', 'Utilities'),
  Page('flaxlike.cursor', 'cursor', 'Utilities'),
  Page('flaxlike.struct', 'struct', 'Utilities'),
  Page('flaxlike.traverse_util', 'traverse_util', 'Utilities', extra=('empty_node',)),
  Page('flaxlike.errors', 'errors', 'Utilities'),
  Page('flaxlike.configurations', 'config', 'Utilities', extra=('config',)),
  Page('flaxlike.typing', 'typing', 'Utilities'),
  Page('flaxlike.io', 'io', 'Utilities'),
  Page('flaxlike.traceback_util', 'traceback_util', 'Utilities'),
  Page('flaxlike.version', 'version', 'Utilities', extra=('__version__',)),
)

# Packages whose namespace is made of re-exports: their names are documented on the page of
# the module that defines them (or on the package page itself when that module is private).
PACKAGES = ('flaxlike.core', 'flaxlike.linen', 'flaxlike', 'flaxlike.serialization')

SECTION_RE = re.compile(r'^(Args|Attributes|Returns|Raises|Example)( \(.*\))?:$')
ITEM_SECTIONS = ('Args', 'Attributes', 'Raises')
ADDRESS_RE = re.compile(r' at 0x[0-9a-fA-F]+')


def available_pages() -> list[Page]:
  """The pages whose module exists in this checkout (``spmd`` may not, on old trees)."""
  pages = []
  for page in PAGES:
    try:
      importlib.import_module(page.module)
    except ModuleNotFoundError:
      continue
    pages.append(page)
  return pages


def public_names(module: types.ModuleType, page: Page | None = None) -> list[str]:
  """The names a module exports, in the order its source defines or imports them."""
  extra = page.extra if page is not None else ()
  declared = getattr(module, '__all__', None)
  if declared is not None:
    return list(declared) + [name for name in extra if name not in declared]
  is_package = module.__name__ in PACKAGES
  names = []
  for name, obj in vars(module).items():
    if name.startswith('_') or isinstance(obj, types.ModuleType):
      continue
    home = getattr(obj, '__module__', None) or ''
    own = home == module.__name__ and _is_documentable(obj)
    reexport = is_package and home.startswith('flaxlike') and _is_documentable(obj)
    from_jax = page is not None and page.jax_reexports and home.startswith('jax')
    if own or reexport or from_jax or name in extra:
      names.append(name)
  return names


def _is_documentable(obj: Any) -> bool:
  # TypeVars and typing aliases carry a __module__ but are not API.
  return inspect.isclass(obj) or inspect.isroutine(obj) or hasattr(obj, '__wrapped__')


def _default_text(value: Any, namespace: dict[str, Any]) -> str:
  """A default value as source-like text, never with a memory address."""
  if value is inspect.Parameter.empty:
    return ''
  for name, obj in namespace.items():
    # Closures such as ``lecun_normal()`` only repr with their address: use the module
    # level name they are bound to, as the source does.
    if obj is value and not name.startswith('__') and ADDRESS_RE.search(repr(value)):
      return name
  if inspect.isclass(value):
    return f'{value.__module__}.{value.__qualname__}'.replace('jax.numpy.', 'jnp.')
  if inspect.isroutine(value):
    return 'lambda' if value.__name__ == '<lambda>' else value.__qualname__
  text = repr(value)
  text = re.sub(r"<class '([^']+)'>", r'\1', text)
  return ADDRESS_RE.sub('', text)


def signature_text(name: str, obj: Any, namespace: dict[str, Any]) -> str:
  """``name(arg: type = default, ...) -> type`` with deterministic defaults."""
  try:
    sig = inspect.signature(obj)
  except (TypeError, ValueError):
    return name
  parts = []
  seen_keyword_only = False
  for i, param in enumerate(sig.parameters.values()):
    if i == 0 and param.name in ('self', 'cls'):
      continue
    prefix = ''
    if param.kind is param.VAR_POSITIONAL:
      prefix, seen_keyword_only = '*', True
    elif param.kind is param.VAR_KEYWORD:
      prefix = '**'
    elif param.kind is param.KEYWORD_ONLY and not seen_keyword_only:
      parts.append('*')
      seen_keyword_only = True
    text = prefix + param.name
    if param.annotation is not inspect.Parameter.empty:
      annotation = param.annotation
      text += ': ' + (annotation if isinstance(annotation, str) else _annotation(annotation))
    if param.default is not inspect.Parameter.empty:
      text += ' = ' + _default_text(param.default, namespace)
    parts.append(text)
  result = f'{name}({", ".join(parts)})'
  if sig.return_annotation not in (inspect.Signature.empty, None, 'None'):
    returns = sig.return_annotation
    result += ' -> ' + (returns if isinstance(returns, str) else _annotation(returns))
  return result


def _annotation(annotation: Any) -> str:
  if inspect.isclass(annotation):
    return annotation.__qualname__
  return ADDRESS_RE.sub('', repr(annotation)).replace('typing.', '')


def docstring_markdown(doc: str | None) -> str:
  """A Google-style docstring as Markdown: sections become lists, examples code blocks."""
  if not doc:
    return ''
  lines = inspect.cleandoc(doc).replace('``', '`').splitlines()
  out: list[str] = []
  body: list[str] = []
  section = None
  for line in lines + ['Args:']:  # the sentinel flushes the last section
    match = SECTION_RE.match(line)
    if match is None:
      body.append(line)
      continue
    out.append(_section_markdown(section, body))
    section, body = match.group(0)[:-1], []
  return '\n\n'.join(part for part in out if part)


def _section_markdown(section: str | None, body: list[str]) -> str:
  if section is None:
    return _prose(body)
  kind = section.split(' ')[0]
  heading = f'**{section}:**'
  if kind in ITEM_SECTIONS:
    return heading + '\n\n' + _items(body)
  if kind == 'Example':
    return heading + '\n\n' + _prose(body)
  return heading + ' ' + ' '.join(line.strip() for line in body if line.strip())


def _items(body: list[str]) -> str:
  """``  name: text`` entries (continuations indented deeper) as a bullet list."""
  items: list[str] = []
  for line in body:
    if not line.strip():
      continue
    if line.startswith('  ') and not line.startswith('    ') and ':' in line:
      name, _, text = line.strip().partition(':')
      items.append(f'- `{name}`:{" " + text.strip() if text.strip() else ""}')
    elif items:
      items[-1] += ' ' + line.strip()
    else:
      items.append(line.strip())
  return '\n'.join(items)


def _prose(body: list[str]) -> str:
  """Free text with any doctest examples turned into fenced code blocks."""
  text = inspect.cleandoc('\n'.join(body))
  if not text:
    return ''
  blocks: list[str] = []
  code: list[str] = []
  for part in doctest.DocTestParser().parse(text):
    if isinstance(part, doctest.Example):
      code.extend(part.source.rstrip('\n').splitlines())
      code.extend('# ' + line for line in part.want.rstrip('\n').splitlines())
      continue
    if not part.strip():
      continue
    if code:
      blocks.append('```python\n' + '\n'.join(code) + '\n```')
      code = []
    blocks.append(_rst_to_markdown(part.strip('\n')).strip())
  if code:
    blocks.append('```python\n' + '\n'.join(code) + '\n```')
  return '\n\n'.join(blocks)


def _rst_to_markdown(text: str) -> str:
  """reST underlined titles become bold lines, ``::`` literal blocks fenced code."""
  out: list[str] = []
  literal: list[str] | None = None  # lines of the open literal block
  for line in text.splitlines():
    if literal is not None:
      if not line.strip() or line.startswith(' '):
        literal.append(line)
        continue
      out += [_fence(literal), '']
      literal = None
    if out and out[-1].strip() and re.fullmatch(r'[-=]{3,}', line.strip()):
      out[-1] = f'**{out[-1].strip()}**'
    elif line.endswith('::'):
      out += [line[:-1], '']
      literal = []
    else:
      out.append(line)
  if literal:
    out.append(_fence(literal))
  return '\n'.join(out)


def _fence(lines: list[str]) -> str:
  return '```\n' + inspect.cleandoc('\n'.join(lines)) + '\n```'


def _entry_link(where: tuple[str, str]) -> str:
  """The relative link to an entry; aliases (``checkpoint``) link to the documented name."""
  slug, name = where
  return f'{slug}.md#{name.lower()}'


def _doc_key(name: str, obj: Any) -> Any:
  """Identifies a documented object: functions and classes by identity, values by name."""
  return name if _kind(obj) == 'constant' else id(obj)


def _kind(obj: Any) -> str:
  if inspect.isclass(obj):
    return 'exception' if issubclass(obj, BaseException) else 'class'
  return 'function' if callable(obj) else 'constant'


def _members(cls: type, documented: dict[Any, tuple[str, str]]) -> list[tuple[str, Any]]:
  """Public methods and properties of ``cls`` that no documented base class already lists."""
  members = []
  seen = set(getattr(cls, '__dataclass_fields__', ()))  # fields are in the signature
  for klass in cls.__mro__:
    if klass is not cls and (
      id(klass) in documented or not klass.__module__.startswith('flaxlike')
    ):
      break
    for name, obj in vars(klass).items():
      if name in seen or (name.startswith('_') and name != '__call__'):
        continue
      seen.add(name)
      if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
      is_member = isinstance(obj, property) or inspect.isfunction(obj)
      if is_member and (getattr(obj, '__doc__', None) or name == '__call__'):
        members.append((name, obj))
  return members


def entry_markdown(
  name: str, obj: Any, module: types.ModuleType, documented: dict[Any, tuple[str, str]]
) -> str:
  """A full reference entry: heading, signature, docstring, and for classes their members."""
  namespace = vars(module)
  if _kind(obj) == 'constant':
    value = repr(obj)
    if ADDRESS_RE.search(value):  # an object without a useful repr: show its type
      value = f'{type(obj).__qualname__}(...)'
    return f'### `{name}`\n\n```python\n{name} = {value}\n```'
  prefix = 'class ' if inspect.isclass(obj) else ''
  lines = [f'### `{name}`', '', f'```python\n{prefix}{signature_text(name, obj, namespace)}\n```']
  doc = docstring_markdown(inspect.getdoc(obj) if inspect.isclass(obj) else obj.__doc__)
  if doc:
    lines += ['', doc]
  if inspect.isclass(obj) and not issubclass(obj, BaseException):
    for member_name, member in _members(obj, documented):
      if isinstance(member, property):
        text = f'#### `{name}.{member_name}` (property)'
        member_doc = docstring_markdown(member.__doc__)
      else:
        text = f'#### `{name}.{member_name}`\n\n```python\n'
        text += signature_text(member_name, member, namespace) + '\n```'
        member_doc = docstring_markdown(member.__doc__)
      lines += ['', text + ('\n\n' + member_doc if member_doc else '')]
  return '\n'.join(lines)


def _page_heading(page: Page, module: types.ModuleType) -> str:
  doc = docstring_markdown(module.__doc__)
  return f'# `{page.module}`\n\n{doc}' if doc else f'# `{page.module}`'


def render_pages() -> dict[str, str]:
  """Every reference page (``{file name: Markdown}``), the index included."""
  pages = available_pages()
  documented: dict[Any, tuple[str, str]] = {}  # _doc_key -> (page slug, entry name)
  rendered = {}
  for page in pages:
    module = importlib.import_module(page.module)
    entries, links, jax_names = [], [], []
    for name in public_names(module, page):
      obj = getattr(module, name)
      home = getattr(obj, '__module__', '') or ''
      if page.jax_reexports and home.startswith('jax'):
        jax_names.append(name)
        continue
      if _doc_key(name, obj) in documented:
        links.append(f'[`{name}`]({_entry_link(documented[_doc_key(name, obj)])})')
        continue
      entries.append(entry_markdown(name, obj, module, documented))
      documented[_doc_key(name, obj)] = (page.slug, name)
    parts = [_page_heading(page, module), GENERATED_NOTE]
    if jax_names:
      source = 'jax.nn.initializers' if 'initializers' in page.module else 'jax.nn'
      listed = ', '.join(f'`{n}`' for n in jax_names)
      parts.append(
        f'## Re-exported from `{source}`\n\nThe same functions as `{source}` '
        f'(see the JAX documentation): {listed}.'
      )
    if links:
      parts.append('## Documented elsewhere (re-exports and aliases)\n\n' + ', '.join(links) + '.')
    if entries:
      parts.append('## Reference\n\n' + '\n\n'.join(entries))
    rendered[f'{page.slug}.md'] = '\n\n'.join(parts) + '\n'
  rendered['index.md'] = _index(pages, documented)
  return rendered


GENERATED_NOTE = (
  '*Generated by `docs/api/generate.py` from the docstrings; do not edit by hand. '
  'Examples are copied from the docstrings, where they run as doctests.*'
)


def _index(pages: list[Page], documented: dict[Any, tuple[str, str]]) -> str:
  """The index: the pages by group, then every name of ``flaxlike`` with its page."""
  import flaxlike

  lines = ['# API reference', '', GENERATED_NOTE]
  for group in dict.fromkeys(page.group for page in pages):
    lines += ['', f'## {group}', '']
    for page in (p for p in pages if p.group == group):
      doc = inspect.cleandoc(importlib.import_module(page.module).__doc__ or '')
      summary = ' '.join(doc.split('\n\n')[0].split()).replace('``', '`')
      lines.append(f'- [`{page.module}`]({page.slug}.md): {summary}')
  lines += [
    '',
    '## The `flaxlike` namespace',
    '',
    (
      '`import flaxlike as nn` gives these names. `flaxlike.linen` holds the same '
      'Module API; `core`, `serialization`, `struct`, `traverse_util`, `errors`, '
      '`training`, `jax_utils`, `io`, `typing`, `traceback_util`, `version` and `config` '
      'are only on `flaxlike`.'
    ),
    '',
    '| name | documented on |',
    '|---|---|',
  ]
  for name in sorted(n for n in vars(flaxlike) if not n.startswith('_')):
    lines.append(f'| `{name}` | {_where(name, getattr(flaxlike, name), pages, documented)} |')
  return '\n'.join(lines) + '\n'


def _where(name: str, obj: Any, pages: list[Page], documented: dict[Any, tuple[str, str]]) -> str:
  """A link to the page documenting ``flaxlike.<name>``; raises if there is none."""
  if isinstance(obj, types.ModuleType):
    slugs = [p.slug for p in pages if p.module == obj.__name__]
    slugs = slugs or [p.slug for p in pages if p.module.startswith(obj.__name__ + '.')]
    return ', '.join(f'[`{slug}`]({slug}.md)' for slug in slugs)
  if _doc_key(name, obj) in documented:
    slug, _ = documented[_doc_key(name, obj)]
    return f'[`{slug}`]({_entry_link(documented[_doc_key(name, obj)])})'
  for page in pages:
    if page.jax_reexports and vars(importlib.import_module(page.module)).get(name) is obj:
      return f'[`{page.slug}`]({page.slug}.md)'
  raise LookupError(f'flaxlike.{name} is documented on no page: add it to PAGES in {__file__}')


def main() -> None:
  rendered = render_pages()
  for file_name, text in rendered.items():
    (API_DIR / file_name).write_text(text)
  stale = {p.name for p in API_DIR.glob('*.md')} - set(rendered)
  for file_name in sorted(stale):
    (API_DIR / file_name).unlink()
  print(f'wrote {len(rendered)} pages to {API_DIR}', file=sys.stderr)


if __name__ == '__main__':
  main()
