"""`fgvc-edge build`: a registry model or an ONNX file → TensorRT engine or ONNX Runtime deployable."""
import contextlib
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import (
    CheckpointOpt,
    InputSizeOpt,
    NumClassesOpt,
    OutputOpt,
    ThreadsOpt,
    console,
    fail_if_exists_as_dir,
)
from fgvc_edge.cli.calibrate import LatencyAwareOpt, MethodOpt, calibration_progress
from fgvc_edge.engine.tensorrt_builder import BatchProfile
from fgvc_edge.errors import UserInputError


def build_cmd(
    source: Annotated[str, typer.Argument(help="A registered model name or an .onnx file.", show_default=False)],
    fp32: Annotated[bool, typer.Option("--fp32", help="FP32.")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="FP16-typed ONNX (I/O stay FP32).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="INT8 Q/DQ, calibrated on --calib-data.")] = False,
    checkpoint: CheckpointOpt = None,
    mode: Annotated[Optional[str], typer.Option("--mode", help="Inference variant of models that have them.")] = None,
    num_classes: NumClassesOpt = None,
    input_size: InputSizeOpt = None,
    calib_data: Annotated[Optional[Path], typer.Option("--calib-data", help="Calibration image folder (--int8).")] = None,
    calib_method: MethodOpt = "minmax",
    calib_images: Annotated[int, typer.Option("--calib-images", help="Calibration images.")] = 512,
    latency_aware: LatencyAwareOpt = False,
    threads: ThreadsOpt = None,
    batch: Annotated[Optional[int], typer.Option("--batch", min=1, help="Fixed batch (default 1).")] = None,
    min_batch: Annotated[Optional[int], typer.Option("--min-batch", min=1, help="Dynamic profile minimum.")] = None,
    opt_batch: Annotated[Optional[int], typer.Option("--opt-batch", min=1, help="Dynamic profile optimum.")] = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", min=1, help="Dynamic profile maximum.")] = None,
    workspace: Annotated[Optional[float], typer.Option("--workspace", min=0.0, help="Builder workspace, GiB.")] = None,
    timing_cache: Annotated[Optional[Path], typer.Option("--timing-cache", help="Timing cache file (read+written).")] = None,
    dla_core: Annotated[Optional[int], typer.Option("--dla-core", min=0, help="Run on this DLA core (Jetson).")] = None,
    version_compatible: Annotated[bool, typer.Option("--version-compatible", help="Engine for later TensorRT too.")] = False,
    target: Annotated[
        str, typer.Option("--target", help="tensorrt (.engine), onnxruntime (.onnx, CPU) or openvino (.xml IR, CPU; extra openvino).")
    ] = "tensorrt",
    output: OutputOpt = None,
) -> None:
    """Build SOURCE into a deployable: export → FP16/INT8 ONNX → engine (each step cached by content)."""
    from fgvc_edge.engine import BuildSettings, CalibrationSettings, ModelOptions, TensorRTOptions, build

    fail_if_exists_as_dir(output)
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
    progress = calibration_progress(calib_total) if calib_total else contextlib.nullcontext(None)
    with progress as advance:
        result = build(source, settings, model=model, output=output and str(output), on_calib_batch=advance)
    reused = " (reused: {})".format(", ".join(result.reused)) if result.reused else ""
    console.print("wrote {} (+ .json){}".format(result.path, reused), highlight=False)
    for extra in result.extra_files:
        console.print("wrote {}".format(extra), highlight=False)


def batch_profile(
    batch: Optional[int], min_batch: Optional[int], opt_batch: Optional[int], max_batch: Optional[int]
) -> BatchProfile:
    """--batch N → fixed N; any of --min/--opt/--max-batch → a dynamic profile (missing ends filled in)."""
    dynamic = [v for v in (min_batch, opt_batch, max_batch) if v is not None]
    if batch is not None and dynamic:
        raise UserInputError("give either --batch or --min-batch/--opt-batch/--max-batch, not both")
    if not dynamic:
        return BatchProfile.fixed(batch or 1)
    low = min_batch or 1
    high = max_batch or max(dynamic)
    return BatchProfile(low, opt_batch or high, high)
