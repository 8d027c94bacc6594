"""Smoke test of examples/seq2seq_addition.py: loss falls, and padding is really ignored."""

import jax
import numpy as np
import pytest

from tests.examples._load import load_example

seq2seq = load_example('seq2seq_addition')


def test_main_loss_decreases_clearly(capsys):
  metrics = seq2seq.main(
    [
      '--max-digits',
      '2',
      '--steps',
      '200',
      '--batch-size',
      '32',
      '--hidden',
      '32',
      '--test-size',
      '100',
      '--log-every',
      '100',
    ]
  )
  # The untrained decoder is near uniform over 14 tokens (ln 14 = 2.64 nats); the first
  # 20 steps average about 2.0 and the last 20 about 1.2.
  assert metrics['first_loss'] > 1.7
  assert metrics['final_loss'] < 0.75 * metrics['first_loss']
  assert 0.0 <= metrics['exact_match'] <= 1.0
  assert 'held-out exact match' in capsys.readouterr().out


def test_problems_encode_queries_answers_and_masks():
  problems = seq2seq.Problems(max_digits=3, seed=0)
  pairs = np.array([[57, 138], [0, 9], [999, 999]])
  batch = problems.batch(pairs)
  assert batch['query'].shape == (3, 7)
  np.testing.assert_array_equal(batch['query_lengths'], [6, 3, 7])
  assert [seq2seq.decode(q) for q in batch['query']] == ['57+138', '0+9', '999+999']
  assert [seq2seq.decode(t) for t in batch['targets']] == ['195', '9', '1998']
  # Teacher forcing input: GO, then the targets shifted right by one.
  np.testing.assert_array_equal(batch['decoder_inputs'][:, 0], seq2seq.GO)
  np.testing.assert_array_equal(batch['decoder_inputs'][:, 1:], batch['targets'][:, :-1])
  # The loss covers every answer character and the EOS after it, nothing more.
  np.testing.assert_array_equal(batch['mask'].sum(axis=1), [4, 2, 5])
  assert batch['targets'][0, 3] == seq2seq.EOS
  drawn = problems.draw_pairs(2000)
  assert drawn.min() >= 0 and drawn.max() <= 999
  assert (drawn < 10).mean() > 0.2  # digit counts are drawn uniformly, not the values


@pytest.fixture(scope='module')
def small_model():
  """A tiny untrained Seq2seq in both decoder modes, initialised once."""
  teacher = seq2seq.Seq2seq(hidden=8, embed_dim=4, teacher_force=True)
  greedy = teacher.clone(teacher_force=False)
  problems = seq2seq.Problems(max_digits=3, seed=1)
  batch = problems.batch(problems.draw_pairs(6))
  variables = jax.jit(teacher.init)(
    jax.random.key(0), batch['query'], batch['query_lengths'], batch['decoder_inputs']
  )
  return teacher, greedy, variables, batch


def test_encoder_ignores_padding_beyond_seq_lengths(small_model):
  _, _, variables, batch = small_model
  query, lengths = batch['query'], batch['query_lengths']
  assert len(set(lengths.tolist())) > 1
  padding = np.arange(query.shape[1])[None, :] >= lengths[:, None]
  garbage = np.random.RandomState(0).randint(3, seq2seq.VOCAB_SIZE, size=query.shape)
  noisy_query = np.where(padding, garbage, query).astype(np.int32)
  assert (noisy_query != query).any()

  encoder = seq2seq.Encoder(hidden=8, embed_dim=4)
  variables = {'params': variables['params']['Encoder_0']}
  apply = jax.jit(encoder.apply)
  carries, outputs = apply(variables, query, lengths)
  noisy_carries, noisy_outputs = apply(variables, noisy_query, lengths)
  for a, b in zip(jax.tree_util.tree_leaves(carries), jax.tree_util.tree_leaves(noisy_carries)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  valid = ~padding
  np.testing.assert_allclose(outputs[valid], noisy_outputs[valid], rtol=1e-6, atol=1e-6)
  assert outputs.shape == (6, 7, 16)

  # Without seq_lengths the backward direction reads the padding first, so the same
  # change reaches its carry: the check above is one that could fail.
  (_, backward), _ = apply(variables, query, None)
  (_, noisy_backward), _ = apply(variables, noisy_query, None)
  assert not np.allclose(backward[1], noisy_backward[1], atol=1e-4)


def test_greedy_decoding_feeds_back_its_own_predictions(small_model):
  teacher, greedy, variables, batch = small_model
  query, lengths = batch['query'], batch['query_lengths']
  # One parameter tree serves both modes. Greedy decoding reads only the GO column of
  # its inputs (the rest is scrambled here) and equals teacher forcing on its own argmax
  # predictions shifted right.
  scrambled = batch['decoder_inputs'].copy()
  scrambled[:, 1:] = seq2seq.EOS
  greedy_logits = greedy.apply(variables, query, lengths, scrambled)
  predictions = np.asarray(greedy_logits.argmax(-1))
  fed_back = np.concatenate([scrambled[:, :1], predictions[:, :-1]], axis=1).astype(np.int32)
  assert (fed_back != scrambled).any()
  np.testing.assert_allclose(
    teacher.apply(variables, query, lengths, fed_back), greedy_logits, rtol=1e-5, atol=1e-5
  )
