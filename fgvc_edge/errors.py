"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""
import contextlib
import errno
import importlib
import json
import os
from types import ModuleType
from typing import Iterator, Optional

class FgvcError(Exception):
    """Base class of every error that is the user's to fix (bad input, missing file, missing extra)."""

    exit_code = 2


class UserInputError(FgvcError, ValueError):
    """Bad argument, missing or corrupt file, unwritable output."""


class MissingExtraError(FgvcError, ImportError):
    """An optional dependency group is not installed."""


class StageError(FgvcError):
    """A library we call (ONNX Runtime, its quantizer, the FP16 converter, onnxsim, torch.onnx) failed at a
    known stage; the library's own exception is chained as the cause (``--debug`` shows it)."""


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def library_stage(stage: str) -> Iterator[None]:
    """Turn whatever a third-party library raises inside the block into ``StageError("<stage> failed: …")``."""
    try:
        yield
    except (FgvcError, MemoryError):
        raise
    except Exception as exc:  # each library raises its own types (onnxruntime's Fail, onnx's ValidationError…)
        if _machine_failure(exc):
            raise  # a full disk or exhausted memory is the machine's: the CLI words it (system_error_message)
        raise StageError("{} failed: {}".format(stage, first_line(exc))) from exc


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


def not_a_file(path: str, expected: str) -> UserInputError:
    """The error for a folder given where ``expected`` (e.g. "an ONNX file") is needed; a checkpoint folder is
    named as one, with the command that exports it."""
    record_path = os.path.join(str(path), "fgvc.json")
    if os.path.isfile(record_path):
        try:
            with open(record_path, encoding="utf-8") as fh:
                model = json.load(fh).get("model") or "MODEL"
        except (OSError, ValueError, AttributeError):
            model = "MODEL"
        return UserInputError("{} is a checkpoint folder, not {}; export it first: fgvc-edge export {} -c {}".format(
            path, expected, model, path))
    return UserInputError("{} is a folder, not {}".format(path, expected))


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
        return "out of memory ({}); try a smaller --batch or --input-size".format(first_line(exc)[:200])
    return None


def _machine_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _ERRNO_HINTS
    return system_error_message(exc) is not None
