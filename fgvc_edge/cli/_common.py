"""Shared CLI plumbing: the error boundary and the option aliases every command reuses."""
import functools
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, TypeVar

import typer
from rich.console import Console
from typing_extensions import Annotated

from fgvc_edge.errors import FgvcError, first_line

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
            err_console.print("error: {}".format(exc), markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", markup=False)
            raise typer.Exit(130) from None
        except MemoryError:
            err_console.print("error: out of memory; try a smaller --batch or --input-size", markup=False)
            raise typer.Exit(2) from None
        except Exception as exc:  # a bug of ours or an unwrapped library failure: say where the trace is
            if debug_enabled() or isinstance(exc, (typer.Exit, typer.Abort, typer.TyperException)):
                raise
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


# -- option aliases (Annotated, shared by every command that takes them) ---------------------------------
ModelArg = Annotated[str, typer.Argument(help="A registered model name (see `fgvc-edge models`).", show_default=False)]
CheckpointOpt = Annotated[
    Optional[Path], typer.Option("--checkpoint", "-c", help="fgvc-edge checkpoint folder (or its model.safetensors).")
]
NumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", min=1, help="Classes of the head (default: the model's).")]
InputSizeOpt = Annotated[Optional[int], typer.Option("--input-size", min=16, help="Square input size (default: the model's).")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Output path.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an artifact of another model or checkpoint at the output path.")]
ModeOpt = Annotated[
    Optional[str], typer.Option("--mode", help="Inference variant of models that have several (CMAL-Net: raw+aoval, raw).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON object describing what was written (for scripts).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads (default: all cores).")]


def fail_if_exists_as_dir(path: Optional[Path]) -> None:
    from fgvc_edge.errors import UserInputError

    if path is not None and path.is_dir():
        raise UserInputError("output {} is a folder; give a file path".format(path))


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
