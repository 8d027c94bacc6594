"""Differentiation as lifted transforms: ``vjp``, ``value_and_grad``, ``jvp``, ``custom_vjp``.

Each differentiates a scope function ``fn(scope, *args)`` with respect to its arguments
and, where asked, to collections of its variables, through the lifting primitive
``pack``. Import them from :mod:`flaxlike.core.lift`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from flaxlike.core.packing import ScopeTree, _flatten_scopes, _key_sorted, pack
from flaxlike.core.scope import Filter, Scope, subtract_filters


def _single_scope_grads(bwd: Callable[..., Any], cotangent: Any) -> tuple:
  var_grads, *primal_grads = bwd(cotangent)
  return (var_grads[0], *primal_grads)


def _scope_list_grads(bwd: Callable[..., Any], cotangent: Any) -> tuple:
  var_grads, *primal_grads = bwd(cotangent)
  return (list(var_grads), *primal_grads)


def vjp(
  fn: Callable[..., Any],
  scope: ScopeTree,
  *primals: Any,
  has_aux: bool = False,
  reduce_axes: Sequence[Any] = (),
  vjp_variables: Filter = 'params',
  variables: Filter = True,
  rngs: Filter = True,
) -> Any:
  """``jax.vjp`` of ``fn(scope, *primals)`` w.r.t. the primals and ``vjp_variables``.

  Returns ``(y, vjp_fn)`` (plus ``aux`` with ``has_aux``); ``vjp_fn(cotangent)`` gives
  ``(variable_grads, *primal_grads)`` where ``variable_grads`` is ``{collection: grads}``.
  """
  del reduce_axes  # removed from jax.vjp; kept for Linen's signature.
  rest = subtract_filters(variables, vjp_variables)

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *primals):
    diff_vars, other_vars = variable_groups

    def pure(diff_vars, *primals):
      inner_scope = scope_fn((diff_vars, other_vars), rng_groups)
      out = fn(inner_scope, *primals)
      if has_aux:
        y, aux = out
      else:
        y, aux = out, None
      return y, (aux, repack_fn(inner_scope))

    y, bwd, (aux, out_groups) = jax.vjp(pure, diff_vars, *primals, has_aux=True)

    # A pytree (Partial), so it can be a residual of custom_vjp or cross a jit boundary.
    # One scope: its {collection: grads}; a list of scopes: one such dict per scope.
    grads_of = _single_scope_grads if isinstance(scope, Scope) else _scope_list_grads
    vjp_fn = jax.tree_util.Partial(grads_of, bwd)
    result = (y, vjp_fn, aux) if has_aux else (y, vjp_fn)
    return result, out_groups

  return pack(inner, (vjp_variables, rest), (vjp_variables, rest), (rngs,), name='vjp')(
    scope, *primals
  )


def value_and_grad(
  fn: Callable[..., Any],
  scope: ScopeTree,
  *primals: Any,
  has_aux: bool = False,
  reduce_axes: Sequence[Any] = (),
  variables: Filter = True,
  rngs: Filter = True,
) -> Any:
  """``jax.value_and_grad`` of scalar ``fn(scope, *primals)`` w.r.t. the primals.

  Returns ``(value, primal_grads)``, or ``((value, aux), primal_grads)`` with ``has_aux``
  (Linen's convention: variables are not differentiated here; use ``vjp`` for them).
  """
  del reduce_axes

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *primals):
    def pure(*primals):
      inner_scope = scope_fn(variable_groups, rng_groups)
      out = fn(inner_scope, *primals)
      if has_aux:
        y, aux = out
      else:
        y, aux = out, None
      return y, (aux, repack_fn(inner_scope))

    argnums = tuple(range(len(primals)))
    (y, (aux, out_groups)), grads = jax.value_and_grad(pure, argnums=argnums, has_aux=True)(
      *primals
    )
    value = (y, aux) if has_aux else y
    return (value, grads), out_groups

  return pack(inner, (variables,), (variables,), (rngs,), name='value_and_grad')(scope, *primals)


def jvp(
  fn: Callable[..., Any],
  scope: ScopeTree,
  primals: Sequence[Any],
  tangents: Sequence[Any],
  variable_tangents: Mapping[str, Any],
  variables: Filter = True,
  rngs: Filter = True,
) -> Any:
  """``jax.jvp`` of ``fn(scope, *primals)``; ``variable_tangents`` is ``{collection: tangents}``.

  Collections named in ``variable_tangents`` are differentiated; returns ``(y, y_tangent)``.
  """
  tangent_cols = tuple(variable_tangents.keys())
  rest = subtract_filters(variables, set(tangent_cols))

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args):
    diff_vars, other_vars = variable_groups
    var_tangents = tuple({c: variable_tangents[c] for c in d} for d in diff_vars)

    def pure(diff_vars, primals):
      inner_scope = scope_fn((diff_vars, other_vars), rng_groups)
      y = fn(inner_scope, *primals)
      return y, repack_fn(inner_scope)

    (y, out_groups), (y_t, _) = jax.jvp(
      pure, (diff_vars, tuple(primals)), (var_tangents, tuple(tangents))
    )
    return (y, y_t), out_groups

  return pack(inner, (set(tangent_cols), rest), (set(tangent_cols), rest), (rngs,), name='jvp')(
    scope
  )


def custom_vjp(
  fn: Callable[..., Any],
  forward_fn: Callable[..., Any],
  backward_fn: Callable[..., Any],
  grad_vars: Filter = 'params',
  nondiff_argnums: Sequence[int] = (),
) -> Callable[..., Any]:
  """A function of a scope with a custom backward pass (``jax.custom_vjp``).

  ``forward_fn(scope, *args) -> (y, residuals)``; ``backward_fn(*nondiff_args,
  residuals, y_cotangent) -> (variable_grads, *arg_grads)`` with ``variable_grads`` shaped
  like ``{collection: grads}`` of the ``grad_vars`` collections, and one gradient per
  differentiated argument. ``nondiff_argnums`` index the arguments of ``fn`` counting the
  scope as 0 (as in Linen). The function may not mutate variables.
  """
  rest = subtract_filters(True, grad_vars)

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args):
    grad_groups, other_groups = variable_groups
    plain = scope_fn(variable_groups, rng_groups)
    if any(s.get_flag('initializing', False) for s in _flatten_scopes(plain)[0]):
      # Nothing is differentiated while initializing; running plainly lets fn create
      # its variables (a custom_vjp function itself may not write any).
      # Linen runs it through jax.custom_vjp even then, so variables come out key-sorted.
      return fn(plain, *args), _key_sorted(repack_fn(plain))

    def pure(grad_groups, *args):
      return fn(scope_fn((grad_groups, other_groups), rng_groups, mutable=False), *args)

    def fwd(grad_groups, *args):
      y, res = forward_fn(scope_fn((grad_groups, other_groups), rng_groups, mutable=False), *args)
      return y, res

    def bwd(*nondiff_and_res_and_g):
      *nondiff, res, g = nondiff_and_res_and_g
      var_grads, *arg_grads = backward_fn(*nondiff, res, g)
      # One scope: the user returns its {collection: grads}; several: one per scope.
      per_scope = (var_grads,) if len(grad_groups) == 1 else tuple(var_grads)
      return (per_scope, *arg_grads)

    # The variable groups take the place of the scope (argument 0), so the indices the
    # user counted from the scope apply unchanged.
    wrapped = jax.custom_vjp(pure, nondiff_argnums=tuple(nondiff_argnums))
    wrapped.defvjp(fwd, bwd)
    y = wrapped(grad_groups, *args)
    return y, (tuple({} for _ in grad_groups), tuple({} for _ in other_groups))

  return pack(inner, (grad_vars, rest), (grad_vars, rest), (True,), name='custom_vjp')
