"""A tiny line-plot writer that produces PNG files with the standard library only.

The demo uses it to draw its loss curves without matplotlib. ``Canvas`` is an RGB pixel
buffer with lines, rectangles and a 3x5 pixel font; ``line_plot`` draws axes, ticks, a
legend and one polyline per series; ``encode_png`` writes the buffer as an 8-bit RGB PNG
(one IDAT chunk, every scanline with filter type 0), using only ``zlib`` and ``struct``.

Example:

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), 'loss.png')
>>> _ = line_plot(path, {'train': ([0, 1, 2], [3.0, 2.0, 1.5])}, title='loss')
>>> with open(path, 'rb') as f:
...   f.read(8) == PNG_SIGNATURE
True
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Mapping, Sequence

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
GRID: Color = (225, 225, 225)
PALETTE: tuple[Color, ...] = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))

# Each glyph is five rows of three pixels, top row first; a row is an octal digit whose
# bits 4, 2, 1 are the left, middle and right pixel. Lower-case text is drawn upper-case.
_FONT = {
  '0': '75557',
  '1': '26227',
  '2': '71747',
  '3': '71717',
  '4': '55711',
  '5': '74717',
  '6': '74757',
  '7': '71122',
  '8': '75757',
  '9': '75717',
  'A': '25755',
  'B': '65656',
  'C': '34443',
  'D': '65556',
  'E': '74647',
  'F': '74644',
  'G': '34553',
  'H': '55755',
  'I': '72227',
  'J': '11152',
  'K': '55655',
  'L': '44447',
  'M': '57755',
  'N': '65555',
  'O': '25552',
  'P': '65644',
  'Q': '25563',
  'R': '65655',
  'S': '34216',
  'T': '72222',
  'U': '55557',
  'V': '55552',
  'W': '55775',
  'X': '55255',
  'Y': '55222',
  'Z': '71247',
  '.': '00002',
  '-': '00700',
  '+': '02720',
  '/': '11244',
  '(': '24442',
  ')': '21112',
  ':': '02020',
  '=': '07070',
  '_': '00007',
  ' ': '00000',
  '?': '71202',
}
GLYPH_WIDTH, GLYPH_HEIGHT = 3, 5


def _chunk(tag: bytes, data: bytes) -> bytes:
  """One PNG chunk: length, tag, data and the CRC-32 of tag + data."""
  crc = zlib.crc32(tag + data) & 0xFFFFFFFF
  return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', crc)


def encode_png(width: int, height: int, rgb: bytes | bytearray) -> bytes:
  """Encodes ``width * height`` RGB pixels (row-major, 3 bytes each) as PNG bytes.

  Example:

  >>> data = encode_png(2, 1, bytes([255, 0, 0, 0, 0, 255]))
  >>> data[:8] == PNG_SIGNATURE, data[12:16]
  (True, b'IHDR')
  """
  if width <= 0 or height <= 0:
    raise ValueError(f'PNG size must be positive, got {width}x{height}.')
  stride = 3 * width
  if len(rgb) != stride * height:
    raise ValueError(
      f'Expected {stride * height} bytes of RGB data for {width}x{height}, got {len(rgb)}.'
    )
  # Filter type 0 (none) on every scanline keeps the writer (and a reader) trivial.
  raw = b''.join(b'\x00' + bytes(rgb[y * stride : (y + 1) * stride]) for y in range(height))
  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
  return (
    PNG_SIGNATURE
    + _chunk(b'IHDR', header)
    + _chunk(b'IDAT', zlib.compress(raw, 9))
    + _chunk(b'IEND', b'')
  )


class Canvas:
  """An RGB pixel buffer, origin at the top left, that draws lines, boxes and text.

  Attributes:
    width: pixels per row.
    height: rows.
    pixels: ``3 * width * height`` bytes, row-major.

  Example:

  >>> canvas = Canvas(4, 3)
  >>> canvas.line(0, 0, 3, 2, (255, 0, 0))
  >>> canvas.get(0, 0), canvas.get(3, 2), canvas.get(3, 0)
  ((255, 0, 0), (255, 0, 0), (255, 255, 255))
  """

  def __init__(self, width: int, height: int, background: Color = WHITE):
    self.width, self.height = width, height
    self.pixels = bytearray(bytes(background) * (width * height))

  def get(self, x: int, y: int) -> Color:
    """The color at ``(x, y)``."""
    i = 3 * (y * self.width + x)
    return tuple(self.pixels[i : i + 3])  # type: ignore[return-value]

  def set(self, x: int, y: int, color: Color) -> None:
    """Sets one pixel; points outside the canvas are ignored."""
    if 0 <= x < self.width and 0 <= y < self.height:
      i = 3 * (y * self.width + x)
      self.pixels[i : i + 3] = bytes(color)

  def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
    """Fills the box with corners ``(x0, y0)`` and ``(x1, y1)``, both included."""
    x0, x1 = sorted((max(x0, 0), min(x1, self.width - 1)))
    y0, y1 = sorted((max(y0, 0), min(y1, self.height - 1)))
    row = bytes(color) * (x1 - x0 + 1)
    for y in range(y0, y1 + 1):
      i = 3 * (y * self.width + x0)
      self.pixels[i : i + len(row)] = row

  def line(self, x0: int, y0: int, x1: int, y1: int, color: Color, thickness: int = 1) -> None:
    """Draws a straight segment, ``thickness`` pixels wide, between two points."""
    steps = max(abs(x1 - x0), abs(y1 - y0), 1)
    lo = -(thickness // 2)
    for s in range(steps + 1):
      x = round(x0 + (x1 - x0) * s / steps)
      y = round(y0 + (y1 - y0) * s / steps)
      if thickness == 1:
        self.set(x, y, color)
      else:
        self.rect(x + lo, y + lo, x + lo + thickness - 1, y + lo + thickness - 1, color)

  def text(self, x: int, y: int, text: str, color: Color = BLACK, scale: int = 2) -> None:
    """Writes ``text`` with its top-left corner at ``(x, y)`` in the built-in 3x5 font."""
    for k, char in enumerate(text.upper()):
      rows = _FONT.get(char, _FONT['?'])
      left = x + k * (GLYPH_WIDTH + 1) * scale
      for r, digit in enumerate(rows):
        bits = int(digit, 8)
        for c in range(GLYPH_WIDTH):
          if bits & (4 >> c):
            top = y + r * scale
            self.rect(left + c * scale, top, left + (c + 1) * scale - 1, top + scale - 1, color)

  def to_png(self) -> bytes:
    """The canvas as PNG bytes."""
    return encode_png(self.width, self.height, self.pixels)


def text_width(text: str, scale: int = 2) -> int:
  """The width in pixels that ``Canvas.text`` uses for ``text``."""
  return max(len(text) * (GLYPH_WIDTH + 1) * scale - scale, 0)


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
  """Round tick positions (1, 2 or 5 times a power of ten) covering ``[lo, hi]``.

  Example:

  >>> nice_ticks(0.13, 0.92)
  [0.2, 0.4, 0.6, 0.8]
  """
  if not hi > lo:
    return [lo]
  raw = (hi - lo) / max(target, 1)
  power = 10.0 ** math.floor(math.log10(raw))
  step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
  first = math.ceil(lo / step - 1e-9)
  ticks = []
  k = first
  while k * step <= hi + 1e-9 * step:
    ticks.append(round(k * step, 12))
    k += 1
  return ticks


def _tick_label(value: float) -> str:
  return f'{value:.6g}'


def line_plot(
  path: str,
  series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
  title: str = '',
  x_label: str = '',
  width: int = 640,
  height: int = 400,
) -> str:
  """Draws each series as a polyline on shared axes and writes a PNG file.

  Args:
    path: where to write the PNG.
    series: ``{name: (xs, ys)}``; non-finite points are skipped, names go in the legend.
      Colors follow ``PALETTE`` in the order given.
    title: text above the plot.
    x_label: text under the x axis.
    width: image width in pixels.
    height: image height in pixels.

  Returns:
    ``path``.
  """
  left, right, top, bottom = 64, 16, 28, 44
  if width < left + right + 16 or height < top + bottom + 16:
    raise ValueError(
      f'A {width}x{height} plot leaves no room for the axes; use at least '
      f'{left + right + 16}x{top + bottom + 16}.'
    )
  points = {
    name: [(float(x), float(y)) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
    for name, (xs, ys) in series.items()
  }
  everything = [p for pts in points.values() for p in pts]
  x_lo = min((x for x, _ in everything), default=0.0)
  x_hi = max((x for x, _ in everything), default=1.0)
  y_lo = min((y for _, y in everything), default=0.0)
  y_hi = max((y for _, y in everything), default=1.0)
  if x_hi <= x_lo:
    x_lo, x_hi = x_lo - 1.0, x_hi + 1.0
  pad = 0.05 * (y_hi - y_lo) if y_hi > y_lo else 1.0
  y_lo, y_hi = y_lo - pad, y_hi + pad

  canvas = Canvas(width, height)
  plot_w, plot_h = width - left - right, height - top - bottom

  def to_px(x: float, y: float) -> tuple[int, int]:
    return (
      left + round((x - x_lo) / (x_hi - x_lo) * (plot_w - 1)),
      top + round((y_hi - y) / (y_hi - y_lo) * (plot_h - 1)),
    )

  for tick in nice_ticks(y_lo, y_hi):
    _, py = to_px(x_lo, tick)
    canvas.line(left, py, left + plot_w - 1, py, GRID)
    label = _tick_label(tick)
    canvas.text(left - 6 - text_width(label), py - GLYPH_HEIGHT, label)
  for tick in nice_ticks(x_lo, x_hi):
    px, _ = to_px(tick, y_lo)
    canvas.line(px, top, px, top + plot_h - 1, GRID)
    label = _tick_label(tick)
    canvas.text(px - text_width(label) // 2, top + plot_h + 6, label)
  canvas.line(left, top, left, top + plot_h - 1, BLACK)
  canvas.line(left, top + plot_h - 1, left + plot_w - 1, top + plot_h - 1, BLACK)

  for k, (name, pts) in enumerate(points.items()):
    color = PALETTE[k % len(PALETTE)]
    pixels = [to_px(x, y) for x, y in pts]
    for (xa, ya), (xb, yb) in itertools.pairwise(pixels):
      canvas.line(xa, ya, xb, yb, color, thickness=2)
    if len(pixels) == 1:
      ((px, py),) = pixels
      canvas.rect(px - 2, py - 2, px + 2, py + 2, color)
    # Legend: a color swatch and the name, stacked in the top-right corner.
    ly = top + 8 + 16 * k
    lx = left + plot_w - 8 - text_width(name) - 18
    canvas.rect(lx, ly, lx + 11, ly + 9, color)
    canvas.text(lx + 18, ly, name)

  canvas.text((width - text_width(title)) // 2, 8, title)
  canvas.text((width - text_width(x_label)) // 2, height - 16, x_label)
  with open(path, 'wb') as f:
    f.write(canvas.to_png())
  return path
