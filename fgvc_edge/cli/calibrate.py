"""`fgvc-edge calibrate`: FP32 ONNX + a folder of images → INT8 Q/DQ ONNX (TensorRT or ONNX Runtime form)."""
import contextlib
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import ThreadsOpt, console, err_console, fail_if_exists_as_dir

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
    num_images: Annotated[int, typer.Option("--num-images", help="Images to calibrate on.")] = 512,
    method: MethodOpt = "minmax",
    target: TargetOpt = "tensorrt",
    force: Annotated[bool, typer.Option("--force", help="Recalibrate even when the cache matches.")] = False,
    latency_aware: LatencyAwareOpt = False,
    threads: ThreadsOpt = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output .onnx path.")] = None,
) -> None:
    """Quantize ONNX_FILE to INT8 with calibration on images from --data (cached under calibration/)."""
    from fgvc_edge.precision import calibrate_onnx, select_images

    fail_if_exists_as_dir(output)
    count = len(select_images(str(data), num_images))  # refuses a bad folder before anything loads
    with calibration_progress(count) as advance:
        result = calibrate_onnx(str(onnx_file), str(data), str(output) if output else None, num_images=num_images,
                                method=method, target=target, force=force, on_batch=advance,
                                latency_aware=latency_aware, threads=threads)
    check = result.record.get("int8_check", {})
    console.print(
        "{} {} ({} form, {}, {} images)  vs FP32 on {} images: top-1 agreement {:.0%}, rel err {:.2e}".format(
            "reused" if result.cache_hit else "wrote", result.path, target, method,
            result.record["quantization"]["num_images"], check.get("samples", 0), check.get("top1_agreement", 0.0),
            check.get("rel_error", 0.0)),
        highlight=False,
    )


@contextlib.contextmanager
def calibration_progress(total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields the callback that advances it by a batch of images."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("calibrating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("calibrate", total=total)
        yield lambda n: progress.advance(task, n)
