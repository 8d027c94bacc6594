"""Every public Module exported by flaxlike.linen documents all its fields and has an example."""

import dataclasses
import inspect
import re

import pytest

import flaxlike.linen as linen


def _public_modules():
  out = []
  for name in sorted(dir(linen)):
    obj = getattr(linen, name)
    if (
      not name.startswith('_')
      and inspect.isclass(obj)
      and issubclass(obj, linen.Module)
      and obj is not linen.Module
    ):
      out.append(obj)
  return out


MODULES = _public_modules()


def _attributes_section(doc):
  """The names documented under ``Attributes:``: lines ``name: ...`` at the first
  entry's indentation, up to the first line indented no deeper than the header."""
  lines = doc.splitlines()
  starts = [i for i, line in enumerate(lines) if line.strip() == 'Attributes:']
  if not starts:
    return None
  header = len(lines[starts[0]]) - len(lines[starts[0]].lstrip())
  names, entry_indent = set(), None
  for line in lines[starts[0] + 1 :]:
    if not line.strip():
      continue
    depth = len(line) - len(line.lstrip())
    if depth <= header:
      break
    if entry_indent is None:
      entry_indent = depth
    m = re.match(r'([A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?:', line.strip())
    if depth == entry_indent and m:
      names.add(m.group(1))
  return names


def test_there_are_layers_to_check():
  names = {m.__name__ for m in MODULES}
  assert {'Dense', 'Conv', 'ConvTranspose', 'Embed', 'Dropout', 'Sequential'} <= names


@pytest.mark.parametrize('cls', MODULES, ids=[m.__name__ for m in MODULES])
def test_every_field_is_documented(cls):
  doc = inspect.getdoc(cls) + '\n'
  documented = _attributes_section(doc)
  fields = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in ('parent', 'name')]
  if not fields:
    return
  assert documented is not None, f'{cls.__module__}.{cls.__name__}: no "Attributes:" section'
  missing = [f for f in fields if f not in documented]
  assert not missing, (
    f'{cls.__module__}.{cls.__name__}: fields missing from "Attributes:": {missing}'
  )


# Field-less marker bases (e.g. RNNBase) are not layers and need no example.
LAYERS = [m for m in MODULES if m._field_names]


@pytest.mark.parametrize('cls', LAYERS, ids=[m.__name__ for m in LAYERS])
def test_has_runnable_example(cls):
  assert '>>> ' in (cls.__doc__ or ''), f'{cls.__module__}.{cls.__name__}: no >>> example'
