"""fgvc-edge: fine-grained image classifiers from PyTorch to Jetson.

Importing the package is cheap and torch-free; the toolkit (models, export, bench) is imported
from its sub-packages, the deployable runtime from :mod:`fgvc_edge.runtime`.
"""
from fgvc_edge._version import __version__
from fgvc_edge.errors import FgvcError, MissingExtraError, UserInputError

__all__ = ["__version__", "FgvcError", "MissingExtraError", "UserInputError"]
