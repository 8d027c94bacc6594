"""Tests of the ``make demo`` example: the data split, cached decoding, the loss plot, the
progress output, and a tiny end-to-end run resumed from its checkpoint with more steps."""

import functools
import importlib.util
import io
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip('matplotlib', reason="the demo needs the 'examples' extra")
pytest.importorskip('tqdm', reason="the demo needs the 'examples' extra")

from matplotlib import image  # noqa: E402

from flaxlike import config  # noqa: E402
from flaxlike.training import checkpoints  # noqa: E402
from tests.examples._load import load_example  # noqa: E402

demo = load_example('demo')
import _extras  # noqa: E402 - examples/ is on sys.path once an example is loaded

# Tiny models compile several times faster without XLA's backend optimizations.
jit = functools.partial(jax.jit, compiler_options=demo.compiler_options(fast_compile=True))


def _checkpoint_entries(*steps: int) -> list[str]:
  """What the demo leaves in its workdir per checkpoint. It saves in the default format,
  as Flax does: with orbax-checkpoint installed (the test extra) an Orbax directory per
  step, otherwise a msgpack file and its hidden digest file."""
  names = [f'checkpoint_{s}' for s in steps]
  orbax = config.flax_use_orbax_checkpointing and importlib.util.find_spec('orbax.checkpoint')
  return names if orbax else names + [f'.checkpoint_{s}.sha256' for s in steps]


# ----------------------------------------------------------------------------- data


def test_split_is_deterministic_disjoint_and_per_file():
  paths = demo.stdlib_sources()
  assert paths == sorted(paths) and 'os.py' in paths
  assert not any(p.startswith('site-packages/') for p in paths)
  train, val = demo.split_files(paths, 0.1)
  assert (train, val) == demo.split_files(list(reversed(paths)), 0.1)
  assert not set(train) & set(val) and sorted(train + val) == paths
  assert 0.06 < len(val) / len(paths) < 0.14
  # A file's side depends on its path alone, not on which other files exist.
  _, sub_val = demo.split_files(paths[::3], 0.1)
  assert set(sub_val) == set(val) & set(paths[::3])


def test_corpus_keeps_validation_files_out_of_training():
  corpus = demo.load_corpus(30_000, 0.1)
  assert len(corpus.train_text) == 30_000  # the cap counts the blank lines between files
  assert not set(corpus.train_files) & set(corpus.val_files)
  _, val = demo.split_files(demo.stdlib_sources(), 0.1)
  assert set(corpus.val_files) <= set(val)
  assert corpus == demo.load_corpus(30_000, 0.1)


def test_vocab_encoding_and_unigram_baseline():
  vocab = demo.build_vocab('abca')
  assert vocab == 'abc'
  ids = demo.encode('cabz', vocab)
  np.testing.assert_array_equal(ids, [3, 1, 2, demo.UNKNOWN_ID])
  assert demo.decode(ids[:3], vocab) == 'cab'
  # Add-one counts over ids 0..3 of 'aab': unknown 1, a 3, b 2, c 1 (of 7).
  expected = -(math.log(3 / 7) + math.log(1 / 7)) / 2
  got = demo.unigram_cross_entropy(demo.encode('aab', vocab), demo.encode('az', vocab), 4)
  assert got == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------- decoding


@pytest.mark.parametrize('scan', [False, True])
def test_cached_decoding_matches_full_forward_pass(scan):
  config = demo.ModelConfig(
    vocab_size=13,
    max_len=8,
    d_model=16,
    num_layers=2,
    num_heads=2,
    mlp_dim=32,
    dropout_rate=0.1,
    scan=scan,
  )
  model = demo.CharTransformer(config)
  tokens = jax.random.randint(jax.random.key(1), (1, 8), 0, 13)
  params = jit(model.init)(jax.random.key(0), tokens)['params']
  if scan:
    assert params['blocks']['attention']['query']['kernel'].shape == (2, 16, 2, 8)
  else:
    assert params['block_1']['attention']['query']['kernel'].shape == (16, 2, 8)
  full = jit(model.apply)({'params': params}, tokens)

  decode_step = jit(demo.decode_step, static_argnums=0)
  logits, cache = decode_step(config, params, demo.init_cache(config), tokens[:, :3])  # prefill
  pieces = [logits]
  for i in range(3, 8):
    logits, cache = decode_step(config, params, cache, tokens[:, i : i + 1])
    pieces.append(logits)
  np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5, rtol=1e-5)


def test_greedy_sampling_follows_the_full_forward_pass():
  config = demo.ModelConfig(
    vocab_size=7, max_len=6, d_model=8, num_layers=1, num_heads=2, mlp_dim=16
  )
  model = demo.CharTransformer(config)
  params = jit(model.init)(jax.random.key(3), jnp.zeros((1, 6), jnp.int32))['params']
  # Prompt and sample fill exactly one window (one compile); more windows: the run below.
  ids = demo.generate(
    config, params, [1, 2], 4, temperature=0.0, key=jax.random.key(0), fast_compile=True
  )
  assert len(ids) == 4 and demo.UNKNOWN_ID not in ids
  # Each greedy pick is the argmax of the uncached model over the known characters.
  sequence = [1, 2] + ids
  logits = np.array(jit(model.apply)({'params': params}, jnp.asarray([sequence])))[0]
  logits[:, demo.UNKNOWN_ID] = -np.inf
  assert ids == logits.argmax(-1)[1:5].tolist()


# ------------------------------------------------------------------------ end to end


TINY = [
  '--batch-size',
  '4',
  '--seq-len',
  '16',
  '--d-model',
  '16',
  '--layers',
  '2',
  '--heads',
  '2',
  '--max-chars',
  '20000',
  '--eval-windows',
  '4',
  '--log-every',
  '2',
  '--eval-every',
  '4',
  '--ckpt-every',
  '4',
  '--gen-chars',
  '40',
  '--dropout',
  '0.1',
  '--scan',
  '--fast-compile',
]


def test_main_trains_plots_samples_and_resumes_on_the_same_schedule(tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  first = demo.main(TINY + ['--workdir', workdir, '--steps', '4', '--schedule-steps', '6'])
  out = capsys.readouterr().out
  assert 'CharTransformer Summary' in out
  assert '│ token_embed    │ Embed' in out and 'int32[1,16]' in out
  assert 'Resumed' not in out
  assert 'learning rate: warmup to 0.003 over 3 steps, cosine decay to 0.0003 at step 6' in out
  # Not a terminal: no bar redrawn with carriage returns, one line per evaluation.
  assert '\r' not in out
  assert out.count('train loss') == 1 and 'step 4/4: train loss ' in out
  assert first['resumed_step'] == 0 and first['step'] == 4
  assert math.isfinite(first['val_loss']) and math.isfinite(first['train_loss'])
  assert first['bits_per_char'] == pytest.approx(first['val_loss'] / math.log(2))
  assert first['unigram_loss'] > 0
  assert len(first['generated']) == 40
  assert sorted(os.listdir(workdir)) == sorted(_checkpoint_entries(4) + ['loss.png'])
  assert image.imread(first['plot_path']).shape[:2] == (500, 800)

  second = demo.main(TINY + ['--workdir', workdir, '--steps', '8'])
  out = capsys.readouterr().out
  assert 'Resumed from the checkpoint at step 4' in out
  note = ' '.join(out.split())  # the note is one long line
  assert 'steps 7 to 8 train at its final rate 0.0003, exactly as one uninterrupted run' in note
  assert 'with --steps 8 --schedule-steps 6 would.' in note
  assert second['resumed_step'] == 4 and second['step'] == 8
  assert math.isfinite(second['val_loss'])
  assert sorted(os.listdir(workdir)) == sorted(_checkpoint_entries(4, 8) + ['loss.png'])

  # What the note says: one uninterrupted run on that schedule ends in the same state,
  # bit for bit, and logged the same losses at the same steps.
  reference = str(tmp_path / 'reference')
  demo.main(TINY + ['--workdir', reference, '--steps', '8', '--schedule-steps', '6'])
  capsys.readouterr()
  resumed = checkpoints.restore_checkpoint(workdir, None)
  uninterrupted = checkpoints.restore_checkpoint(reference, None)
  assert int(resumed['state']['step']) == 8
  jax.tree_util.tree_map(np.testing.assert_array_equal, resumed['state'], uninterrupted['state'])
  assert resumed['history'].keys() == uninterrupted['history'].keys()
  for key in resumed['history']:
    np.testing.assert_array_equal(resumed['history'][key], uninterrupted['history'][key])

  # Resuming with other flags is refused, naming what differs.
  with pytest.raises(SystemExit, match='different model .*d_model: saved 16, requested 32'):
    demo.main(TINY[:5] + ['32'] + TINY[6:] + ['--workdir', workdir, '--steps', '10'])
  with pytest.raises(
    SystemExit,
    match=r'different learning-rate schedule \(--learning-rate: saved 0.003, requested 0.01; '
    r'--warmup-steps: saved 3, requested 5; --schedule-steps: saved 6, requested 10;',
  ):
    demo.main(
      TINY
      + ['--workdir', workdir, '--steps', '10', '--learning-rate', '0.01', '--schedule-steps', '10']
    )

  # A checkpoint written before the demo saved its schedule cannot continue it.
  raw = checkpoints.restore_checkpoint(workdir, None)
  del raw['schedule']
  older = str(tmp_path / 'older')
  checkpoints.save_checkpoint(older, raw, 8)
  with pytest.raises(SystemExit, match='older demo that did not save its learning-rate schedule'):
    demo.main(TINY + ['--workdir', older, '--steps', '10'])


# ------------------------------------------------------------------ plot and progress


def test_loss_plot_labels_both_curves_and_the_baseline(tmp_path):
  history = {
    'train_step': [2, 4, 6],
    'train_loss': [4.0, 3.0, 2.5],
    'val_step': [4, 6],
    'val_loss': [3.2, 2.8],
  }
  figure = demo.loss_figure(history, unigram=3.5)
  axes = figure.axes[0]
  assert axes.get_xlabel() == 'training step'
  assert axes.get_ylabel() == 'cross-entropy (nats per character)'
  lines = {line.get_label(): line for line in axes.get_lines()}
  assert [t.get_text() for t in axes.get_legend().get_texts()] == [
    'train',
    'validation',
    'unigram baseline',
  ]
  np.testing.assert_array_equal(lines['train'].get_xydata(), [[2, 4.0], [4, 3.0], [6, 2.5]])
  np.testing.assert_array_equal(lines['validation'].get_xydata(), [[4, 3.2], [6, 2.8]])
  path = demo.plot_losses(str(tmp_path / 'loss.png'), history, unigram=3.5)
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  pixels = image.imread(path)
  assert pixels.shape[:2] == (500, 800)
  assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50  # antialiased text


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_progress_is_a_tqdm_bar_on_a_terminal():
  out = _Terminal()
  progress = demo.Progress(total=10, initial=2, file=out)
  progress.update(5, loss=1.25, tokens_per_s=1234.0)
  progress.line('step 5/10: validation loss 1.2')
  progress.close()
  text = out.getvalue()
  assert '\r' in text and '5/10' in text and 'loss 1.250, 1,234 tok/s' in text
  assert 'step 5/10: validation loss 1.2\n' in text


def test_progress_in_a_log_is_the_lines_alone():
  out = io.StringIO()
  progress = demo.Progress(total=10, initial=0, file=out)
  for step in range(1, 11):
    progress.update(step, loss=1.0, tokens_per_s=1.0)
  progress.line('step 10/10: done')
  progress.close()
  assert out.getvalue() == 'step 10/10: done\n'


@pytest.mark.parametrize('module', [demo, _extras], ids=['demo', '_extras'])
def test_docstring_examples(module):
  # examples/ is outside the doctest paths of the suite, so run its examples here.
  import doctest

  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0
