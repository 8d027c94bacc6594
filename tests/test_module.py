"""The Module system: lifecycle, naming, variables, init/apply/bind, hooks, errors."""

import gc
import pickle
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flaxlike as nn
from flaxlike import config, errors

KEY = jax.random.key(0)
X = jnp.ones((2, 3))


class MLP(nn.Module):
  widths: tuple = (4, 2)

  @nn.compact
  def __call__(self, x):
    for w in self.widths[:-1]:
      x = nn.relu(nn.Dense(w)(x))
    return nn.Dense(self.widths[-1])(x)


class SetupModel(nn.Module):
  def setup(self):
    self.layers = [nn.Dense(3), nn.Dense(2)]
    self.proj = nn.Dense(2, name='projection')

  def __call__(self, x):
    for layer in self.layers:
      x = layer(x)
    return self.proj(x)

  def encode(self, x):
    return self.layers[0](x)


class BatchStat(nn.Module):
  @nn.compact
  def __call__(self, x):
    mean = self.variable('batch_stats', 'mean', jnp.zeros, x.shape[-1:])
    if not self.is_initializing() and self.is_mutable_collection('batch_stats'):
      mean.value = 0.9 * mean.value + 0.1 * x.mean(0)
    return x - mean.value[None, :]


def test_jit_training_loop_with_optax_reduces_loss():
  model = MLP((8, 1))
  x = jnp.linspace(-1, 1, 32).reshape(16, 2)
  y = jnp.sin(x.sum(-1, keepdims=True))
  params = model.init(KEY, x)['params']
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)

  def loss_fn(params):
    return jnp.mean((model.apply({'params': params}, x) - y) ** 2)

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  first = None
  for _ in range(100):
    params, opt_state, loss = step(params, opt_state)
    first = first if first is not None else float(loss)
  assert float(loss) < 0.2 * first


def test_jitted_init_matches_eager_values():
  eager = MLP().init(KEY, X)
  jitted = jax.jit(MLP().init)(KEY, X)
  jax.tree_util.tree_map(np.testing.assert_array_equal, eager, jitted)


def test_setup_names_and_methods():
  model = SetupModel()
  variables = model.init(KEY, X)
  assert list(variables['params']) == ['layers_0', 'layers_1', 'projection']
  assert model.apply(variables, X).shape == (2, 2)
  np.testing.assert_allclose(
    model.apply(variables, X, method='encode'),
    X @ variables['params']['layers_0']['kernel'] + variables['params']['layers_0']['bias'][None],
    rtol=1e-6,
  )
  assert model.apply(variables, X, method=SetupModel.encode).shape == (2, 3)
  assert model.apply(variables, X, method=lambda m, x: m.layers[1](m.encode(x))).shape == (2, 2)


def test_bind_exposes_setup_submodules_and_unbind_round_trips():
  model = SetupModel()
  variables = model.init(KEY, X)
  bound = model.bind(variables)
  assert isinstance(bound.layers, tuple) and bound.layers[0].name == 'layers_0'
  np.testing.assert_allclose(bound(X), model.apply(variables, X))
  unbound, unbound_vars = bound.unbind()
  assert unbound.scope is None
  np.testing.assert_allclose(unbound.apply(unbound_vars, X), model.apply(variables, X))


class Holds(nn.Module):
  inner: nn.Module
  again: nn.Module | None = None

  @nn.compact
  def __call__(self, x):
    y = self.inner(x)
    return y if self.again is None else self.again(y)


def test_unbind_gives_back_the_module_that_was_bound():
  # Adopted submodules were named after their fields by the binding; unbind drops those
  # names (as Linen does), and one instance held twice stays one instance.
  shared = nn.Dense(3)
  model = Holds(Holds(shared, shared))
  variables = model.init(KEY, jnp.ones((1, 3)))
  unbound, unbound_vars = model.bind(variables).unbind()
  assert unbound == model and unbound.name is None and unbound.inner.inner.name is None
  assert unbound.inner.inner is unbound.inner.again
  assert jax.tree_util.tree_structure(unbound_vars) == jax.tree_util.tree_structure(variables)


def test_modules_and_scopes_of_a_call_are_freed_without_the_cycle_collector():
  # Parent links are weak and the scope tree drops its child links when the call ends,
  # so nothing of a traced init/apply (tracers included) waits for gc to be freed.
  refs = []

  class Net(nn.Module):
    layers: tuple

    @nn.compact
    def __call__(self, x):
      for layer in self.layers:
        x = layer(x)
        refs.extend([weakref.ref(layer), weakref.ref(layer.scope)])
      refs.extend([weakref.ref(self), weakref.ref(self.scope)])
      return x

  model = Net((nn.Dense(3), nn.Dense(3)))
  gc.disable()
  try:
    variables = model.init(KEY, X)
    model.apply(variables, X)
    assert refs and [r() for r in refs] == [None] * len(refs)
    # A submodule outliving its bound parent reads parent None and still unbinds.
    inner = model.bind(variables).layers[0]
    assert inner.parent is None and inner.scope is not None
    assert inner.unbind()[0] == nn.Dense(3)
    assert Holds(inner).init(KEY, X)['params']['inner']['kernel'].shape == (3, 3)
  finally:
    gc.enable()


def test_batch_stats_update_and_mutable_output():
  model = BatchStat()
  variables = model.init(KEY, X)
  assert float(variables['batch_stats']['mean'].sum()) == 0.0
  _, updates = model.apply(variables, X, mutable=['batch_stats'])
  np.testing.assert_allclose(updates['batch_stats']['mean'], 0.1 * np.ones(3), rtol=1e-6)
  assert set(updates) == {'batch_stats'}
  # Read-only apply leaves the stats alone and returns only the output.
  out = model.apply(variables, X)
  np.testing.assert_allclose(out, X)


def test_calling_compact_child_twice_shares_params():
  class Twice(nn.Module):
    @nn.compact
    def __call__(self, x):
      dense = nn.Dense(3)
      return dense(dense(x))

  variables = Twice().init(KEY, X)
  assert list(variables['params']) == ['Dense_0']
  kernel, bias = variables['params']['Dense_0']['kernel'], variables['params']['Dense_0']['bias']
  once = X @ kernel + bias[None]
  np.testing.assert_allclose(Twice().apply(variables, X), once @ kernel + bias[None], rtol=1e-6)


def test_adopted_module_is_named_after_field_and_shared_by_identity():
  class Holder(nn.Module):
    a: nn.Module
    b: nn.Module

    @nn.compact
    def __call__(self, x):
      return self.b(self.a(x))

  inner = nn.Dense(3, name='ignored')
  variables = Holder(inner, inner).init(KEY, X)
  assert list(variables['params']) == ['a']
  assert inner.scope is None and inner.name == 'ignored'  # the caller's instance is untouched


def test_preserve_adopted_names_flag():
  class Holder(nn.Module):
    inner: nn.Module

    def __call__(self, x):
      return self.inner(x)

  with config.temp_flip_flag('flax_preserve_adopted_names', True):
    variables = Holder(nn.Dense(2, name='foo')).init(KEY, X)
  assert list(variables['params']) == ['foo']


def test_sow_capture_and_intercept():
  class Sower(nn.Module):
    @nn.compact
    def __call__(self, x):
      self.sow('intermediates', 'h', x)
      return nn.Dense(2)(x)

  model = Sower()
  variables = model.init(KEY, X)
  assert 'intermediates' not in variables
  _, state = model.apply(variables, X, mutable=['intermediates'])
  np.testing.assert_array_equal(state['intermediates']['h'][0], X)
  y, state = model.apply(variables, X, capture_intermediates=True)
  assert set(state['intermediates']) == {'h', 'Dense_0', '__call__'}
  np.testing.assert_allclose(state['intermediates']['__call__'][0], y)

  seen = []

  def record(next_fun, args, kwargs, context):
    seen.append((type(context.module).__name__, context.method_name))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    model.apply(variables, X)
  assert seen == [('Sower', '__call__'), ('Dense', '__call__')]


def test_perturb_gives_gradient_of_intermediate():
  class Perturbed(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = self.perturb('h', nn.Dense(3)(x))
      return jnp.sum(h**2)

  model = Perturbed()
  variables = model.init(KEY, X)
  assert variables['perturbations']['h'].shape == (2, 3)

  def loss(perturbations):
    return model.apply({'params': variables['params'], 'perturbations': perturbations}, X)

  grads = jax.grad(loss)(variables['perturbations'])
  kernel, bias = variables['params']['Dense_0']['kernel'], variables['params']['Dense_0']['bias']
  np.testing.assert_allclose(grads['h'], 2 * (X @ kernel + bias[None]), rtol=1e-5)


def test_share_scope_and_compact_name_scope():
  class Shared(nn.Module):
    def setup(self):
      self.inner = nn.Dense(2)
      nn.share_scope(self, self.inner)

    def __call__(self, x):
      return self.inner(x)

  assert list(Shared().init(KEY, X)['params']) == ['kernel', 'bias']

  class Scoped(nn.Module):
    @nn.compact_name_scope
    def up(self, x):
      return nn.Dense(4)(x)

    def __call__(self, x):
      # Like a compact method, a second call reuses the children of the first.
      return self.up(x) + self.up(x)

  variables = Scoped().init(KEY, X)
  assert {k: list(v) for k, v in variables['params'].items()} == {'up': ['Dense_0']}


def test_lazy_init_module():
  abstract = jax.ShapeDtypeStruct((2, 3), jnp.float32)
  lazy = MLP().lazy_init(KEY, abstract)
  jax.tree_util.tree_map(np.testing.assert_array_equal, lazy, MLP().init(KEY, X))
  # Keyword inputs may be given by shape too, as in Linen.
  by_keyword = MLP().lazy_init(KEY, x=abstract)
  jax.tree_util.tree_map(np.testing.assert_array_equal, by_keyword, lazy)


def test_lazy_init_names_the_data_dependent_variable():
  class RunningMean(nn.Module):
    @nn.compact
    def __call__(self, x):
      mean = self.variable('batch_stats', 'mean', lambda: x.mean(0))
      return x - mean.value[None]

  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      return RunningMean(name='norm')(nn.Dense(3)(x))

  with pytest.raises(errors.LazyInitError, match='variable batch_stats/norm/mean '):
    Model().lazy_init(KEY, jax.ShapeDtypeStruct((2, 3), jnp.float32))
  # The same input given as an array is known, so the statistics get their value.
  variables = Model().lazy_init(KEY, X)
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, Model().init(KEY, X))


def test_functional_apply_and_init():
  model = MLP()
  variables = nn.init(lambda m, x: m(x), model)(KEY, X)
  y, _ = nn.init_with_output(lambda m, x: m(x), model)(KEY, X)
  np.testing.assert_allclose(nn.apply(lambda m, x: m(x), model)(variables, X), y)


def test_modules_are_hashable_comparable_and_picklable():
  a, b = nn.Dense(3), nn.Dense(3)
  assert a == b and hash(a) == hash(b) and a != nn.Dense(4)
  restored = pickle.loads(pickle.dumps(MLP((5, 1))))
  assert restored == MLP((5, 1))
  variables = restored.init(KEY, X)
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, MLP((5, 1)).init(KEY, X))


def test_list_fields_become_tuples_when_bound():
  class Widths(nn.Module):
    widths: list

    @nn.compact
    def __call__(self, x):
      assert isinstance(self.widths, tuple)
      return x

  Widths([1, 2]).init(KEY, X)


def test_repr_lists_attributes():
  text = repr(MLP((3, 1)))
  assert text.startswith('MLP(\n    # attributes\n    widths = (3, 1)')


def test_repr_of_bound_module_lists_children_and_names_callables():
  # Linen's repr: callables by name, then the bound submodules under '# children'.
  class Net(nn.Module):
    act: object = nn.relu

    @nn.compact
    def __call__(self, x):
      self.act(nn.Dense(2, kernel_init=nn.initializers.zeros)(x))
      return repr(self)

  text, _ = Net().init_with_output(KEY, X)
  assert text.startswith('Net(\n    # attributes\n    act = relu\n    # children\n')
  assert '    Dense_0 = Dense(\n        # attributes\n        features = 2\n' in text
  assert '        kernel_init = zeros\n' in text
  assert '# children' not in repr(Net())


def test_module_is_a_pytree_leaf():
  assert jax.tree_util.tree_leaves([nn.Dense(2)]) == [nn.Dense(2)]


# -- error catalogue ---------------------------------------------------------------------------


def test_compact_on_unbound_module():
  with pytest.raises(errors.CallCompactUnboundModuleError):
    MLP()(X)


def test_submodule_outside_setup_or_compact():
  class Bad(nn.Module):
    def __call__(self, x):
      return nn.Dense(2)(x)

  with pytest.raises(errors.AssignSubModuleError, match='Dense'):
    Bad().init(KEY, X)


def test_duplicate_names():
  class Dup(nn.Module):
    @nn.compact
    def __call__(self, x):
      nn.Dense(2, name='d')(x)
      return nn.Dense(2, name='d')(x)

  with pytest.raises(errors.NameInUseError, match='submodule "d" in Module Dup'):
    Dup().init(KEY, X)

  class DupParam(nn.Module):
    @nn.compact
    def __call__(self, x):
      self.param('w', nn.initializers.zeros, ())
      return self.param('w', nn.initializers.zeros, ())

  with pytest.raises(errors.NameInUseError, match='param "w" in Module DupParam'):
    DupParam().init(KEY, X)


def test_frozen_attributes():
  # Bound modules are frozen; a top-level one stays open until bound (as in Linen).
  model = Holds(nn.Dense(3))
  model.inner = nn.Dense(2)
  bound = model.bind(model.init(KEY, X))
  assert bound.inner.features == 2 and bound.inner.name == 'inner'
  with pytest.raises(errors.SetAttributeFrozenModuleError, match='features=5'):
    bound.inner.features = 5
  with pytest.raises(errors.SetAttributeFrozenModuleError, match='Holds'):
    bound.inner = nn.Dense(4)

  class Reassign(nn.Module):
    size: int = 1

    def setup(self):
      self.size = 2

    def __call__(self, x):
      return x

  with pytest.raises(errors.SetAttributeInModuleSetupError):
    Reassign().init(KEY, X)


def test_reserved_field_names():
  with pytest.raises(errors.ReservedModuleAttributeError):

    class Bad(nn.Module):  # noqa: F841
      name: str


def test_post_init_without_super():
  class Forgetful(nn.Module):
    def __post_init__(self):
      pass

  # As in Linen: it can be built; its first use raises.
  forgetful = Forgetful()
  with pytest.raises(errors.IncorrectPostInitOverrideError, match='in Forgetful'):
    forgetful.init(KEY)
  assert repr(forgetful) == 'Forgetful()'

  class Outer(nn.Module):
    @nn.compact
    def __call__(self, x):
      return MLPWithForgetfulLayer()(x)

  class MLPWithForgetfulLayer(nn.Module):
    def __post_init__(self):
      self.width = 2

    @nn.compact
    def __call__(self, x):
      return x

  with pytest.raises(errors.IncorrectPostInitOverrideError, match='MLPWithForgetfulLayer'):
    Outer().init(KEY, X)


def test_invalid_method_and_class_instead_of_instance():
  variables = MLP().init(KEY, X)
  # As in Linen: a missing method name is an AttributeError naming module and attribute.
  with pytest.raises(AttributeError, match='"MLP" object has no attribute "nope"'):
    MLP().apply(variables, X, method='nope')
  with pytest.raises(errors.InvalidInstanceModuleError):
    MLP.init(KEY, X)  # type: ignore[call-arg]


def test_missing_dropout_rng_error_names_path():
  class Noisy(nn.Module):
    @nn.compact
    def __call__(self, x):
      return x + jax.random.normal(self.make_rng('dropout'), x.shape)

  class Outer(nn.Module):
    @nn.compact
    def __call__(self, x):
      return Noisy()(x)

  variables = Outer().init(KEY, X)
  with pytest.raises(
    errors.InvalidRngError, match=r'Noisy_0 needs PRNG for "dropout" \(scope /Noisy_0\)'
  ):
    Outer().apply(variables, X)
  Outer().apply(variables, X, rngs={'dropout': jax.random.key(1)})


def test_unbind_unbound_and_setup_attribute_on_unbound():
  with pytest.raises(errors.CallUnbindOnUnboundModuleError):
    MLP().unbind()
  with pytest.raises(AttributeError, match='defined in setup'):
    SetupModel().layers  # noqa: B018


def test_bound_module_invalid_after_apply():
  kept = []

  class Keeper(nn.Module):
    @nn.compact
    def __call__(self, x):
      kept.append(self)
      return nn.Dense(2)(x)

  variables = Keeper().init(KEY, X)
  with pytest.raises(errors.InvalidScopeError):
    kept[0].make_rng('params')
  del variables


def test_property_typo_is_reported():
  class WithProperty(nn.Module):
    @property
    def doubled(self):
      return self.missing * 2

    @nn.compact
    def __call__(self, x):
      return x * self.doubled

  with pytest.raises(errors.DescriptorAttributeError):
    WithProperty().init(KEY, X)


def test_custom_descriptor_typo_is_reported_and_others_still_work():
  class Reads:
    def __get__(self, obj, objtype=None):
      return obj.missing

  class Stored:
    def __set_name__(self, owner, name):
      self.key = '_' + name

    def __get__(self, obj, objtype=None):
      return self if obj is None else obj.__dict__.get(self.key, 7)

    def __set__(self, obj, value):
      obj.__dict__[self.key] = value

  class WithDescriptors(nn.Module):
    reads = Reads()
    stored = Stored()

    def __call__(self):
      return self.reads

  with pytest.raises(errors.DescriptorAttributeError, match=r'^Trying to access a property.*reads'):
    WithDescriptors().apply({})
  module = WithDescriptors()
  assert module.stored == 7 and isinstance(WithDescriptors.stored, Stored)
  object.__setattr__(module, 'stored', 8)
  assert module.stored == 8


def test_errors_pickle_with_message():
  error = errors.ScopeParamNotFoundError('kernel', ('Dense_0',))
  restored = pickle.loads(pickle.dumps(error))
  assert str(restored) == str(error) and '/Dense_0' in str(restored)


def test_module_paths_lists_every_called_module():
  class Outer(nn.Module):
    @nn.compact
    def __call__(self, x):
      return MLP((3, 2))(x)

  paths = Outer().module_paths(KEY, X)
  assert list(paths) == ['', 'MLP_0', 'MLP_0/Dense_0', 'MLP_0/Dense_1']
  assert paths['MLP_0'] == MLP((3, 2), name='MLP_0') and paths['MLP_0'].scope is None


def test_named_call_profiling_names_ops():
  def names(enable):
    with nn.override_named_call(enable):
      jaxpr = jax.make_jaxpr(lambda x: MLP().init_with_output(KEY, x)[0])(X)
    return {str(e.source_info.name_stack) for e in jaxpr.jaxpr.eqns}

  assert any('Dense_1' in n for n in names(True))
  assert not any('Dense_1' in n for n in names(False))


def test_keyword_only_fields_allow_defaults_in_base_classes():
  class Base(nn.Module, kw_only=True):
    scale: float = 1.0

  class Child(Base, kw_only=True):
    features: int

    @nn.compact
    def __call__(self, x):
      return nn.Dense(self.features)(x) * self.scale

  model = Child(features=2, scale=3.0)
  assert model.apply(model.init(KEY, X), X).shape == (2, 2)
  with pytest.raises(TypeError):
    Child(2)  # keyword-only


def test_cloudpickle_of_locally_defined_module():
  cloudpickle = pytest.importorskip('cloudpickle')

  class Local(nn.Module):
    features: int = 2

    def setup(self):
      self.dense = nn.Dense(self.features)

    def __call__(self, x):
      return self.dense(x)

  model = cloudpickle.loads(cloudpickle.dumps(Local(3)))
  variables = model.init(KEY, X)
  assert variables['params']['dense']['kernel'].shape == (3, 3)
  bound = Local(3).bind(Local(3).init(KEY, X))
  restored = cloudpickle.loads(cloudpickle.dumps(bound))
  assert restored.scope is None and restored == Local(3)


def test_unnamed_module_passed_into_setup_module_moves_under_it():
  class Wrapper(nn.Module):
    inner: nn.Module

    def __call__(self, x):
      return self.inner(x)

  class SetupHolder(nn.Module):
    def setup(self):
      self.body = Wrapper(nn.Dense(2))

    def __call__(self, x):
      return self.body(x)

  variables = SetupHolder().init(KEY, X)
  assert jax.tree_util.tree_map(jnp.shape, variables) == {
    'params': {'body': {'inner': {'bias': (2,), 'kernel': (3, 2)}}}
  }


def test_layer_submodules_star_export_what_the_namespace_has():
  # `from flaxlike.linen.recurrent import *` must give what a Linen user imports from there.
  from flaxlike.linen import recurrent

  for name in ('RNN', 'Bidirectional', 'RNNBase', 'LSTMCell', 'OptimizedLSTMCell'):
    assert name in recurrent.__all__
    assert getattr(nn, name) is getattr(recurrent, name)
  assert 'flip_sequences' in recurrent.__all__
  assert nn.zeros is nn.initializers.zeros and nn.ones is nn.initializers.ones


# -- Linen semantics: field order, hashing, generics, apply(method=...), rng errors ------


def test_subclass_fields_come_before_parent_and_name():
  import dataclasses

  class Base(nn.Module):
    bar: int

  class Child(Base):
    baz: int

  assert [f.name for f in dataclasses.fields(Child)] == ['bar', 'baz', 'parent', 'name']
  child = Child(1, 2)  # own fields stay positional, after the inherited ones
  assert (child.bar, child.baz, child.name) == (1, 2, None)


def test_generic_module_instance_inside_setup():
  from typing import Any, Generic, TypeVar

  T = TypeVar('T')

  class Box(nn.Module, Generic[T]):
    def __call__(self, t: T) -> T:
      return t

  class Outer(nn.Module):
    def setup(self):
      self.box = Box[Any]()

    def __call__(self, x):
      return self.box(x)

  y, variables = Outer().init_with_output({}, X)
  assert variables == {} and (y == X).all()


def test_apply_method_lambda_string_and_errors():
  class Foo(nn.Module):
    not_callable: int = 1

    def __call__(self):
      return 0

    def test(self):
      return 1

  assert type(Foo().apply({}, method=lambda foo: foo)) is Foo
  assert Foo().apply({}, method='test') == 1
  assert Foo().apply({}, method=Foo().test) == 1
  with pytest.raises(errors.ApplyModuleInvalidMethodError, match=r'Cannot call apply\(\)'):
    Foo().apply({}, method=lambda: True)
  with pytest.raises(AttributeError, match='"Foo" object has no attribute "nope".*setup'):
    Foo().apply({}, method='nope')
  with pytest.raises(TypeError, match="'Foo.not_callable' must be a callable"):
    Foo().init({}, method='not_callable')


def test_apply_method_names_a_submodule_field():
  model = Holds(nn.Dense(2))
  variables = model.init(KEY, X)
  y = model.apply(variables, X, method='inner')
  np.testing.assert_allclose(y, model.apply(variables, X))
  assert model.init(KEY, X, method='inner')['params'].keys() == {'inner'}


def test_missing_rng_error_names_module_then_scope():
  with pytest.raises(errors.InvalidRngError, match=r'^None needs PRNG for "params" \(scope /\)'):
    nn.Dense(2).init({'other': KEY}, X)


def test_rngs_errors_start_with_linens_sentence_and_one_key_is_the_params_stream():
  variables = nn.Dense(2).init(KEY, X)
  with pytest.raises(ValueError, match=r'^First argument passed to an init function .*got str'):
    nn.Dense(2).init({'params': 'test'}, X)
  with pytest.raises(ValueError, match=r'^The ``rngs`` argument passed to an apply function'):
    nn.Dense(2).apply(variables, X, rngs={'params': 'test'})
  with pytest.raises(
    errors.InvalidRngError,
    match=r'^RNGs should be of shape \(2,\) or PRNGKey in '
    'Module Dense, but rngs are: test. Pass a key',
  ):
    nn.Dense(2).apply(variables, X, rngs='test')
  drop = nn.Dropout(0.5, deterministic=False)
  np.testing.assert_array_equal(
    drop.apply({}, X, rngs=KEY), drop.apply({}, X, rngs={'params': KEY})
  )


def test_setup_state_is_public_and_tracks_lazy_setup():
  class WithSetup(nn.Module):
    def setup(self):
      self.dense = nn.Dense(2)

    def __call__(self, x):
      return self.dense(x)

  model = WithSetup()
  bound = model.bind(model.init(KEY, X))
  assert bound._state.setup_called == nn.module.SetupState.NEW
  bound(X)
  assert bound._state.setup_called == nn.module.SetupState.DONE


def test_share_scope_with_a_module_bound_elsewhere_joins_its_scope():
  class LoRA(nn.Module):
    inner: nn.Dense

    def setup(self):
      nn.share_scope(self, self.inner)

    @nn.compact
    def __call__(self, x):
      a = self.param('A', nn.zeros_init(), (x.shape[-1], 1))
      return self.inner(x) + x @ a

  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      return LoRA(nn.Dense(2))(x)  # the Dense is bound to Model as Dense_0 first

  params = Model().init(KEY, X)['params']
  assert list(params) == ['Dense_0']
  assert sorted(params['Dense_0']) == ['A', 'bias', 'kernel']


def test_share_scope_in_a_subclass_of_a_layer_keeps_linens_names():
  # Names checked against Flax Linen 0.12.8: a Dense subclass joining a Dense bound in the
  # caller keeps the Dense's name; one sharing its own inner Dense keeps its own name.
  class DenseLoRA(nn.Dense):
    base: nn.Module | None = None

    def setup(self):
      nn.share_scope(self, self.base)

    @nn.compact
    def __call__(self, x):
      return self.base(x) + x @ self.param('A', nn.zeros_init(), (x.shape[-1], 1))

  class OwnBase(nn.Dense):
    @nn.compact
    def __call__(self, x):
      base = nn.Dense(self.features)
      nn.share_scope(self, base)
      return base(x) + x @ self.param('A', nn.zeros_init(), (x.shape[-1], 1))

  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      return DenseLoRA(2, base=nn.Dense(2))(x) + OwnBase(2)(x)

  params = Model().init(KEY, X)['params']
  assert {k: sorted(v) for k, v in params.items()} == {
    'Dense_0': ['A', 'bias', 'kernel'],
    'OwnBase_0': ['A', 'bias', 'kernel'],
  }


def test_share_scope_moves_the_childs_own_children_up():
  class Leaf(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(x)

  class Middle(nn.Module):
    leaf: Leaf

    def __call__(self, x):
      return self.leaf(x)

  class Top(nn.Module):
    middle: Middle

    def setup(self):
      nn.share_scope(self, self.middle)

    def __call__(self, x):
      return self.middle(x)

  params = Top(Middle(Leaf())).init(KEY, X)['params']
  assert list(params) == ['leaf']
  assert list(params['leaf']) == ['Dense_0']


@pytest.mark.parametrize('preserve', [True, False])
def test_class_attribute_preserve_adopted_names_overrides_the_flag(preserve):
  class Leaf(nn.Module):
    @nn.compact
    def __call__(self, x):
      return x + self.param('p', nn.initializers.zeros, x.shape)

  class Holder(nn.Module):
    sub: nn.Module
    preserve_adopted_names = preserve

    def __call__(self, x):
      return self.sub(x)

  with config.temp_flip_flag('flax_preserve_adopted_names', not preserve):
    params = Holder(Leaf(name='leaf')).init(KEY, X)['params']
  assert list(params) == (['leaf'] if preserve else ['sub'])


def test_one_top_level_instance_in_two_modules_is_one_submodule():
  dense = nn.Dense(2, use_bias=False)

  class Inner(nn.Module):
    layer: nn.Module

    def __call__(self, x):
      return self.layer(x)

  class Outer(nn.Module):
    layer: nn.Module
    inner: nn.Module

    def __call__(self, x):
      return self.inner(x) + self.layer(x)

  params = Outer(dense, Inner(dense)).init(KEY, jnp.ones((1, 2)))['params']
  # Adopted first by Outer (field `layer`); Inner's field refers to that same submodule.
  assert list(params) == ['layer']


def test_instance_shared_in_a_dict_field_is_named_by_the_first_sorted_key():
  class Counter(nn.Module):
    @nn.compact
    def __call__(self, x):
      count = self.variable('counter', 'i', jnp.zeros, ())
      count.value += 1
      return x

  class Holder(nn.Module):
    table: dict

    @nn.compact
    def __call__(self, x):
      return self.table['foo'](self.table['bar'](x))

  counter = Counter()
  holder = Holder({'foo': counter, 'bar': counter})
  assert list(holder.table) == ['foo', 'bar']  # the attribute keeps the caller's order
  _, state = holder.init_with_output(KEY, X)
  assert list(state['counter']) == ['table_bar']
  assert state['counter']['table_bar']['i'] == 2


def test_dir_of_a_bound_module_runs_setup_first():
  class Inner(nn.Module):
    def setup(self):
      self.proj = nn.Dense(2)

    def __call__(self, x):
      return self.proj(x)

  class Outer(nn.Module):
    def setup(self):
      self.inner = Inner()

    def __call__(self, x):
      assert 'proj' in dir(self.inner)
      return self.inner(x)

  Outer().init(KEY, X)
  assert 'proj' not in dir(Inner())  # unbound: setup does not run


def test_perturb_with_an_empty_collection_passed_in_raises():
  class Probe(nn.Module):
    @nn.compact
    def __call__(self, x):
      return self.perturb('h', nn.Dense(2)(x))

  variables = Probe().init(KEY, X)
  Probe().apply({'params': variables['params']}, X)  # collection absent: no-op
  with pytest.raises(ValueError, match='Perturbation collection perturbations present.*h at /'):
    Probe().apply({'params': variables['params'], 'perturbations': {}}, X)
