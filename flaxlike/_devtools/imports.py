"""The import-structure check: no import cycles inside flaxlike, and core never imports linen.

Run it from anywhere::

  python -m flaxlike._devtools.imports            # checks the installed/importable flaxlike
  python -m flaxlike._devtools.imports --root DIR  # checks the package directory DIR

It reads the source with ``ast`` (nothing is imported), so it also sees imports that only
run when a function is called: an import inside a function that closes a cycle is still a
cycle, only a lazier one. Imports under ``if TYPE_CHECKING:`` never run and are skipped.
Importing ``a.b.c`` counts as an edge to ``a.b.c`` only, not to the packages ``a`` and
``a.b`` that Python initialises on the way (every module would otherwise sit in a cycle
with ``flaxlike/__init__.py``, which re-exports the whole library).

Exit status 0 when the structure is clean, 1 (with one line per problem) otherwise.

Example:

>>> from flaxlike._devtools import imports
>>> imports.check()
[]
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import pathlib
import sys
from collections.abc import Iterator, Sequence

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1]

# (importer prefix, forbidden imported prefix, why): the layering rules besides acyclicity.
LAYER_RULES: tuple[tuple[str, str, str], ...] = (
  (
    'flaxlike.core',
    'flaxlike.linen',
    'the functional core sits below the Module layer (core/ must never import linen/)',
  ),
)


@dataclasses.dataclass(frozen=True)
class Import:
  """One import statement that resolves to a module of the package.

  Attributes:
    importer: the dotted name of the importing module.
    imported: the dotted name of the imported module.
    path: the importing file, relative to the directory that holds the package.
    line: the line of the import statement.
    in_function: whether the statement sits inside a function body.
  """

  importer: str
  imported: str
  path: pathlib.Path
  line: int
  in_function: bool

  def where(self) -> str:
    lazy = ' (inside a function)' if self.in_function else ''
    return f'{self.path.as_posix()}:{self.line}{lazy}'


def module_names(package_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  """Maps the dotted name of every module under ``package_dir`` to its file."""
  names = {}
  for path in sorted(package_dir.rglob('*.py')):
    parts = list(path.relative_to(package_dir.parent).with_suffix('').parts)
    if parts[-1] == '__init__':
      parts.pop()
    names['.'.join(parts)] = path
  return names


def _is_type_checking(test: ast.expr) -> bool:
  if isinstance(test, ast.Name):
    return test.id == 'TYPE_CHECKING'
  return isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING'


def _statements(
  body: Sequence[ast.stmt], in_function: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
  """Every import statement in ``body`` that can run, with whether it is in a function."""
  for node in body:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      yield node, in_function
      continue
    if isinstance(node, ast.If) and _is_type_checking(node.test):
      # Never runs; only the `else:` branch does.
      yield from _statements(node.orelse, in_function)
      continue
    nested = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
    for field in ('body', 'orelse', 'finalbody', 'handlers', 'cases'):
      children = getattr(node, field, None)
      if not children:
        continue
      stmts = []
      for child in children:
        # except-handlers and match-cases hold their own statement bodies.
        if isinstance(child, (ast.ExceptHandler, ast.match_case)):
          stmts.extend(child.body)
        elif isinstance(child, ast.stmt):
          stmts.append(child)
      yield from _statements(stmts, in_function or nested)


def _resolve(
  node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, known: set[str]
) -> list[str]:
  """The modules of the package that ``node`` imports."""
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names if alias.name in known]
  base = node.module or ''
  if node.level:
    anchor = importer.split('.')
    if not is_package:
      anchor.pop()
    anchor = anchor[: len(anchor) - (node.level - 1)]
    base = '.'.join([*anchor, base] if base else anchor)
  found = []
  for alias in node.names:
    submodule = f'{base}.{alias.name}'
    if submodule in known:
      found.append(submodule)
    elif base in known:
      found.append(base)
  return found


def collect_imports(package_dir: pathlib.Path = PACKAGE_DIR) -> list[Import]:
  """Every import between modules of the package rooted at ``package_dir``."""
  names = module_names(package_dir)
  known = set(names)
  imports = []
  for importer, path in names.items():
    tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    is_package = path.name == '__init__.py'
    for node, in_function in _statements(tree.body, False):
      for imported in _resolve(node, importer, is_package, known):
        if imported != importer:
          relative = path.relative_to(package_dir.parent)
          imports.append(Import(importer, imported, relative, node.lineno, in_function))
  return imports


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
  """Tarjan's algorithm, iterative: the components with more than one module."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  on_stack: set[str] = set()
  stack: list[str] = []
  components = []
  counter = 0
  for root in sorted(graph):
    if root in index:
      continue
    work = [(root, iter(graph[root]))]
    index[root] = low[root] = counter
    counter += 1
    stack.append(root)
    on_stack.add(root)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          index[child] = low[child] = counter
          counter += 1
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(graph.get(child, []))))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        parent = work[-1][0]
        low[parent] = min(low[parent], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.append(member)
          if member == node:
            break
        if len(component) > 1:
          components.append(sorted(component))
  return components


def _shortest_cycle(start: str, members: set[str], graph: dict[str, list[str]]) -> list[str]:
  """A shortest import chain from ``start`` back to itself inside one component."""
  previous: dict[str, str] = {}
  frontier = [start]
  while frontier:
    following = []
    for node in frontier:
      for child in graph[node]:
        if child not in members:
          continue
        if child == start:
          chain = [node]
          while chain[-1] != start:
            chain.append(previous[chain[-1]])
          return [start, *reversed(chain[:-1]), start]
        if child not in previous:
          previous[child] = node
          following.append(child)
    frontier = following
  return [start, start]


def check(package_dir: pathlib.Path = PACKAGE_DIR) -> list[str]:
  """Returns one message per problem in the package's import structure (empty: clean).

  Args:
    package_dir: the package directory to check (default: this flaxlike).
  """
  imports = collect_imports(package_dir)
  graph: dict[str, list[str]] = {name: [] for name in module_names(package_dir)}
  first: dict[tuple[str, str], Import] = {}
  for imp in imports:
    if (imp.importer, imp.imported) not in first:
      first[imp.importer, imp.imported] = imp
      graph[imp.importer].append(imp.imported)
  problems = []
  for imp in imports:
    for importer_prefix, imported_prefix, why in LAYER_RULES:
      if _within(imp.importer, importer_prefix) and _within(imp.imported, imported_prefix):
        problems.append(
          f'{imp.where()}: {imp.importer} imports {imp.imported}, but {why}. Move the shared '
          f'code down into {importer_prefix} or pass it in from the caller.'
        )
  for component in _strongly_connected(graph):
    cycle = _shortest_cycle(component[0], set(component), graph)
    steps = ', '.join(
      f'{a} -> {b} ({first[a, b].where()})' for a, b in zip(cycle, cycle[1:], strict=False)
    )
    problems.append(
      f'import cycle among {", ".join(component)}: {steps}. Break it by direction: move '
      'what both sides need into a module below them, or name the class only in '
      'annotations (under TYPE_CHECKING); an import inside a function does not break it.'
    )
  return problems


def _within(module: str, prefix: str) -> bool:
  return module == prefix or module.startswith(prefix + '.')


def main(argv: Sequence[str] | None = None) -> int:
  """The command line: prints the problems and returns the exit status."""
  parser = argparse.ArgumentParser(prog='python -m flaxlike._devtools.imports', description=__doc__)
  parser.add_argument(
    '--root',
    type=pathlib.Path,
    default=PACKAGE_DIR,
    help='the package directory to check (default: %(default)s)',
  )
  options = parser.parse_args(argv)
  problems = check(options.root.resolve())
  for problem in problems:
    print(problem)
  count = len(module_names(options.root.resolve()))
  if problems:
    print(f'{len(problems)} import-structure problem(s) in {count} modules.', file=sys.stderr)
    return 1
  print(f'import structure clean: {count} modules, no cycles, core/ does not import linen/.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
