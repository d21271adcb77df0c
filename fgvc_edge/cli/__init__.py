"""The ``fgvc-edge`` command line: thin commands over the library, one module per command.

Every command parses and checks its options, then calls one library function. Errors the user can fix
(:class:`fgvc_edge.errors.FgvcError`, failures of the libraries we call included) print as one line on stderr
with exit code 2 — never a traceback; anything else prints one line too and says that ``--debug`` (or
``FGVC_EDGE_DEBUG=1``) shows the traceback. Heavy libraries are imported inside the commands and model names
are checked against torch-free configs, so ``--help``, ``models`` and a mistyped name answer in well under a
second, and a runtime-only install still runs ``predict`` and artifact benches.
"""
import typer
from typing_extensions import Annotated

from fgvc_edge.cli import (
    bench, build, cache, calibrate, eval, export, import_cmd, models, predict, prune, reparam, serve, train,
)
from fgvc_edge.cli._common import DEBUG_ENV, OneLineErrorGroup, command, set_debug

app = typer.Typer(
    name="fgvc-edge",
    help="Fine-grained classifiers from PyTorch to Jetson: export, quantize, build, run, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrorGroup,
    rich_markup_mode="rich",
)


@app.callback()
def global_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of any error (or set {}=1).".format(DEBUG_ENV))
    ] = False,
) -> None:
    """Options for every command."""
    set_debug(debug)


app.command("models")(command(models.models_cmd))
app.command("export")(command(export.export_cmd))
app.command("reparam")(command(reparam.reparam_cmd))
app.command("prune")(command(prune.prune_cmd))
app.command("import")(command(import_cmd.import_cmd))
app.command("calibrate")(command(calibrate.calibrate_cmd))
app.command("build")(command(build.build_cmd))
app.command("train")(command(train.train_cmd))
app.command("eval")(command(eval.eval_cmd))
app.command("predict")(command(predict.predict_cmd))
app.command("bench")(command(bench.bench_cmd))
app.command("serve")(command(serve.serve_cmd))
app.command("triton-repo")(command(serve.triton_repo_cmd))
app.add_typer(cache.app, name="cache")


def main() -> None:
    app()
