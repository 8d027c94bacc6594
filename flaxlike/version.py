"""The flaxlike release number, defined here only (``pyproject.toml`` reads it from here).

Example:

  >>> import flaxlike
  >>> from flaxlike import version
  >>> flaxlike.__version__ == version.__version__
  True
"""

__version__ = '0.1.0'
