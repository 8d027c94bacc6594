"""Lifted transforms on Modules: equivalences, state, RNG splitting, control flow, errors."""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike as nn
from flaxlike import errors

D = 8
LAYERS = 12


class Block(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    h = nn.LayerNorm()(x)
    h = nn.Dense(2 * D)(h)
    h = nn.Dense(D)(nn.gelu(h))
    return x + h, None


class ScannedModel(nn.Module):
  @nn.compact
  def __call__(self, x):
    stack = nn.scan(
      nn.remat(Block),
      variable_axes={'params': 0},
      split_rngs={'params': True},
      length=LAYERS,
      in_axes=nn.broadcast,
    )
    x, _ = stack(name='layers')(x, None)
    return nn.Dense(1)(x)


class UnrolledModel(nn.Module):
  @nn.compact
  def __call__(self, x):
    for i in range(LAYERS):
      x, _ = Block(name=f'layer_{i}')(x, None)
    return nn.Dense(1)(x)


def _unstack(params):
  stacked = params['layers']
  out = {f'layer_{i}': jax.tree_util.tree_map(lambda a, i=i: a[i], stacked) for i in range(LAYERS)}
  out['Dense_0'] = params['Dense_0']
  return out


def test_scan_of_remat_matches_unrolled_loss_and_grads():
  x = jax.random.normal(jax.random.key(1), (2, 3, D))
  target = jnp.ones((2, 3, 1))
  scanned = ScannedModel()
  params = scanned.init(jax.random.key(0), x)['params']
  assert params['layers']['Dense_0']['kernel'].shape == (LAYERS, D, 2 * D)

  def loss_scanned(p):
    return jnp.mean((scanned.apply({'params': p}, x) - target) ** 2)

  def loss_unrolled(p):
    return jnp.mean((UnrolledModel().apply({'params': p}, x) - target) ** 2)

  l1, g1 = jax.jit(jax.value_and_grad(loss_scanned))(params)
  l2, g2 = jax.jit(jax.value_and_grad(loss_unrolled))(_unstack(params))
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), _unstack(g1), g2
  )


class RunningMean(nn.Module):
  @nn.compact
  def __call__(self, x):
    mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros(x.shape[-1:]))
    if not self.is_initializing():
      mean.value = 0.5 * mean.value + 0.5 * x.mean(0)
    return x - mean.value[None]


def test_batch_stats_update_inside_vmap():
  model = nn.vmap(RunningMean, variable_axes={'batch_stats': 0}, split_rngs={}, in_axes=0)()
  x = jnp.arange(12.0).reshape(3, 2, 2)
  variables = model.init(jax.random.key(0), x)
  assert variables['batch_stats']['mean'].shape == (3, 2)
  _, updated = model.apply(variables, x, mutable=['batch_stats'])
  np.testing.assert_allclose(updated['batch_stats']['mean'], 0.5 * x.mean(1))


class StatsCell(nn.Module):
  @nn.compact
  def __call__(self, c, x):
    return c + RunningMean()(x).sum(), None


def test_batch_stats_update_inside_scan():
  model = nn.scan(StatsCell, variable_axes={'batch_stats': 0}, split_rngs={})()
  xs = jnp.arange(12.0).reshape(3, 2, 2)
  variables = model.init(jax.random.key(0), 0.0, xs)
  _, updated = model.apply(variables, 0.0, xs, mutable=['batch_stats'])
  np.testing.assert_allclose(updated['batch_stats']['RunningMean_0']['mean'], 0.5 * xs.mean(1))
  # Without batch_stats among the mutable collections the update raises, as outside scan.
  with pytest.raises(errors.ModifyScopeVariableError):
    model.apply(variables, 0.0, xs)


class Mask(nn.Module):
  @nn.compact
  def __call__(self, c, x):
    return c, jax.random.bernoulli(self.make_rng('dropout'), 0.5, (16,))


@pytest.mark.parametrize('split', [True, False])
def test_dropout_masks_per_step_and_member(split):
  rngs = {'dropout': jax.random.key(3)}
  scanned = nn.scan(Mask, split_rngs={'dropout': split}, length=4, in_axes=nn.broadcast)()
  _, masks = scanned.apply({}, 0.0, None, rngs=rngs)
  vmapped = nn.vmap(Mask, split_rngs={'dropout': split}, in_axes=None, axis_size=4)()
  _, members = vmapped.apply({}, 0.0, None, rngs=rngs)
  for stacked in (masks, members):
    distinct = {tuple(np.asarray(m)) for m in stacked}
    assert len(distinct) == (4 if split else 1)


class Branchy(nn.Module):
  @nn.compact
  def __call__(self, x, index):
    branches = [
      lambda m, x: nn.Dense(2, name='head')(x),
      lambda m, x: 2.0 * nn.Dense(2, name='head')(x),
      lambda m, x: -nn.Dense(2, name='head')(x),
    ]
    return nn.switch(index, branches, self, x)


def test_switch_and_cond_branches_create_variables():
  x = jnp.ones((1, 3))
  model = Branchy()
  variables = model.init(jax.random.key(0), x, 0)
  assert jax.tree_util.tree_map(jnp.shape, variables['params']) == {
    'head': {'bias': (2,), 'kernel': (3, 2)}
  }
  y0 = model.apply(variables, x, 0)
  np.testing.assert_allclose(model.apply(variables, x, 1), 2 * y0, rtol=1e-6)
  np.testing.assert_allclose(model.apply(variables, x, 2), -y0, rtol=1e-6)

  class Gate(nn.Module):
    @nn.compact
    def __call__(self, x, pred):
      return nn.cond(
        pred,
        lambda m, x: nn.Dense(2, name='d')(x),
        lambda m, x: nn.Dense(2, name='d')(x) * 0.0,
        self,
        x,
      )

  variables = Gate().init(jax.random.key(0), x, True)
  assert float(jnp.abs(Gate().apply(variables, x, False)).sum()) == 0.0
  assert float(jnp.abs(Gate().apply(variables, x, True)).sum()) > 0.0


class Doubling(nn.Module):
  @nn.compact
  def __call__(self, x):
    def cond_fn(mdl, c):
      return jnp.sum(c) < 100.0

    def body_fn(mdl, c):
      steps = mdl.variable('state', 'steps', lambda: jnp.zeros((), jnp.int32))
      steps.value += 1
      return c * mdl.param('factor', nn.initializers.constant(2.0), ())

    if self.is_initializing():
      return body_fn(self, x)
    return nn.while_loop(cond_fn, body_fn, self, x, carry_variables='state')


def test_while_loop_carries_variables():
  model = Doubling()
  variables = model.init(jax.random.key(0), jnp.ones((2,)))
  y, state = model.apply(variables, jnp.ones((2,)), mutable=['state'])
  np.testing.assert_allclose(y, [64.0, 64.0])
  assert int(state['state']['steps']) == 1 + 6


class TiedAutoencoder(nn.Module):
  @nn.compact
  def __call__(self, x):
    def encode(mdl, x):
      return nn.Dense(2, use_bias=False, name='tied')(x)

    def decode(mdl, z):
      return nn.Dense(x.shape[-1], use_bias=False, name='tied')(z)

    transpose = lambda v: jax.tree_util.tree_map(jnp.transpose, v)
    z = nn.map_variables(encode, 'params', mutable=True)(self, x)
    return nn.map_variables(decode, 'params', transpose, transpose)(self, z)


def test_map_variables_ties_weights():
  x = jax.random.normal(jax.random.key(0), (3, 4))
  model = TiedAutoencoder()
  params = model.init(jax.random.key(1), x)['params']
  kernel = params['tied']['kernel']
  assert kernel.shape == (4, 2) and list(params) == ['tied']
  np.testing.assert_allclose(model.apply({'params': params}, x), x @ kernel @ kernel.T, rtol=1e-5)
  grads = jax.grad(lambda p: model.apply({'params': p}, x).sum())(params)
  ones = jnp.ones((3, 4))
  want = x.T @ (ones @ kernel) + ones.T @ (x @ kernel)
  np.testing.assert_allclose(grads['tied']['kernel'], want, rtol=1e-4)


class ClippedDense(nn.Module):
  @nn.compact
  def __call__(self, x):
    def f(mdl, x):
      return mdl(x)

    def fwd(mdl, x):
      return nn.vjp(f, mdl, x)

    def bwd(vjp_fn, y_t):
      params_t, x_t = vjp_fn(y_t)
      params_t = jax.tree_util.tree_map(lambda g: jnp.clip(g, -0.1, 0.1), params_t)
      return params_t, x_t

    return nn.custom_vjp(f, fwd, bwd)(nn.Dense(2), x)


def test_custom_vjp_clips_gradients():
  x = 10.0 * jnp.ones((4, 3))
  model = ClippedDense()
  params = model.init(jax.random.key(0), x)['params']
  grads = jax.grad(lambda p: model.apply({'params': p}, x).sum())(params)
  np.testing.assert_allclose(grads['Dense_0']['kernel'], jnp.full((3, 2), 0.1))
  np.testing.assert_allclose(grads['Dense_0']['bias'], jnp.full((2,), 0.1))
  x_grad = jax.grad(lambda x: model.apply({'params': params}, x).sum())(x)
  kernel = params['Dense_0']['kernel']
  np.testing.assert_allclose(x_grad, jnp.ones((4, 2)) @ kernel.T, rtol=1e-5)


def test_jvp_vjp_and_grad_on_modules():
  x = jnp.ones((1, 3))

  class Probe(nn.Module):
    @nn.compact
    def __call__(self, x):
      dense = nn.Dense(2)
      y, y_t = nn.jvp(lambda m, x: m(x), dense, (x,), (jnp.ones_like(x),), {})
      _, bwd = nn.vjp(lambda m, x: m(x), dense, x)
      params_t, x_t = bwd(jnp.ones_like(y))
      value, (x_g,) = nn.value_and_grad(lambda m, x: m(x).sum(), dense, x)
      return y, y_t, params_t, x_t, value, x_g, nn.grad(lambda m, x: m(x).sum(), dense, x)

  model = Probe()
  variables = model.init(jax.random.key(0), x)
  y, y_t, params_t, x_t, value, x_g, grads = model.apply(variables, x)
  kernel = variables['params']['Dense_0']['kernel']
  np.testing.assert_allclose(y_t, jnp.ones((1, 3)) @ kernel, rtol=1e-6)
  np.testing.assert_allclose(params_t['params']['kernel'], jnp.ones((3, 2)))
  np.testing.assert_allclose(x_t, x_g, rtol=1e-6)
  np.testing.assert_allclose(grads[0], x_g, rtol=1e-6)
  np.testing.assert_allclose(value, y.sum(), rtol=1e-6)


def test_generated_class_names_drive_autonames():
  assert nn.vmap(nn.Dense).__name__ == 'VmapDense'
  assert nn.scan(Block).__name__ == 'ScanBlock'
  assert nn.remat(Block).__name__ == 'CheckpointBlock'
  assert nn.jit(nn.Dense).__name__ == 'JitDense'

  class Parent(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.vmap(
        nn.Dense, variable_axes={'params': None}, split_rngs={'params': False}, in_axes=0
      )(2)(x)
      return nn.jit(nn.Dense)(2)(nn.remat(nn.Dense)(2)(x))

  params = Parent().init(jax.random.key(0), jnp.ones((3, 1, 2)))['params']
  assert list(params) == ['VmapDense_0', 'CheckpointDense_0', 'JitDense_0']


def test_nested_transform_runs_setup_once_at_the_innermost_level():
  # Linen: only the innermost copy of remat(remat(C)) runs the user's setup; the copy in
  # between is a pass-through.
  setups = []

  class C(nn.Module):
    def setup(self):
      setups.append((self.path, self.scope.debug_path))

    def __call__(self, x):
      return x

  class Outer(nn.Module):
    def setup(self):
      self.c = nn.remat(nn.remat(C))()

    def __call__(self, x):
      return self.c(x)

  Outer().init(jax.random.key(0), jnp.ones(2))
  assert setups == [(('c',), ('remat(remat(c))',))]


def test_jit_traces_once_per_configuration():
  traces = []

  class Counted(nn.Module):
    scale: float = 1.0

    @nn.compact
    def __call__(self, x):
      traces.append(self.scale)
      return nn.Dense(2)(x) * self.scale

  model = nn.jit(Counted)()
  x = jnp.ones((1, 3))
  variables = model.init(jax.random.key(0), x)
  before = len(traces)
  model.apply(variables, x)
  model.apply(variables, x)
  assert len(traces) == before + 1
  nn.jit(Counted)(scale=2.0).apply(variables, x)
  assert len(traces) == before + 2


def _trace_counting_cell(traces):
  """A scan cell that records each trace of its body in ``traces``."""

  class Cell(nn.Module):
    @nn.compact
    def __call__(self, c, x):
      traces.append(1)
      return c + nn.Dense(1)(x).sum(), None

  return Cell


def test_scan_traces_the_body_like_linen():
  traces = []
  Cell = _trace_counting_cell(traces)

  model = nn.scan(Cell, variable_broadcast='params', split_rngs={'params': False})()
  variables = model.init(jax.random.key(0), 0.0, jnp.ones((4, 1, 2)))
  assert len(traces) == 2  # the constancy check, then the loop body
  traces.clear()
  nn.scan(
    Cell,
    variable_broadcast='params',
    split_rngs={'params': False},
    check_constancy_invariants=False,
  )().apply(variables, 0.0, jnp.ones((4, 1, 2)))
  assert len(traces) == 1


def _primitives_outside_scan(fn, *args):
  """Primitive names of the jaxpr of ``fn``, nested ones included, except inside scans."""
  names = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      names.append(eqn.primitive.name)
      if eqn.primitive.name == 'scan':
        continue
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return names


@pytest.mark.parametrize('remat', [False, True])
def test_scan_constancy_pass_leaves_no_dead_code_in_the_jaxpr(remat):
  # The extra trace before the loop is still made (RNG counters, errors), but when nothing
  # broadcast comes out of it, its matmuls must not sit beside the scan as dead code.
  class PlainScan(nn.Module):
    @nn.compact
    def __call__(self, x):
      stack = nn.scan(
        Block,
        variable_axes={'params': 0},
        split_rngs={'params': True},
        length=3,
        in_axes=nn.broadcast,
      )
      return stack()(x, None)[0]

  model = ScannedModel() if remat else PlainScan()
  x = jnp.ones((2, D))
  variables = model.init(jax.random.key(0), x)
  for fn, args in (
    (lambda v, x: model.apply(v, x), (variables, x)),
    (lambda k, x: model.init(k, x), (jax.random.key(0), x)),
  ):
    top = _primitives_outside_scan(fn, *args)
    assert 'scan' in top
    # Only the scan itself and (in ScannedModel) the head Dense outside it.
    assert top.count('dot_general') == (1 if remat else 0), top


def test_scan_constancy_pass_is_skipped_only_when_no_rng_stream_reaches_the_body():
  traces = []
  Cell = _trace_counting_cell(traces)
  model = nn.scan(
    Cell, variable_axes={'params': 0}, split_rngs={'params': True, 'dropout': True}, length=4
  )()
  xs = jnp.ones((4, 1, 2))
  variables = model.init(jax.random.key(0), 0.0, xs)
  assert len(traces) == 2
  traces.clear()
  no_rngs, _ = model.apply(variables, 0.0, xs)
  assert len(traces) == 1  # nothing the extra pass could change
  traces.clear()
  # A stream in reach: the extra pass advances its counters, as in Linen, so it runs.
  with_rngs, _ = model.apply(variables, 0.0, xs, rngs={'dropout': jax.random.key(1)})
  assert len(traces) == 2
  np.testing.assert_allclose(no_rngs, with_rngs)


def test_scan_with_broadcast_params_still_computes_them_before_the_loop():
  class Cell(nn.Module):
    @nn.compact
    def __call__(self, c, x):
      w = self.param('w', nn.initializers.normal(1.0), (2, 1))
      return c + (x @ w).sum(), 2.0 * w.sum()

  model = nn.scan(
    Cell, variable_broadcast='params', split_rngs={'params': False}, out_axes=nn.broadcast
  )()
  xs = jnp.arange(8.0).reshape(4, 1, 2)
  variables = model.init(jax.random.key(0), 0.0, xs)
  w = np.asarray(variables['params']['w'], np.float64)
  assert w.shape == (2, 1)
  c, w_sum = model.apply(variables, 0.0, xs)
  expected = sum(float((np.asarray(x, np.float64) @ w).sum()) for x in xs)
  np.testing.assert_allclose(c, expected, rtol=1e-5)
  # A broadcast output is computed once, outside the loop, and is not stacked.
  assert jnp.shape(w_sum) == ()
  np.testing.assert_allclose(w_sum, 2.0 * w.sum(), rtol=1e-6)


def test_methods_argument_transforms_other_methods():
  class Encoder(nn.Module):
    @nn.compact
    def encode(self, x):
      return nn.Dense(2)(x)

  Ens = nn.vmap(
    Encoder,
    variable_axes={'params': 0},
    split_rngs={'params': True},
    in_axes=None,
    axis_size=3,
    methods=['encode'],
  )
  variables = Ens().init(jax.random.key(0), jnp.ones((1, 4)), method='encode')
  assert variables['params']['Dense_0']['kernel'].shape == (3, 4, 2)


def test_raw_jax_transform_on_bound_module_raises():
  class Bad(nn.Module):
    @nn.compact
    def __call__(self, x):
      dense = nn.Dense(2)
      return jax.jit(lambda x: dense(x))(x)

  with pytest.raises(errors.JaxTransformError, match='nn.jit/nn.vmap'):
    Bad().init(jax.random.key(0), jnp.ones((1, 3)))

  class BadVmap(nn.Module):
    @nn.compact
    def __call__(self, x):
      dense = nn.Dense(2)
      return jax.vmap(dense)(x)

  with pytest.raises(errors.JaxTransformError):
    BadVmap().init(jax.random.key(0), jnp.ones((4, 1, 3)))


def test_bad_targets_and_escaping_modules():
  with pytest.raises(errors.TransformTargetError):
    nn.vmap(3)

  class Leaky(nn.Module):
    @functools.partial(nn.remat)
    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)

  with pytest.raises(errors.TransformedMethodReturnValueError):
    Leaky().init(jax.random.key(0), jnp.ones((1, 3)))


def test_fold_rngs_and_named_call_and_metadata_axis():
  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.fold_rngs(nn.Dense)(2)(x)
      Boxed = nn.add_metadata_axis(
        nn.Dense, variable_axes={'params': 0}, metadata_params={nn.PARTITION_NAME: 'stage'}
      )
      return Boxed(2, kernel_init=nn.with_partitioning(nn.initializers.ones, ('in', 'out')))(x)

  variables = Model().init(jax.random.key(0), jnp.ones((1, 3)))
  box = variables['params']['Add_metadata_axisDense_0']['kernel']
  assert box.names == ('stage', 'in', 'out')

  class Named(nn.Module):
    @nn.named_call
    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(x)

  hlo = (
    jax.jit(lambda x: Named().init_with_output(jax.random.key(0), x)[0])
    .lower(jnp.ones((1, 3)))
    .as_text(debug_info=True)
  )
  assert 'Named.__call__' in hlo


def test_collection_hidden_by_a_transform_error_says_to_list_it():
  class M(nn.Module):
    @nn.compact
    def __call__(self, x):
      stack = nn.vmap(nn.BatchNorm, variable_axes={'params': 0}, split_rngs={'params': True})
      return stack(use_running_average=True)(x)

  with pytest.raises(
    errors.ScopeCollectionNotFound, match=r'"batch_stats".*list "batch_stats" in its variable_axes'
  ):
    M().init(jax.random.key(0), jnp.ones((2, 3, 4)))
