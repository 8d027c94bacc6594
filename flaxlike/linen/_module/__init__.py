"""The Module system, private: ``flaxlike.linen.module`` is its public face.

Imports run one way, bottom to top: ``state``, ``context``, ``naming`` -> ``calls`` (method
wrapping) -> ``dataclass_transform`` -> ``module_class`` (the ``Module`` class) ->
``functional``. README.md here says what each file holds; the lifecycle itself is described
in docs/design/module-lifecycle.md.

This file imports nothing, so importing one layer never drags in the layers above it.
"""
