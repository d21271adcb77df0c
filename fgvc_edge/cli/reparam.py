"""`fgvc-edge reparam`: a model or checkpoint → deploy checkpoint (ACCB → one 3×3 conv; optionally BN folded)."""
import typer
from rich.table import Table
from typing_extensions import Annotated

from fgvc_edge.cli._common import CheckpointOpt, InputSizeOpt, ModelArg, NumClassesOpt, OutputOpt, console
from fgvc_edge.errors import UserInputError


def reparam_cmd(
    model: ModelArg,
    checkpoint: CheckpointOpt = None,
    fold_bn: Annotated[bool, typer.Option("--fold-bn", help="Also fold every Conv→BatchNorm pair into the conv.")] = False,
    num_classes: NumClassesOpt = None,
    input_size: InputSizeOpt = None,
    output: OutputOpt = None,
) -> None:
    """Reparameterize MODEL's blocks for deployment and write the result as a checkpoint folder (-o)."""
    from fgvc_edge.transforms.reparam import reparameterize_checkpoint

    if output is None:
        raise UserInputError("give the output checkpoint folder with -o")
    with console.status("reparameterizing {} …".format(model)):
        result = reparameterize_checkpoint(
            model, str(output), checkpoint=checkpoint and str(checkpoint), fold_bn=fold_bn,
            num_classes=num_classes, input_size=input_size,
        )
    table = Table(title="{} @{}".format(model, result.input_size))
    for column in ("", "params M", "GMACs"):
        table.add_column(column, justify="right")
    table.add_row("before", "{:.3f}".format(result.params_before / 1e6), "{:.3f}".format(result.macs_before / 1e9))
    table.add_row("after", "{:.3f}".format(result.params_after / 1e6), "{:.3f}".format(result.macs_after / 1e9))
    console.print(table)
    report = result.report
    console.print(
        "{} block(s) reparameterized, {} Conv→BN pair(s) folded; output rel. error {:.1e}".format(
            len(report.blocks), len(report.folded), report.rel_error
        ),
        highlight=False,
    )
    console.print("wrote {}".format(result.folder), highlight=False)
