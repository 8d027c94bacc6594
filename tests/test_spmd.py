"""Logical axis rules, sharding constraints, boxes under transforms, sharded init, collectives.

Runs on the 8 fake CPU devices the root conftest sets up.
"""

import threading

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import flaxlike as nn
from flaxlike import errors
from flaxlike.core import meta

RULES = (('batch', 'data'), ('mlp', 'model'), ('embed', None), ('layers', None))


def _mesh(shape=(2, 4), names=('data', 'model'), explicit=False):
  kind = AxisType.Explicit if explicit else AxisType.Auto
  return jax.make_mesh(shape, names, axis_types=(kind,) * len(names))


MESH = _mesh()


def _specs(tree):
  return jax.tree_util.tree_map(lambda a: a.sharding.spec, tree)


def _has_constraint(fn, *args) -> bool:
  text = str(jax.make_jaxpr(fn)(*args))
  return 'sharding_constraint' in text or 'reshard' in text


#################################################
# Rules
#################################################

# (names, rules, spec) recorded from flax.linen.logical_to_mesh_axes 0.12.8.
LINEN_CASES = [
  (
    ('batch', 'length', 'heads', 'features'),
    (('batch', 'X'), ('features', 'X'), ('heads', 'Y'), ('batch', 'Z')),
    P('X', None, 'Y', None),
  ),
  (
    ('batch', 'embed'),
    (('batch', ('data', 'fsdp')), ('embed', 'fsdp'), ('embed', 'model')),
    P(('data', 'fsdp'), 'model'),
  ),
  (('embed', 'mlp'), (('mlp', 'model'), ('embed', 'model'), ('embed', 'data')), P('data', 'model')),
  (('embed', 'mlp'), (('embed', None), ('embed', 'data'), ('mlp', 'model')), P(None, 'model')),
  ((None, 'mlp'), (('mlp', 'model'),), P(None, 'model')),
  (
    ('layers', 'embed', 'mlp'),
    (('layers', 'stage'), ('embed', 'data'), ('mlp', 'data')),
    P('stage', 'data', None),
  ),
  (('a', 'b'), (), P(None, None)),
  (('a', ('x', 'y')), (('a', 'x'), ('a', 'z')), P('z', ('x', 'y'))),
]


@pytest.mark.parametrize('names,rules,expected', LINEN_CASES)
def test_logical_to_mesh_axes_matches_linen(names, rules, expected):
  assert nn.logical_to_mesh_axes(names, rules) == expected
  assert nn.logical_to_mesh_axes(names, [list(r) for r in rules]) == expected
  with nn.logical_axis_rules(rules):
    assert nn.logical_to_mesh_axes(names) == expected


LOGICAL = ['batch', 'embed', 'mlp', 'heads', 'kv']
MESH_AXES = st.one_of(
  st.none(), st.sampled_from(['x', 'y', 'z']), st.tuples(st.sampled_from(['x', 'y']), st.just('z'))
)


def _axes(entry):
  return {entry} if isinstance(entry, str) else set(entry or ())


@settings(max_examples=60, deadline=None)
@given(
  names=st.lists(st.sampled_from(LOGICAL + [None]), max_size=4).filter(
    lambda ns: len([n for n in ns if n]) == len({n for n in ns if n})
  ),
  rules=st.lists(st.tuples(st.sampled_from(LOGICAL), MESH_AXES), max_size=6),
)
def test_rule_lookup_properties(names, rules):
  spec = nn.logical_to_mesh_axes(tuple(names), rules)
  assert len(spec) == len(names)
  used = [a for e in spec for a in sorted(_axes(e))]
  assert len(used) == len(set(used)), 'a mesh axis shards two dimensions'
  for name, entry in zip(names, spec):
    candidates = [axes for logical, axes in rules if logical == name]
    others = set().union(*(_axes(e) for n, e in zip(names, spec) if n != name))
    if name is None or not candidates:
      assert entry is None
    elif entry is None and None not in candidates:
      # Unassigned: every rule for the name wanted a mesh axis another dimension holds.
      assert all(_axes(c) & others for c in candidates)
    else:
      assert entry in candidates
      # The first rule wins unless another dimension already holds one of its mesh axes.
      if not _axes(candidates[0]) & others:
        assert entry == candidates[0]


def test_rules_errors():
  with pytest.raises(ValueError, match="'a' occurs more than once"):
    nn.logical_to_mesh_axes(('a', 'a'), (('a', 'x'),))
  with pytest.raises(TypeError, match='sequence of'):
    nn.set_logical_axis_rules({'batch': 'data'})
  with pytest.raises(TypeError, match=r"pair with a str name; got \('batch',\)"):
    nn.logical_to_mesh_axes(('batch',), (('batch',),))
  assert nn.logical_to_mesh_axes(None, RULES) is None


def test_rules_context_nests_restores_and_is_per_thread():
  assert nn.get_logical_axis_rules() == ()
  with nn.logical_axis_rules(RULES):
    assert nn.get_logical_axis_rules() == RULES
    with pytest.raises(RuntimeError), nn.logical_axis_rules((('batch', 'model'),)):
      assert nn.logical_to_mesh_axes(('batch',)) == P('model')
      raise RuntimeError
    assert nn.get_logical_axis_rules() == RULES
    seen = []
    worker = threading.Thread(target=lambda: seen.append(nn.get_logical_axis_rules()))
    worker.start()
    worker.join()
    assert seen == [()]
  assert nn.get_logical_axis_rules() == ()
  nn.set_logical_axis_rules([['mlp', ['model']]])
  try:
    assert nn.get_logical_axis_rules() == (('mlp', ('model',)),)
  finally:
    nn.set_logical_axis_rules(())


def test_tree_conversions():
  tree = {'w': P('embed', 'mlp'), 'x': P('batch', None), 'none': None}
  assert nn.logical_to_mesh(tree, RULES) == {
    'w': P(None, 'model'),
    'x': P('data', None),
    'none': None,
  }
  shardings = nn.logical_to_mesh_sharding(tree, MESH, RULES)
  assert shardings['w'] == NamedSharding(MESH, P(None, 'model'))
  assert shardings['none'] is None


#################################################
# Constraints and boxes
#################################################


def test_with_logical_constraint_mesh_argument_and_fallbacks():
  x = jnp.ones((8, 3, 4))
  names = ('batch', 'seq', 'mlp')

  def run(fallback):
    return jax.jit(
      lambda x: nn.with_logical_constraint(x * 2, names, rules=RULES, mesh=MESH, fallback=fallback)
    )(x)

  assert run(nn.RulesFallback.AXIS_IS_UNSHARDED).sharding.spec == P('data', None, 'model')
  with pytest.raises(errors.ShardingAxisNameError, match=r"\['seq'\].*\('seq', None\)"):
    run(nn.RulesFallback.RAISE_ERROR)
  assert issubclass(errors.ShardingAxisNameError, ValueError)  # Linen raises ValueError
  no_constraint = lambda x: nn.with_logical_constraint(
    x, names, rules=RULES, mesh=MESH, fallback=nn.RulesFallback.NO_CONSTRAINT
  )
  assert not _has_constraint(no_constraint, x)
  # A pytree of specs matches a pytree of arrays.
  out = jax.jit(
    lambda t: nn.with_logical_constraint(t, {'a': ('mlp', None), 'b': None}, rules=RULES, mesh=MESH)
  )({'a': x[0].T, 'b': x})
  assert out['a'].sharding.spec == P('model')


def test_with_logical_constraint_is_a_noop_without_mesh_or_rules():
  x = jnp.ones((8, 4))
  with nn.logical_axis_rules(RULES):
    assert not _has_constraint(lambda x: nn.with_logical_constraint(x, ('batch', 'mlp')), x)
  assert not _has_constraint(
    lambda x: nn.with_logical_constraint(x, ('batch', 'mlp'), mesh=MESH), x
  )
  # As in Linen, RAISE_ERROR checks the names even when nothing is constrained.
  with pytest.raises(errors.ShardingAxisNameError, match=r"\['seq'\]"):
    nn.with_logical_constraint(
      x, ('batch', 'seq'), rules=RULES, fallback=nn.RulesFallback.RAISE_ERROR
    )


@pytest.mark.parametrize('explicit', [False, True], ids=['auto', 'explicit'])
def test_constraints_follow_the_global_mesh(explicit):
  mesh = _mesh(explicit=explicit)
  x = jnp.ones((8, 4))
  box = meta.Partitioned(x, ('data', 'model'))
  logical = nn.LogicallyPartitioned(x, ('batch', 'mlp'))
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    assert jax.jit(lambda b: b.unbox() + 1)(box).sharding.spec == P('data', 'model')
    assert jax.jit(lambda b: b.unbox() + 1)(logical).sharding.spec == P('data', 'model')
    out = jax.jit(lambda x: nn.with_logical_constraint(x + 1, ('mlp', 'batch')))(x.T)
    assert out.sharding.spec == P('model', 'data')
  # Outside any mesh nothing is constrained.
  assert not _has_constraint(lambda b: b.unbox(), box)


def test_box_mesh_is_used_even_when_explicit_and_no_mesh_is_active():
  explicit = _mesh(explicit=True)
  box = meta.Partitioned(jnp.ones((8, 4)), (None, 'model'), mesh=explicit)
  assert jax.jit(lambda b: b.unbox() * 2)(box).sharding.spec == P(None, 'model')
  logical = nn.LogicallyPartitioned(jnp.ones((8, 4)), ('batch', None), mesh=MESH, rules=RULES)
  assert jax.jit(lambda b: b.unbox() * 2)(logical).sharding.spec == P('data')


def test_logically_partitioned_built_with_list_rules_is_a_usable_pytree():
  rules = [['batch', 'data'], ['mlp', ['model']]]
  logical = nn.LogicallyPartitioned(jnp.ones((8, 4)), ('batch', 'mlp'), mesh=MESH, rules=rules)
  assert logical.rules == (('batch', 'data'), ('mlp', ('model',)))
  doubled = jax.tree_util.tree_map(lambda v: v * 2, logical)
  assert doubled.rules == logical.rules
  assert jax.jit(lambda b: b.unbox())(logical).sharding.spec == P('data', 'model')
  with pytest.raises(TypeError, match='sequence of \\(logical_name, mesh_axes\\) pairs'):
    nn.LogicallyPartitioned(jnp.ones(2), ('batch',), rules={'batch': 'data'})


def test_logically_partitioned_specs_and_shardings():
  make = nn.with_logical_partitioning(nn.initializers.zeros_init(), ('embed', 'mlp'))
  box = make(jax.random.key(0), (4, 8))
  assert isinstance(box, nn.LogicallyPartitioned) and box.rules is None
  assert box.get_partition_spec() == P('embed', 'mlp')  # logical, as in Linen
  assert nn.get_partition_spec({'k': box}) == {'k': P('embed', 'mlp')}
  with nn.logical_axis_rules(RULES):
    assert box.get_sharding(MESH) == NamedSharding(MESH, P(None, 'model'))
    assert nn.get_sharding({'k': box}, MESH)['k'].spec == P(None, 'model')
  own_rules = nn.with_logical_partitioning(
    nn.initializers.zeros_init(), ('embed', 'mlp'), rules=[('embed', 'data')]
  )
  box = own_rules(jax.random.key(0), (4, 8))
  assert box.rules == (('embed', 'data'),)
  assert box.get_mesh_partition_spec(RULES) == P('data', None)  # its own rules win
  added = box.add_axis(0, {nn.PARTITION_NAME: 'layers'})
  assert isinstance(added, nn.LogicallyPartitioned) and added.names == ('layers', 'embed', 'mlp')
  assert added.remove_axis(0, {nn.PARTITION_NAME: 'layers'}).names == ('embed', 'mlp')


def test_manual_axes_are_skipped_inside_shard_map():
  mesh = _mesh((8,), ('data',))
  box = meta.Partitioned(jnp.ones((8, 4)), ('data', None))

  def per_shard(value):
    return meta.Partitioned(value, ('data', None)).unbox() * 2

  with jax.set_mesh(mesh):
    out = jax.jit(jax.shard_map(per_shard, in_specs=P('data'), out_specs=P('data')))(box.value)
  np.testing.assert_array_equal(out, 2 * np.ones((8, 4)))


#################################################
# Boxes through axis-adding transforms
#################################################


def _block(init_wrap, names):
  class Block(nn.Module):
    @nn.compact
    def __call__(self, x, *_):
      y = nn.Dense(x.shape[-1], kernel_init=init_wrap(nn.initializers.lecun_normal(), names))(x)
      return y, None

  return Block


TRANSFORMS = {
  'scan': (
    lambda b, mp: nn.scan(
      b,
      variable_axes={'params': 0},
      split_rngs={'params': True},
      length=3,
      in_axes=nn.broadcast,
      metadata_params=mp,
    ),
    (3,),
  ),
  'vmap': (
    lambda b, mp: nn.vmap(
      b,
      variable_axes={'params': 0},
      split_rngs={'params': True},
      in_axes=None,
      axis_size=3,
      metadata_params=mp,
    ),
    (3,),
  ),
  'remat_scan': (
    lambda b, mp: nn.remat_scan(_carry(b), lengths=(2, 3), metadata_params=mp),
    (2, 3),
  ),
}


def _carry(block):
  class Body(nn.Module):
    @nn.compact
    def __call__(self, x):
      return block(name='Block')(x)[0]

  return Body


@pytest.mark.parametrize('kind', ['partitioned', 'logical'])
@pytest.mark.parametrize('transform', list(TRANSFORMS))
def test_boxes_get_a_named_axis_from_every_stacking_transform(transform, kind):
  wrap = nn.with_partitioning if kind == 'partitioned' else nn.with_logical_partitioning
  names = (None, 'model') if kind == 'partitioned' else ('embed', 'mlp')
  build, stacked = TRANSFORMS[transform]
  x = jnp.ones((2, 4))

  def run(metadata_params):
    model = build(_block(wrap, names), metadata_params)()
    variables = (
      model.init(jax.random.key(0), x, None)
      if transform != 'remat_scan'
      else (model.init(jax.random.key(0), x))
    )
    leaves = jax.tree_util.tree_leaves(variables, is_leaf=meta.is_axis_metadata)
    (box,) = [leaf for leaf in leaves if meta.is_axis_metadata(leaf)]
    return model, variables, box

  model, variables, box = run({nn.PARTITION_NAME: 'layers'})
  assert type(box) is (meta.Partitioned if kind == 'partitioned' else nn.LogicallyPartitioned)
  assert box.value.shape == (*stacked, 4, 4)
  expected = ('layers',) + (None,) * (len(stacked) - 1) + names
  assert box.names == expected
  args = (x, None) if transform != 'remat_scan' else (x,)
  if kind == 'partitioned':  # the logical box inherits add/remove_axis; skip a compile
    model.apply(variables, *args)  # remove_axis accepts the names add_axis wrote

  # No partition name: the stacked axes are replicated instead of an error (Linen: P18).
  _, _, box = run({})
  assert box.names == (None,) * len(stacked) + names
  with pytest.raises(errors.PartitioningUnspecifiedError, match="axis 0 is named 'layers'"):
    build(_block(wrap, names), {})().apply(variables, *args)


def test_add_metadata_axis_on_logical_boxes():
  Boxed = nn.add_metadata_axis(
    nn.Dense, variable_axes={'params': 0}, metadata_params={nn.PARTITION_NAME: 'stage'}
  )
  kernel_init = nn.with_logical_partitioning(nn.initializers.ones, ('embed', 'mlp'))
  variables = Boxed(2, kernel_init=kernel_init).init(jax.random.key(0), jnp.ones((1, 3)))
  assert variables['params']['kernel'].names == ('stage', 'embed', 'mlp')


#################################################
# sharded_init
#################################################

lp = nn.with_logical_partitioning


class MLP(nn.Module):
  hidden: int = 16

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.Dense(
      self.hidden,
      kernel_init=lp(nn.initializers.lecun_normal(), ('embed', 'mlp')),
      bias_init=lp(nn.initializers.normal(1.0), ('mlp',)),
    )(x)
    h = nn.with_logical_constraint(h, ('batch', 'mlp'))
    h = nn.BatchNorm(use_running_average=not train)(h)
    w = self.param(
      'proj',
      nn.with_partitioning(nn.initializers.normal(1.0), ('model', None)),
      (self.hidden, x.shape[-1]),
    )
    return nn.relu(h) @ w


def _no_boxes(tree):
  return not any(
    isinstance(leaf, meta.AxisMetadata)
    for leaf in jax.tree_util.tree_leaves(tree, is_leaf=meta.is_axis_metadata)
  )


def test_sharded_init_lays_out_every_variable_by_its_rules():
  model, x = MLP(), jnp.ones((8, 4))
  variables, shardings = nn.sharded_init(model, jax.random.key(0), x, mesh=MESH, rules=RULES)
  expected = {
    'params': {
      'Dense_0': {
        'kernel': P(None, 'model'),
        'bias': P('model'),
      },
      'BatchNorm_0': {'scale': P(), 'bias': P()},
      'proj': P('model', None),
    },
    'batch_stats': {'BatchNorm_0': {'mean': P(), 'var': P()}},
  }
  assert jax.tree_util.tree_map(lambda s: s.spec, shardings) == expected
  assert all(s.mesh == MESH for s in jax.tree_util.tree_leaves(shardings))
  assert jax.tree_util.tree_map(lambda a: a.sharding, variables) == shardings
  kernel = variables['params']['Dense_0']['kernel']
  assert {s.data.shape for s in kernel.addressable_shards} == {(4, 4)}  # one slice each
  reference = nn.unbox(model.init(jax.random.key(0), x))
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, reference)
  assert type(variables) is dict and type(variables['params']['Dense_0']) is dict
  assert _no_boxes(variables)
  opt_state = optax.adamw(1e-3).init(variables['params'])
  assert _no_boxes(opt_state)
  assert _specs(opt_state[0].mu) == expected['params']


def test_sharded_init_takes_context_rules_static_args_and_abstract_inputs():
  model = MLP()
  with nn.logical_axis_rules((('mlp', 'data'),)):
    variables, shardings = nn.sharded_init(
      model,
      {'params': jax.random.key(1)},
      jax.ShapeDtypeStruct((8, 4), jnp.float32),
      mesh=MESH,
      train=True,
    )
  assert shardings['params']['Dense_0']['kernel'].spec == P(None, 'data')
  assert variables['params']['Dense_0']['kernel'].sharding.spec == P(None, 'data')
  reference = nn.unbox(model.init(jax.random.key(1), jnp.zeros((8, 4)), train=True))
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, reference)


def test_sharded_init_errors_name_the_variable():
  with pytest.raises(
    errors.ShardingAxisNameError, match=r"params/Dense_0/kernel: logical axis names \['embed'\]"
  ):
    nn.sharded_init(
      MLP(),
      jax.random.key(0),
      jnp.ones((8, 4)),
      mesh=MESH,
      rules=(('mlp', 'model'),),
      fallback=nn.RulesFallback.RAISE_ERROR,
    )
  with pytest.raises(
    errors.ShardingAxisNameError, match=r"params/Dense_0/bias: .* mesh has no axis \['tensor'\]"
  ):
    nn.sharded_init(
      MLP(), jax.random.key(0), jnp.ones((8, 4)), mesh=MESH, rules=(('mlp', 'tensor'),)
    )

  class TooMany(nn.Module):
    @nn.compact
    def __call__(self, x):
      return self.param('w', nn.with_partitioning(nn.initializers.ones, ('data', None, None)), (4,))

  with pytest.raises(errors.ShardingAxisNameError, match=r'params/w: 3 axis names .* \(4,\)'):
    nn.sharded_init(TooMany(), jax.random.key(0), jnp.ones(1), mesh=MESH)


def test_sharded_init_of_a_scanned_stack_and_a_train_step():
  Stack = nn.scan(
    _block(lp, ('embed', 'mlp')),
    variable_axes={'params': 0},
    split_rngs={'params': True},
    length=4,
    in_axes=nn.broadcast,
    metadata_params={nn.PARTITION_NAME: 'layers'},
  )
  rules = (('layers', 'data'), ('mlp', 'model'))
  model, x = Stack(), jnp.ones((8, 4))
  variables, shardings = nn.sharded_init(model, jax.random.key(0), x, None, mesh=MESH, rules=rules)
  params = variables['params']
  assert shardings['params']['Dense_0']['kernel'].spec == P('data', None, 'model')
  tx = optax.sgd(0.1)
  opt_state = tx.init(params)

  def loss(p):
    y, _ = model.apply({'params': p}, x, None)
    return jnp.mean(y**2)

  @jax.jit
  def step(p, o):
    grads = jax.grad(loss)(p)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), o

  step = jax.jit(
    step, in_shardings=(shardings['params'], None), out_shardings=(shardings['params'], None)
  )
  new_params, _ = step(params, opt_state)
  assert _specs(new_params) == jax.tree_util.tree_map(lambda s: s.spec, shardings['params'])
  reference = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, jax.grad(loss)(params))
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), new_params, reference
  )


#################################################
# Collectives
#################################################


def _batch_norm_reference(x):
  x = np.asarray(x, np.float64)
  mean, var = x.mean(0), x.var(0)
  return (x - mean) / np.sqrt(var + 1e-5), mean, var


def test_batch_norm_under_shard_map_equals_the_whole_batch():
  mesh = _mesh((8,), ('batch',))
  x = jax.random.normal(jax.random.key(0), (16, 3)) * 3 + 1
  bn = nn.BatchNorm(use_running_average=False, momentum=0.5, axis_name='batch')
  variables = nn.BatchNorm(use_running_average=False).init(jax.random.key(0), x)

  def per_shard(v, x):
    return bn.apply(v, x, mutable=['batch_stats'])

  sharded = jax.jit(
    jax.shard_map(per_shard, mesh=mesh, in_specs=(P(), P('batch')), out_specs=(P('batch'), P()))
  )
  y, updates = sharded(variables, x)
  whole_y, whole_updates = nn.BatchNorm(use_running_average=False, momentum=0.5).apply(
    variables, x, mutable=['batch_stats']
  )
  np.testing.assert_allclose(y, whole_y, atol=1e-5)
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), updates, whole_updates
  )
  ref_y, mean, var = _batch_norm_reference(x)
  np.testing.assert_allclose(y, ref_y, atol=1e-4)
  np.testing.assert_allclose(updates['batch_stats']['mean'], 0.5 * mean, atol=1e-5)
  np.testing.assert_allclose(updates['batch_stats']['var'], 0.5 + 0.5 * var, rtol=1e-5)


class _NormBlock(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.BatchNorm(use_running_average=False, momentum=0.0, axis_name='batch')(x)


class _Center(nn.Module):
  """Subtracts the mean over the whole mapped batch and records it."""

  @nn.compact
  def __call__(self, x):
    mean = jax.lax.pmean(x.mean(0), 'batch')
    self.variable('stats', 'mean', jnp.zeros, x.shape[-1:]).value = mean
    return x - mean[None, :]


@pytest.mark.parametrize('block', [_NormBlock, _Center])
def test_collectives_under_nn_vmap_see_the_whole_batch(block):
  x = jax.random.normal(jax.random.key(1), (4, 5, 3)) * 2 + 1  # 4 groups of 5 examples
  collection = 'batch_stats' if block is _NormBlock else 'stats'
  Mapped = nn.vmap(
    block,
    variable_axes={'params': None, collection: None},
    split_rngs={'params': False},
    axis_name='batch',
  )
  variables = Mapped().init(jax.random.key(0), x)
  y, updates = Mapped().apply(variables, x, mutable=[collection])
  whole = np.asarray(x, np.float64).reshape(20, 3)
  if block is _NormBlock:
    expected, mean, var = _batch_norm_reference(whole)
    stats = updates['batch_stats']['BatchNorm_0']
    np.testing.assert_allclose(stats['mean'], mean, atol=1e-5)
    np.testing.assert_allclose(stats['var'], var, rtol=1e-5)
  else:
    expected = whole - whole.mean(0)
    np.testing.assert_allclose(updates['stats']['mean'], whole.mean(0), atol=1e-6)
  np.testing.assert_allclose(np.asarray(y).reshape(20, 3), expected, atol=1e-4)
