"""Functions over modules: ``nn.apply``/``nn.init``/``nn.init_with_output``, ``share_scope``
and ``merge_param``.

They sit above the class and only call its public methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flaxlike import errors
from flaxlike.core.scope import DenyList, Filter, Scope
from flaxlike.linen._module.module_class import Module

T = TypeVar('T')


def apply(
  fn: Callable[..., Any],
  module: Module,
  mutable: Filter = False,
  capture_intermediates: bool | Callable[[Module, str], bool] = False,
) -> Callable[..., Any]:
  """Turns ``fn(module, *args)`` into ``apply_fn(variables, *args, rngs=None)``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> model = nn.Dense(2)
  >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
  >>> nn.apply(lambda m, x: m(x) * 2, model)(variables, jnp.ones((1, 3))).shape
  (1, 2)
  """

  def wrapper(variables, *args, rngs=None, **kwargs):
    return module.apply(
      variables,
      *args,
      rngs=rngs,
      method=fn,
      mutable=mutable,
      capture_intermediates=capture_intermediates,
      **kwargs,
    )

  return wrapper


def init_with_output(
  fn: Callable[..., Any],
  module: Module,
  mutable: Filter = DenyList('intermediates'),
  capture_intermediates: bool | Callable[[Module, str], bool] = False,
) -> Callable[..., tuple[Any, dict[str, Any]]]:
  """Turns ``fn(module, *args)`` into ``init_fn(rngs, *args) -> (output, variables)``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> init_fn = nn.init_with_output(lambda m, x: m(x), nn.Dense(2))
  >>> y, variables = init_fn(jax.random.key(0), jnp.ones((1, 3)))
  >>> y.shape, list(variables['params'])
  ((1, 2), ['kernel', 'bias'])
  """

  def wrapper(rngs, *args, **kwargs):
    return module.init_with_output(
      rngs, *args, method=fn, mutable=mutable, capture_intermediates=capture_intermediates, **kwargs
    )

  return wrapper


def init(
  fn: Callable[..., Any],
  module: Module,
  mutable: Filter = DenyList('intermediates'),
  capture_intermediates: bool | Callable[[Module, str], bool] = False,
) -> Callable[..., dict[str, Any]]:
  """Turns ``fn(module, *args)`` into ``init_fn(rngs, *args) -> variables``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> variables = nn.init(lambda m, x: m(x), nn.Dense(2))(jax.random.key(0), jnp.ones((1, 3)))
  >>> list(variables['params'])
  ['kernel', 'bias']
  """

  def wrapper(rngs, *args, **kwargs):
    return module.init(
      rngs, *args, method=fn, mutable=mutable, capture_intermediates=capture_intermediates, **kwargs
    )

  return wrapper


def share_scope(module: Module, other: Module, /) -> None:
  """Makes ``other`` use ``module``'s scope, so its variables sit at ``module``'s level.

  Call it in ``setup`` (or a compact method) of ``module`` with a submodule ``other``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> class Wrapper(nn.Module):
  ...   def setup(self):
  ...     self.dense = nn.Dense(2)
  ...     nn.share_scope(self, self.dense)
  ...   def __call__(self, x):
  ...     return self.dense(x)
  >>> params = Wrapper().init(jax.random.key(0), jnp.ones((1, 3)))['params']
  >>> list(params)
  ['kernel', 'bias']
  """
  scope = module.scope
  other_scope = other.scope
  if scope is None or other_scope is None:
    raise errors.CallShareScopeOnUnboundModuleError()
  if _is_within(other_scope, scope):
    # ``other`` lives under ``module``: it moves up into ``module``'s scope, and the
    # name it held there is freed (no variables will appear under it).
    if other_scope.parent is scope and other_scope.name in scope.reservations:
      taken = scope.reservations[other_scope.name]
      taken.discard(None)
      if not taken:
        del scope.reservations[other_scope.name]
    moved, new_scope = other, scope
  else:
    # ``other`` was bound elsewhere (e.g. built by the caller and passed in a field):
    # ``module`` joins ``other``'s scope, so the variables sit under ``other``'s name.
    moved, new_scope = module, other_scope
  old_scope = moved.scope
  object.__setattr__(moved, 'scope', new_scope)
  if old_scope is not None:  # only a bound module has children scopes to move
    _move_children(moved, old_scope, new_scope)


def _is_within(scope: Scope | None, ancestor: Scope) -> bool:
  while scope is not None:
    if scope is ancestor:
      return True
    scope = scope.parent
  return False


def _move_children(module: Module, old_scope: Scope, new_scope: Scope) -> None:
  """Re-pushes the scopes of ``module``'s bound children from ``old_scope`` into ``new_scope``."""
  for child in module._state.children.values():
    child_scope = child.scope if isinstance(child, Module) else None
    if child_scope is None or child_scope.parent is not old_scope:
      continue
    # push reserves the name: a clash with a name ``new_scope`` already holds is reported.
    moved_scope = new_scope.push(child_scope.name)
    object.__setattr__(child, 'scope', moved_scope)
    _move_children(child, child_scope, moved_scope)


def merge_param(name: str, a: T | None, b: T | None) -> T:
  """Returns whichever of ``a`` (field) and ``b`` (call argument) is set.

  Raises:
    ValueError: when both or neither are set.

  Example:

  >>> import flaxlike as nn
  >>> nn.merge_param('deterministic', None, True)
  True
  """
  if a is None and b is None:
    # Linen's exact message (code matches it literally); the fix travels as a note.
    error = ValueError(f'Parameter "{name}" must be passed to the constructor or at call time.')
    error.add_note(f'Fix: set the module field {name}=... or pass {name}=... to the call.')
    raise error
  if a is not None and b is not None:
    # Linen's exact message (code matches it literally); the fix travels as a note, which
    # tracebacks print after it.
    error = ValueError(
      f'Parameter "{name}" was passed to the constructor and at call time. Should be '
      'passed just once.'
    )
    error.add_note(f'Fix: set the module field {name}=... or pass {name}=... to the call.')
    raise error
  if b is None:
    assert a is not None  # both None was rejected above
    return a
  return b
