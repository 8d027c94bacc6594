"""Smoke test of examples/sharded_training.py on the 8 fake CPU devices: 2x4 mesh with FSDP."""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tests.examples._load import load_example

sharded_training = load_example('sharded_training')

# Logical names -> mesh axes under the example's rules plus FSDP ('embed' over 'data').
EXPECTED = {
  'Embed_0/embedding': P('model', 'data'),  # ('vocab', 'embed')
  'positions': P(None, 'data'),  # ('length', 'embed'): no rule for 'length'
  'LayerNorm_0/scale': P('data'),
  'Dense_0/kernel': P('data', 'model'),  # ('embed', 'vocab')
  'Block_0/Dense_0/kernel': P('data', 'model'),  # ('embed', 'mlp')
  'Block_0/Dense_1/kernel': P('model', 'data'),  # ('mlp', 'embed')
  'Block_0/MultiHeadDotProductAttention_0/query/kernel': P('data', 'model', None),
  'Block_0/MultiHeadDotProductAttention_0/out/kernel': P('model', None, 'data'),
}


def test_fsdp_and_tensor_parallel_run_learns_with_the_rule_given_layout(capsys):
  metrics = sharded_training.main(
    [
      '--mesh',
      '2x4',
      '--fsdp',
      '--steps',
      '12',
      '--log-every',
      '4',
      '--batch-size',
      '8',
      '--seq-len',
      '16',
      '--vocab-size',
      '32',
      '--embed-dim',
      '16',
      '--mlp-dim',
      '32',
      '--num-heads',
      '4',
      '--num-layers',
      '1',
      '--learning-rate',
      '1e-2',
    ]
  )
  losses = metrics['losses']
  assert len(losses) == 12
  assert losses[-1] < 0.8 * losses[0]

  mesh = metrics['mesh']
  assert dict(mesh.shape) == {'data': 2, 'model': 4}
  specs = metrics['param_specs']
  for name, spec in EXPECTED.items():
    assert specs[name] == spec, (name, specs[name], spec)

  params = metrics['params']
  query = params['Block_0']['MultiHeadDotProductAttention_0']['query']['kernel']
  assert query.shape == (16, 4, 4)
  assert {s.data.shape for s in query.addressable_shards} == {(8, 1, 4)}
  # Trained parameters keep their layout, and AdamW's moments share it.
  mu = metrics['opt_state'][0].mu
  for (path, arr), moment in zip(
    jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(mu), strict=True
  ):
    name = '/'.join(k.key for k in path)
    want = NamedSharding(mesh, specs[name])
    assert arr.sharding.is_equivalent_to(want, arr.ndim), name
    assert moment.sharding.is_equivalent_to(want, arr.ndim), name
  out = capsys.readouterr().out
  assert "mesh {'data': 2, 'model': 4}" in out
  assert 'Block_0/Dense_0/kernel' in out and 'step   11  loss' in out
