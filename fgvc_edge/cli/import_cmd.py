"""`fgvc-edge import`: a checkpoint trained with a paper's official code → an fgvc-edge checkpoint folder."""
from pathlib import Path

import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import ModelArg, NumClassesOpt, console


def import_cmd(
    model: ModelArg,
    official: Annotated[
        Path, typer.Argument(help="The official checkpoint (e.g. CMAL-Net's model.pth).", show_default=False)
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint folder to write.", show_default=False)],
    num_classes: NumClassesOpt = None,
) -> None:
    """Read OFFICIAL without running pickled code, load it into MODEL, write an fgvc-edge checkpoint."""
    from fgvc_edge.checkpoint import check_checkpoint_output, save_checkpoint
    from fgvc_edge.importers import import_official_checkpoint

    check_checkpoint_output(str(output))
    with console.status("importing {} …".format(official)):
        net = import_official_checkpoint(model, str(official), num_classes=num_classes)
        folder = save_checkpoint(net, str(output))
    console.print(
        "wrote {} ({}, {} classes, {:,} parameters)".format(
            folder, model, net.config.num_classes, sum(p.numel() for p in net.parameters())
        ),
        highlight=False,
    )
