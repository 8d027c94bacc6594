"""Tests of the ``make demo`` example: the PNG writer, the data split, cached decoding and a
tiny end-to-end run that is resumed from its checkpoint."""

import functools
import math
import os
import struct
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.examples._load import EXAMPLES_DIR, load_example

# demo.py imports its sibling png_plot by name, as it does when run as a script.
sys.path.insert(0, str(EXAMPLES_DIR))
demo = load_example('demo')
import png_plot  # noqa: E402 - importable only once EXAMPLES_DIR is on sys.path


def read_png(data: bytes) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
  """Decodes an 8-bit RGB, filter-0 PNG (what png_plot writes) into rows of pixels."""
  assert data[:8] == b'\x89PNG\r\n\x1a\n'
  pos, chunks = 8, []
  while pos < len(data):
    (length,) = struct.unpack('>I', data[pos : pos + 4])
    tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
    (crc,) = struct.unpack('>I', data[pos + 8 + length : pos + 12 + length])
    assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, tag
    chunks.append((tag, body))
    pos += 12 + length
  assert chunks[0][0] == b'IHDR' and chunks[-1] == (b'IEND', b'')
  width, height, depth, color_type, _, _, interlace = struct.unpack('>IIBBBBB', chunks[0][1])
  assert (depth, color_type, interlace) == (8, 2, 0)
  raw = zlib.decompress(b''.join(body for tag, body in chunks if tag == b'IDAT'))
  stride = 1 + 3 * width
  assert len(raw) == height * stride
  rows = []
  for y in range(height):
    line = raw[y * stride : (y + 1) * stride]
    assert line[0] == 0  # filter type: none
    rows.append([tuple(line[1 + 3 * x : 4 + 3 * x]) for x in range(width)])
  return width, height, rows


def read_file(path):
  with open(path, 'rb') as f:
    return read_png(f.read())


# Tiny models compile several times faster without XLA's backend optimizations.
jit = functools.partial(jax.jit, compiler_options=demo.compiler_options(fast_compile=True))


# ------------------------------------------------------------------------------ PNG


def test_encode_png_round_trip():
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
  width, height, rows = read_png(png_plot.encode_png(7, 5, pixels.tobytes()))
  assert (width, height) == (7, 5)
  np.testing.assert_array_equal(np.array(rows, np.uint8), pixels)


def test_encode_png_rejects_wrong_size():
  with pytest.raises(ValueError, match='Expected 18 bytes of RGB data for 3x2, got 17'):
    png_plot.encode_png(3, 2, bytes(17))


def test_canvas_lines_rectangles_and_text():
  canvas = png_plot.Canvas(20, 10)
  red, blue = (255, 0, 0), (0, 0, 255)
  canvas.line(0, 9, 19, 9, red)
  canvas.rect(2, 2, 3, 4, blue)
  canvas.line(-5, 0, 30, 0, red)  # clipped, not an error
  _, _, rows = read_png(canvas.to_png())
  assert all(rows[9][x] == red for x in range(20))
  assert {rows[y][x] for y in range(2, 5) for x in (2, 3)} == {blue}
  assert rows[5][2] == rows[2][4] == png_plot.WHITE
  canvas = png_plot.Canvas(12, 7)
  canvas.text(0, 0, '1', scale=1)  # glyph rows 010/110/010/010/111
  ink = [[canvas.get(x, y) == png_plot.BLACK for x in range(3)] for y in range(5)]
  assert ink == [[0, 1, 0], [1, 1, 0], [0, 1, 0], [0, 1, 0], [1, 1, 1]]


def test_line_plot_draws_series_in_their_colors(tmp_path):
  path = str(tmp_path / 'plot.png')
  png_plot.line_plot(
    path, {'down': ([0, 10], [5.0, 1.0]), 'dot': ([5], [3.0])}, title='t', width=200, height=120
  )
  width, height, rows = read_file(path)
  assert (width, height) == (200, 120)
  assert rows[0][0] == rows[-1][-1] == png_plot.WHITE
  down, dot = png_plot.PALETTE[:2]
  # The legend swatches sit at the top right, so look at the left half for the curve.
  on_curve = [(x, y) for y in range(height) for x in range(width // 2) if rows[y][x] == down]
  assert on_curve
  x_first = min(x for x, _ in on_curve)
  assert x_first <= 66  # starts at the left edge of the plot area (64 px margin)
  y_at_first = min(y for x, y in on_curve if x == x_first)
  y_at_mid = min(y for x, y in on_curve if x == max(x for x, _ in on_curve))
  assert y_at_first < y_at_mid  # decreasing data goes down the image
  assert any(rows[y][x] == dot for y in range(height) for x in range(width))


def test_nice_ticks():
  assert png_plot.nice_ticks(0, 100) == [0, 20, 40, 60, 80, 100]
  assert png_plot.nice_ticks(1.23, 1.27) == [1.23, 1.24, 1.25, 1.26, 1.27]


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


def test_main_trains_plots_samples_and_resumes(tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  first = demo.main(TINY + ['--workdir', workdir, '--steps', '6'])
  out = capsys.readouterr().out
  assert 'CharTransformer Summary' in out
  assert '│ token_embed    │ Embed' in out and 'int32[1,16]' in out
  assert 'Resumed' not in out
  assert first['resumed_step'] == 0 and first['step'] == 6
  assert math.isfinite(first['val_loss']) and math.isfinite(first['train_loss'])
  assert first['bits_per_char'] == pytest.approx(first['val_loss'] / math.log(2))
  assert first['unigram_loss'] > 0
  assert len(first['generated']) == 40
  assert sorted(os.listdir(workdir)) == ['checkpoint_4', 'checkpoint_6', 'loss.png']
  width, height, _ = read_file(first['plot_path'])
  assert (width, height) == (640, 400)

  second = demo.main(TINY + ['--workdir', workdir, '--steps', '8'])
  assert 'Resumed from the checkpoint at step 6' in capsys.readouterr().out
  assert second['resumed_step'] == 6 and second['step'] == 8
  assert math.isfinite(second['val_loss'])
  assert 'checkpoint_8' in os.listdir(workdir)

  with pytest.raises(SystemExit, match='different model .*d_model: saved 16, requested 32'):
    demo.main(TINY[:5] + ['32'] + TINY[6:] + ['--workdir', workdir, '--steps', '8'])


@pytest.mark.parametrize('module', [demo, png_plot], ids=['demo', 'png_plot'])
def test_docstring_examples(module):
  # examples/ is outside the doctest paths of the suite, so run its examples here.
  import doctest

  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0
