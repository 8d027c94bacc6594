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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import jax

from flaxlike import errors
from flaxlike.core import lift
from flaxlike.core.scope import Filter, Scope, Variable
from flaxlike.linen._module.calls import wrap_method
from flaxlike.linen._module.module_class import Module, _unbind_field

# What a class-or-function transform returns: the same kind of thing it was given (a
# Module subclass for a class), so checkers keep the constructor's fields and types.
Target = TypeVar('Target', bound=type[Module] | Callable[..., Any])

broadcast = lift.broadcast
In = lift.In
Out = lift.Out


#################################################
# Binding a module to an inner scope
#################################################


def _bind_clone(module: Module, scope: Scope, cls: type | None = None) -> Module:
  """A copy of ``module`` (as class ``cls``) bound to the inner scope of a transform."""
  attrs = {f: _unbind_field(getattr(module, f)) for f in module._field_names}
  attrs['name'] = module.name
  return (cls or type(module))(**attrs, parent=scope)


def _check_returns(y: Any, name: str) -> Any:
  for leaf in jax.tree_util.tree_leaves(y, is_leaf=lambda x: isinstance(x, (Module, Variable))):
    if isinstance(leaf, (Module, Variable)):
      raise errors.TransformedMethodReturnValueError(name)
  return y


def _outer_scope(module: Any, transform: str) -> Scope:
  if not isinstance(module, Module):
    raise errors.TransformTargetError(module)
  scope = module.scope
  if scope is None:
    raise ValueError(
      f'nn.{transform} needs a bound module, but {type(module).__name__} is unbound: call '
      'it inside init/apply (or a @compact method / setup of a bound parent).'
    )
  return scope


def _method_body(
  module: Module, call: Callable[..., Any], cls: type | None, name: str, kwargs: Mapping[str, Any]
) -> Callable[..., Any]:
  """``fn(scope, *args)`` running ``call`` on a copy of ``module`` bound to ``scope``."""

  def body(scope: Scope, *args: Any) -> Any:
    return _check_returns(call(_bind_clone(module, scope, cls), *args, **kwargs), name)

  return body


def _as_method(fn: Callable[..., Any]) -> Callable[..., Any]:
  """``fn`` run the way Module methods run: lazy setup, on the module stack, compact.

  Functions handed to a transform (``fn(module, *args)``, cond branches, scan bodies)
  create submodules inline like a ``@compact`` method of the module they receive, so
  those submodules live under that module's (inner) scope.
  """
  if hasattr(fn, '__flaxlike_method__'):
    return fn

  def call(self, *args, **kwargs):
    return fn(self, *args, **kwargs)

  call.__name__ = getattr(fn, '__name__', 'fn')
  call.compact = True  # type: ignore[attr-defined]
  return wrap_method(call)


#################################################
# Targets: classes, methods, functions
#################################################

# build(fn_of_scope) -> lifted(scope, *args); one per call of the transformed method.
Builder = Callable[[Callable[..., Any]], Callable[..., Any]]


def _method_names(methods: Any) -> dict[str, dict[str, Any]]:
  if methods is None:
    return {'__call__': {}}
  if isinstance(methods, str):
    return {methods: {}}
  if isinstance(methods, Mapping):
    return {k: dict(v or {}) for k, v in methods.items()}
  return {m: {} for m in methods}


def _transform_class(
  prefix: str,
  cls: type,
  methods: Any,
  make: Callable[..., Callable[..., Any]],
  transform_kwargs: dict[str, Any],
) -> type:
  attrs: dict[str, Any] = {}
  for method_name, overrides in _method_names(methods).items():
    original = getattr(cls, method_name, None)
    if original is None or not callable(original):
      raise AttributeError(
        f'nn.{prefix.lower()}({cls.__name__}, methods=...): {cls.__name__} has no method '
        f'"{method_name}".'
      )
    run = _as_method(original)
    call_transform = make(
      run, cls, f'{cls.__name__}.{method_name}', {**transform_kwargs, **overrides}
    )
    call_transform.nowrap = True  # type: ignore[attr-defined]
    call_transform.__name__ = method_name
    attrs[method_name] = call_transform
  attrs['__module__'] = cls.__module__
  new_cls = type(f'{prefix}{cls.__name__}', (cls,), attrs)
  new_cls.__qualname__ = f'{prefix}{cls.__qualname__}'
  return new_cls


def _transform_function(
  fn: Callable[..., Any], make: Callable[..., Callable[..., Any]], transform_kwargs: dict[str, Any]
) -> Callable[..., Any]:
  run = _as_method(fn)
  wrapped = make(run, None, getattr(fn, '__name__', 'fn'), transform_kwargs)
  functools.update_wrapper(wrapped, fn)
  # A decorated method must not get Module's method wrapper a second time: the outer
  # module would run setup and claim names outside the transform.
  wrapped.__dict__.pop('compact', None)
  wrapped.__dict__.pop('__flaxlike_method__', None)
  wrapped.nowrap = True  # type: ignore[attr-defined]
  return wrapped


def _lift(
  prefix: str,
  target: Any,
  methods: Any,
  make: Callable[..., Callable[..., Any]],
  **transform_kwargs: Any,
) -> Any:
  if isinstance(target, type) and issubclass(target, Module):
    return _transform_class(prefix, target, methods, make, transform_kwargs)
  if callable(target) and not isinstance(target, Module):
    return _transform_function(target, make, transform_kwargs)
  raise errors.TransformTargetError(target)


def _simple(
  core_builder: Callable[..., Builder], transform: str
) -> Callable[..., Callable[..., Any]]:
  """``make`` for transforms whose lifted function is rebuilt per call (closures are fine)."""

  def make(run, cls, name, kw):
    def call_transformed(module, *args, **kwargs):
      scope = _outer_scope(module, transform)
      body = _method_body(module, run, cls, name, kwargs)
      return core_builder(**kw)(body)(scope, *args)

    return call_transformed

  return make


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

  The module's fields are part of the cache key (unhashable fields key by identity).
  RNG streams are forked per call, as in Linen. ``static_argnums`` count ``self`` as
  argument 0.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> model = nn.jit(nn.Dense)(2)
  >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
  >>> model.apply(variables, jnp.ones((1, 3))).shape
  (1, 2)
  """

  def make(run, cls, name, kw):
    def body(scope, static_module, *args, **kwargs):
      return _check_returns(
        run(_bind_clone(static_module.value, scope, cls), *args, **kwargs), name
      )

    lifted = lift.jit(
      body,
      variables=kw['variables'],
      rngs=kw['rngs'],
      static_argnums=(0,) + _shift_argnums(kw['static_argnums'], 0),
      static_argnames=kw['static_argnames'],
      donate_argnums=_shift_argnums(kw['donate_argnums'], 0),
      device=kw['device'],
      backend=kw['backend'],
    )

    def call_transformed(module, *args, **kwargs):
      scope = _outer_scope(module, 'jit')
      return lifted(scope, lift._Hashable(module), *args, **kwargs)

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

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> Doubled = nn.map_variables(nn.Dense, 'params',
  ...                            lambda v: jax.tree_util.tree_map(lambda w: 2 * w, v),
  ...                            init=True)
  >>> model = Doubled(2, kernel_init=nn.initializers.ones)
  >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
  >>> model.apply(variables, jnp.ones((1, 3)))
  Array([[6., 6.]], dtype=float32)
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


def _fn_of_scope(fn: Callable[..., Any], module: Module, name: str) -> Callable[..., Any]:
  method = _as_method(fn)

  def run(scope: Scope, *args: Any) -> Any:
    return _check_returns(method(_bind_clone(module, scope), *args), name)

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
  scope = _outer_scope(mdl, 'cond')
  return lift.cond(
    pred,
    _fn_of_scope(true_fun, mdl, 'cond'),
    _fn_of_scope(false_fun, mdl, 'cond'),
    scope,
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
  scope = _outer_scope(mdl, 'switch')
  return lift.switch(
    index,
    [_fn_of_scope(b, mdl, 'switch') for b in branches],
    scope,
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
  scope = _outer_scope(mdl, 'while_loop')
  return lift.while_loop(
    _fn_of_scope(cond_fn, mdl, 'while_loop'),
    _fn_of_scope(body_fn, mdl, 'while_loop'),
    scope,
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
    scope = _outer_scope(mdl, 'custom_vjp')
    lifted = lift.custom_vjp(
      _fn_of_scope(fn, mdl, 'custom_vjp'),
      _fn_of_scope(forward_fn, mdl, 'custom_vjp'),
      backward_fn,
      grad_vars=grad_vars,
      nondiff_argnums=tuple(nondiff_argnums),
    )
    return lifted(scope, *args)

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
  """
  del multi_scope
  scope = _outer_scope(mdl, 'vjp')
  return lift.vjp(
    _fn_of_scope(fn, mdl, 'vjp'),
    scope,
    *primals,
    has_aux=has_aux,
    reduce_axes=reduce_axes,
    vjp_variables=vjp_variables,
    variables=variables,
    rngs=rngs,
  )


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
  scope = _outer_scope(mdl, 'jvp')
  return lift.jvp(
    _fn_of_scope(fn, mdl, 'jvp'),
    scope,
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
  scope = _outer_scope(mdl, 'value_and_grad')
  return lift.value_and_grad(
    _fn_of_scope(fn, mdl, 'value_and_grad'),
    scope,
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
