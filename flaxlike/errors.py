"""Every error flaxlike raises on purpose, in one catalogue.

Class names follow Flax's ``<Verb><Object><Kind>Error`` convention so code that catches
``flax.errors.X`` can catch ``flaxlike.errors.X``. Each docstring says what causes the
error and how to fix it; each message names the module path, variable or key involved.
"""

from __future__ import annotations

from typing import Any


class FlaxlikeError(Exception):
  """Base class of every flaxlike error.

  Subclasses build their message from the arguments they are given; the instance
  pickles back to a plain ``FlaxlikeError`` carrying the same text, so errors raised in
  a worker process survive the trip to the parent.
  """

  def __init__(self, message: str):
    super().__init__(message)

  def __reduce__(self):
    return (FlaxlikeError, (str(self),))


# Linen spells the base class FlaxError; keep the name so `except FlaxError` ports as is.
FlaxError = FlaxlikeError


def _path_text(path: Any) -> str:
  if isinstance(path, str):
    return path or '/'
  return '/' + '/'.join(str(p) for p in path)


#################################################
# Scope and variable errors
#################################################


class LazyInitError(FlaxlikeError):
  """A value created by ``lazy_init`` depends on the input data.

  ``lazy_init`` computes variables from shapes alone, so a variable whose initial value
  is computed from the inputs (not only their shapes) cannot be created lazily.

  Fix: use ``init`` with concrete inputs, or make the initializer depend only on shapes.
  """

  def __init__(self, partial_val: Any, path: str | None = None):
    where = f'variable {path} ' if path else 'a variable '
    super().__init__(
      f'lazy_init: {where}(shape {getattr(partial_val, "shape", partial_val)}) depends on '
      'the values of inputs given only as jax.ShapeDtypeStruct. Pass those inputs as arrays '
      '(to lazy_init or init), or initialize the variable from input shapes only.'
    )


class InvalidRngError(FlaxlikeError, ValueError):
  """An RNG stream is missing or an rngs argument is not a valid key.

  Typical cause: a layer such as ``Dropout`` draws from the ``'dropout'`` stream, but
  ``apply`` was given no key for it. It is a ``ValueError`` too: Linen raises
  ``ValueError`` for an ``rngs`` dict holding something other than a key.

  Fix::

    model.apply(variables, x, rngs={'dropout': jax.random.key(0)})
  """

  def __init__(self, msg: str):
    super().__init__(msg)


class ApplyScopeInvalidVariablesTypeError(FlaxlikeError):
  """``apply`` was given variables that are not a mapping of collections.

  The first argument of ``apply`` must look like ``{'params': {...}, 'batch_stats':
  {...}}``: a mapping from collection names (str) to mappings.

  Fix: pass the whole dict returned by ``init``, e.g. ``model.apply(variables, x)``.
  """

  def __init__(self, detail: str = ''):
    msg = (
      'The first argument passed to an apply function should be a dictionary of '
      'collections. Each collection should be a dictionary with string keys.'
    )
    if detail:
      msg += f' {detail}'
    super().__init__(msg)


class ApplyScopeInvalidVariablesStructureError(FlaxlikeError):
  """``apply`` got ``{'params': {'params': ...}}``: one ``params`` level too many.

  This usually means ``variables['params']`` was wrapped in another dict, e.g.
  ``model.apply({'params': variables}, x)``.

  Fix: ``model.apply(variables, x)`` or ``model.apply({'params': variables['params']}, x)``.
  """

  def __init__(self, variables: Any):
    super().__init__(
      'Expected the first argument passed to an apply function to be of the form '
      '{"params": {...}}, but got a dict with an extra params layer: its "params" entry '
      f'itself holds a "params" key (top-level keys: {list(variables)}). If you passed '
      '{"params": variables}, pass variables itself, or {"params": variables["params"]}.'
    )


class ScopeParamNotFoundError(FlaxlikeError):
  """A parameter is read during ``apply`` but the given ``params`` do not contain it.

  Causes: the params come from a different model, a submodule was renamed, or the
  variables passed to ``apply`` are incomplete.

  Fix: re-run ``init`` for this model, or check the module path in the message against
  ``jax.tree_util.tree_map(jnp.shape, variables)``.
  """

  def __init__(self, param_name: str, scope_path: Any):
    super().__init__(
      f'Could not find parameter named "{param_name}" in scope "{_path_text(scope_path)}". '
      'The params passed to apply do not match this model: re-run init, or check the '
      'parameter tree against the module names.'
    )


class ScopeCollectionNotFound(FlaxlikeError):
  """A variable is read from a collection that was not passed to ``apply`` at all.

  Fix: pass the collection (e.g. ``{'params': ..., 'batch_stats': ...}``), or make it
  mutable (``mutable=['batch_stats']``) so it can be created. Inside a lifted transform
  (``nn.vmap``, ``nn.scan``, ...) only the collections its ``variable_axes``,
  ``variable_broadcast`` or ``variable_carry`` name are visible: list the collection there.
  """

  def __init__(self, col_name: str, var_name: str, scope_path: Any):
    super().__init__(
      f'Tried to access "{var_name}" from collection "{col_name}" in '
      f'"{_path_text(scope_path)}" but the collection is empty. Pass the "{col_name}" '
      f'collection to apply, or make it mutable with mutable=["{col_name}"]. Inside a '
      f'lifted transform (nn.vmap, nn.scan, ...), also list "{col_name}" in its '
      'variable_axes (or variable_broadcast / variable_carry), or it is not visible there.'
    )


class ScopeParamShapeError(FlaxlikeError):
  """An existing parameter's shape differs from the shape its initializer produces.

  The module's hyperparameters (e.g. ``features``) or the input shape differ from the
  ones the parameters were created with.

  Fix: use parameters created for this configuration, or change the configuration back.
  """

  def __init__(self, param_name: str, scope_path: Any, value_shape: Any, init_shape: Any):
    super().__init__(
      f'For parameter "{param_name}" in "{_path_text(scope_path)}", the given initializer '
      f'is expected to generate shape {tuple(init_shape)}, but the existing parameter it '
      f'received has shape {tuple(value_shape)}. The parameters were created for a '
      'different configuration or input shape: re-run init with this configuration, or '
      'load the parameters that were created for it.'
    )


class ScopeVariableNotFoundError(FlaxlikeError):
  """A variable (not a param) is read but does not exist and cannot be created.

  Fix: pass the collection holding it to ``apply``, or make the collection mutable.
  """

  def __init__(self, name: str, col: str, scope_path: Any):
    super().__init__(
      f'No Variable named "{name}" for collection "{col}" exists in '
      f'"{_path_text(scope_path)}". Pass it in the variables, or make "{col}" mutable '
      f'(mutable=["{col}"]) so it can be initialized.'
    )


class InvalidFilterError(FlaxlikeError):
  """A collection filter is not a bool, str, collection of str or ``DenyList``."""

  def __init__(self, filter_like: Any):
    super().__init__(
      f'Invalid Filter: "{filter_like}". A filter is True, False, a collection name, a '
      'list/tuple/set of names, or DenyList(...).'
    )


class InvalidScopeError(FlaxlikeError):
  """A scope (or a module bound to it) is used after its ``init``/``apply`` returned.

  Scopes are valid only inside the call that created them. Keeping a bound module
  around and calling it later would read variables that no longer exist.

  Fix: call ``apply`` again, or use ``module.bind(variables)`` for interactive use.
  """

  def __init__(self, scope_name: Any):
    super().__init__(
      f'The scope "{scope_name}" is no longer valid: it belongs to an init/apply call '
      'that has returned. Call apply again, or use module.bind(variables).'
    )


class ModifyScopeVariableError(FlaxlikeError):
  """A variable is written in a collection that is not mutable in this call.

  Fix: list the collection in ``mutable``, e.g.
  ``y, updates = model.apply(variables, x, mutable=['batch_stats'])``.
  """

  def __init__(self, col: str, variable_name: str, scope_path: Any):
    super().__init__(
      f'Cannot update variable "{variable_name}" in "{_path_text(scope_path)}" because '
      f'collection "{col}" is immutable. Pass mutable=["{col}"] to apply to allow it.'
    )


class JaxTransformError(FlaxlikeError):
  """A raw JAX transform (``jax.jit``, ``jax.vmap``, ...) was mixed with bound modules.

  A bound module's variables live outside the function being transformed, so JAX would
  capture them as leaked tracers.

  Fix: use the lifted transforms (``nn.jit``, ``nn.vmap``, ``nn.scan``, ...) inside
  modules, or transform the whole ``apply`` call instead.
  """

  def __init__(self):
    super().__init__(
      'Jax transforms and Flax models cannot be mixed: a bound module was used inside a '
      'raw JAX transform. Use the lifted nn.jit/nn.vmap/nn.scan/... inside modules, or '
      'transform the whole apply call.'
    )


class PartitioningUnspecifiedError(FlaxlikeError):
  """A transform removes a named partition axis but was not told its name.

  ``vmap``/``scan``/``remat_scan`` name the axis they add to ``Partitioned`` boxes with
  ``metadata_params[nn.PARTITION_NAME]``, or None when it is missing (Linen raises here
  instead). Removing the axis again (at ``apply``) without a name while the box says the
  axis is named means the variables were made by a transform configured differently.

  Fix: pass the same ``metadata_params`` to the transform at ``init`` and ``apply``::

    nn.scan(Block, variable_axes={'params': 0}, length=4,
            metadata_params={nn.PARTITION_NAME: 'layers'})
  """

  def __init__(self, target: Any, index: int | None = None):
    where = '' if index is None else f' (axis {index} is named {target.names[index]!r})'
    super().__init__(
      f'Trying to remove a named partition axis{where} of {target}, but "partition_name" '
      "is not specified in the transform's metadata_params. Pass "
      'metadata_params={"partition_name": name}, the same as when the variables were created.'
    )


class ShardingAxisNameError(FlaxlikeError, ValueError):
  """A variable's axis names cannot be laid out on the mesh.

  Causes: a logical axis name matches no rule while ``fallback=RulesFallback.RAISE_ERROR``;
  a name (or the mesh axis a rule maps it to) is not an axis of the mesh; a box has more
  names than its value has dimensions.

  Fix: add a rule for the logical name (``('mlp', 'model')``, or ``('mlp', None)`` for
  replicated), use mesh axis names the mesh has, or correct the names given to
  ``nn.with_logical_partitioning`` / ``nn.with_partitioning``.
  """

  def __init__(self, msg: str):
    super().__init__(msg)


#################################################
# Module errors
#################################################


class NameInUseError(FlaxlikeError):
  """Two params, variables or submodules of one module were given the same name.

  Fix: give them different names (``name=`` for submodules).
  """

  def __init__(self, key_type: str, value: str, module_name: str, path: str | None = None):
    where = f'Module {module_name} at {path}' if path else 'one module'
    super().__init__(
      f'Could not create {key_type} "{value}" in Module {module_name}: Name in use. '
      f'Params, variables and submodules of {where} need distinct names: rename one of '
      'them (submodules take name=...).'
    )


class AssignSubModuleError(FlaxlikeError):
  """A submodule was created outside ``setup`` and outside a ``@compact`` method.

  Fix: create submodules in ``setup()``, or decorate the method with ``@nn.compact``.
  """

  def __init__(self, cls: str, parent_path: str | None = None):
    where = f' (its parent is {parent_path})' if parent_path else ''
    super().__init__(
      f'Submodule {cls} must be defined in `setup()` or in a method wrapped in '
      f'`@compact`{where}: move its construction into setup(), or decorate the method '
      'that builds it with @nn.compact.'
    )


class SetAttributeInModuleSetupError(FlaxlikeError):
  """``setup`` assigned to a dataclass field; fields are fixed at construction."""

  def __init__(self, module_cls: str | None = None, attr_name: str | None = None):
    where = f' ({module_cls}.{attr_name})' if module_cls and attr_name else ''
    super().__init__(
      'Module construction attributes are frozen: setup() may add new attributes but '
      f'not reassign dataclass fields{where}. Pass the value when constructing the module, '
      'or store what setup() derives from it under a new attribute name.'
    )


class SetAttributeFrozenModuleError(FlaxlikeError):
  """An attribute of a bound module (or a submodule) was set outside ``setup``.

  Modules are immutable once bound or attached to a parent; a top-level module stays
  open until it is bound (as in Linen), since ``init``/``apply``/``bind`` work on a clone.

  Fix: use ``module.clone(attr=value)`` or ``module.replace``-style construction.
  """

  def __init__(self, module_cls: str, attr_name: str, attr_val: Any):
    super().__init__(
      f"Can't set {attr_name}={attr_val!r} for Module of type {module_cls}: Module "
      f'instance is frozen outside of setup method. Use module.clone({attr_name}=...) '
      'instead.'
    )


class MultipleMethodsCompactError(FlaxlikeError):
  """Kept for compatibility; several ``@compact`` methods per class are allowed."""

  def __init__(self):
    super().__init__('Only one method per class can be @compact.')


class ReservedModuleAttributeError(FlaxlikeError):
  """A Module subclass declared a field named ``parent`` or ``name``.

  Those two fields are added to every Module. Fix: rename the field.
  """

  def __init__(self, annotations: Any):
    super().__init__(
      f'properties `parent` and `name` are reserved: {annotations}. Rename the field (every '
      'Module already takes name= and parent= as keyword arguments).'
    )


class ApplyModuleInvalidMethodError(FlaxlikeError):
  """``method=`` of ``init``/``apply`` is neither a method name nor a callable.

  Fix: pass a method name (``method='encode'``), the function (``Model.encode``) or a
  ``fn(module, *args)``.
  """

  def __init__(self, method: Any):
    super().__init__(
      f'Cannot call apply(): {method} is not a valid function for apply(). Pass a '
      "method name such as 'encode', Model.encode, or a function fn(module, *args)."
    )


class CallCompactUnboundModuleError(FlaxlikeError):
  """A ``@compact`` method was called on a module that has no variables bound.

  Fix: call it through ``model.apply(variables, ...)``, ``model.init(...)`` or
  ``model.bind(variables)``.
  """

  def __init__(self):
    super().__init__(
      "Can't call compact methods on unbound modules: use model.init(...), "
      'model.apply(variables, ...) or model.bind(variables).'
    )


class CallSetupUnboundModuleError(FlaxlikeError):
  """``setup`` was reached on a module with no variables bound (see the compact error)."""

  def __init__(self):
    super().__init__(
      "Can't call compact methods on unbound modules: setup() runs only on modules "
      'bound by init, apply or bind.'
    )


class CallUnbindOnUnboundModuleError(FlaxlikeError):
  """``unbind()`` was called on a module that is not bound."""

  def __init__(self):
    super().__init__(
      "Can't call `unbind()` on unbound modules: only a module bound with "
      'module.bind(variables) (or inside init/apply) has variables to give back.'
    )


class CallShareScopeOnUnboundModuleError(FlaxlikeError):
  """``nn.share_scope`` was called with a module that is not bound yet.

  Fix: call it inside ``setup`` or a compact method, once both modules exist.
  """

  def __init__(self):
    super().__init__(
      "Can't call `share_scope` on unbound modules: call it from setup() or a @compact "
      'method of the parent, where both modules are bound (inside init/apply or after bind).'
    )


class InvalidInstanceModuleError(FlaxlikeError):
  """``init``/``apply`` was called on the Module class instead of an instance.

  Fix: ``Model(...).init(key, x)``, not ``Model.init(key, x)``.
  """

  def __init__(self):
    super().__init__(
      'Can only call init, init_with_output or apply methods on an instance of the '
      'Module class, not the Module class itself: write Model(...).init(...).'
    )


class IncorrectPostInitOverrideError(FlaxlikeError):
  """A Module subclass overrode ``__post_init__`` without calling ``super()``.

  Raised when such a module is first used (``init``/``apply``/``bind``, or a call of one
  of its methods), as in Linen; constructing it succeeds.

  Fix: end your ``__post_init__`` with ``super().__post_init__()``.
  """

  def __init__(self, module_cls: str | None = None):
    where = f' in {module_cls}' if module_cls else ''
    super().__init__(
      f'Overrode `.__post_init__()` without calling `super().__post_init__()`{where}: '
      'call super().__post_init__() at the end of your __post_init__.'
    )


class DescriptorAttributeError(FlaxlikeError):
  """A property (or another descriptor, e.g. a ``cached_property`` or a custom ``__get__``)
  of a module raised AttributeError, often a typo inside it.

  Without this error Python would retry the lookup through the module's ``__getattr__`` and
  report the property itself as missing.
  """

  def __init__(self, module_cls: str | None = None, prop: str | None = None, cause: Any = None):
    where = f' In {module_cls}.{prop}: {cause}' if module_cls and prop else ''
    super().__init__(
      'Trying to access a property that is accessing a non-existent attribute.'
      f'{where} Fix the attribute name used inside the property.'
    )


class TransformedMethodReturnValueError(FlaxlikeError):
  """A lifted-transformed method returned a Module or a Variable, which cannot escape."""

  def __init__(self, name: str):
    super().__init__(
      f'Transformed module method {name} cannot return Modules or Variables: return '
      'arrays (or pytrees of them), and read variables or call submodules inside the method.'
    )


class TransformTargetError(FlaxlikeError):
  """A lifted transform was applied to something that is neither a Module class nor a
  function taking a module first."""

  def __init__(self, target: Any):
    super().__init__(
      'Linen transformations must be applied to Modules classes or functions taking a '
      'Module instance as the first argument. The provided target is not a Module class '
      f'or callable: {target}. Pass the class (nn.vmap(nn.Dense, ...)) or a function '
      'fn(module, *args), not an instance.'
    )


#################################################
# Checkpoint and serialization errors
#################################################


class InvalidCheckpointError(FlaxlikeError):
  """A checkpoint for an older step than the newest one in the directory was saved.

  Fix: pass ``overwrite=True`` to replace newer checkpoints, or save a newer step.
  """

  def __init__(self, path: str, step: Any):
    super().__init__(
      f'Trying to save an outdated checkpoint at step: "{step}" and path: "{path}". '
      'Pass overwrite=True to replace newer checkpoints.'
    )


class AlreadyExistsError(FlaxlikeError):
  """A checkpoint file for this step exists already.

  Fix: pass ``overwrite=True``.
  """

  def __init__(self, path: str):
    super().__init__(
      f'Trying overwrite an existing file: "{path}". Pass overwrite=True to replace it.'
    )


class RestoreMismatchError(FlaxlikeError, ValueError):
  """A strict restore found a value that does not fit the target.

  ``from_state_dict``/``from_bytes``/``restore_checkpoint`` with ``strict=True`` require
  every array leaf to have the target's shape and dtype, every target key and list entry
  to be present, and the state to have no dict keys the target lacks. The usual cause is
  a checkpoint written by a different model configuration (other layer sizes, other param
  dtype) or for a different structure. A ``ValueError``, as Linen's structural errors are.

  Fix: build the target with the configuration the checkpoint was saved with, convert
  the state dict before restoring, or restore with ``strict=False`` to take the stored
  values as they are.
  """

  def __init__(self, path: str, expected: Any, found: Any, linen_message: str | None = None):
    # Where Linen raises a ValueError for the same mismatch, its wording comes first.
    lead = ''
    if linen_message:
      lead = linen_message + (' ' if linen_message.endswith('.') else '. ')
    super().__init__(
      f'{lead}Restored value at "{path}" does not match the target: expected {expected}, '
      f'found {found}. Build the target with the configuration the data was saved with, '
      'or restore with strict=False.'
    )


class CheckpointTargetMismatchError(RestoreMismatchError):
  """The ``target`` of ``restore_checkpoint`` does not have the tree of the Orbax checkpoint.

  Orbax reads a checkpoint only into a target with the saved structure: the same keys
  (dict keys, dataclass fields, list entries) and array shapes. The message names the
  checkpoint and every key that differs. The files themselves are fine, so this is not a
  ``CorruptCheckpointError``: ``fallback_to_good`` raises it at once instead of skipping
  to an older step (which would not fit the target either, or silently be older). The
  usual cause is a target built from another model configuration or code version.

  Fix: build the target with the configuration the checkpoint was saved with, or restore
  with ``target=None`` to get the raw state dict, convert it, and pass it to
  ``serialization.from_state_dict``. It subclasses ``RestoreMismatchError`` (a
  ``ValueError``); Orbax's own error is its ``__cause__``.
  """

  def __init__(self, path: str, mismatch: dict, cause: BaseException):
    def listed(keys: list) -> str:
      shown = ', '.join(keys[:10])
      return shown + (f' and {len(keys) - 10} more' if len(keys) > 10 else '')

    parts = []
    if mismatch.get('only_in_target'):
      parts.append(
        f'keys in the target but not the checkpoint: {listed(mismatch["only_in_target"])}'
      )
    if mismatch.get('only_in_checkpoint'):
      parts.append(
        f'keys in the checkpoint but not the target: {listed(mismatch["only_in_checkpoint"])}'
      )
    if mismatch.get('shapes'):
      shapes = [f'{k} (target {t}, checkpoint {c})' for k, t, c in mismatch['shapes']]
      parts.append(f'shapes differ at {listed(shapes)}')
    FlaxlikeError.__init__(
      self,
      f'Orbax checkpoint "{path}" does not match the target of restore_checkpoint: '
      f'{"; ".join(parts)} (Orbax failed with {type(cause).__name__}). The checkpoint is not '
      'corrupt, so fallback_to_good does not skip it. Build the target with the '
      'configuration the checkpoint was saved with, or restore with target=None and '
      'convert the raw state dict.',
    )


class MsgpackDecodeError(FlaxlikeError):
  """Bytes given to ``msgpack_restore``/``from_bytes``/``read_bytes`` are not a valid
  flaxlike/Flax msgpack document.

  Causes: a truncated or corrupted file (interrupted copy, disk error), a file in another
  format, a declared length larger than the data, an unsupported or object dtype, a
  nesting deeper than ``serialization.MAX_DEPTH``, or an array payload whose size does
  not match its shape and dtype. Nothing is allocated beyond what the input can back.

  Fix: re-copy or re-create the file; for checkpoints, restore an older step.
  """

  def __init__(self, problem: str, path: str | None = None, offset: int | None = None):
    where = []
    if path is not None:
      where.append(f'at "{path}"')
    if offset is not None:
      where.append(f'byte offset {offset}')
    suffix = f' ({", ".join(where)})' if where else ''
    super().__init__(
      f'Invalid msgpack data{suffix}: {problem}. The data is truncated, corrupted or not '
      'a flaxlike/Flax msgpack document; re-create it or restore an older copy.'
    )


class CorruptCheckpointError(MsgpackDecodeError):
  """A checkpoint file exists but cannot be decoded.

  Causes: the file was cut short (a copy or upload that stopped early, a full disk, a
  writer other than ``save_checkpoint`` killed mid-write) or its bytes were changed
  (storage or transfer errors). ``save_checkpoint`` itself never leaves a partial file
  under a checkpoint name, so a torn file points at the storage or at another tool.

  Fix: delete or re-copy the file, restore an older step with ``step=...``, or call
  ``restore_checkpoint(..., fallback_to_good=True)`` to take the newest checkpoint that
  decodes. It subclasses ``MsgpackDecodeError``, so handlers for that keep working.
  """

  def __init__(self, path: str, problem: Any):
    FlaxlikeError.__init__(
      self,
      f'Checkpoint file "{path}" is corrupt and cannot be restored: {problem} Delete or '
      're-copy it, restore an older step, or pass fallback_to_good=True to '
      'restore_checkpoint.',
    )


class CheckpointDigestMismatchError(CorruptCheckpointError):
  """A checkpoint file's bytes differ from the SHA-256 digest written beside it.

  ``save_checkpoint`` writes ``.<name>.sha256`` next to every checkpoint file and
  ``restore_checkpoint`` checks it, so bytes changed on storage after the save (bit rot, a
  bad copy, a disk or transfer error) are caught even when they still decode. Either the
  checkpoint or its digest file changed; nothing tells which, so neither is trusted.

  Fix: re-copy both files from a good source, restore an older step with ``step=...``, or
  call ``restore_checkpoint(..., fallback_to_good=True)`` to take the newest checkpoint
  that verifies. It subclasses ``CorruptCheckpointError``.
  """

  def __init__(self, path: str, digest_path: str, expected: str, found: str):
    FlaxlikeError.__init__(
      self,
      f'Checkpoint file "{path}" is corrupt: its SHA-256 digest is {found}, but the digest '
      f'recorded at save time in "{digest_path}" is {expected}, so its bytes changed after '
      'it was written. Re-copy the checkpoint (and its digest file) from a good source, '
      'restore an older step, or pass fallback_to_good=True to restore_checkpoint.',
    )


class CorruptOrbaxCheckpointError(CorruptCheckpointError):
  """An Orbax checkpoint directory exists, but Orbax fails to read it.

  Causes: files of the checkpoint were deleted, cut short or changed on storage (a
  partial copy or sync of the directory), it was written by an Orbax version that the
  installed one cannot read. A ``target`` whose tree does not match the checkpoint's
  raises ``CheckpointTargetMismatchError`` instead. Orbax commits a checkpoint by renaming
  its finished temporary directory, so a save that was interrupted never leaves one under
  a checkpoint name.

  Fix: re-copy the directory from a good source, restore an older step with ``step=...``,
  or call ``restore_checkpoint(..., fallback_to_good=True)`` to take the newest checkpoint
  that reads. It subclasses ``CorruptCheckpointError``; Orbax's own error is its
  ``__cause__``.
  """

  def __init__(self, path: str, cause: BaseException):
    FlaxlikeError.__init__(
      self,
      f'Orbax checkpoint "{path}" cannot be read: Orbax failed with '
      f'{type(cause).__name__}: {cause} Re-copy the directory, restore an older step, or '
      'pass fallback_to_good=True to restore_checkpoint.',
    )


class CheckpointFormatError(FlaxlikeError):
  """A checkpoint exists but the installed packages cannot read its format.

  ``restore_checkpoint`` never skips a checkpoint it cannot read (a training loop would
  silently start over): an Orbax checkpoint directory without ``orbax-checkpoint``
  installed, a directory named like a checkpoint with a layout nothing here knows, or a
  file in another format (a pickle, a zip archive, ...) raise this error instead.

  Fix: follow the message: install the reader it names (``pip install 'flaxlike[orbax]'``
  for Orbax checkpoints), convert the file, or move it out of the checkpoint directory.
  """

  def __init__(self, path: str, looks_like: str, fix: str):
    super().__init__(f'Cannot restore the checkpoint at "{path}": this is {looks_like}. {fix}')


class CheckpointVanishedError(FlaxlikeError, FileNotFoundError):
  """A checkpoint was deleted while ``restore_checkpoint`` was reading it.

  Another process removed it (``save_checkpoint``'s clean-up of old steps with ``keep``,
  or ``overwrite=True`` removing newer steps) between listing the directory and opening
  the file. When restoring the latest checkpoint of a directory, the directory is listed
  again and the new latest one is taken; this error means the named checkpoint was asked
  for explicitly, or the checkpoints kept disappearing.

  Fix: retry the restore, or stop the other job from deleting checkpoints while this one
  reads them. It subclasses ``FileNotFoundError``, so existing handlers keep working.
  """

  def __init__(self, path: str, detail: str = ''):
    super().__init__(
      f'Checkpoint "{path}" was deleted while it was being restored{detail}; another '
      'process is removing checkpoints from this directory. Retry the restore, or stop '
      'the other job from deleting checkpoints while this one reads them.'
    )


#################################################
# Warnings
#################################################


class CheckpointCleanupWarning(UserWarning):
  """``save_checkpoint`` committed the new checkpoint but could not tidy the directory.

  Removing old checkpoints (``keep``), their digest files or leftover temporary files
  failed, or the digest of the new checkpoint could not be committed. The new checkpoint
  is complete and restorable; the message names each file and the reason.

  Fix: check the directory's permissions and free space, then delete the named files by
  hand (or let the next ``save_checkpoint`` retry).
  """


class CheckpointFallbackWarning(UserWarning):
  """``restore_checkpoint(..., fallback_to_good=True)`` skipped corrupt checkpoints.

  The message names every skipped file and the checkpoint restored instead. Fix: delete or
  re-copy the skipped files once you know why they broke.
  """


#################################################
# Cursor errors
#################################################


class CursorFindError(FlaxlikeError):
  """``Cursor.find`` found no object, or more than one, for which ``cond_fn`` is True.

  Fix: make ``cond_fn`` match exactly one path (e.g. test the full ``'/'``-joined path),
  or use ``Cursor.find_all`` to visit every match.
  """

  def __init__(self, cursor: Any = None, cursor2: Any = None):
    if cursor is not None and cursor2 is not None:
      super().__init__(
        'More than one object found given the conditions of the cond_fn. The first two '
        f'objects found have the following paths: {cursor._path} and {cursor2._path} '
        '(make cond_fn match one path, or use find_all to visit every match).'
      )
    else:
      super().__init__(
        'No object found given the conditions of the cond_fn. cond_fn(path, value) is '
        "called on every node below the root with a '/'-joined path such as 'Dense_0/bias'."
      )


class TraverseTreeError(FlaxlikeError):
  """A tree traversal got both or neither of ``update_fn`` and ``cond_fn``.

  ``Cursor.apply_update`` passes an ``update_fn`` and ``Cursor.find_all`` a ``cond_fn``;
  exactly one of them must be given.
  """

  def __init__(self, update_fn: Any, cond_fn: Any):
    if update_fn is None and cond_fn is None:
      super().__init__(
        'Both update_fn and cond_fn are None. Exactly one of them must be None. Pass '
        'an update_fn (apply_update) or a cond_fn (find_all).'
      )
    else:
      super().__init__(
        'Both update_fn and cond_fn are not None. Exactly one of them must be not None.'
      )


class CursorIterationError(FlaxlikeError, TypeError, NotImplementedError):
  """Iterating (``for child in c``, ``reversed(c)``) over a cursor that wraps neither a
  tuple nor a list.

  It is a ``TypeError`` (the object is not a sequence) and, as in Flax, a
  ``NotImplementedError``, so either ``except`` clause catches it.

  Fix: walk a dict by key (``c[key]``), or visit nodes with ``c.find_all(cond_fn)``.
  """

  def __init__(self, method: str, obj_type: type):
    super().__init__(
      f'{method} method only implemented for tuples and lists, not type {obj_type}. Walk a '
      f'dict by key (c[key]) or visit its nodes with c.find_all(cond_fn).'
    )
