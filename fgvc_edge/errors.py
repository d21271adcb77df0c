"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""
import errno
import importlib
import os
from types import ModuleType
from typing import Optional


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


# Allocation failures as the libraries word them (torch's CPU/CUDA allocators, ONNX Runtime, C++ new).
_OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "failed to allocate memory", "bad_alloc",
                  "cannot allocate memory")
_ERRNO_HINTS = {
    errno.ENOSPC: "no space left on the device; free some space and run again",
    errno.EDQUOT: "disk quota exceeded; free some space and run again",
    errno.EACCES: "permission denied; choose a folder you can write",
    errno.EPERM: "operation not permitted; choose a folder you can write",
    errno.EROFS: "read-only file system; choose a folder you can write",
    errno.ENOMEM: "out of memory; try a smaller --batch or --input-size",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) or use fewer --workers",
}


def system_error_message(exc: BaseException) -> Optional[str]:
    """One line for a failure of the machine rather than of the program — a full disk, an unwritable
    folder, exhausted memory — or None for anything else (a bug keeps its traceback)."""
    if isinstance(exc, MemoryError):
        return "out of memory; try a smaller --batch or --input-size"
    if isinstance(exc, OSError) and exc.errno is not None:
        where = exc.filename if exc.filename is not None else None
        hint = _ERRNO_HINTS.get(exc.errno, exc.strerror or os.strerror(exc.errno))
        return "{}{}".format("{}: ".format(where) if where else "", hint)
    text = str(exc).lower()
    if any(pattern in text for pattern in _OUT_OF_MEMORY):
        return "out of memory ({}); try a smaller --batch or --input-size".format(_first_line(exc))
    return None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
