"""`fgvc-edge reparam`: a model or checkpoint → deploy checkpoint (ACCB → one 3×3 conv; optionally BN folded)."""
import typer
from rich.table import Table
from typing_extensions import Annotated

from fgvc_edge.cli._common import (
    CheckpointOpt,
    InputSizeOpt,
    JsonOpt,
    ModeOpt,
    ModelArg,
    NumClassesOpt,
    OutputOpt,
    console,
    err_console,
    print_json,
)
from fgvc_edge.errors import UserInputError


def reparam_cmd(
    model: ModelArg,
    checkpoint: CheckpointOpt = None,
    fold_bn: Annotated[bool, typer.Option("--fold-bn", help="Also fold every Conv→BatchNorm pair into the conv.")] = False,
    mode: ModeOpt = None,
    num_classes: NumClassesOpt = None,
    input_size: InputSizeOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reparameterize MODEL's blocks for deployment and write the result as a checkpoint folder (-o)."""
    from fgvc_edge.models.configs import variant_kwargs

    variant_kwargs(model, mode)  # a bad name or mode fails here, before torch loads
    if output is None:
        raise UserInputError("give the output checkpoint folder with -o")
    from fgvc_edge.transforms.reparam import reparameterize_checkpoint

    with (err_console if as_json else console).status("reparameterizing {} …".format(model)):
        result = reparameterize_checkpoint(
            model, str(output), checkpoint=checkpoint and str(checkpoint), fold_bn=fold_bn,
            num_classes=num_classes, input_size=input_size, mode=mode,
        )
    report = result.report
    if as_json:
        print_json({"path": result.folder, "model": model, "input_size": result.input_size,
                    "params_before": result.params_before, "params_after": result.params_after,
                    "macs_before": result.macs_before, "macs_after": result.macs_after,
                    "blocks": report.blocks, "folded": [list(pair) for pair in report.folded],
                    "rel_error": report.rel_error})
        return
    table = Table(title="{} @{}".format(model, result.input_size))
    for column in ("", "params M", "GMACs"):
        table.add_column(column, justify="right")
    table.add_row("before", "{:.3f}".format(result.params_before / 1e6), "{:.3f}".format(result.macs_before / 1e9))
    table.add_row("after", "{:.3f}".format(result.params_after / 1e6), "{:.3f}".format(result.macs_after / 1e9))
    console.print(table)
    console.print(
        "{} block(s) reparameterized, {} Conv→BN pair(s) folded; output rel. error {:.1e}".format(
            len(report.blocks), len(report.folded), report.rel_error
        ),
        highlight=False,
    )
    console.print("wrote {}".format(result.folder), highlight=False)
