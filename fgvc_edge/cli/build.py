"""`fgvc-edge build`: a registry model or an ONNX file → TensorRT engine or ONNX Runtime deployable."""
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import (
    BatchOpt,
    CheckpointOpt,
    ForceOpt,
    InputSizeOpt,
    JsonOpt,
    ModeOpt,
    NumClassesOpt,
    OutputOpt,
    ThreadsOpt,
    check_artifact_output,
    console,
    print_json,
)
from fgvc_edge.cli._progress import progress_display
from fgvc_edge.cli.calibrate import LatencyAwareOpt, MethodOpt
from fgvc_edge.contract.limits import MAX_BATCH
from fgvc_edge.errors import UserInputError

if TYPE_CHECKING:  # the engine is imported when a build runs, not when the CLI starts
    from fgvc_edge.engine.tensorrt_builder import BatchProfile


def build_cmd(
    source: Annotated[str, typer.Argument(help="A registered model name or an .onnx file.", show_default=False)],
    fp32: Annotated[bool, typer.Option("--fp32", help="FP32.")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="FP16-typed ONNX (I/O stay FP32).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="INT8 Q/DQ, calibrated on --calib-data.")] = False,
    checkpoint: CheckpointOpt = None,
    mode: ModeOpt = None,
    num_classes: NumClassesOpt = None,
    input_size: InputSizeOpt = None,
    calib_data: Annotated[Optional[Path], typer.Option("--calib-data", help="Calibration image folder (--int8).")] = None,
    calib_method: MethodOpt = "minmax",
    calib_images: Annotated[int, typer.Option("--calib-images", help="Calibration images.")] = 512,
    latency_aware: LatencyAwareOpt = False,
    threads: ThreadsOpt = None,
    batch: BatchOpt = None,
    min_batch: Annotated[Optional[int], typer.Option("--min-batch", min=1, max=MAX_BATCH, help="Dynamic profile minimum.")] = None,
    opt_batch: Annotated[Optional[int], typer.Option("--opt-batch", min=1, max=MAX_BATCH, help="Dynamic profile optimum.")] = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", min=1, max=MAX_BATCH, help="Dynamic profile maximum.")] = None,
    workspace: Annotated[Optional[float], typer.Option("--workspace", min=0.0, help="Builder workspace, GiB.")] = None,
    timing_cache: Annotated[Optional[Path], typer.Option("--timing-cache", help="Timing cache file (read+written).")] = None,
    dla_core: Annotated[Optional[int], typer.Option("--dla-core", min=0, help="Run on this DLA core (Jetson).")] = None,
    version_compatible: Annotated[bool, typer.Option("--version-compatible", help="Engine for later TensorRT too.")] = False,
    target: Annotated[
        str, typer.Option("--target", help="tensorrt (.engine), onnxruntime (.onnx, CPU) or openvino (.xml IR, CPU; extra openvino).")
    ] = "tensorrt",
    output: OutputOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Build SOURCE into a deployable: export → FP16/INT8 ONNX → engine (each step cached by content).

    Default output: engines/MODEL[-MODE]-SOURCE-PRECISION-b1|bdyn.engine|onnx (SOURCE: the checkpoint folder's
    name, or random)."""
    if not source.lower().endswith(".onnx") and not os.path.isfile(source):
        from fgvc_edge.models.configs import variant_kwargs

        variant_kwargs(source, mode)  # a bad name or mode fails here, before torch loads
    from fgvc_edge.engine import BuildSettings, CalibrationSettings, ModelOptions, TensorRTOptions, build
    from fgvc_edge.export.naming import RANDOM_WEIGHTS_NOTE

    check_artifact_output(output)
    chosen = [name for name, flag in (("fp32", fp32), ("fp16", fp16), ("int8", int8)) if flag]
    if len(chosen) != 1:
        raise UserInputError("choose exactly one of --fp32, --fp16, --int8")
    settings = BuildSettings(
        precision=chosen[0], target=target, profile=batch_profile(batch, min_batch, opt_batch, max_batch),
        calibration=CalibrationSettings(calib_data and str(calib_data), calib_method, calib_images, latency_aware,
                                        threads),
        tensorrt=TensorRTOptions(workspace, timing_cache and str(timing_cache), dla_core, version_compatible),
    )
    model = ModelOptions(checkpoint and str(checkpoint), mode, num_classes, input_size)
    calib_total = None
    if chosen[0] == "int8" and calib_data is not None:
        from fgvc_edge.precision import select_images

        calib_total = len(select_images(str(calib_data), calib_images))
    with progress_display() as display:
        steps = display.task("build")
        images = display.task("calibrating", calib_total, per_step=False) if calib_total else None
        result = build(source, settings, model=model, output=output and str(output),
                       on_calib_batch=images.advance if images else None, on_step=steps.describe, force=force)
    if as_json:
        checks = {key: result.record[key] for key in ("fp16_check", "int8_check") if key in result.record}
        print_json(dict({"path": result.path, "files": result.extra_files, "reused": result.reused,
                         "precision": chosen[0], "target": target}, **checks))
        return
    reused = " (reused: {})".format(", ".join(result.reused)) if result.reused else ""
    console.print("wrote {} (+ .json){}".format(result.path, reused), highlight=False)
    check = result.check
    if check:
        console.print("{} vs {}: rel err {:.2e}, max abs {:.2e}, top-1 agreement {:.0%} over {} samples".format(
            settings.precision.upper(), check["against"], check["rel_error"], check["max_abs_error"],
            check["top1_agreement"], check["samples"]), highlight=False)
    for extra in result.extra_files:
        console.print("wrote {}".format(extra), highlight=False)
    if not result.record.get("checkpoint"):
        console.print(RANDOM_WEIGHTS_NOTE, highlight=False)


def batch_profile(
    batch: Optional[int], min_batch: Optional[int], opt_batch: Optional[int], max_batch: Optional[int]
) -> "BatchProfile":
    """--batch N → fixed N; any of --min/--opt/--max-batch → a dynamic profile (missing ends filled in)."""
    from fgvc_edge.engine.tensorrt_builder import BatchProfile

    dynamic = [v for v in (min_batch, opt_batch, max_batch) if v is not None]
    if batch is not None and dynamic:
        raise UserInputError("give either --batch or --min-batch/--opt-batch/--max-batch, not both")
    if not dynamic:
        return BatchProfile.fixed(batch or 1)
    low = min_batch or 1
    high = max_batch or max(dynamic)
    return BatchProfile(low, opt_batch or high, high)
