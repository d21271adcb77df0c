"""The ``fgvc-edge`` command line: thin commands over the library, one module per command.

Every command parses and checks its options, then calls one library function. Errors the user can fix
(:class:`fgvc_edge.errors.FgvcError`) print as one line on stderr with exit code 2 — never a traceback.
Heavy libraries are imported inside the commands, so ``--help`` is instant and a runtime-only install
still runs ``predict`` and artifact benches.
"""
import typer

from fgvc_edge.cli import bench, build, calibrate, eval, export, import_cmd, models, predict, prune, reparam, train
from fgvc_edge.cli._common import OneLineErrorGroup, command

app = typer.Typer(
    name="fgvc-edge",
    help="Fine-grained classifiers from PyTorch to Jetson: export, quantize, build, run, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrorGroup,
    rich_markup_mode="rich",
)

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


def main() -> None:
    app()
