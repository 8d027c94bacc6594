"""RNG streams of scopes: lazily folded keys, and the checks on keys given to init/apply.

A stream is a root key plus the static path (module names and draw counters) below it;
``LazyRng`` keeps the path on the Python side and folds it in with one ``fold_in`` of its
SHA-1 hash when a key is drawn (Linen's derivation, so keys equal Linen's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxlike import errors
from flaxlike.configurations import config

PRNGKey = Any


def _hash_suffix(data: tuple[Any, ...]) -> int:
  """The uint32 that one SHA-1 over the path elements yields (Linen's static fold-in)."""
  digest = hashlib.sha1()
  with_separator = config.flax_fix_rng_separator
  for element in data:
    if with_separator:
      digest.update(b'\x00')
    if isinstance(element, str):
      digest.update(element.encode('utf-8'))
    elif isinstance(element, int):
      digest.update(element.to_bytes((element.bit_length() + 7) // 8, 'big'))
    else:
      raise TypeError(f'RNG path elements must be str or int, got {element!r}.')
  return int.from_bytes(digest.digest()[:4], 'big')


def fold_static(key: PRNGKey, data: tuple[Any, ...]) -> PRNGKey:
  """Folds a whole path of names and counters into ``key`` with a single ``fold_in``."""
  if not data:
    return key
  return jax.random.fold_in(key, np.uint32(_hash_suffix(data)))


class LazyRng:
  """A root key plus the path below it; folded into a key only when one is drawn.

  Deferring the fold keeps one ``fold_in`` per drawn key whatever the depth of the model.
  A LazyRng is a pytree (the key is its leaf, the suffix static data), so it can cross JAX
  transforms, and it is accepted wherever a key is.

  Attributes:
    rng: the root key (typed or raw uint32).
    suffix: the names and counters to fold into it.

  Example:

  >>> import jax
  >>> from flaxlike.core.scope import LazyRng
  >>> lazy = LazyRng.create(jax.random.key(0), 'dense', 1)
  >>> lazy.suffix, lazy.as_jax_rng().shape
  (('dense', 1), ())
  """

  __slots__ = ('rng', 'suffix')

  def __init__(self, rng: PRNGKey, suffix: tuple[Any, ...] = ()):
    self.rng = rng
    self.suffix = tuple(suffix)

  @staticmethod
  def create(rng: PRNGKey | LazyRng, *suffix: Any) -> LazyRng:
    """Wraps a key (or extends a LazyRng's suffix) with ``suffix``."""
    if isinstance(rng, LazyRng):
      return LazyRng(rng.rng, rng.suffix + suffix)
    return LazyRng(rng, suffix)

  def fold_in(self, data: Any) -> LazyRng:
    """This LazyRng with ``data`` appended to its suffix."""
    return LazyRng(self.rng, self.suffix + (data,))

  def as_jax_rng(self) -> PRNGKey:
    """The key with the whole suffix folded in."""
    return fold_static(self.rng, self.suffix)

  def clear_suffix(self) -> LazyRng:
    """A LazyRng whose root key is this one's folded key, with an empty suffix."""
    return LazyRng(self.as_jax_rng())

  def __repr__(self) -> str:
    return f'LazyRng(rng={self.rng!r}, suffix={self.suffix!r})'


jax.tree_util.register_pytree_node(
  LazyRng,
  lambda lazy: ((lazy.rng,), lazy.suffix),
  lambda suffix, children: LazyRng(children[0], suffix),
)


_RAW_KEY_SPECS: dict[Any, tuple[tuple[int, ...], Any]] = {}


def _raw_key_shape_and_dtype() -> tuple[tuple[int, ...], Any]:
  """Shape and dtype of the raw key data of the default PRNG implementation (cached per
  implementation: this runs on every init/apply)."""
  # JAX registers its config options at run time, so they are not attributes a checker sees.
  impl = jax.config.jax_default_prng_impl  # pyright: ignore[reportAttributeAccessIssue]
  spec = _RAW_KEY_SPECS.get(impl)
  if spec is None:
    data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
    spec = _RAW_KEY_SPECS[impl] = (tuple(data.shape), data.dtype)
  return spec


def _is_valid_rng(rng: Any) -> bool:
  """Whether ``rng`` is one PRNG key: a LazyRng, a scalar typed key, or raw key data."""
  if isinstance(rng, LazyRng):
    return True
  if not isinstance(rng, (jax.Array, np.ndarray)):
    return False
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return rng.shape == ()
  shape, dtype = _raw_key_shape_and_dtype()
  return rng.shape == shape and rng.dtype == dtype


# The first sentence of Linen's errors for an ``rngs`` argument that is neither a key nor
# a dict of keys, by entry point; flaxlike's detail (which stream, what it got) follows.
INIT_RNGS_LEAD = (
  'First argument passed to an init function should be a ``jax.PRNGKey`` or a dictionary '
  'mapping strings to ``jax.PRNGKey``.'
)
APPLY_RNGS_LEAD = (
  'The ``rngs`` argument passed to an apply function should be a ``jax.PRNGKey`` or a '
  'dictionary mapping strings to ``jax.PRNGKey``.'
)


def _describe(value: Any) -> str:
  if hasattr(value, 'dtype') and hasattr(value, 'shape'):
    return f'{type(value).__name__} {value.dtype}{list(value.shape)}'
  return f'{type(value).__name__} {value!r}'[:200]


def _validate_rngs(rngs: Any) -> dict[str, LazyRng]:
  if rngs is None:
    return {}
  if not isinstance(rngs, Mapping):
    raise errors.InvalidRngError(
      'rngs should be a dictionary mapping strings to `jax.PRNGKey`, e.g. '
      "{'params': jax.random.key(0), 'dropout': jax.random.key(1)}; got "
      f'{type(rngs).__name__}.'
    )
  streams = {}
  for name, rng in rngs.items():
    if isinstance(rng, LazyRng):
      streams[name] = rng
      continue
    if not isinstance(name, str) or not _is_valid_rng(rng):
      raise errors.InvalidRngError(
        f'rngs[{name!r}] should be a PRNG key made by jax.random.key(seed) or '
        f'jax.random.PRNGKey(seed), got {_describe(rng)}.'
      )
    streams[name] = LazyRng(rng)
  return streams
