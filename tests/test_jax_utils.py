"""``flaxlike.jax_utils`` on the 8 fake CPU devices of the test session (see conftest.py).

Every result is compared with the same computation written in plain NumPy/JAX.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flaxlike as nn
from flaxlike import jax_utils

NDEV = jax.local_device_count()


def test_the_session_has_8_devices():
  assert NDEV == 8, 'conftest.py sets --xla_force_host_platform_device_count=8'


def _rows_by_device(x):
  """{device: index along axis 0} for a device-axis array; checks one row per device."""
  rows = {}
  for device, index in x.sharding.devices_indices_map(x.shape).items():
    assert index[0].stop - index[0].start == 1
    assert all(s == slice(None) for s in index[1:])
    rows[device] = index[0].start
  return rows


@pytest.mark.parametrize('num_devices', [NDEV, 2])
def test_replicate_puts_row_i_on_device_i(num_devices):
  devices = jax.local_devices()[:num_devices]
  tree = {'w': jnp.arange(6.0).reshape(2, 3), 'step': 4, 'np': 5 * np.ones((2, 3), np.int32)}
  out = jax_utils.replicate(tree, devices=devices)
  assert out['w'].shape == (num_devices, 2, 3) and out['step'].shape == (num_devices,)
  for leaf, original in [(out['w'], tree['w']), (out['step'], 4), (out['np'], tree['np'])]:
    assert _rows_by_device(leaf) == {d: i for i, d in enumerate(devices)}
    np.testing.assert_array_equal(np.asarray(leaf), np.stack([np.asarray(original)] * num_devices))
    assert leaf.dtype == jnp.asarray(original).dtype
  for shard in out['w'].addressable_shards:
    np.testing.assert_array_equal(np.asarray(shard.data[0]), np.asarray(tree['w']))


def test_unreplicate_inverts_replicate_and_keeps_scalars():
  tree = {'w': jnp.arange(6.0).reshape(2, 3), 'b': jnp.ones(3, jnp.bfloat16)}
  back = jax_utils.unreplicate(jax_utils.replicate(tree))
  assert jax.tree.map(lambda a, b: (a.shape, a.dtype) == (b.shape, b.dtype), back, tree) == {
    'w': True,
    'b': True,
  }
  np.testing.assert_array_equal(np.asarray(back['w']), np.asarray(tree['w']))
  scalar = jnp.array(7.0)
  assert jax_utils.unreplicate(scalar) is scalar
  # Arrays on one device, and NumPy arrays, give their first row.
  np.testing.assert_array_equal(jax_utils.unreplicate(np.arange(6).reshape(3, 2)), [0, 1])
  np.testing.assert_array_equal(np.asarray(jax_utils.unreplicate(jnp.arange(4))), 0)


def test_unreplicate_reads_row_0_of_a_sharded_array_with_several_rows_per_device():
  mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:4]), ('d',))
  x = jax.device_put(
    jnp.arange(16.0).reshape(8, 2),
    jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('d')),
  )
  np.testing.assert_array_equal(np.asarray(jax_utils.unreplicate(x)), [0.0, 1.0])


def test_pmap_training_step_on_replicated_state_matches_one_device():
  """The pmap-era loop (replicate, pmean the grads, unreplicate) equals full-batch SGD."""
  model = nn.Dense(3)
  x = np.random.RandomState(0).normal(size=(NDEV * 2, 4)).astype(np.float32)
  y = np.random.RandomState(1).normal(size=(NDEV * 2, 3)).astype(np.float32)
  params = model.init(jax.random.key(0), x[:1])['params']
  tx = optax.sgd(0.1)

  def loss_fn(p, xb, yb):
    return jnp.mean((model.apply({'params': p}, xb) - yb) ** 2)

  @functools.partial(jax.pmap, axis_name='batch')
  def step(p, opt_state, xb, yb):
    grads = jax.lax.pmean(jax.grad(loss_fn)(p, xb, yb), 'batch')
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state

  p, opt = jax_utils.replicate(params), jax_utils.replicate(tx.init(params))
  shard = lambda a: a.reshape(NDEV, -1, *a.shape[1:])
  for _ in range(3):
    p, opt = step(p, opt, shard(x), shard(y))

  ref, ref_opt = params, tx.init(params)
  for _ in range(3):
    updates, ref_opt = tx.update(jax.grad(loss_fn)(ref, x, y), ref_opt, ref)
    ref = optax.apply_updates(ref, updates)
  got = jax_utils.unreplicate(p)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_pmean_warns_and_averages_over_devices():
  with pytest.warns(DeprecationWarning, match='use jax.lax.pmean instead'):
    out = jax.pmap(lambda v: jax_utils.pmean(v, 'i'), axis_name='i')(jnp.arange(float(NDEV)))
  np.testing.assert_allclose(np.asarray(out), np.full(NDEV, (NDEV - 1) / 2))


def test_partial_eval_by_shape_computes_what_does_not_need_the_inputs():
  model = nn.Dense(5)
  key = jax.random.key(3)

  def init_and_apply(x):
    variables = model.init(key, x)
    return variables, model.apply(variables, x)

  variables, y = jax_utils.partial_eval_by_shape(init_and_apply, [((2, 4), jnp.float32)])
  reference = model.init(key, jnp.ones((2, 4)))
  np.testing.assert_array_equal(
    np.asarray(variables['params']['kernel']), np.asarray(reference['params']['kernel'])
  )
  assert isinstance(variables['params']['kernel'], jax.Array)
  assert y == jax.ShapeDtypeStruct((2, 5), jnp.float32)
  # A bare shape means float32; extra positional and keyword arguments are passed through.
  out = jax_utils.partial_eval_by_shape(lambda a, b, c=0: (a + b + c, b * c), [(3,)], 2, c=3)
  assert out[0] == jax.ShapeDtypeStruct((3,), jnp.float32) and int(out[1]) == 6


@pytest.mark.parametrize('num_devices', [NDEV, 2])
def test_prefetch_to_device_shards_and_keeps_order(num_devices):
  devices = jax.local_devices()[:num_devices]
  source = [{'x': np.full((num_devices, 2, 3), i, np.float32)} for i in range(5)]
  consumed = []

  def batches():
    for i, b in enumerate(source):
      consumed.append(i)
      yield b

  it = jax_utils.prefetch_to_device(batches(), size=3, devices=devices)
  first = next(it)
  assert consumed == [0, 1, 2]  # the buffer was filled ahead of the consumer
  out = [first] + list(it)
  assert len(out) == 5
  for i, b in enumerate(out):
    assert _rows_by_device(b['x']) == {d: j for j, d in enumerate(devices)}
    np.testing.assert_array_equal(np.asarray(b['x']), source[i]['x'])


def test_prefetch_to_device_rejects_a_batch_without_the_device_axis():
  it = jax_utils.prefetch_to_device(iter([np.zeros((NDEV + 1, 2))]), size=2)
  with pytest.raises(ValueError, match=rf'leading axis of {NDEV} .*got shape \({NDEV + 1}, 2\)'):
    next(it)


def _numpy_scan(body, init, xs, axes, keepdims):
  """The reference: loop over every index of the scanned axes (last axis innermost)."""
  sizes = [xs.shape[a] for a in axes]
  c, ys = init, {}
  for idx in np.ndindex(*sizes):
    index = [slice(None)] * xs.ndim
    for a, i in zip(axes, idx):
      index[a] = slice(i, i + 1) if keepdims else i
    # Integer indexing drops the axes; numpy then moves nothing, the rest keep their order.
    c, y = body(c, xs[tuple(index)])
    ys[idx] = np.asarray(y)
  return c, ys


@pytest.mark.parametrize(
  'axes,unroll,keepdims',
  [((0,), 1, False), ((1,), 2, False), ((2, 0), (1, 3), False), ((1, 2), 2, True), (1, 1, True)],
)
def test_scan_in_dim_matches_a_python_loop(axes, unroll, keepdims):
  xs = np.random.RandomState(0).normal(size=(3, 4, 2)).astype(np.float32)
  axes_t = axes if isinstance(axes, tuple) else (axes,)
  # The carry has the shape of one x: the other axes, plus the scanned ones at size 1 in place
  # with keepdims.
  if keepdims:
    carry_shape = tuple(1 if a in axes_t else n for a, n in enumerate(xs.shape))
  else:
    carry_shape = tuple(n for a, n in enumerate(xs.shape) if a not in axes_t)

  def body(c, x):
    return c * 0.5 + x, (c * x).sum() + x

  init = np.zeros(carry_shape, np.float32)
  c, ys = jax_utils.scan_in_dim(
    body, jnp.asarray(init), jnp.asarray(xs), axis=axes, unroll=unroll, keepdims=keepdims
  )
  ref_c, ref_ys = _numpy_scan(body, init, xs, axes_t, keepdims)
  np.testing.assert_allclose(np.asarray(c), ref_c, rtol=1e-5)
  assert ys.shape == xs.shape
  for idx, y in ref_ys.items():
    index = [slice(None)] * 3
    for a, i in zip(axes_t, idx):
      index[a] = slice(i, i + 1) if keepdims else i
    np.testing.assert_allclose(np.asarray(ys[tuple(index)]), y, rtol=1e-5)


DTYPES = [np.float32, np.uint8, jnp.bfloat16, np.int32]
BATCHES = [NDEV, NDEV + 1, NDEV - 1, 3 * NDEV + 1]


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('batch', BATCHES)
def test_pad_shard_unpad_any_batch_size(dtype, batch):
  seen_shapes = []

  @functools.partial(jax_utils.pad_shard_unpad, static_argnums=())
  def add(a, b):
    seen_shapes.append(a['a'].shape)
    return a['a'] + jnp.asarray(b[0], dtype)

  x = np.arange(batch).astype(dtype)
  y = add({'a': x}, (10 * x,))
  assert y.dtype == x.dtype and y.shape == (batch,)
  np.testing.assert_allclose(np.float64(y), np.float64(x + 10 * x))  # wraps like the dtype
  assert seen_shapes == [(NDEV, -(-batch // NDEV))]


def test_pad_shard_unpad_with_pmap_static_args_and_min_device_batch():
  traces = []

  def fn(params, x, *, b):
    traces.append(x.shape)
    return params * x + b

  # The default static_argnums=(0,) passes the parameters through unpadded.
  wrapped = jax_utils.pad_shard_unpad(jax.pmap(lambda p, x: fn(p, x, b=1.0), in_axes=(None, 0)))
  for batch in (NDEV - 3, NDEV + 5, 2 * NDEV):
    x = np.arange(batch, dtype=np.float32)
    np.testing.assert_allclose(wrapped(2.0, x, min_device_batch=3), 2 * x + 1)
  assert traces == [(3,)]  # every batch padded to 3 per device: traced once

  kw = jax_utils.pad_shard_unpad(lambda p, x, *, b: p * x + b, static_argnames=('b',))
  np.testing.assert_allclose(kw(5.0, np.arange(3.0), b=10.0), 5 * np.arange(3.0) + 10)


def test_pad_shard_unpad_static_return_and_errors():
  totals = jax_utils.pad_shard_unpad(
    jax.pmap(lambda x: jax.lax.psum(x.sum(), 'i'), axis_name='i'),
    static_argnums=(),
    static_return=True,
  )
  np.testing.assert_allclose(np.asarray(totals(np.arange(10.0))), np.full(NDEV, 45.0))
  add = jax_utils.pad_shard_unpad(lambda a, b: a + b, static_argnums=())
  with pytest.raises(ValueError, match=r'Inconsistent batch-sizes: \{2, 3\}.*static_argnums'):
    add(np.zeros(3), np.zeros(2))
  with pytest.raises(ValueError, match='argument 1 has a scalar leaf'):
    add(np.zeros(3), 1.0)


def test_replicate_pmap_round_trip_keeps_typed_keys():
  keys = jax.random.split(jax.random.key(0), NDEV)
  out = jax.pmap(lambda k: jax.random.normal(k, (2,)))(keys)
  ref = jax.vmap(lambda k: jax.random.normal(k, (2,)))(keys)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-6)
  replicated = jax_utils.replicate({'rng': jax.random.key(1)})
  assert jax.dtypes.issubdtype(replicated['rng'].dtype, jax.dtypes.prng_key)
  back = jax_utils.unreplicate(replicated)['rng']
  assert jax.random.key_data(back).tolist() == jax.random.key_data(jax.random.key(1)).tolist()


def test_nothing_warns_on_the_plain_paths():
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    jax_utils.unreplicate(jax_utils.replicate({'a': 1.0}))
