"""Shared CLI plumbing: the error boundary and the option aliases every command reuses.

Every refusal is one line on stderr with exit code 2 — ours (:class:`FgvcError`), the machine's (a full disk,
an unwritable folder, exhausted memory: :func:`fgvc_edge.errors.system_error_message`, the one place they are
translated) and the parser's (an option out of range, a missing argument: :class:`OneLineErrorGroup`).
Anything else is a bug or an unwrapped library failure: one line too, exit code 1, and ``--debug`` (or
``FGVC_EDGE_DEBUG=1``) lets every error through with its traceback.
"""
import functools
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup
from typing_extensions import Annotated

from fgvc_edge.contract.limits import MAX_BATCH, MAX_CLASSES, MAX_INPUT_SIZE
from fgvc_edge.errors import FgvcError, first_line, system_error_message

T = TypeVar("T")

# Wide enough for the bench table when output goes to a file or CI log.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so a user error becomes one line on stderr and its exit code (2), no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        # torch's deprecation notices (TorchScript, legacy exporter) are ours to act on, not the user's.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            return fn(*args, **kwargs)
        except FgvcError as exc:
            if debug_enabled():
                raise
            _print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", markup=False)
            raise typer.Exit(130) from None
        except Exception as exc:  # a bug of ours or an unwrapped library failure: say where the trace is
            if debug_enabled() or isinstance(exc, (typer.Exit, typer.Abort, typer.TyperException)):
                raise
            message = system_error_message(exc)  # the machine's failure (full disk, no memory): the user's to fix
            if message is not None:
                _print_error(message)
                raise typer.Exit(2) from None
            err_console.print("error: unexpected {}: {} (run with --debug or FGVC_EDGE_DEBUG=1 for the "
                              "traceback)".format(type(exc).__name__, first_line(exc)), markup=False, highlight=False,
                              soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


DEBUG_ENV = "FGVC_EDGE_DEBUG"
_debug = False


def set_debug(on: bool) -> None:
    """The global ``--debug`` option: errors propagate with their traceback instead of one line."""
    global _debug
    _debug = on


def debug_enabled() -> bool:
    return _debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def print_json(payload: Dict[str, Any]) -> None:
    """``--json``: one JSON object on stdout describing what a command wrote or measured."""
    typer.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))


def _print_error(message: str) -> None:
    err_console.print("error: {}".format(message), markup=False, highlight=False, soft_wrap=True)


# The parser's error type (click's ClickException; Typer >= 0.26 vendors click, older releases use click).
_PARSER_ERROR = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException")


def _one_line(exc: Exception) -> str:
    message = " ".join(exc.format_message().split()).rstrip(".")
    param = getattr(exc, "param", None)
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None or high is not None:
        message += "; valid: {}".format(
            "{} to {}".format(low, high) if low is not None and high is not None
            else ">= {}".format(low) if low is not None else "<= {}".format(high))
    ctx = getattr(exc, "ctx", None)
    return message + (" (see `{} --help`)".format(ctx.command_path) if ctx is not None else "")


class OneLineErrorGroup(TyperGroup):
    """The command group, with the parser's refusals (range, missing or unknown option) printed as one line
    like ours, instead of Typer's usage box; exit code 2."""

    def main(self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _PARSER_ERROR as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `fgvc-edge`: the help, as Typer prints it
                exc.show()
                sys.exit(exc.exit_code)
            _print_error(_one_line(exc))
            sys.exit(2)
        except typer.Abort:
            _print_error("aborted")
            sys.exit(1)
        # Without standalone mode the parser returns the exit code of a typer.Exit instead of exiting.
        sys.exit(result if isinstance(result, int) else 0)


# -- option aliases (Annotated, shared by every command that takes them) ---------------------------------
ModelArg = Annotated[str, typer.Argument(help="A registered model name (see `fgvc-edge models`).", show_default=False)]
CheckpointOpt = Annotated[
    Optional[Path], typer.Option("--checkpoint", "-c", help="fgvc-edge checkpoint folder (or its model.safetensors).")
]
NumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", min=1, max=MAX_CLASSES, help="Classes of the head (default: the model's).")]
InputSizeOpt = Annotated[Optional[int], typer.Option("--input-size", min=16, max=MAX_INPUT_SIZE, help="Square input size (default: the model's).")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch", min=1, max=MAX_BATCH, help="Fixed batch (default 1).")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Output path.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an artifact of another model or checkpoint at the output path.")]
ModeOpt = Annotated[
    Optional[str], typer.Option("--mode", help="Inference variant of models that have several (CMAL-Net: raw+aoval, raw).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON object describing what was written (for scripts).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads (default: all cores).")]


def check_artifact_output(path: Optional[Path]) -> None:
    """Refuse, before any work, an artifact output (and its sidecar) that cannot be written."""
    from fgvc_edge._io import check_output_file
    from fgvc_edge.contract.sidecar import sidecar_path

    if path is not None:
        check_output_file(str(path), sidecar_path(str(path)))


def renamed(value: Optional[T], old_value: Optional[T], name: str, old_name: str) -> Optional[T]:
    """The value of option ``name``, also accepted under its former ``old_name`` (a hidden alias, so scripts
    written against the old name keep working); both at once with different values is refused."""
    from fgvc_edge.errors import UserInputError

    if old_value is None:
        return value
    if value is not None and value != old_value:
        raise UserInputError("{} and {} are the same option ({} is its old name); give it once".format(
            name, old_name, old_name))
    return old_value
