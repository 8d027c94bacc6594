"""TensorBoard logging with Flax's ``flax.metrics.tensorboard.SummaryWriter`` API.

The event files are written with tensorboardX (no TensorFlow) and PNG images with
Pillow, both from the ``tensorboard`` extra: ``pip install 'flaxlike[tensorboard]'``.
Point TensorBoard at the log directory (``tensorboard --logdir DIR``) to see them.

Layout of what is written, where it differs from Flax's TensorFlow writer: scalars are
``simple_value`` summaries; a batch of several images or audio clips is written as one
summary per sample, tagged ``TAG/image/0``, ``TAG/image/1``, ... (``TAG/audio/i``),
while a single one keeps ``TAG``. TensorBoard shows both layouts the same way.

Example:

  >>> import tempfile
  >>> import numpy as np
  >>> from flaxlike.metrics import tensorboard
  >>> writer = tensorboard.SummaryWriter(tempfile.mkdtemp())
  >>> for step in range(3):
  ...   writer.scalar('train/loss', 1.0 / (step + 1), step)
  >>> writer.histogram('weights', np.random.default_rng(0).normal(size=100), step=2)
  >>> writer.hparams({'optimizer': {'name': 'adam', 'lr': 1e-3}, 'layers': 2})
  >>> writer.close()
"""

from __future__ import annotations

import io
import os
import wave
from collections.abc import Mapping
from typing import Any

import numpy as np

try:
  from PIL import Image
  from tensorboardX import summary as tbx_summary
  from tensorboardX.proto import plugin_text_pb2 as _plugin_text_pb2
  from tensorboardX.proto import summary_pb2 as _summary_pb2
  from tensorboardX.proto import tensor_pb2 as _tensor_pb2
  from tensorboardX.proto import tensor_shape_pb2 as _tensor_shape_pb2
  from tensorboardX.proto import types_pb2 as _types_pb2
  from tensorboardX.writer import FileWriter
except ImportError:
  # One line that says what to install, instead of a traceback into a missing package.
  raise ModuleNotFoundError(
    "flaxlike.metrics.tensorboard needs the tensorboard extra: pip install 'flaxlike[tensorboard]'",
    name='tensorboardX',
  ) from None

from flaxlike import io as flaxlike_io

# protobuf's generated modules create their message classes and enum values at import time
# from serialized descriptors, and tensorboardX ships no .pyi stubs for them, so a type checker
# sees none of those names. Typed as Any, the modules are used as what they are at run time.
plugin_text_pb2: Any = _plugin_text_pb2
summary_pb2: Any = _summary_pb2
tensor_pb2: Any = _tensor_pb2
tensor_shape_pb2: Any = _tensor_shape_pb2
types_pb2: Any = _types_pb2

__all__ = ['SummaryWriter']

# The value types TensorBoard's hparams plugin stores; anything else is logged as its str().
_HPARAM_TYPES = (bool, int, float, str, np.bool_, np.integer, np.floating, np.character)

# numpy dtype -> TensorFlow DataType, for ``write`` of arbitrary tensors.
_TF_DTYPES = {
  np.dtype(np.float16): types_pb2.DT_HALF,
  np.dtype(np.float32): types_pb2.DT_FLOAT,
  np.dtype(np.float64): types_pb2.DT_DOUBLE,
  np.dtype(np.int8): types_pb2.DT_INT8,
  np.dtype(np.int16): types_pb2.DT_INT16,
  np.dtype(np.int32): types_pb2.DT_INT32,
  np.dtype(np.int64): types_pb2.DT_INT64,
  np.dtype(np.uint8): types_pb2.DT_UINT8,
  np.dtype(np.uint16): types_pb2.DT_UINT16,
  np.dtype(np.bool_): types_pb2.DT_BOOL,
  np.dtype(np.complex64): types_pb2.DT_COMPLEX64,
  np.dtype(np.complex128): types_pb2.DT_COMPLEX128,
}


def _flatten_dict(input_dict: Mapping[str, Any], parent_key: str = '', sep: str = '.'):
  """Nested hyperparameters as one flat dict with dotted keys, values TensorBoard stores."""
  items: dict[str, Any] = {}
  for key, value in input_dict.items():
    new_key = f'{parent_key}{sep}{key}' if parent_key else key
    if isinstance(value, Mapping):
      items.update(_flatten_dict(value, new_key, sep=sep))
      continue
    if not isinstance(value, _HPARAM_TYPES):
      value = str(value)
    elif isinstance(value, np.generic):
      value = value.item()  # tensorboardX only recognises Python scalars
    if isinstance(value, bytes):
      value = value.decode('utf-8', 'replace')
    items[new_key] = value
  return items


def _tensor_proto(array: np.ndarray) -> Any:
  """A TensorFlow ``TensorProto`` holding ``array`` (numbers, bools or strings)."""
  shape = tensor_shape_pb2.TensorShapeProto(
    dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in array.shape]
  )
  if array.dtype.kind in 'SUO':
    values = [v if isinstance(v, bytes) else str(v).encode('utf-8') for v in array.reshape(-1)]
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=values)
  if array.dtype not in _TF_DTYPES:
    raise ValueError(
      f'SummaryWriter.write cannot store dtype {array.dtype}; convert the tensor to a '
      f'float, int, bool, complex or string array first.'
    )
  return tensor_pb2.TensorProto(
    dtype=_TF_DTYPES[array.dtype],
    tensor_shape=shape,
    tensor_content=array.astype(array.dtype.newbyteorder('<')).tobytes(),
  )


def _png(image: np.ndarray) -> Any:
  """One ``[H, W, C]`` uint8 image as a PNG ``Summary.Image``."""
  buffer = io.BytesIO()
  Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buffer, 'PNG')
  height, width, channels = image.shape
  return summary_pb2.Summary.Image(
    height=height, width=width, colorspace=channels, encoded_image_string=buffer.getvalue()
  )


def _wav(clip: np.ndarray, sample_rate: int) -> Any:
  """One ``[frames, channels]`` clip in [-1, 1] as a 16-bit PCM WAV ``Summary.Audio``."""
  frames, channels = clip.shape
  pcm = np.round(clip * 32767).astype('<i2')
  buffer = io.BytesIO()
  with wave.open(buffer, 'wb') as out:
    out.setnchannels(channels)
    out.setsampwidth(2)
    out.setframerate(int(sample_rate))
    out.writeframes(pcm.tobytes())
  return summary_pb2.Summary.Audio(
    sample_rate=float(sample_rate),
    num_channels=channels,
    length_frames=frames,
    encoded_audio_string=buffer.getvalue(),
    content_type='audio/wav',
  )


def _sample_tags(tag: str, kind: str, count: int) -> list[str]:
  return [tag] if count == 1 else [f'{tag}/{kind}/{i}' for i in range(count)]


class SummaryWriter:
  """Writes scalars, images, audio, histograms, text, tensors and hyperparameters to a
  TensorBoard event file in ``log_dir``.

  Args:
    log_dir: the directory for the event file; created with its parents if missing.
    auto_flush: write to disk after every call (otherwise: when the buffer fills, every
      two minutes, on ``flush`` and on ``close``).

  Example:

    >>> import tempfile
    >>> from flaxlike.metrics.tensorboard import SummaryWriter
    >>> with_logs = tempfile.mkdtemp()
    >>> writer = SummaryWriter(with_logs)
    >>> writer.scalar('eval/accuracy', 0.91, step=100)
    >>> writer.text('notes', 'baseline run', step=0)
    >>> writer.close()
  """

  def __init__(self, log_dir: str | os.PathLike, auto_flush: bool = True):
    log_dir = os.fspath(log_dir)
    if not flaxlike_io.isdir(log_dir):
      flaxlike_io.makedirs(log_dir)
    self._event_writer = FileWriter(log_dir)
    self._auto_flush = auto_flush
    self._closed = False

  def _add(self, values: list[Any], step: int | None) -> None:
    if self._closed:
      raise RuntimeError(
        'This SummaryWriter is closed; create a new SummaryWriter to write more summaries.'
      )
    self._event_writer.add_summary(
      summary_pb2.Summary(value=values), None if step is None else int(step)
    )
    if self._auto_flush:
      self._event_writer.flush()

  def close(self) -> None:
    """Writes what is pending and closes the event file; the writer cannot be used after."""
    if not self._closed:
      self._event_writer.close()
      self._closed = True

  def flush(self) -> None:
    """Writes the pending summaries to disk."""
    if not self._closed:
      self._event_writer.flush()

  def scalar(self, tag: str, value: Any, step: int) -> None:
    """Logs one number.

    Args:
      tag: the series name, e.g. ``'train/loss'``.
      value: a Python or array scalar.
      step: the training step.
    """
    value = float(np.asarray(value))
    self._add([summary_pb2.Summary.Value(tag=tag, simple_value=value)], step)

  def image(self, tag: str, image: Any, step: int, max_outputs: int = 3) -> None:
    """Logs one image or a batch of images as PNGs.

    Args:
      tag: the name.
      image: ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` for one image; ``[K, H, W]``,
        ``[K, H, W, 1]`` or ``[K, H, W, 3]`` for ``K``. A 3-d array whose last axis is 1
        or 3 is one image. Grayscale is stored as RGB. Values are uint8, or floats in
        [0, 1] (mapped to 0..255 as ``tf.summary.image`` does, clipped).
      step: the training step.
      max_outputs: write at most this many images of the batch.
    """
    image = np.asarray(image)
    if image.ndim == 2:
      image = image[np.newaxis, :, :, np.newaxis]
    elif image.ndim == 3:
      image = image[np.newaxis] if image.shape[-1] in (1, 3) else image[..., np.newaxis]
    if image.ndim != 4 or image.shape[-1] not in (1, 3):
      raise ValueError(
        f'SummaryWriter.image for tag {tag!r}: expected [H, W], [H, W, C] or [K, H, W, C] '
        f'with C in (1, 3), got shape {image.shape}.'
      )
    if image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    if image.dtype != np.uint8:
      # tf.summary.image: scale by 255.5, saturate to [0, 255], truncate.
      image = np.clip(image.astype(np.float64) * 255.5, 0, 255).astype(np.uint8)
    images = image[:max_outputs]
    tags = _sample_tags(tag, 'image', len(images))
    self._add([summary_pb2.Summary.Value(tag=t, image=_png(x)) for t, x in zip(tags, images)], step)

  def audio(
    self, tag: str, audiodata: Any, step: int, sample_rate: int = 44100, max_outputs: int = 3
  ) -> None:
    """Logs audio clips as 16-bit WAV.

    Args:
      tag: the name.
      audiodata: ``[K, frames, channels]`` floats; values are clipped to [-1, 1].
      step: the training step.
      sample_rate: samples per second.
      max_outputs: write at most this many clips.
    """
    audiodata = np.clip(np.asarray(audiodata, np.float32), -1, 1)
    if audiodata.ndim != 3:
      raise ValueError(
        f'SummaryWriter.audio for tag {tag!r}: expected [clips, frames, channels], got '
        f'shape {audiodata.shape}; add axes with x[None, :, None] for one mono clip.'
      )
    clips = audiodata[:max_outputs]
    tags = _sample_tags(tag, 'audio', len(clips))
    values = [
      summary_pb2.Summary.Value(tag=t, audio=_wav(c, sample_rate)) for t, c in zip(tags, clips)
    ]
    self._add(values, step)

  def histogram(self, tag: str, values: Any, step: int, bins: Any = None) -> None:
    """Logs the distribution of ``values`` (flattened).

    Args:
      tag: the name.
      values: an array of any shape.
      step: the training step.
      bins: the number of equal-width buckets, or their edges (default 30, as
        ``tf.summary.histogram``).
    """
    values = np.asarray(values, np.float64).reshape(-1)
    histo = tbx_summary.make_histogram(values, 30 if bins is None else bins)
    self._add([summary_pb2.Summary.Value(tag=tag, histo=histo)], step)

  def text(self, tag: str, textdata: str | bytes, step: int) -> None:
    """Logs a string; TensorBoard renders it as Markdown.

    Args:
      tag: the name.
      textdata: a ``str`` or UTF-8 ``bytes``.
      step: the training step.
    """
    if not isinstance(textdata, (str, bytes)):
      raise ValueError('`textdata` should be of the type `str` or `bytes`.')
    data = textdata.encode('utf-8') if isinstance(textdata, str) else textdata
    metadata = summary_pb2.SummaryMetadata(
      plugin_data=summary_pb2.SummaryMetadata.PluginData(
        plugin_name='text', content=plugin_text_pb2.TextPluginData(version=0).SerializeToString()
      )
    )
    tensor = tensor_pb2.TensorProto(
      dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(), string_val=[data]
    )
    self._add([summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)], step)

  def write(self, tag: str, tensor: Any, step: int, metadata: Any = None) -> None:
    """Logs an arbitrary tensor, e.g. for a custom TensorBoard plugin.

    Args:
      tag: the name.
      tensor: an array (numbers, bools or strings).
      step: the training step.
      metadata: a ``SummaryMetadata`` proto, or its serialized bytes (naming the plugin
        that reads the tensor).
    """
    value = summary_pb2.Summary.Value(tag=tag, tensor=_tensor_proto(np.asarray(tensor)))
    if isinstance(metadata, bytes):
      metadata = summary_pb2.SummaryMetadata.FromString(metadata)
    if metadata is not None:
      value.metadata.CopyFrom(metadata)
    self._add([value], step)

  def hparams(self, hparams: Mapping[str, Any]) -> None:
    """Logs the hyperparameters of the run, for TensorBoard's HParams tab.

    Args:
      hparams: a mapping, possibly nested: nested keys are joined with ``.``, and values
        other than bool, int, float and str are logged as their ``str()``.
    """
    _, session_start, _ = tbx_summary.hparams(_flatten_dict(hparams), {})
    self._add(list(session_start.value), None)
