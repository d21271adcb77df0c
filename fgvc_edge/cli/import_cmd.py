"""`fgvc-edge import`: a checkpoint trained with a paper's official code → an fgvc-edge checkpoint folder."""
from pathlib import Path

import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import InputSizeOpt, JsonOpt, ModeOpt, ModelArg, NumClassesOpt, console, err_console, print_json


def import_cmd(
    model: ModelArg,
    official: Annotated[
        Path, typer.Argument(help="The official checkpoint (e.g. CMAL-Net's model.pth).", show_default=False)
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint folder to write.", show_default=False)],
    mode: ModeOpt = None,
    num_classes: NumClassesOpt = None,
    input_size: InputSizeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Read OFFICIAL without running pickled code, load it into MODEL, write an fgvc-edge checkpoint."""
    from fgvc_edge.models.configs import variant_kwargs

    variant = variant_kwargs(model, mode)  # a bad name or mode fails here, before torch loads
    from fgvc_edge.checkpoint import check_checkpoint_output, save_checkpoint
    from fgvc_edge.importers import import_official_checkpoint

    check_checkpoint_output(str(output))
    with (err_console if as_json else console).status("importing {} …".format(official)):
        net = import_official_checkpoint(model, str(official), num_classes=num_classes, input_size=input_size,
                                         **variant)
        folder = save_checkpoint(net, str(output))
    params = sum(p.numel() for p in net.parameters())
    if as_json:
        print_json({"path": folder, "model": model, "variant": net.variant, "num_classes": net.config.num_classes,
                    "input_size": net.config.input_size, "params": params})
        return
    console.print("wrote {} ({}, {} classes, {:,} parameters)".format(folder, model, net.config.num_classes, params),
                  highlight=False)
