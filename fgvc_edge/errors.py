"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""
import contextlib
import importlib
from types import ModuleType
from typing import Iterator


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
