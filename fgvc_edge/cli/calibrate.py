"""`fgvc-edge calibrate`: FP32 ONNX + a folder of images → INT8 Q/DQ ONNX (TensorRT or ONNX Runtime form)."""
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import JsonOpt, ThreadsOpt, check_artifact_output, console, print_json, renamed
from fgvc_edge.cli._progress import progress_display

DEFAULT_CALIB_IMAGES = 512
CalibDataOpt = Annotated[Path, typer.Option("--data", help="Folder of calibration images (searched recursively).")]
MethodOpt = Annotated[str, typer.Option("--method", help="Range calibration: minmax, entropy or percentile.")]
TargetOpt = Annotated[str, typer.Option("--target", help="tensorrt (symmetric s8 Q/DQ) or onnxruntime (u8s8, CPU).")]
LatencyAwareOpt = Annotated[bool, typer.Option(
    "--latency-aware", help="--target onnxruntime: keep nodes float where INT8 is not faster on this machine "
    "(per-node ONNX Runtime profile at --threads; the choice is recorded in the sidecar).")]


def calibrate_cmd(
    onnx_file: Annotated[Path, typer.Argument(help="FP32 ONNX exported by fgvc-edge (with its sidecar).",
                                              show_default=False)],
    data: CalibDataOpt,
    calib_images: Annotated[Optional[int], typer.Option("--calib-images", help="Images to calibrate on (default 512).")] = None,
    old_num_images: Annotated[Optional[int], typer.Option("--num-images", hidden=True)] = None,
    method: MethodOpt = "minmax",
    target: TargetOpt = "tensorrt",
    force: Annotated[bool, typer.Option("--force", help="Recalibrate even when the cache matches.")] = False,
    latency_aware: LatencyAwareOpt = False,
    threads: ThreadsOpt = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output .onnx path.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Quantize ONNX_FILE to INT8 with calibration on images from --data (cached under calibration/)."""
    from fgvc_edge.precision import calibrate_onnx, select_images

    check_artifact_output(output)
    num_images = renamed(calib_images, old_num_images, "--calib-images", "--num-images") or DEFAULT_CALIB_IMAGES
    count = len(select_images(str(data), num_images))  # refuses a bad folder before anything loads
    with progress_display() as display:
        images = display.task("calibrating", count, per_step=False)
        result = calibrate_onnx(str(onnx_file), str(data), str(output) if output else None, num_images=num_images,
                                method=method, target=target, force=force, on_batch=images.advance,
                                latency_aware=latency_aware, threads=threads)
    check = result.record.get("int8_check", {})
    if as_json:
        print_json({"path": result.path, "cache_path": result.cache_path, "reused": result.cache_hit,
                    "target": target, "method": method, "num_images": result.record["quantization"]["num_images"],
                    "int8_check": check})
        return
    console.print(
        "{} {} ({} form, {}, {} images)  vs FP32 on {} images: top-1 agreement {:.0%}, rel err {:.2e}".format(
            "reused" if result.cache_hit else "wrote", result.path, target, method,
            result.record["quantization"]["num_images"], check.get("samples", 0), check.get("top1_agreement", 0.0),
            check.get("rel_error", 0.0)),
        highlight=False,
    )

