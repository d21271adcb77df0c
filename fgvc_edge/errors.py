"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""
import importlib
from types import ModuleType


class FgvcError(Exception):
    """Base class of every error that is the user's to fix (bad input, missing file, missing extra)."""

    exit_code = 2


class UserInputError(FgvcError, ValueError):
    """Bad argument, missing or corrupt file, unwritable output."""


class MissingExtraError(FgvcError, ImportError):
    """An optional dependency group is not installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or fail with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            "this needs '{}' (not importable: {}); install it with: pip install 'fgvc-edge[{}]'".format(
                module, exc, extra
            )
        ) from None
