"""The main example: a character-level Transformer that learns to write Python.

Run with ``make demo``. The training text is the Python standard library's own ``.py``
files (found with ``sysconfig``, no download), split into training and validation BY FILE
with a stable hash of each relative path. A small decoder-only Transformer built from
flaxlike layers (``Embed``, ``LayerNorm``, ``MultiHeadDotProductAttention`` with a causal
mask, ``Dense``, ``Dropout``; optionally stacked with ``nn.scan``) is trained with a
user-written ``jax.jit`` step over ``optax.adamw`` (warmup + cosine schedule, gradient
clipping). Along the way the demo prints the ``nn.tabulate`` summary, a tqdm progress bar
with tokens/s (on a terminal; in a log, one line per evaluation instead), the validation
loss against a unigram baseline (in nats and bits per character), and saves a
``TrainState`` checkpoint with ``flaxlike.training.checkpoints`` plus a matplotlib PNG of
the training and validation loss curves in ``--workdir``. Rerunning with the same workdir
resumes from the last checkpoint; ask for more ``--steps`` to train further. The
learning-rate schedule is saved with the checkpoint and a resumed run continues it, so the
result is the same as one uninterrupted run with that schedule (the demo prints which).
Finally it samples Python text from a prompt with the attention decoding cache: the prompt
is prefilled in one call, then characters are generated one at a time.

It needs the ``examples`` extra (matplotlib, tqdm): ``pip install '.[examples]'`` in a
checkout, which ``make demo`` does.

The defaults train for about 90 seconds on a 2-core CPU (about 100 s in all) and reach a
validation loss near 1.7 nats (2.5 bits) per character against 3.2 for the unigram
baseline. A GPU-sized run::

  python examples/demo.py --workdir /tmp/demo_gpu --steps 5000 --batch-size 64 \\
      --seq-len 256 --d-model 512 --layers 8 --heads 8 --max-chars 12000000 \\
      --learning-rate 1e-3 --warmup-steps 200 --eval-every 500 --ckpt-every 1000 --scan
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import math
import os
import sys
import sysconfig
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _extras import needs_extra

with needs_extra('examples'):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from tqdm import tqdm

import flaxlike as nn
from flaxlike import serialization
from flaxlike.training import checkpoints, train_state

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNKNOWN_ID = 0  # characters that the training text never shows map here


# ----------------------------------------------------------------------------- data


def _unit_hash(text: str) -> float:
  """A number in ``[0, 1)`` fixed by ``text`` alone (not by Python's salted ``hash``)."""
  digest = hashlib.sha256(text.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64


def stdlib_sources(root: str | None = None) -> list[str]:
  """Sorted relative paths of the ``.py`` files of the standard library at ``root``."""
  root = root or sysconfig.get_paths()['stdlib']
  found = []
  for directory, subdirs, files in os.walk(root):
    # Installed third-party packages are not the standard library.
    subdirs[:] = [d for d in subdirs if d not in ('site-packages', 'dist-packages', '__pycache__')]
    for name in files:
      if name.endswith('.py'):
        found.append(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, '/'))
  return sorted(found)


def split_files(paths: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
  """Splits ``paths`` into ``(train, validation)``; each path's side depends on it alone.

  Example:

  >>> train, val = split_files(['a.py', 'b.py', 'c/d.py'], 0.5)
  >>> sorted(train + val)
  ['a.py', 'b.py', 'c/d.py']
  """
  train, val = [], []
  for path in sorted(paths):
    (val if _unit_hash(path) < val_fraction else train).append(path)
  return train, val


@dataclasses.dataclass
class Corpus:
  """Training and validation text read from whole files.

  Attributes:
    train_text: the training files joined by blank lines.
    val_text: the validation files joined by blank lines.
    train_files: the relative paths that went (at least partly) into ``train_text``.
    val_files: the same for ``val_text``.
  """

  train_text: str
  val_text: str
  train_files: list[str]
  val_files: list[str]


def load_corpus(max_chars: int, val_fraction: float = 0.1, root: str | None = None) -> Corpus:
  """Reads up to ``max_chars`` of training text (and a proportional validation share).

  Files are read in the order of their path hash, which spreads a capped read over the
  whole library instead of its alphabetically first packages; the last file read on
  each side is cut at the cap. Files that are not UTF-8 are skipped.
  """
  root = root or sysconfig.get_paths()['stdlib']
  train_files, val_files = split_files(stdlib_sources(root), val_fraction)
  val_cap = max(int(max_chars * val_fraction / (1.0 - val_fraction)), 1)

  def read(files: list[str], cap: int) -> tuple[str, list[str]]:
    parts, used, size = [], [], 0
    for path in sorted(files, key=lambda p: (_unit_hash('order:' + p), p)):
      if size >= cap:
        break
      try:
        with open(os.path.join(root, path), encoding='utf-8') as f:
          text = f.read()
      except (UnicodeDecodeError, OSError):
        continue
      text = text[: cap - size]
      parts.append(text)
      used.append(path)
      size += len(text) + 2
    return '\n\n'.join(parts), used

  train_text, train_used = read(train_files, max_chars)
  val_text, val_used = read(val_files, val_cap)
  return Corpus(train_text, val_text, train_used, val_used)


def build_vocab(text: str) -> str:
  """The sorted distinct characters of ``text``; character ``vocab[i]`` gets id ``i + 1``."""
  return ''.join(sorted(set(text)))


def encode(text: str, vocab: str) -> np.ndarray:
  """Character ids of ``text`` (``UNKNOWN_ID`` for characters outside ``vocab``)."""
  lookup = {c: i + 1 for i, c in enumerate(vocab)}
  return np.fromiter((lookup.get(c, UNKNOWN_ID) for c in text), dtype=np.int32, count=len(text))


def decode(ids: Sequence[int], vocab: str) -> str:
  """The text of character ids (the unknown id becomes U+FFFD)."""
  return ''.join(vocab[i - 1] if i != UNKNOWN_ID else '\ufffd' for i in ids)


def unigram_cross_entropy(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int) -> float:
  """Nats per character of ``val_ids`` under add-one-smoothed training frequencies."""
  counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
  log_probs = np.log(counts / counts.sum())
  return float(-log_probs[val_ids].mean())


def train_batch(ids: np.ndarray, batch_size: int, seq_len: int, seed: int, step: int) -> np.ndarray:
  """``(batch_size, seq_len + 1)`` random windows; a function of ``(seed, step)`` so a
  resumed run sees the same batches as an uninterrupted one."""
  rng = np.random.default_rng([seed, step])
  starts = rng.integers(0, len(ids) - seq_len - 1, size=batch_size)
  return ids[starts[:, None] + np.arange(seq_len + 1)]


def validation_windows(ids: np.ndarray, seq_len: int, max_windows: int) -> np.ndarray:
  """Up to ``max_windows`` evenly spaced, non-overlapping ``seq_len + 1`` windows."""
  available = (len(ids) - 1) // seq_len
  if available < 1:
    raise ValueError(
      f'The validation text has {len(ids)} characters, fewer than '
      f'--seq-len + 1 = {seq_len + 1}; raise --max-chars or lower --seq-len.'
    )
  count = min(available, max_windows)
  starts = np.linspace(0, (available - 1) * seq_len, count).astype(np.int64)
  return ids[starts[:, None] + np.arange(seq_len + 1)]


# ---------------------------------------------------------------------------- model


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The architecture; stored in the checkpoint so a resumed run rebuilds the same model.

  Attributes:
    vocab_size: number of character ids (the vocabulary plus the unknown id).
    max_len: the longest sequence (learned positions and decoding cache length).
    d_model: width of the residual stream.
    num_layers: number of Transformer blocks.
    num_heads: attention heads per block.
    mlp_dim: hidden width of each block's MLP.
    dropout_rate: dropout on the embeddings and on both residual branches.
    scan: stack the blocks with ``nn.scan`` (parameters get a leading layer axis).
  """

  vocab_size: int
  max_len: int
  d_model: int = 128
  num_layers: int = 3
  num_heads: int = 4
  mlp_dim: int = 512
  dropout_rate: float = 0.0
  scan: bool = False


class Block(nn.Module):
  """A pre-LayerNorm Transformer block.

  It returns ``(x, None)``, the ``(carry, output)`` pair ``nn.scan`` expects, so the same
  block is used stacked by a Python loop or by ``nn.scan``.

  Attributes:
    num_heads: attention heads.
    mlp_dim: hidden width of the MLP.
    dropout_rate: dropout on both residual branches.
    deterministic: disable dropout.
    decode: keep a key/value cache for autoregressive decoding.
  """

  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  deterministic: bool = True
  decode: bool = False

  @nn.compact
  def __call__(self, x, mask):
    h = nn.LayerNorm(name='ln_attention')(x)
    # nn.SelfAttention is deprecated (it warns); Linen's replacement is
    # MultiHeadDotProductAttention called on one input, which attends to itself.
    h = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads, decode=self.decode, name='attention'
    )(h, mask=mask)
    x = x + nn.Dropout(self.dropout_rate, deterministic=self.deterministic)(h)
    h = nn.LayerNorm(name='ln_mlp')(x)
    h = nn.gelu(nn.Dense(self.mlp_dim, name='mlp_in')(h))
    h = nn.Dense(x.shape[-1], name='mlp_out')(h)
    return x + nn.Dropout(self.dropout_rate, deterministic=self.deterministic)(h), None


class CharTransformer(nn.Module):
  """A decoder-only Transformer over character ids, returning next-character logits.

  With ``decode=True`` every call continues the sequence held in the ``cache``
  collection: a call with ``L`` tokens writes positions ``[i, i + L)`` where ``i`` is
  the number of tokens seen so far, so a prompt can be prefilled in one call and then
  extended one token at a time.

  Attributes:
    config: the architecture.
    decode: run incrementally against the ``cache`` collection.

  Example:

  >>> config = ModelConfig(vocab_size=11, max_len=8, d_model=16, num_layers=2,
  ...                      num_heads=2, mlp_dim=32)
  >>> model, tokens = CharTransformer(config), jnp.zeros((1, 8), jnp.int32)
  >>> variables = jax.eval_shape(model.init, jax.random.key(0), tokens)  # shapes only
  >>> variables['params']['block_1']['mlp_in']['kernel'].shape
  (16, 32)
  >>> jax.eval_shape(model.apply, variables, tokens).shape
  (1, 8, 11)
  """

  config: ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, tokens, train: bool = False):
    cfg = self.config
    length = tokens.shape[-1]
    positions = self._position_offset(length) + jnp.arange(length, dtype=jnp.int32)
    x = nn.Embed(cfg.vocab_size, cfg.d_model, name='token_embed')(tokens)
    x = x + nn.Embed(cfg.max_len, cfg.d_model, name='position_embed')(positions)[None]
    x = nn.Dropout(cfg.dropout_rate, deterministic=not train)(x)
    # While decoding, the attention cache applies the causal mask itself.
    mask = None if self.decode else nn.make_causal_mask(tokens)
    block_args = {
      'num_heads': cfg.num_heads,
      'mlp_dim': cfg.mlp_dim,
      'dropout_rate': cfg.dropout_rate,
      'deterministic': not train,
      'decode': self.decode,
    }
    if cfg.scan:
      stack = nn.scan(
        Block,
        variable_axes={'params': 0, 'cache': 0},
        split_rngs={'params': True, 'dropout': True},
        in_axes=nn.broadcast,
        length=cfg.num_layers,
      )
      x, _ = stack(**block_args, name='blocks')(x, mask)
    else:
      for i in range(cfg.num_layers):
        x, _ = Block(**block_args, name=f'block_{i}')(x, mask)
    x = nn.LayerNorm(name='ln_final')(x)
    return nn.Dense(cfg.vocab_size, name='logits')(x)

  def _position_offset(self, length: int):
    """The absolute position of this call's first token (always 0 unless decoding)."""
    if not self.decode:
      return 0
    initialized = self.has_variable('cache', 'position')
    position = self.variable('cache', 'position', lambda: jnp.zeros((), jnp.int32))
    if not initialized:  # init: only create the (zero) cache
      return 0
    offset = position.value
    position.value = offset + length
    return offset


def cross_entropy(logits, targets):
  """Mean next-character cross-entropy in nats (computed in float32)."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  return losses.mean()


# ------------------------------------------------------------------------- decoding


def init_cache(config: ModelConfig, batch_size: int = 1):
  """An empty decoding cache for ``batch_size`` sequences of up to ``config.max_len``."""
  model = CharTransformer(config, decode=True)
  tokens = jnp.zeros((batch_size, config.max_len), jnp.int32)
  # Only the shapes are needed: the cache starts as zeros (keys, values and indices), so
  # tracing init abstractly avoids computing a throw-away set of parameters.
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens))['cache']
  return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def decode_step(config: ModelConfig, params, cache, tokens):
  """Feeds a chunk of ``tokens`` ``(batch, L)`` to the cache; returns ``(logits, cache)``."""
  logits, updates = CharTransformer(config, decode=True).apply(
    {'params': params, 'cache': cache}, tokens, mutable=['cache']
  )
  return logits, updates['cache']


def sample_tokens(config: ModelConfig, params, context, key, temperature, num_tokens: int):
  """Prefills ``context`` ``(1, L)`` in one call, then samples ``num_tokens`` ids.

  ``L + num_tokens`` must not exceed ``config.max_len``. A temperature of 0 or less picks
  the most likely character; the unknown id is never sampled.
  """
  logits, cache = decode_step(config, params, init_cache(config), context)
  never_unknown = jnp.arange(config.vocab_size) == UNKNOWN_ID

  def step(carry, step_key):
    last_logits, cache = carry
    last_logits = jnp.where(never_unknown, -jnp.inf, last_logits.astype(jnp.float32))
    scaled = last_logits / jnp.maximum(temperature, 1e-6)
    sampled = jax.random.categorical(step_key, scaled, axis=-1)
    greedy = jnp.argmax(last_logits, axis=-1)
    token = jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)
    logits, cache = decode_step(config, params, cache, token[:, None])
    return (logits[:, -1], cache), token[0]

  _, tokens = jax.lax.scan(step, (logits[:, -1], cache), jax.random.split(key, num_tokens))
  return tokens


@functools.cache
def _compiled_sampler(fast_compile: bool):
  # One jitted function per option, kept for the process, so repeated runs reuse compiles.
  return jax.jit(
    sample_tokens,
    static_argnames=('config', 'num_tokens'),
    compiler_options=compiler_options(fast_compile),
  )


def generate(
  config: ModelConfig,
  params,
  prompt_ids: Sequence[int],
  num_chars: int,
  temperature: float,
  key,
  fast_compile: bool = False,
) -> list[int]:
  """Samples ``num_chars`` ids after ``prompt_ids``.

  The positions are learned only up to ``max_len``, so when a window is full the last
  half of it is prefilled into a fresh cache and sampling goes on from there.
  """
  sampler = _compiled_sampler(fast_compile)
  ids = list(prompt_ids)
  keep = config.max_len // 2
  produced = 0
  while produced < num_chars:
    context = ids[-keep:] if produced else ids[-(config.max_len - 1) :]
    key, window_key = jax.random.split(key)
    # Sampling to the end of the window (not just what is missing) keeps the number of
    # distinct compiled shapes at two.
    new = sampler(
      config,
      params,
      jnp.asarray([context], jnp.int32),
      window_key,
      jnp.float32(temperature),
      num_tokens=config.max_len - len(context),
    )
    new = [int(t) for t in np.asarray(new)[: num_chars - produced]]
    ids += new
    produced += len(new)
  return ids[len(prompt_ids) :]


# ------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The learning rate: linear warmup from 0, then cosine decay to a tenth of the peak.

  It is saved in the checkpoint, so that a resumed run continues the schedule its first
  run started instead of one stretched over the new ``--steps``.

  Attributes:
    peak: the learning rate at the end of the warmup.
    warmup_steps: steps of linear warmup.
    decay_steps: the step at which the decay reaches ``peak / 10``; later steps keep it.

  Example:

  >>> rate = Schedule(peak=0.01, warmup_steps=10, decay_steps=100).learning_rate()
  >>> [round(float(rate(step)), 6) for step in (0, 5, 10, 100, 500)]
  [0.0, 0.005, 0.01, 0.001, 0.001]
  """

  peak: float
  warmup_steps: int
  decay_steps: int

  @classmethod
  def over(cls, steps: int, peak: float, warmup_steps: int) -> Schedule:
    """The schedule for ``steps`` training steps (the warmup takes at most half of them)."""
    return cls(float(peak), min(warmup_steps, steps // 2), steps)

  @property
  def end_value(self) -> float:
    return 0.1 * self.peak

  def learning_rate(self) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=self.peak,
      warmup_steps=self.warmup_steps,
      decay_steps=self.decay_steps,
      end_value=self.end_value,
    )

  def describe(self) -> str:
    return (
      f'warmup to {self.peak:g} over {self.warmup_steps} steps, cosine decay to '
      f'{self.end_value:g} at step {self.decay_steps}'
    )


def make_optimizer(args: argparse.Namespace, schedule: Schedule) -> optax.GradientTransformation:
  """AdamW on ``schedule`` with global-norm clipping; weight decay on matrices only."""
  # Biases, LayerNorm scales and offsets keep their values.
  decay_mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)
  return optax.chain(
    optax.clip_by_global_norm(args.clip_norm),
    optax.adamw(schedule.learning_rate(), b2=0.99, weight_decay=args.weight_decay, mask=decay_mask),
  )


def compiler_options(fast_compile: bool) -> dict[str, Any] | None:
  """XLA options for ``jax.jit``: with ``fast_compile``, skip the backend optimizations.

  On CPU that compiles a few times faster and runs slower, the right trade for smoke
  tests of a few steps (the tests use it).
  """
  return {'xla_backend_optimization_level': 0} if fast_compile else None


def make_steps(model: CharTransformer, fast_compile: bool = False):
  """The jitted ``train_step(state, batch, key)`` and ``eval_loss(params, batch)``."""
  jit = functools.partial(jax.jit, compiler_options=compiler_options(fast_compile))

  @jit
  def train_step(state, batch, dropout_key):
    inputs, targets = batch[:, :-1], batch[:, 1:]
    step_key = jax.random.fold_in(dropout_key, state.step)

    def loss_fn(params):
      logits = state.apply_fn({'params': params}, inputs, train=True, rngs={'dropout': step_key})
      return cross_entropy(logits, targets)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  @jit
  def eval_loss(params, batch):
    return cross_entropy(model.apply({'params': params}, batch[:, :-1]), batch[:, 1:])

  return train_step, eval_loss


def evaluate(eval_loss, params, windows: np.ndarray, batch_size: int) -> float:
  """The mean loss over all validation windows (a short last batch is weighted by size)."""
  total = 0.0
  for start in range(0, len(windows), batch_size):
    chunk = windows[start : start + batch_size]
    total += float(eval_loss(params, chunk)) * len(chunk)
  return total / len(windows)


class Throughput:
  """Training tokens per second, with compilation, evaluation and checkpointing left out.

  The clock runs from the end of the first step after a pause (that step may compile)
  to the next ``pause``, which waits for the dispatched steps to finish.
  """

  def __init__(self, tokens_per_step: int):
    self.tokens_per_step = tokens_per_step
    self.steps = 0
    self.seconds = 0.0
    self._since: float | None = None

  def step_done(self, result: Any) -> None:
    if self._since is None:
      jax.block_until_ready(result)
      self._since = time.perf_counter()
    else:
      self.steps += 1

  def pause(self, pending: Any) -> None:
    if self._since is not None:
      jax.block_until_ready(pending)
      self.seconds += time.perf_counter() - self._since
      self._since = None

  def rate(self) -> float:
    seconds = self.seconds + (time.perf_counter() - self._since if self._since else 0.0)
    return self.steps * self.tokens_per_step / seconds if seconds > 0 else 0.0


class Progress:
  """Training progress: a tqdm bar on a terminal, plain lines in a log.

  On a terminal the bar redraws itself in place and ``line`` prints above it. When the
  output is a file or a pipe (a log, a test) there is no bar, only the lines, so a log
  holds one line per evaluation rather than a redraw per update.

  Args:
    total: the step the run trains to.
    initial: the step it starts from (a resumed run starts where its checkpoint stopped).
    file: where to write; ``sys.stdout`` (at the time of the call) by default.

  Example:

  >>> import io
  >>> log = io.StringIO()  # not a terminal
  >>> progress = Progress(total=100, initial=0, file=log)
  >>> progress.update(50, loss=2.5, tokens_per_s=1000.0)
  >>> progress.line('step 50: validation loss 2.4')
  >>> progress.close()
  >>> log.getvalue()
  'step 50: validation loss 2.4\\n'
  """

  def __init__(self, total: int, initial: int, file: Any = None):
    self.file = sys.stdout if file is None else file
    isatty = getattr(self.file, 'isatty', None)
    self.live = bool(isatty and isatty())
    self.bar = (
      tqdm(total=total, initial=initial, unit='step', file=self.file, dynamic_ncols=True)
      if self.live
      else None
    )

  def update(self, step: int, loss: float, tokens_per_s: float) -> None:
    """Moves the bar to ``step`` and shows the latest training loss and throughput."""
    if self.bar is not None:
      self.bar.set_postfix_str(f'loss {loss:.3f}, {tokens_per_s:,.0f} tok/s', refresh=False)
      self.bar.update(step - self.bar.n)

  def line(self, text: str) -> None:
    """Prints ``text`` on its own line (above the bar on a terminal)."""
    if self.bar is not None:
      self.bar.write(text, file=self.file)
    else:
      print(text, file=self.file, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def _checkpoint_target(
  state, vocab: str, config: ModelConfig, schedule: Schedule, history: dict[str, list[float]]
):
  return {
    'state': state,
    'vocab': np.array([ord(c) for c in vocab], np.int32),
    'config': dataclasses.asdict(config),
    'schedule': dataclasses.asdict(schedule),
    'history': {k: np.asarray(v, np.float64) for k, v in history.items()},
  }


def _restore(workdir: str, config: ModelConfig):
  """``(raw checkpoint, vocab)`` of the latest checkpoint in ``workdir``, or ``(None, None)``.

  Raises ``SystemExit`` when the checkpoint holds a different architecture.
  """
  raw = checkpoints.restore_checkpoint(workdir, target=None)
  if raw is None:
    return None, None
  vocab = ''.join(chr(c) for c in raw['vocab'])
  saved = dict(raw['config'])
  wanted = dataclasses.asdict(dataclasses.replace(config, vocab_size=saved.get('vocab_size')))
  diffs = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
  if diffs:
    detail = ', '.join(f'{k}: saved {s!r}, requested {w!r}' for k, (s, w) in diffs.items())
    raise SystemExit(
      f'{workdir} holds a checkpoint of a different model ({detail}); rerun '
      'with the same model flags or pass another --workdir.'
    )
  return raw, vocab


def resume_note(schedule: Schedule, resumed_step: int, steps: int) -> str:
  """What a run resumed at ``resumed_step`` and trained to ``steps`` does with the schedule.

  Example:

  >>> print(resume_note(Schedule(0.01, 2, 6), resumed_step=6, steps=8))
  The learning-rate schedule is the checkpoint's (warmup to 0.01 over 2 steps, cosine decay
  to 0.001 at step 6): steps 7 to 8 train at its final rate 0.001, exactly as one
  uninterrupted run with --steps 8 --schedule-steps 6 would. For a schedule over 8 steps,
  pass a new --workdir.
  """
  if steps <= resumed_step:
    return (
      f'The checkpoint is at step {resumed_step} already: nothing to train up to --steps {steps}.'
    )
  if steps <= schedule.decay_steps:
    return (
      f"The learning-rate schedule continues from the checkpoint's ({schedule.describe()}), "
      f'exactly as one uninterrupted run with --steps {steps} --schedule-steps '
      f'{schedule.decay_steps} would.'
    )
  return (
    f"The learning-rate schedule is the checkpoint's ({schedule.describe()}): steps "
    f'{max(resumed_step, schedule.decay_steps) + 1} to {steps} train at its final rate '
    f'{schedule.end_value:g}, exactly as one uninterrupted run with --steps {steps} '
    f'--schedule-steps {schedule.decay_steps} would. For a schedule over {steps} steps, '
    'pass a new --workdir.'
  )


def choose_schedule(args: argparse.Namespace, raw: dict[str, Any] | None) -> Schedule:
  """The learning-rate schedule of a fresh run, or the one saved in the checkpoint ``raw``.

  A fresh run decays over ``--schedule-steps``, or over ``--steps`` when that is not given.
  A resumed run keeps its checkpoint's schedule; the flags must agree with it. Raises
  ``SystemExit`` naming the flags that differ, or when the checkpoint predates saved
  schedules.
  """
  if raw is None:
    return Schedule.over(args.schedule_steps or args.steps, args.learning_rate, args.warmup_steps)
  if 'schedule' not in raw:
    raise SystemExit(
      f'{args.workdir} holds a checkpoint from an older demo that did not save its learning-rate '
      'schedule, so resuming it could not continue that schedule; pass another --workdir '
      'or delete that one.'
    )
  saved = Schedule(
    peak=float(raw['schedule']['peak']),
    warmup_steps=int(raw['schedule']['warmup_steps']),
    decay_steps=int(raw['schedule']['decay_steps']),
  )
  requested = Schedule.over(
    args.schedule_steps or saved.decay_steps, args.learning_rate, args.warmup_steps
  )
  flags = {
    'peak': '--learning-rate',
    'warmup_steps': '--warmup-steps',
    'decay_steps': '--schedule-steps',
  }
  diffs = [
    f'{flags[field.name]}: saved {getattr(saved, field.name)!r}, '
    f'requested {getattr(requested, field.name)!r}'
    for field in dataclasses.fields(Schedule)
    if getattr(saved, field.name) != getattr(requested, field.name)
  ]
  if diffs:
    raise SystemExit(
      f'{args.workdir} holds a run with a different learning-rate schedule '
      f'({"; ".join(diffs)}; the warmup is at most half of the schedule steps); rerun with '
      'the same flags or pass another --workdir.'
    )
  return saved


def loss_figure(history: dict[str, list[float]], unigram: float | None = None) -> Figure:
  """The training and validation loss curves against the step, as a matplotlib figure.

  Example:

  >>> history = {'train_step': [10, 20], 'train_loss': [3.0, 2.5],
  ...            'val_step': [20], 'val_loss': [2.6]}
  >>> axes, = loss_figure(history, unigram=3.2).axes[:1]
  >>> axes.get_xlabel(), [text.get_text() for text in axes.get_legend().get_texts()]
  ('training step', ['train', 'validation', 'unigram baseline'])
  """
  figure = Figure(figsize=(8, 5), dpi=100, layout='constrained')
  FigureCanvasAgg(figure)  # draws with Agg: no display or GUI toolkit needed
  axes = figure.subplots()
  axes.plot(history['train_step'], history['train_loss'], label='train', color='tab:blue')
  axes.plot(
    history['val_step'],
    history['val_loss'],
    label='validation',
    color='tab:orange',
    marker='o',
  )
  if unigram is not None:
    axes.axhline(unigram, label='unigram baseline', color='tab:gray', linestyle='--')
  axes.set_title('Character-level Transformer on the Python standard library')
  axes.set_xlabel('training step')
  axes.set_ylabel('cross-entropy (nats per character)')
  bits = axes.secondary_yaxis(
    'right', functions=(lambda nats: nats / math.log(2), lambda b: b * math.log(2))
  )
  bits.set_ylabel('bits per character')
  axes.grid(alpha=0.3)
  axes.legend()
  return figure


def plot_losses(path: str, history: dict[str, list[float]], unigram: float | None = None) -> str:
  """Saves ``loss_figure(history, unigram)`` as a PNG at ``path``; returns ``path``."""
  loss_figure(history, unigram).savefig(path)
  return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0],
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  add = parser.add_argument
  add(
    '--workdir',
    default=os.path.join(REPO_ROOT, '.demo_run'),
    help='checkpoints and the loss plot go here; a rerun resumes from it',
  )
  add('--steps', type=int, default=400, help='total training steps (a resumed run continues)')
  add(
    '--schedule-steps',
    type=int,
    default=None,
    help='steps the learning-rate schedule decays over (default: --steps of a fresh run; a '
    'resumed run keeps the one in its checkpoint, and steps past it keep the final rate)',
  )
  add('--batch-size', type=int, default=64)
  add('--seq-len', type=int, default=64, help='characters of context per example')
  add('--d-model', type=int, default=128)
  add('--layers', type=int, default=3)
  add('--heads', type=int, default=4)
  add('--mlp-ratio', type=int, default=4, help='MLP width as a multiple of --d-model')
  add('--dropout', type=float, default=0.0)
  add(
    '--scan',
    action=argparse.BooleanOptionalAction,
    default=False,
    help='stack the blocks with nn.scan (one compiled block, params with a layer axis)',
  )
  add('--learning-rate', type=float, default=3e-3, help='peak of the schedule')
  add('--warmup-steps', type=int, default=30, help='at most half of the schedule steps')
  add('--weight-decay', type=float, default=0.1)
  add('--clip-norm', type=float, default=1.0)
  add('--max-chars', type=int, default=2_000_000, help='cap on the training text read')
  add('--val-fraction', type=float, default=0.1, help='share of files held out')
  add('--eval-every', type=int, default=100)
  add('--eval-windows', type=int, default=128, help='validation windows per evaluation')
  add('--ckpt-every', type=int, default=100)
  add('--log-every', type=int, default=10, help='steps between progress-bar updates')
  add('--seed', type=int, default=0)
  add(
    '--fast-compile',
    action='store_true',
    help='skip XLA backend optimizations: faster compiles, slower steps (smoke tests)',
  )
  add('--prompt', default='def ')
  add('--gen-chars', type=int, default=400, help='characters to generate at the end')
  add('--temperature', type=float, default=0.8)
  args = parser.parse_args(argv)
  if not args.prompt:
    parser.error('--prompt must not be empty: sampling continues from it.')
  if args.d_model % args.heads:
    parser.error(f'--d-model ({args.d_model}) must be divisible by --heads ({args.heads}).')
  if args.seq_len < 2:
    parser.error('--seq-len must be at least 2.')
  if args.steps < 1 or (args.schedule_steps is not None and args.schedule_steps < 1):
    parser.error('--steps and --schedule-steps must be at least 1.')
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the demo; returns the final losses, the baseline, the sample and resume info."""
  args = parse_args(argv)
  corpus = load_corpus(args.max_chars, args.val_fraction)
  print(
    f'Python stdlib text: {len(corpus.train_text):,} training characters from '
    f'{len(corpus.train_files)} files, {len(corpus.val_text):,} validation characters '
    f'from {len(corpus.val_files)} other files'
  )

  config = ModelConfig(
    vocab_size=0,
    max_len=args.seq_len,
    d_model=args.d_model,
    num_layers=args.layers,
    num_heads=args.heads,
    mlp_dim=args.mlp_ratio * args.d_model,
    dropout_rate=args.dropout,
    scan=args.scan,
  )
  raw, vocab = _restore(args.workdir, config)
  if vocab is None:
    vocab = build_vocab(corpus.train_text)
  config = dataclasses.replace(config, vocab_size=len(vocab) + 1)
  train_ids = encode(corpus.train_text, vocab)
  val_ids = encode(corpus.val_text, vocab)
  if len(train_ids) <= args.seq_len + 1:
    raise SystemExit(f'Only {len(train_ids)} training characters; raise --max-chars.')
  windows = validation_windows(val_ids, args.seq_len, args.eval_windows)
  unigram = unigram_cross_entropy(train_ids, val_ids, config.vocab_size)

  schedule = choose_schedule(args, raw)
  model = CharTransformer(config)
  sample_input = jnp.zeros((1, args.seq_len), jnp.int32)
  # Styled for a terminal (with rich installed); plain and unwrapped into a file or pipe.
  console = {} if sys.stdout.isatty() else {'force_terminal': False, 'width': 200}
  print(nn.tabulate(model, jax.random.key(0), depth=1, console_kwargs=console)(sample_input))
  init = jax.jit(model.init, compiler_options=compiler_options(args.fast_compile))
  state = train_state.TrainState.create(
    apply_fn=model.apply,
    params=init(jax.random.key(args.seed), sample_input)['params'],
    tx=make_optimizer(args, schedule),
  )
  history: dict[str, list[float]] = {
    'train_step': [],
    'train_loss': [],
    'val_step': [],
    'val_loss': [],
  }
  resumed_step = 0
  if raw is not None:
    state = serialization.from_state_dict(state, raw['state'])
    history = {k: [float(v) for v in raw['history'][k]] for k in history}
    resumed_step = int(state.step)
    print(f'Resumed from the checkpoint at step {resumed_step} in {args.workdir}.')
    print(resume_note(schedule, resumed_step, args.steps))

  train_step, eval_loss = make_steps(model, args.fast_compile)
  plot_path = os.path.join(args.workdir, 'loss.png')

  def validate(step: int) -> float:
    loss = evaluate(eval_loss, state.params, windows, args.batch_size)
    history['val_step'].append(step)
    history['val_loss'].append(loss)
    return loss

  def save(step: int) -> None:
    target = _checkpoint_target(state, vocab, config, schedule, history)
    checkpoints.save_checkpoint(args.workdir, target, step, keep=2)
    plot_losses(plot_path, history, unigram)

  dropout_key = jax.random.key(args.seed + 1)
  step = resumed_step
  pending: list[jax.Array] = []  # losses not yet fetched (fetching waits for the device)
  clock = Throughput(args.batch_size * args.seq_len)
  print(
    f'Training to step {args.steps} ({clock.tokens_per_step:,} characters per step; '
    f'learning rate: {schedule.describe()}); unigram baseline {unigram:.3f} nats/char '
    f'({unigram / math.log(2):.3f} bits/char)'
  )
  progress = Progress(total=args.steps, initial=min(step, args.steps))
  while step < args.steps:
    batch = train_batch(train_ids, args.batch_size, args.seq_len, args.seed, step)
    state, loss = train_step(state, batch, dropout_key)
    clock.step_done(loss)
    pending.append(loss)
    step += 1
    evaluate_now = step % args.eval_every == 0 or step == args.steps
    if step % args.log_every == 0 or evaluate_now:  # evaluations report the training loss too
      history['train_step'].append(step)
      history['train_loss'].append(float(np.mean(jax.device_get(pending))))
      pending = []
      progress.update(step, history['train_loss'][-1], clock.rate())
    if evaluate_now:
      clock.pause(state)
      val_loss = validate(step)
      progress.line(
        f'step {step}/{args.steps}: train loss {history["train_loss"][-1]:.3f}, validation '
        f'loss {val_loss:.3f} nats/char ({val_loss / math.log(2):.3f} bits/char; unigram '
        f'{unigram:.3f}), {clock.rate():,.0f} tok/s'
      )
    if step % args.ckpt_every == 0 or step == args.steps:
      clock.pause(state)
      save(step)
  progress.close()
  clock.pause(state)
  if clock.steps:
    print(
      f'Trained {clock.steps} steps (not counting compilation) in {clock.seconds:.1f}s: '
      f'{clock.rate():,.0f} characters/s'
    )

  if history['val_step'][-1:] == [step]:
    val_loss = history['val_loss'][-1]
  else:  # nothing was trained in this run
    val_loss = validate(step)
    if raw is None:
      save(step)
    else:
      plot_losses(plot_path, history, unigram)
  train_loss = history['train_loss'][-1] if history['train_loss'] else float('nan')
  print(
    f'Final validation loss {val_loss:.3f} nats/char = {val_loss / math.log(2):.3f} '
    f'bits/char; the unigram baseline is {unigram:.3f} nats/char = '
    f'{unigram / math.log(2):.3f} bits/char. Loss plot: {plot_path}'
  )

  prompt_ids = encode(args.prompt, vocab).tolist()
  start = time.perf_counter()
  sample_ids = generate(
    config,
    state.params,
    prompt_ids,
    args.gen_chars,
    args.temperature,
    jax.random.key(args.seed + 2),
    args.fast_compile,
  )
  generated = decode(sample_ids, vocab)
  print(
    f'Sampled {args.gen_chars} characters at temperature {args.temperature} in '
    f'{time.perf_counter() - start:.1f}s:\n{"-" * 72}\n{args.prompt}{generated}\n{"-" * 72}'
  )
  return {
    'train_loss': train_loss,
    'val_loss': val_loss,
    'unigram_loss': unigram,
    'bits_per_char': val_loss / math.log(2),
    'generated': generated,
    'prompt': args.prompt,
    'resumed_step': resumed_step,
    'step': step,
    'plot_path': plot_path,
  }


if __name__ == '__main__':
  main()
