"""Lifted transforms for Modules: a thin adapter over ``flaxlike.core.lift``.

Every transform here takes a target (a Module class, a method, or a function whose first
argument is a module) and turns the module into what ``core.lift`` understands: the
module's scope is the outer scope, and inside the JAX transform a fresh copy of the module
is bound to the inner scope and the original method runs on it. Class targets become a
subclass named ``<Transform><Class>`` (``VmapDense``, ``ScanCell``, ``CheckpointBlock``,
``JitDense``), which is what Linen's autonames (``VmapDense_0``) are made of.

The transformed methods are ``nowrap``: the outer module never runs ``setup`` or
declares anything itself, so everything it owns is created inside the transform, on
the inner scope, exactly once per trace.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import jax

from flaxlike import errors
from flaxlike.core import lift
from flaxlike.core.scope import Filter, Scope
from flaxlike.linen._lifting import (
  _as_method,
  _ById,
  _check_returns,
  _detach_counters,
  _fingerprint,
  _lift,
  _Lifting,
  _outer_scope,
  _simple,
)
from flaxlike.linen._module.module_class import Module

# What a class-or-function transform returns: the same kind of thing it was given (a
# Module subclass for a class), so checkers keep the constructor's fields and types.
Target = TypeVar('Target', bound=type[Module] | Callable[..., Any])

broadcast = lift.broadcast
In = lift.In
Out = lift.Out


#################################################
# The transforms
#################################################


def vmap(
  target: Target,
  variable_axes: Mapping[Filter, Any] = {},
  split_rngs: Mapping[Filter, bool] = {},
  in_axes: Any = 0,
  out_axes: Any = 0,
  axis_size: int | None = None,
  axis_name: str | None = None,
  spmd_axis_name: Any = None,
  metadata_params: Mapping[str, Any] = {},
  methods: Any = None,
) -> Target:
  """Vectorises a Module (class, method or ``fn(module, *args)``) with ``jax.vmap``.

  Args:
    target: a Module class, a method, or a function taking a module first.
    variable_axes: collection filter -> axis of the variables (None: shared).
    split_rngs: stream filter -> whether each member gets its own key.
    in_axes, out_axes, axis_size, axis_name, spmd_axis_name: as in ``jax.vmap``.
    metadata_params: passed to ``AxisMetadata.add_axis``, e.g. ``{nn.PARTITION_NAME: 'x'}``.
    methods: the methods of a class target to transform (default ``__call__``).

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> Ensemble = nn.vmap(nn.Dense, variable_axes={'params': 0},
  ...                    split_rngs={'params': True}, in_axes=None, axis_size=3)
  >>> params = Ensemble(2).init(jax.random.key(0), jnp.ones((1, 4)))['params']
  >>> params['kernel'].shape
  (3, 4, 2)
  """

  def builder(**kw):
    return lambda body: lift.vmap(body, **kw)

  return _lift(
    'Vmap',
    target,
    methods,
    _simple(builder, 'vmap'),
    variable_axes=variable_axes,
    split_rngs=split_rngs,
    in_axes=in_axes,
    out_axes=out_axes,
    axis_size=axis_size,
    axis_name=axis_name,
    spmd_axis_name=spmd_axis_name,
    metadata_params=metadata_params,
  )


def scan(
  target: Target,
  variable_axes: Mapping[Filter, Any] = {},
  variable_broadcast: Filter = False,
  variable_carry: Filter = False,
  split_rngs: Mapping[Filter, bool] = {},
  in_axes: Any = 0,
  out_axes: Any = 0,
  length: int | None = None,
  reverse: bool = False,
  unroll: int = 1,
  data_transform: Callable[..., Any] | None = None,
  metadata_params: Mapping[str, Any] = {},
  methods: Any = None,
  _split_transpose: bool = False,
  check_constancy_invariants: bool = True,
) -> Target:
  """Loops a Module over a sequence with ``jax.lax.scan``.

  The transformed method has the signature ``(module, carry, *xs) -> (carry, ys)``.
  ``variable_axes`` collections get one slice per step, ``variable_broadcast`` ones are
  shared by all steps, ``variable_carry`` ones are threaded like the carry. Pass
  ``nn.broadcast`` in ``in_axes`` for an argument that is the same at every step.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> class Layer(nn.Module):
  ...   @nn.compact
  ...   def __call__(self, h, _):
  ...     return jnp.tanh(nn.Dense(h.shape[-1])(h)), None
  >>> Stack = nn.scan(Layer, variable_axes={'params': 0}, split_rngs={'params': True},
  ...                 length=4, in_axes=nn.broadcast)
  >>> params = Stack().init(jax.random.key(0), jnp.ones((1, 3)), None)['params']
  >>> params['Dense_0']['kernel'].shape
  (4, 3, 3)
  """

  def builder(**kw):
    return lambda body: lift.scan(body, **kw)

  return _lift(
    'Scan',
    target,
    methods,
    _simple(builder, 'scan'),
    variable_axes=variable_axes,
    variable_broadcast=variable_broadcast,
    variable_carry=variable_carry,
    split_rngs=split_rngs,
    in_axes=in_axes,
    out_axes=out_axes,
    length=length,
    reverse=reverse,
    unroll=unroll,
    data_transform=data_transform,
    metadata_params=metadata_params,
    _split_transpose=_split_transpose,
    check_constancy_invariants=check_constancy_invariants,
  )


def _shift_argnums(argnums: int | Sequence[int], by: int) -> tuple[int, ...]:
  if isinstance(argnums, int):
    argnums = (argnums,)
  return tuple(i + by for i in argnums)


def checkpoint(
  target: Target,
  variables: Filter = True,
  rngs: Filter = True,
  concrete: bool = False,
  prevent_cse: bool = True,
  static_argnums: int | Sequence[int] = (),
  policy: Callable[..., bool] | None = None,
  methods: Any = None,
) -> Target:
  """Rematerialises a Module in the backward pass (``jax.checkpoint``).

  ``static_argnums`` count ``self`` as argument 0, as in Linen.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> RematDense = nn.remat(nn.Dense)
  >>> RematDense.__name__
  'CheckpointDense'
  """

  def builder(**kw):
    return lambda body: lift.checkpoint(body, **kw)

  return _lift(
    'Checkpoint',
    target,
    methods,
    _simple(builder, 'remat'),
    variables=variables,
    rngs=rngs,
    concrete=concrete,
    prevent_cse=prevent_cse,
    static_argnums=_shift_argnums(static_argnums, -1),
    policy=policy,
  )


remat = checkpoint


def _static_value(value: Any, what: str) -> Any:
  try:
    hash(value)
  except TypeError as e:
    raise ValueError(
      f'nn.jit: {what} is static but not hashable ({type(value).__name__}): {e}. Static '
      'arguments key the trace cache; pass a hashable value (a tuple instead of a list, ...) '
      'or make the argument non-static.'
    ) from None
  return value


def _filter_key(f: Filter) -> Any:
  if isinstance(f, (set, frozenset, list, tuple)):
    return type(f), tuple(sorted(f))
  try:
    hash(f)
  except TypeError:
    return _ById(f)
  return f


def _scope_key(scope: Scope) -> Any:
  """What a trace depends on in a lifted scope besides its variables' shapes."""
  flags = scope.flags
  return (
    _filter_key(scope.mutable),
    tuple((k, _fingerprint(flags[k], {})) for k in sorted(flags)),
  )


class _JitCall:
  """The Python side of one jitted call, read by the trace (kept off JAX's argument list)."""

  __slots__ = ('module', 'lifting', 'scope_fn', 'repack_fn', 'static_args', 'static_kwargs')

  def __init__(self, module, lifting, static_args, static_kwargs):
    self.module = module
    self.lifting = lifting
    self.static_args = static_args
    self.static_kwargs = static_kwargs
    self.scope_fn = None
    self.repack_fn = None


def _argnums(argnums: int | Sequence[int]) -> tuple[int, ...]:
  return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def jit(
  target: Target,
  variables: Filter = True,
  rngs: Filter = True,
  static_argnums: int | Sequence[int] = (),
  static_argnames: str | Sequence[str] = (),
  donate_argnums: int | Sequence[int] = (),
  device: Any = None,
  backend: str | None = None,
  methods: Any = None,
) -> Target:
  """Compiles a Module method with ``jax.jit``; the trace is cached across calls.

  As in Linen, the trace is cached by the module's class and fields (recursively through
  modules, dataclasses, containers and types registered with ``serialization``; other
  unhashable values key by identity), not by its name or path, so sibling instances with
  equal fields share one trace; mutability and flags of the call are part of the key.
  Bound modules and Variables may be passed as arguments or held in fields: their scopes
  are lifted with the module's. RNG streams are forked per call. ``static_argnums``
  count ``self`` as argument 0; ``static_argnames`` name keyword arguments; static values
  must be hashable.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> model = nn.jit(nn.Dense)(2)
  >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
  >>> model.apply(variables, jnp.ones((1, 3))).shape
  (1, 2)
  """

  def make(run, cls, name, kw):
    # Positions among the arguments after ``self``.
    static_nums = frozenset(i - 1 for i in _argnums(kw['static_argnums']))
    names = kw['static_argnames']
    static_names = frozenset((names,) if isinstance(names, str) else names)
    local = threading.local()

    def traced(key, variable_groups, rng_groups, kwargs, *args):
      del key  # static: it only selects the cached trace
      call = local.stack[-1]
      args = tuple(call.static_args.get(i, a) for i, a in enumerate(args))
      kwargs = {**kwargs, **call.static_kwargs}
      if call.lifting is None:
        plain = getattr(run, '__flaxlike_plain__', run)
        return _check_returns(plain(call.module, *args, **kwargs), name), None
      inner = call.scope_fn(variable_groups, rng_groups)
      _detach_counters(inner)
      bound, args, kwargs = call.lifting.bind(call.module, inner, cls, args, kwargs)
      y = _check_returns(run(bound, *args, **kwargs), name)
      return y, call.repack_fn(inner)

    jitted = jax.jit(
      traced,
      static_argnums=0,
      # traced(key, variable_groups, rng_groups, kwargs, *args): self's argument i is at 3 + i.
      donate_argnums=tuple(3 + i for i in _argnums(kw['donate_argnums'])),
      device=kw['device'],
      backend=kw['backend'],
    )

    def run_jitted(call, key, variable_groups, rng_groups, args, kwargs):
      if not hasattr(local, 'stack'):
        local.stack = []
      local.stack.append(call)
      try:
        return jitted(key, variable_groups, rng_groups, kwargs, *args)
      finally:
        local.stack.pop()

    def inner(scope_fn, repack_fn, variable_groups, rng_groups, call, key, args, kwargs):
      call.scope_fn, call.repack_fn = scope_fn, repack_fn
      try:
        return run_jitted(call, key, variable_groups, rng_groups, args, kwargs)
      finally:
        call.scope_fn = call.repack_fn = None

    packed = lift.pack(
      inner, (kw['variables'],), (kw['variables'],), (kw['rngs'],), name='jit', fork_rngs=True
    )

    def call_transformed(module, *args, **kwargs):
      if not isinstance(module, Module):
        raise errors.TransformTargetError(module)
      static_args = {
        i: _static_value(a, f'argument {i + 1}') for i, a in enumerate(args) if i in static_nums
      }
      static_kwargs = {
        k: _static_value(v, f'argument {k!r}') for k, v in kwargs.items() if k in static_names
      }
      if static_args:
        args = tuple(None if i in static_args else a for i, a in enumerate(args))
      if static_kwargs:
        kwargs = {k: v for k, v in kwargs.items() if k not in static_kwargs}
      static_key = (tuple(sorted(static_args.items())), tuple(sorted(static_kwargs.items())))
      if module.scope is None:
        # Unbound (e.g. a jitted override of init/apply): there is nothing to lift, the
        # method is compiled as a plain function of its arguments.
        call = _JitCall(module, None, static_args, static_kwargs)
        key = ('unbound', _fingerprint(module, {}), static_key)
        return run_jitted(call, key, None, None, args, kwargs)[0]
      lifting = _Lifting(module)
      args, kwargs = lifting.lift_args(args, kwargs, keyed=True)
      key = (
        _fingerprint(module, {}),
        tuple(lifting.layout),
        tuple(_scope_key(s) for s in lifting.scopes),
        static_key,
      )
      call = _JitCall(module, lifting, static_args, static_kwargs)
      return packed(lifting.scope_tree(), call, key, args, kwargs)

    return call_transformed

  return _lift(
    'Jit',
    target,
    methods,
    make,
    variables=variables,
    rngs=rngs,
    static_argnums=static_argnums,
    static_argnames=static_argnames,
    donate_argnums=donate_argnums,
    device=device,
    backend=backend,
  )


def fold_rngs(
  target: Target, variables: Filter = True, rngs: Filter = True, methods: Any = None
) -> Target:
  """Forks the RNG streams of a Module call the way ``nn.jit`` does, without compiling."""

  def builder(**kw):
    return lambda body: lift.fold_rngs(body, **kw)

  return _lift(
    'Fold_rngs', target, methods, _simple(builder, 'fold_rngs'), variables=variables, rngs=rngs
  )


def add_metadata_axis(
  target: Target,
  variable_axes: Mapping[Filter, int] = {},
  metadata_params: Mapping[str, Any] = {},
  methods: Any = None,
) -> Target:
  """Adds ``variable_axes`` axes to boxed metadata of a Module's variables, without mapping."""

  def builder(**kw):
    return lambda body: lift.add_metadata_axis(body, **kw)

  return _lift(
    'Add_metadata_axis',
    target,
    methods,
    _simple(builder, 'add_metadata_axis'),
    variable_axes=variable_axes,
    metadata_params=metadata_params,
  )


def map_variables(
  target: Target,
  mapped_collections: Filter = True,
  trans_in_fn: Callable[..., Any] = lambda x: x,
  trans_out_fn: Callable[..., Any] = lambda x: x,
  init: bool = False,
  mutable: bool = False,
  rngs: Filter = True,
  variables: Filter = True,
  methods: Any = None,
) -> Target:
  """Runs a Module on variables transformed by ``trans_in_fn`` (weight tying, masking).

  ``trans_in_fn``/``trans_out_fn`` receive ``{collection: subtree}`` of the mapped
  collections. With ``mutable=True`` writes are mapped back through ``trans_out_fn``.
  With ``init=True`` the mapping also runs during ``init``, as in Linen: ``init`` returns
  what the module saw, mapped back through ``trans_out_fn`` (here: the doubled kernel of
  twos, which ``apply`` doubles again).

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> Doubled = nn.map_variables(nn.Dense, 'params',
  ...                            lambda v: jax.tree_util.tree_map(lambda w: 2 * w, v),
  ...                            init=True)
  >>> model = Doubled(2, kernel_init=nn.initializers.ones)
  >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
  >>> variables['params']['kernel']
  Array([[2., 2.],
         [2., 2.],
         [2., 2.]], dtype=float32)
  >>> model.apply(variables, jnp.ones((1, 3)))
  Array([[12., 12.]], dtype=float32)
  """

  def builder(**kw):
    return lambda body: lift.map_variables(
      body,
      kw['mapped_collections'],
      kw['trans_in_fn'],
      kw['trans_out_fn'],
      init=kw['init'],
      mutable=kw['mutable'],
      rngs=kw['rngs'],
      variables=kw['variables'],
    )

  return _lift(
    'Map_variables',
    target,
    methods,
    _simple(builder, 'map_variables'),
    mapped_collections=mapped_collections,
    trans_in_fn=trans_in_fn,
    trans_out_fn=trans_out_fn,
    init=init,
    mutable=mutable,
    rngs=rngs,
    variables=variables,
  )


def remat_scan(
  target: type,
  lengths: Sequence[int] = (),
  policy: Callable[..., bool] | None = None,
  variable_broadcast: Filter = False,
  variable_carry: Filter = False,
  variable_axes: Mapping[Filter, Any] = {True: 0},
  split_rngs: Mapping[Filter, bool] = {True: True},
  metadata_params: Mapping[str, Any] = {},
) -> type:
  """Stacks ``prod(lengths)`` copies of a Module with nested rematerialised scans.

  The module's ``__call__(self, x) -> x`` is the loop body. ``metadata_params`` (which
  Linen lacks) names the outermost stacked axis of boxed variables, e.g.
  ``{nn.PARTITION_NAME: 'layers'}``; inner loop axes are named None.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> class Block(nn.Module):
  ...   @nn.compact
  ...   def __call__(self, x):
  ...     return x + nn.Dense(x.shape[-1])(x)
  >>> Deep = nn.remat_scan(Block, lengths=(2, 3))
  >>> params = Deep().init(jax.random.key(0), jnp.ones((1, 4)))['params']
  >>> params['Dense_0']['kernel'].shape
  (2, 3, 4, 4)
  """

  def builder(**kw):
    return lambda body: lift.remat_scan(body, **kw)

  return _lift(
    'Remat_scan',
    target,
    None,
    _simple(builder, 'remat_scan'),
    lengths=tuple(lengths),
    policy=policy,
    variable_broadcast=variable_broadcast,
    variable_carry=variable_carry,
    variable_axes=variable_axes,
    split_rngs=split_rngs,
    metadata_params=metadata_params,
  )


#################################################
# Functional transforms (module passed explicitly)
#################################################


def _direct(
  mdl: Module, operands: tuple, transform: str, multi_scope: bool = True
) -> tuple[_Lifting, tuple]:
  """The scopes a functional transform of ``mdl`` lifts, and its operands with slots."""
  _outer_scope(mdl, transform)
  lifting = _Lifting(mdl)
  operands, _ = lifting.lift_args(operands, {}, keyed=False)
  if not multi_scope and len(lifting.scopes) > 1:
    raise ValueError(
      'This transform does not yet support Modules that include other Modules passed as '
      f'arguments: nn.{transform} of {type(mdl).__name__} reaches {len(lifting.scopes)} '
      'scopes (bound modules or variables held in its fields or passed in). Create those '
      'modules inside the function instead'
      + (', or pass multi_scope=True.' if transform == 'vjp' else '.')
    )
  return lifting, operands


def _fn_of_scope(
  fn: Callable[..., Any], mdl: Module, lifting: _Lifting, name: str
) -> Callable[..., Any]:
  """``fn(module, *args)`` as ``run(scope_tree, *args)`` on the lifted scopes."""
  if inspect.ismethod(fn) and isinstance(fn.__self__, Module):
    # A bound method (``self.branch``): run its function on the inner copy of the module.
    fn = fn.__func__
  method = _as_method(fn)

  def run(scope_tree: Any, *args: Any) -> Any:
    bound, args, _ = lifting.bind(mdl, scope_tree, None, args, {})
    return _check_returns(method(bound, *args), name)

  return run


def cond(
  pred: Any,
  true_fun: Callable[..., Any],
  false_fun: Callable[..., Any],
  mdl: Module,
  *operands: Any,
  variables: Filter = True,
  rngs: Filter = True,
) -> Any:
  """``jax.lax.cond`` with branches ``fun(module, *operands)`` that may use variables.

  Both branches are traced and must produce the same variables.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> class Gate(nn.Module):
  ...   @nn.compact
  ...   def __call__(self, x, pred):
  ...     def yes(mdl, x):
  ...       return nn.Dense(2, name='dense')(x)
  ...     def no(mdl, x):
  ...       return -nn.Dense(2, name='dense')(x)
  ...     return nn.cond(pred, yes, no, self, x)
  >>> params = Gate().init(jax.random.key(0), jnp.ones((1, 3)), True)['params']
  >>> list(params)
  ['dense']
  """
  lifting, operands = _direct(mdl, operands, 'cond')
  return lift.cond(
    pred,
    _fn_of_scope(true_fun, mdl, lifting, 'cond'),
    _fn_of_scope(false_fun, mdl, lifting, 'cond'),
    lifting.scope_tree(),
    *operands,
    variables=variables,
    rngs=rngs,
  )


def switch(
  index: Any,
  branches: Sequence[Callable[..., Any]],
  mdl: Module,
  *operands: Any,
  variables: Filter = True,
  rngs: Filter = True,
) -> Any:
  """``jax.lax.switch`` with branches ``fun(module, *operands)`` that may use variables."""
  lifting, operands = _direct(mdl, operands, 'switch')
  return lift.switch(
    index,
    [_fn_of_scope(b, mdl, lifting, 'switch') for b in branches],
    lifting.scope_tree(),
    *operands,
    variables=variables,
    rngs=rngs,
  )


def while_loop(
  cond_fn: Callable[..., Any],
  body_fn: Callable[..., Any],
  mdl: Module,
  init: Any,
  carry_variables: Filter = False,
  broadcast_variables: Filter = True,
  split_rngs: Mapping[Filter, bool] = {},
) -> Any:
  """``jax.lax.while_loop`` with ``cond_fn(module, c)`` and ``body_fn(module, c) -> c``.

  ``carry_variables`` may be updated by the body (they must exist before the loop);
  ``broadcast_variables`` are read-only.
  """
  lifting, _ = _direct(mdl, (), 'while_loop')
  return lift.while_loop(
    _fn_of_scope(cond_fn, mdl, lifting, 'while_loop'),
    _fn_of_scope(body_fn, mdl, lifting, 'while_loop'),
    lifting.scope_tree(),
    init,
    carry_variables=carry_variables,
    broadcast_variables=broadcast_variables,
    split_rngs=split_rngs,
  )


def custom_vjp(
  fn: Callable[..., Any],
  forward_fn: Callable[..., Any],
  backward_fn: Callable[..., Any],
  grad_vars: Filter = 'params',
  nondiff_argnums: Sequence[int] = (),
) -> Callable[..., Any]:
  """A function ``fn(module, *args)`` with a custom backward pass.

  ``forward_fn(module, *args) -> (y, residuals)`` and ``backward_fn(residuals, g) ->
  (variable_grads, *arg_grads)``, where ``variable_grads`` is ``{collection: grads}`` of
  the ``grad_vars`` collections (``nn.vjp`` inside ``forward_fn`` gives exactly that).
  """

  def call(mdl: Module, *args: Any) -> Any:
    lifting, _ = _direct(mdl, (), 'custom_vjp', multi_scope=False)
    lifted = lift.custom_vjp(
      _fn_of_scope(fn, mdl, lifting, 'custom_vjp'),
      _fn_of_scope(forward_fn, mdl, lifting, 'custom_vjp'),
      backward_fn,
      grad_vars=grad_vars,
      nondiff_argnums=tuple(nondiff_argnums),
    )
    return lifted(lifting.scope_tree(), *args)

  return call


def vjp(
  fn: Callable[..., Any],
  mdl: Module,
  *primals: Any,
  has_aux: bool = False,
  reduce_axes: Sequence[Any] = (),
  vjp_variables: Filter = 'params',
  variables: Filter = True,
  rngs: Filter = True,
  multi_scope: bool = False,
) -> Any:
  """``jax.vjp`` of ``fn(module, *primals)`` w.r.t. the primals and ``vjp_variables``.

  Returns ``(y, vjp_fn)``; ``vjp_fn(g)`` gives ``(variable_grads, *primal_grads)``.
  With ``multi_scope=True`` the module may hold bound modules owned elsewhere (or
  Variables); ``variable_grads`` is then a list with one ``{collection: grads}`` per
  lifted scope, in Linen's order: the field modules' scopes depth first, the module's last.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> class Foo(nn.Module):
  ...   bar: nn.Module
  ...   @nn.compact
  ...   def __call__(self, x):
  ...     def f(mdl, x):
  ...       return mdl.bar(nn.Dense(2, name='own')(x))
  ...     y, vjp_fn = nn.vjp(f, self, x, multi_scope=True)
  ...     (bar_grads, own_grads), x_grad = vjp_fn(jnp.ones_like(y))
  ...     return bar_grads, own_grads
  >>> class Top(nn.Module):
  ...   @nn.compact
  ...   def __call__(self, x):
  ...     return Foo(nn.Dense(2, name='shared'))(x)
  >>> x = jnp.ones((1, 3))
  >>> variables = Top().init(jax.random.key(0), x)
  >>> bar, own = Top().apply(variables, x)
  >>> sorted(bar['params']), sorted(own['params']['own'])
  (['bias', 'kernel'], ['bias', 'kernel'])
  """
  lifting, _ = _direct(mdl, (), 'vjp', multi_scope=multi_scope)
  out = lift.vjp(
    _fn_of_scope(fn, mdl, lifting, 'vjp'),
    lifting.scope_tree(),
    *primals,
    has_aux=has_aux,
    reduce_axes=reduce_axes,
    vjp_variables=vjp_variables,
    variables=variables,
    rngs=rngs,
  )
  if len(lifting.scopes) == 1:
    return out
  order = tuple(lifting.linen_order(mdl))
  vjp_fn = jax.tree_util.Partial(functools.partial(_reorder_grads, order), out[1])
  return (out[0], vjp_fn, *out[2:])


def _reorder_grads(order: tuple[int, ...], vjp_fn: Callable[..., Any], cotangent: Any) -> tuple:
  var_grads, *primal_grads = vjp_fn(cotangent)
  return ([var_grads[i] for i in order], *primal_grads)


def jvp(
  fn: Callable[..., Any],
  mdl: Module,
  primals: Sequence[Any],
  tangents: Sequence[Any],
  variable_tangents: Mapping[str, Any],
  variables: Filter = True,
  rngs: Filter = True,
) -> Any:
  """``jax.jvp`` of ``fn(module, *primals)``; returns ``(y, y_tangent)``."""
  lifting, _ = _direct(mdl, (), 'jvp', multi_scope=False)
  return lift.jvp(
    _fn_of_scope(fn, mdl, lifting, 'jvp'),
    lifting.scope_tree(),
    primals,
    tangents,
    variable_tangents,
    variables=variables,
    rngs=rngs,
  )


def value_and_grad(
  fn: Callable[..., Any],
  mdl: Module,
  *primals: Any,
  has_aux: bool = False,
  reduce_axes: Sequence[Any] = (),
  variables: Filter = True,
  rngs: Filter = True,
) -> Any:
  """``(value, primal_grads)`` of scalar ``fn(module, *primals)`` (Linen's convention)."""
  lifting, _ = _direct(mdl, (), 'value_and_grad')
  return lift.value_and_grad(
    _fn_of_scope(fn, mdl, lifting, 'value_and_grad'),
    lifting.scope_tree(),
    *primals,
    has_aux=has_aux,
    reduce_axes=reduce_axes,
    variables=variables,
    rngs=rngs,
  )


def grad(
  fn: Callable[..., Any],
  mdl: Module,
  *primals: Any,
  has_aux: bool = False,
  reduce_axes: Sequence[Any] = (),
  variables: Filter = True,
  rngs: Filter = True,
) -> Any:
  """The primal gradients of scalar ``fn(module, *primals)`` (plus aux with ``has_aux``)."""
  value, grads = value_and_grad(
    fn, mdl, *primals, has_aux=has_aux, reduce_axes=reduce_axes, variables=variables, rngs=rngs
  )
  if has_aux:
    return grads, value[1]
  return grads


def named_call(class_fn: Callable[..., Any], force: bool = True) -> Callable[..., Any]:
  """Wraps a method so its computation is named ``Class.method`` in profiles and HLO."""
  del force

  @functools.wraps(class_fn)
  def wrapped(self, *args, **kwargs):
    with jax.named_scope(f'{type(self).__name__}.{class_fn.__name__}'):
      return class_fn(self, *args, **kwargs)

  return wrapped


__all__ = [
  'vmap',
  'scan',
  'jit',
  'remat',
  'checkpoint',
  'remat_scan',
  'cond',
  'switch',
  'while_loop',
  'map_variables',
  'custom_vjp',
  'jvp',
  'vjp',
  'grad',
  'value_and_grad',
  'named_call',
  'fold_rngs',
  'add_metadata_axis',
  'broadcast',
]
