"""Smoke test of examples/pmap_to_sharding.py on the 8 fake CPU devices: the pmap loop
(replicate, shard, prefetch, pmean, unreplicate, pad_shard_unpad) and the jit + sharding
loop train the same parameters and predict the same values."""

import jax
import numpy as np

from tests.examples._load import load_example

pmap_to_sharding = load_example('pmap_to_sharding')


def test_both_loops_agree_and_learn(capsys):
  assert jax.local_device_count() == 8
  out = pmap_to_sharding.main(['--steps', '12', '--batch-size', '32', '--eval-examples', '13'])
  np.testing.assert_allclose(out['pmap_losses'], out['jit_losses'], rtol=1e-5)
  assert out['param_diff'] < 1e-5
  assert out['jit_losses'][-1] < out['jit_losses'][0]
  # 13 evaluation examples on 8 devices: padded to 16 inside, 13 predictions out.
  assert out['pmap_pred'].shape == out['jit_pred'].shape == (13, 1)
  np.testing.assert_allclose(out['pmap_pred'], out['jit_pred'], rtol=1e-5, atol=1e-6)
  printed = capsys.readouterr().out
  assert '8 devices, global batch 32, 12 steps' in printed
