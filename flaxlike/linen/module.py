"""The Linen-style Module: a dataclass that declares variables through a bound Scope.

The public face of the Module system; the code lives in the private package
``flaxlike.linen._module`` (its README and docs/design/module-lifecycle.md describe the
lifecycle and the package's one-way layering).

1. **Construction.** Every subclass is a dataclass with two extra keyword-only fields,
   ``parent`` and ``name``. ``__post_init__`` finds the parent (the module whose method
   is running), names the module (``ClassName_N`` in compact methods) and pushes its
   child scope. Top-level modules have no parent and no scope: they are unbound.
2. **Binding.** ``init``/``apply``/``bind`` clone the top-level module with a root
   scope as parent. Submodules bind themselves as they are constructed (compact) or as
   they are assigned (setup), and modules passed in fields are adopted.
3. **Calls.** Each user method is wrapped once, at class creation: the wrapper runs
   ``setup`` lazily on first use, tracks which module is running, and after the
   outermost compact call resets names so the next call reuses the same scopes.
"""

from flaxlike.core.scope import Variable as Variable
from flaxlike.linen._module.calls import compact as compact
from flaxlike.linen._module.calls import compact_name_scope as compact_name_scope
from flaxlike.linen._module.calls import nowrap as nowrap
from flaxlike.linen._module.context import InterceptorContext as InterceptorContext
from flaxlike.linen._module.context import context as _context  # noqa: F401
from flaxlike.linen._module.context import disable_named_call as disable_named_call
from flaxlike.linen._module.context import enable_named_call as enable_named_call
from flaxlike.linen._module.context import intercept_methods as intercept_methods
from flaxlike.linen._module.context import override_named_call as override_named_call
from flaxlike.linen._module.functional import apply as apply
from flaxlike.linen._module.functional import init as init
from flaxlike.linen._module.functional import init_with_output as init_with_output
from flaxlike.linen._module.functional import merge_param as merge_param
from flaxlike.linen._module.functional import share_scope as share_scope
from flaxlike.linen._module.module_class import Module as Module
from flaxlike.linen._module.state import SetupState as SetupState

# `_context` (above) is the per-thread call context under Linen's name,
# flax.linen.module._context, as this module held it before the package split: code that
# inspects the module stack reads it here.

__all__ = [
  'Module',
  'SetupState',
  'compact',
  'nowrap',
  'compact_name_scope',
  'share_scope',
  'apply',
  'init',
  'init_with_output',
  'merge_param',
  'intercept_methods',
  'InterceptorContext',
  'Variable',
  'enable_named_call',
  'disable_named_call',
  'override_named_call',
]
