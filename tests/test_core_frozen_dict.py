"""FrozenDict and the collection-filter algebra."""

import pickle

import jax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flaxlike import errors
from flaxlike.core import (
  DenyList,
  FrozenDict,
  copy,
  freeze,
  in_filter,
  intersect_filters,
  pop,
  pretty_repr,
  subtract_filters,
  unfreeze,
  union_filters,
)
from flaxlike.core.scope import group_collections

nested_dicts = st.recursive(
  st.integers(),
  lambda children: st.dictionaries(st.text('abcdef', min_size=1, max_size=3), children, max_size=4),
  max_leaves=20,
)


def test_construction_copies_input():
  source = {'a': {'b': 1}}
  frozen = FrozenDict(source)
  source['a']['b'] = 2
  assert frozen['a']['b'] == 1


def test_nested_reads_are_frozen_and_immutable():
  frozen = freeze({'a': {'b': 1}})
  assert isinstance(frozen['a'], FrozenDict)
  with pytest.raises(ValueError, match='immutable'):
    frozen['a'] = 3  # type: ignore[index]


def test_copy_and_pop_leave_original_unchanged():
  frozen = freeze({'a': 1, 'b': 2})
  added = frozen.copy({'c': 3})
  assert dict(added) == {'a': 1, 'b': 2, 'c': 3}
  rest, value = frozen.pop('a')
  assert value == 1 and dict(rest) == {'b': 2} and dict(frozen) == {'a': 1, 'b': 2}


def test_functional_helpers_work_on_plain_dicts():
  d = {'a': {'b': 1}, 'c': 2}
  rest, value = pop(d, 'c')
  assert value == 2 and rest == {'a': {'b': 1}} and 'c' in d
  updated = copy(d, {'z': 0})
  assert updated == {'a': {'b': 1}, 'c': 2, 'z': 0} and 'z' not in d
  thawed = unfreeze(freeze(d))
  assert type(thawed) is dict and type(thawed['a']) is dict and thawed == d


def test_pretty_repr():
  assert pretty_repr(freeze({'a': {'b': 1}})) == (
    'FrozenDict({\n    a: {\n        b: 1,\n    },\n})'
  )
  assert repr(FrozenDict()) == 'FrozenDict({})'


@settings(max_examples=60, deadline=None)
@given(nested_dicts.filter(lambda x: isinstance(x, dict)))
def test_roundtrips_and_hash(tree):
  frozen = freeze(tree)
  assert unfreeze(frozen) == tree
  assert frozen == freeze(tree) and hash(frozen) == hash(freeze(tree))
  assert pickle.loads(pickle.dumps(frozen)) == frozen
  # As a pytree its keys flatten in sorted order, like a plain dict.
  assert jax.tree_util.tree_leaves(frozen) == jax.tree_util.tree_leaves(tree)
  rebuilt = jax.tree_util.tree_map(lambda x: x, frozen)
  assert isinstance(rebuilt, FrozenDict) and rebuilt == frozen


def test_insertion_order_is_kept_for_iteration():
  frozen = freeze({'z': 1, 'a': 2})
  assert list(frozen) == ['z', 'a']


COLS = ['params', 'batch_stats', 'cache', 'intermediates']
filters = st.one_of(
  st.booleans(),
  st.sampled_from(COLS),
  st.lists(st.sampled_from(COLS), max_size=3).map(tuple),
)
filters = st.one_of(filters, filters.map(DenyList))


@settings(max_examples=200, deadline=None)
@given(filters, filters)
def test_filter_algebra_matches_set_semantics(a, b):
  for col in COLS + ['other']:
    assert in_filter(union_filters(a, b), col) == (in_filter(a, col) or in_filter(b, col))
    assert in_filter(intersect_filters(a, b), col) == (in_filter(a, col) and in_filter(b, col))
    assert in_filter(subtract_filters(a, b), col) == (in_filter(a, col) and not in_filter(b, col))


def test_invalid_filter_raises():
  with pytest.raises(errors.InvalidFilterError, match='Invalid Filter'):
    in_filter(3, 'params')  # type: ignore[arg-type]


def test_group_collections_takes_first_match():
  xs = {'params': 1, 'batch_stats': 2, 'cache': 3}
  groups = group_collections(xs, ['params', True])
  assert groups == ({'params': 1}, {'batch_stats': 2, 'cache': 3})


def test_copy_and_pop_on_plain_dicts_sort_keys_as_linen():
  """Linen copies a plain dict through a tree map, so every nested dict comes back sorted;
  added entries follow as given, and nested FrozenDicts stay frozen."""
  variables = {'params': {'z': 1, 'a': {'y': 2, 'b': 3}}, 'cache': {'k': 4}, 'batch_stats': 5}
  rest, params = pop(variables, 'cache')
  assert list(rest) == ['batch_stats', 'params'] and list(rest['params']) == ['a', 'z']
  assert list(rest['params']['a']) == ['b', 'y'] and params == {'k': 4}
  assert list(variables) == ['params', 'cache', 'batch_stats']  # the input is untouched
  added = copy(variables, {'extra': {'q': 1, 'p': 2}})
  assert list(added) == ['batch_stats', 'cache', 'params', 'extra']
  assert list(added['extra']) == ['q', 'p']
  assert added['params'] is not variables['params'] and added['params'] == variables['params']
  nested = copy({'b': freeze({'y': 1, 'x': 2}), 'a': None})
  assert isinstance(nested['b'], FrozenDict) and list(nested) == ['a', 'b'] and nested['a'] is None
  with pytest.raises(TypeError, match='Expected FrozenDict or dict, got .*list'):
    pop([1], 0)
