"""`fgvc-edge export`: a registered model (random init or checkpoint) → parity-checked ONNX + sidecar."""
import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import (
    CheckpointOpt,
    ForceOpt,
    InputSizeOpt,
    JsonOpt,
    ModeOpt,
    ModelArg,
    NumClassesOpt,
    OutputOpt,
    check_artifact_output,
    console,
    err_console,
    print_json,
)


def export_cmd(
    model: ModelArg,
    checkpoint: CheckpointOpt = None,
    mode: ModeOpt = None,
    num_classes: NumClassesOpt = None,
    input_size: InputSizeOpt = None,
    batch: Annotated[str, typer.Option("--batch", help="Batch size N, or 'dynamic'.")] = "1",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (TensorRT 8.5/8.6 parse up to 17).")] = 17,
    no_simplify: Annotated[bool, typer.Option("--no-simplify", help="Skip onnxsim.")] = False,
    output: OutputOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Export MODEL to ONNX (input `input`, output `logits`), checked against PyTorch with ONNX Runtime.

    Default output: engines/MODEL[-MODE]-SOURCE-fp32-b1.onnx (SOURCE: the checkpoint folder's name, or random)."""
    from fgvc_edge.models.configs import variant_kwargs

    variant = variant_kwargs(model, mode)  # a bad name or mode fails here, before torch loads
    check_artifact_output(output)
    from fgvc_edge.export.naming import RANDOM_WEIGHTS_NOTE
    from fgvc_edge.export.onnx_export import export_onnx, parse_batch
    from fgvc_edge.models import create_model

    parsed_batch = parse_batch(batch)
    net = create_model(model, num_classes=num_classes, checkpoint=checkpoint and str(checkpoint),
                       input_size=input_size, **variant)
    with (err_console if as_json else console).status("exporting {} …".format(model)):
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
    if as_json:
        keys = ("model", "variant", "input_size", "num_classes", "batch", "precision", "opset", "parity")
        print_json(dict({"path": result.path, "sidecar": result.sidecar, "sha256": result.sha256},
                        **{key: result.record.get(key) for key in keys}))
        return
    console.print(
        "wrote {} (+ .json)  parity: rel err {:.2e}, max abs {:.2e}, top-1 agreement {:.0%} over {} samples".format(
            result.path, p.rel_error, p.max_abs_error, p.top1_agreement, p.samples
        ),
        highlight=False,
    )
    if checkpoint is None:
        console.print(RANDOM_WEIGHTS_NOTE, highlight=False)
