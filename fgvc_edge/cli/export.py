"""`fgvc-edge export`: a registered model (random init or checkpoint) → parity-checked ONNX + sidecar."""
from typing import Optional

import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import (
    CheckpointOpt,
    ForceOpt,
    InputSizeOpt,
    ModelArg,
    NumClassesOpt,
    OutputOpt,
    console,
    fail_if_exists_as_dir,
)


def export_cmd(
    model: ModelArg,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    input_size: InputSizeOpt = None,
    mode: Annotated[Optional[str], typer.Option("--mode", help="Inference variant of models that have them (e.g. raw, raw+aoval).")] = None,
    batch: Annotated[str, typer.Option("--batch", help="Batch size N, or 'dynamic'.")] = "1",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (TensorRT 8.5/8.6 parse up to 17).")] = 17,
    no_simplify: Annotated[bool, typer.Option("--no-simplify", help="Skip onnxsim.")] = False,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Export MODEL to ONNX (input `input`, output `logits`), checked against PyTorch with ONNX Runtime.

    Default output: engines/MODEL[-MODE]-SOURCE-fp32-b1.onnx (SOURCE: the checkpoint folder's name, or random)."""
    from fgvc_edge.export import export_onnx
    from fgvc_edge.export.cache import variant_kwargs
    from fgvc_edge.export.naming import RANDOM_WEIGHTS_NOTE
    from fgvc_edge.export.onnx_export import parse_batch
    from fgvc_edge.models import create_model

    fail_if_exists_as_dir(output)
    parsed_batch = parse_batch(batch)
    variant = variant_kwargs(model, mode) if mode is not None else {}  # else the model's (or checkpoint's) own
    net = create_model(model, num_classes=num_classes, checkpoint=checkpoint and str(checkpoint), input_size=input_size,
                       **variant)
    with console.status("exporting {} …".format(model)):
        result = export_onnx(
            net,
            str(output) if output else None,
            batch=parsed_batch,
            opset=opset,
            simplify=not no_simplify,
            checkpoint=checkpoint and str(checkpoint),
            force=force,
        )
    p = result.parity
    console.print(
        "wrote {} (+ .json)  parity: rel err {:.2e}, max abs {:.2e}, top-1 agreement {:.0%} over {} samples".format(
            result.path, p.rel_error, p.max_abs_error, p.top1_agreement, p.samples
        ),
        highlight=False,
    )
    if checkpoint is None:
        console.print(RANDOM_WEIGHTS_NOTE, highlight=False)
