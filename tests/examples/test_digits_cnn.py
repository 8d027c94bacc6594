"""Smoke test of examples/digits_cnn.py: it learns, and batch_stats are trained and used."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip('sklearn', reason="the examples need the 'examples' extra")

from tests.examples._load import load_example

digits_cnn = load_example('digits_cnn')


@pytest.fixture(scope='module')
def trained():
  """One short run of the example: what ``main`` does, keeping the final state too."""
  args = digits_cnn.parse_args(['--steps', '80', '--log-every', '40'])
  return digits_cnn.train_and_evaluate(args)


def test_short_run_reaches_high_test_accuracy(trained):
  _, metrics = trained
  assert metrics['steps'] == 80
  # Ten classes: chance is 0.1; 80 steps of batch 64 already give about 0.95.
  assert metrics['test_accuracy'] > 0.8
  assert metrics['train_accuracy'] > 0.8


def test_split_is_deterministic_stratified_and_disjoint():
  a = digits_cnn.load_data(0.25, seed=3)
  b = digits_cnn.load_data(0.25, seed=3)
  np.testing.assert_array_equal(a['test_images'], b['test_images'])
  assert a['train_images'].shape[1:] == (8, 8, 1) and a['train_images'].dtype == np.float32
  assert len(a['train_labels']) + len(a['test_labels']) == 1797
  assert 0.0 <= a['train_images'].min() and a['train_images'].max() <= 1.0
  assert set(np.unique(a['test_labels'])) == set(range(10))
  train_rows = {img.tobytes() for img in a['train_images']}
  shared = sum(img.tobytes() in train_rows for img in a['test_images'])
  assert shared == 0  # no test image also appears in training


def test_batch_stats_are_updated_in_training_and_read_in_evaluation(trained):
  state, _ = trained
  stats = state.collections['batch_stats']
  assert int(state.step) == 80
  assert sorted(stats) == ['BatchNorm_0', 'BatchNorm_1']
  # BatchNorm starts from mean 0 and variance 1; training must have moved both.
  init_stats = jax.tree_util.tree_map(np.zeros_like, stats)
  for layer in stats:
    init_stats[layer]['var'] = np.ones_like(stats[layer]['var'])
    assert not np.allclose(stats[layer]['mean'], 0.0, atol=1e-3), layer
    assert not np.allclose(stats[layer]['var'], 1.0, atol=1e-3), layer

  images = digits_cnn.load_data(0.25, seed=0)['test_images'][:64]
  logits = digits_cnn.eval_logits(state, images)
  assert logits.shape == (64, 10) and jnp.all(jnp.isfinite(logits))
  with_init_stats = state.replace(collections={'batch_stats': init_stats})
  assert not np.allclose(logits, digits_cnn.eval_logits(with_init_stats, images), atol=1e-3)
  # Evaluation normalises with the stored statistics, so each image's logits do not
  # depend on the rest of the batch (training mode would use the batch's statistics).
  reversed_logits = digits_cnn.eval_logits(state, images[::-1])
  np.testing.assert_allclose(reversed_logits[::-1], logits, rtol=1e-5, atol=1e-5)
