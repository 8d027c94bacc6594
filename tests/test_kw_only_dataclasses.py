"""kw_only_dataclasses: keyword-only fields (own, marked or inherited) always come last."""

import dataclasses
import inspect
from typing import ClassVar

import pytest

from flaxlike.linen import kw_only_dataclasses as kwd


def _params(cls):
  return list(inspect.signature(cls.__init__).parameters)[1:]


def test_inherited_keyword_only_fields_stay_keyword_only_and_last():
  @kwd.dataclass
  class A:
    x: int = kwd.field(default=1, kw_only=True)
    counter: ClassVar[int] = 0

  @kwd.dataclass
  class B(A):
    size: float
    y: int = kwd.field(default=3, kw_only=True)
    x: int = 2  # a new default; still keyword-only

  @kwd.dataclass
  class C(B):
    name: str

  assert _params(C) == ['size', 'name', 'x', 'y']
  assert [f.name for f in dataclasses.fields(C)] == ['size', 'name', 'x', 'y']
  c = C(4.0, 'c')
  assert (c.size, c.name, c.x, c.y) == (4.0, 'c', 2, 3)
  with pytest.raises(TypeError):
    C(4.0, 'c', 5)  # x cannot be passed positionally
  # The bases are left exactly as they were.
  assert [f.name for f in dataclasses.fields(B)] == ['size', 'x', 'y']
  assert [f.name for f in dataclasses.fields(A)] == ['x'] and A().x == 1


def test_marker_required_keywords_and_extra_fields():
  @kwd.dataclass(extra_fields=[('tag', str, kwd.field(default='t', kw_only=True))])
  class A:
    x: float
    _: kwd.KW_ONLY
    a: int = 5
    required: str = kwd.field(kw_only=True)  # keyword-only without a default
    b: int = 0

  assert _params(A) == ['x', 'a', 'required', 'b', 'tag']
  assert A(1.0, required='r') == A(x=1.0, a=5, required='r', b=0, tag='t')
  with pytest.raises(TypeError, match='required'):
    A(1.0)
  with pytest.raises(ValueError, match=r'\(name, type, Field\) tuples'):
    kwd.dataclass(type('Bad', (), {}), extra_fields=[('tag', str, 'not a field')])
