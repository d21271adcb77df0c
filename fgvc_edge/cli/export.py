"""`fgvc-edge export`: a registered model (random init or checkpoint) → parity-checked ONNX + sidecar."""
from typing import Optional

import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import (
    CheckpointOpt,
    InputSizeOpt,
    ModelArg,
    NumClassesOpt,
    OutputOpt,
    console,
    check_artifact_output,
)


def export_cmd(
    model: ModelArg,
    checkpoint: CheckpointOpt = None,
    num_classes: NumClassesOpt = None,
    input_size: InputSizeOpt = None,
    batch: Annotated[str, typer.Option("--batch", help="Batch size N, or 'dynamic'.")] = "1",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (TensorRT 8.5/8.6 parse up to 17).")] = 17,
    no_simplify: Annotated[bool, typer.Option("--no-simplify", help="Skip onnxsim.")] = False,
    output: OutputOpt = None,
) -> None:
    """Export MODEL to ONNX (input `input`, output `logits`), checked against PyTorch with ONNX Runtime."""
    from fgvc_edge.export import export_onnx
    from fgvc_edge.export.onnx_export import parse_batch
    from fgvc_edge.models import create_model

    check_artifact_output(output)
    parsed_batch = parse_batch(batch)
    net = create_model(model, num_classes=num_classes, checkpoint=checkpoint and str(checkpoint), input_size=input_size)
    with console.status("exporting {} …".format(model)):
        result = export_onnx(
            net,
            str(output) if output else None,
            batch=parsed_batch,
            opset=opset,
            simplify=not no_simplify,
            checkpoint=checkpoint and str(checkpoint),
        )
    p = result.parity
    console.print(
        "wrote {} (+ .json)  parity: rel err {:.2e}, max abs {:.2e}, top-1 agreement {:.0%} over {} samples".format(
            result.path, p.rel_error, p.max_abs_error, p.top1_agreement, p.samples
        ),
        highlight=False,
    )
