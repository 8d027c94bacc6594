"""Tools for working on flaxlike itself (not part of the public API).

``python -m flaxlike._devtools.imports`` checks the import structure of the package.
"""
