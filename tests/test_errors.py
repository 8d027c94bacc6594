"""The error catalogue: every class is documented, named as in Linen and raised somewhere."""

import inspect
import pathlib
import re

import pytest

from flaxlike import errors

PACKAGE = pathlib.Path(errors.__file__).parent
# Linen defines this class but never raises it (several compact methods are allowed);
# it stays for code that imports it.
NEVER_RAISED = {'MultipleMethodsCompactError'}

ERROR_CLASSES = [
  cls
  for _, cls in inspect.getmembers(errors, inspect.isclass)
  if issubclass(cls, errors.FlaxlikeError) and cls is not errors.FlaxlikeError
]

LINEN_NAMES = [
  'ScopeParamShapeError',
  'ScopeParamNotFoundError',
  'ScopeCollectionNotFound',
  'ScopeVariableNotFoundError',
  'ModifyScopeVariableError',
  'NameInUseError',
  'AssignSubModuleError',
  'SetAttributeInModuleSetupError',
  'SetAttributeFrozenModuleError',
  'MultipleMethodsCompactError',
  'ReservedModuleAttributeError',
  'ApplyModuleInvalidMethodError',
  'CallCompactUnboundModuleError',
  'CallSetupUnboundModuleError',
  'CallUnbindOnUnboundModuleError',
  'CallShareScopeOnUnboundModuleError',
  'InvalidRngError',
  'ApplyScopeInvalidVariablesTypeError',
  'ApplyScopeInvalidVariablesStructureError',
  'JaxTransformError',
  'LazyInitError',
  'InvalidInstanceModuleError',
  'IncorrectPostInitOverrideError',
  'DescriptorAttributeError',
  'TransformedMethodReturnValueError',
  'TransformTargetError',
  'InvalidScopeError',
  'InvalidFilterError',
  'PartitioningUnspecifiedError',
  'InvalidCheckpointError',
  'AlreadyExistsError',
]


def _library_source() -> str:
  return '\n'.join(p.read_text() for p in PACKAGE.rglob('*.py') if p.name != 'errors.py')


def test_every_linen_error_name_exists():
  missing = [name for name in LINEN_NAMES if not hasattr(errors, name)]
  assert not missing
  assert errors.FlaxError is errors.FlaxlikeError


@pytest.mark.parametrize('cls', ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_is_documented_and_raised(cls):
  doc = inspect.getdoc(cls) or ''
  assert len(doc) > 40, f'{cls.__name__} needs a docstring explaining cause and fix'
  if cls.__name__ in NEVER_RAISED:
    return
  # Raised directly, or built by a helper that the raising site calls (`raise self.fail(...)`).
  pattern = rf'(raise|return)\s+(errors\.)?{cls.__name__}\('
  assert re.search(pattern, _library_source()), f'{cls.__name__} is never raised'
