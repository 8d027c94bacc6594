"""``flaxlike.metrics.tensorboard.SummaryWriter`` writes event files that TensorBoard reads.

The events are read back with TensorBoard's own loader (``EventAccumulator``, the code
behind ``tensorboard --logdir``), not with the library that wrote them.
"""

import io
import os
import subprocess
import sys
import wave

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from flaxlike.metrics import tensorboard


def _load(log_dir):
  acc = event_accumulator.EventAccumulator(
    str(log_dir),
    size_guidance={kind: 0 for kind in ('scalars', 'images', 'audio', 'histograms', 'tensors')},
  )
  acc.Reload()
  return acc


def test_scalars_round_trip_with_steps(tmp_path):
  writer = tensorboard.SummaryWriter(tmp_path / 'new' / 'run')  # parents are created
  losses = [2.5, 1.25, jnp.float32(0.5), np.float64(0.125)]
  for step, loss in enumerate(losses):
    writer.scalar('train/loss', loss, step * 10)
  writer.scalar('eval/accuracy', jnp.array(0.75), 30)
  writer.close()
  acc = _load(tmp_path / 'new' / 'run')
  assert sorted(acc.Tags()['scalars']) == ['eval/accuracy', 'train/loss']
  events = acc.Scalars('train/loss')
  assert [e.step for e in events] == [0, 10, 20, 30]
  np.testing.assert_allclose([e.value for e in events], [2.5, 1.25, 0.5, 0.125])
  assert acc.Scalars('eval/accuracy')[0].value == pytest.approx(0.75)


def test_images_are_pngs_with_tf_scaling(tmp_path):
  writer = tensorboard.SummaryWriter(tmp_path)
  gray = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
  writer.image('gray', gray, step=1)
  rgb = np.random.default_rng(0).integers(0, 256, (5, 2, 3, 3)).astype(np.uint8)
  writer.image('batch', rgb, step=2, max_outputs=2)
  writer.close()
  acc = _load(tmp_path)
  assert sorted(acc.Tags()['images']) == ['batch/image/0', 'batch/image/1', 'gray']
  (event,) = acc.Images('gray')
  assert (event.step, event.height, event.width) == (1, 3, 4)
  pixels = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert('RGB'))
  expected = np.clip(gray * 255.5, 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(pixels, np.repeat(expected[..., None], 3, axis=-1))
  for i in range(2):
    (event,) = acc.Images(f'batch/image/{i}')
    decoded = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))
    np.testing.assert_array_equal(decoded, rgb[i])


def test_audio_is_wav(tmp_path):
  writer = tensorboard.SummaryWriter(tmp_path)
  t = np.arange(800) / 8000
  clip = np.stack([np.sin(2 * np.pi * 440 * t), 2 * np.cos(2 * np.pi * 220 * t)], axis=-1)
  writer.audio('tone', clip[None], step=3, sample_rate=8000)
  writer.close()
  (event,) = _load(tmp_path).Audio('tone')
  assert (event.step, event.sample_rate, event.length_frames) == (3, 8000, 800)
  with wave.open(io.BytesIO(event.encoded_audio_string)) as wav:
    assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 8000, 2)
    samples = np.frombuffer(wav.readframes(800), '<i2').reshape(800, 2) / 32767
  np.testing.assert_allclose(samples, np.clip(clip, -1, 1), atol=1 / 32767)


def test_histogram_counts_match_numpy(tmp_path):
  values = np.random.default_rng(1).normal(size=(40, 25))
  writer = tensorboard.SummaryWriter(tmp_path)
  writer.histogram('w', values, step=4)
  writer.histogram('w_bins', values, step=4, bins=7)
  writer.close()
  acc = _load(tmp_path)
  (event,) = acc.Histograms('w')
  histo = event.histogram_value
  assert (event.step, histo.num) == (4, 1000)
  assert histo.min == pytest.approx(values.min()) and histo.max == pytest.approx(values.max())
  assert histo.sum == pytest.approx(values.sum()) and sum(histo.bucket) == 1000
  counts, _ = np.histogram(values, bins=30)
  assert sorted(c for c in histo.bucket if c) == sorted(c for c in counts if c)
  (event,) = acc.Histograms('w_bins')
  assert sorted(c for c in event.histogram_value.bucket if c) == sorted(
    c for c in np.histogram(values, bins=7)[0] if c
  )


def test_text_tensor_and_hparams(tmp_path):
  writer = tensorboard.SummaryWriter(tmp_path, auto_flush=False)
  writer.text('notes', '**bold** run', step=0)
  writer.text('raw', b'bytes ok', step=1)
  with pytest.raises(ValueError, match='`textdata` should be of the type `str` or `bytes`'):
    writer.text('bad', 3, step=0)
  writer.write('custom', np.arange(6, dtype=np.int32).reshape(2, 3), step=5)
  writer.hparams({'opt': {'name': 'adam', 'lr': np.float32(1e-3)}, 'depth': np.int64(4), 'f': len})
  writer.flush()
  writer.close()
  acc = _load(tmp_path)
  (notes,) = acc.Tensors('notes')
  assert notes.tensor_proto.string_val == [b'**bold** run']
  assert acc.summary_metadata['notes'].plugin_data.plugin_name == 'text'
  (custom,) = acc.Tensors('custom')
  assert custom.step == 5
  stored = np.frombuffer(custom.tensor_proto.tensor_content, '<i4').reshape(2, 3)
  np.testing.assert_array_equal(stored, np.arange(6).reshape(2, 3))
  metadata = acc.summary_metadata['_hparams_/session_start_info']
  assert metadata.plugin_data.plugin_name == 'hparams'
  start = plugin_data_pb2.HParamsPluginData.FromString(
    metadata.plugin_data.content
  ).session_start_info
  assert start.hparams['opt.name'].string_value == 'adam'
  assert start.hparams['opt.lr'].number_value == pytest.approx(1e-3)
  assert start.hparams['depth'].number_value == 4
  assert start.hparams['f'].string_value.startswith('<built-in function len')


def test_write_takes_serialized_metadata_and_rejects_unknown_dtypes(tmp_path):
  from tensorboardX.proto import summary_pb2

  metadata = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='my_plugin')
  )
  writer = tensorboard.SummaryWriter(tmp_path)
  writer.write('t', np.array(['a', 'b']), step=0, metadata=metadata.SerializeToString())
  with pytest.raises(ValueError, match='cannot store dtype uint32'):
    writer.write('u', np.zeros(2, np.uint32), step=0)
  writer.close()
  writer.close()  # closing twice is fine
  with pytest.raises(RuntimeError, match='closed'):
    writer.scalar('late', 1.0, 0)
  acc = _load(tmp_path)
  assert acc.summary_metadata['t'].plugin_data.plugin_name == 'my_plugin'
  assert acc.Tensors('t')[0].tensor_proto.string_val == [b'a', b'b']


def test_missing_extra_gives_one_line_naming_it(tmp_path):
  # A stand-in tensorboardX that fails to import, first on the path of a fresh interpreter.
  (tmp_path / 'tensorboardX').mkdir()
  (tmp_path / 'tensorboardX' / '__init__.py').write_text("raise ImportError('not installed')\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
  result = subprocess.run(
    [sys.executable, '-c', 'import flaxlike.metrics.tensorboard'],
    capture_output=True,
    text=True,
    env=env,
    check=False,
  )
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last == (
    'ModuleNotFoundError: flaxlike.metrics.tensorboard needs the tensorboard extra: '
    "pip install 'flaxlike[tensorboard]'"
  )
  assert 'not installed' not in result.stderr  # no chained traceback into the package
