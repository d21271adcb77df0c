"""`fgvc-edge bench`: params, MACs, latency of models (PyTorch + ONNX Runtime) or artifacts, vs the papers."""
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import CheckpointOpt, InputSizeOpt, NumClassesOpt, ThreadsOpt, console
from fgvc_edge.errors import UserInputError


def _int_list(text: str, option: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserInputError("{} takes comma-separated numbers, e.g. 1,8; got {!r}".format(option, text)) from None
    if not values or min(values) < 1:
        raise UserInputError("{} takes positive numbers, got {!r}".format(option, text))
    return values


def bench_cmd(
    targets: Annotated[
        Optional[List[str]],
        typer.Argument(help="Model names or .onnx artifacts (default: every model a paper gives figures for).", show_default=False),
    ] = None,
    input_size: InputSizeOpt = None,
    num_classes: NumClassesOpt = None,
    checkpoint: CheckpointOpt = None,
    mode: Annotated[Optional[str], typer.Option("--mode", help="Variant of models that have several (e.g. raw, raw+aoval).")] = None,
    before: Annotated[
        bool,
        typer.Option("--before/--no-before", help="With a pruned or reparameterized --checkpoint, also measure the model before those transforms (same run)."),
    ] = True,
    runtimes: Annotated[
        str,
        typer.Option("--runtimes", help="torch,onnxruntime,openvino, a subset, or none (params/MACs only); openvino rows need the openvino extra."),
    ] = "torch,onnxruntime,openvino",
    precisions: Annotated[
        str, typer.Option("--precisions", help="ONNX Runtime / OpenVINO precisions for model names: fp32, int8.")
    ] = "fp32,int8",
    data: Annotated[
        Optional[Path],
        typer.Option("--data", help="Images for INT8 calibration and the INT8-vs-FP32 check (default: scikit-image's bundled photographs)."),
    ] = None,
    batch: Annotated[str, typer.Option("--batch", help="Batch sizes, comma-separated.")] = "1",
    iters: Annotated[int, typer.Option("--iters", min=1, help="Timed iterations per row.")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed iterations first.")] = 3,
    threads: ThreadsOpt = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="JSON output (default benchmarks/results/bench.json).")] = None,
    markdown_path: Annotated[Optional[Path], typer.Option("--markdown", help="Markdown output (default benchmarks/results/bench.md).")] = None,
) -> None:
    """Measure params, MACs and per-image latency; compare with the papers' efficiency tables."""
    import os

    from fgvc_edge.bench.report import rich_table, write_reports
    from fgvc_edge.bench.suite import BenchSettings, default_targets, run_bench

    selected = [] if runtimes.strip() == "none" else [r.strip() for r in runtimes.split(",") if r.strip()]
    settings = BenchSettings(
        runtimes=tuple(selected),
        precisions=tuple(p.strip() for p in precisions.split(",") if p.strip()),
        batches=tuple(_int_list(batch, "--batch")),
        iters=iters,
        warmup=warmup,
        threads=threads or os.cpu_count() or 1,
        input_size=input_size,
        num_classes=num_classes,
        checkpoint=str(checkpoint) if checkpoint else None,
        mode=mode,
        before=before,
        data=str(data) if data else None,
    )
    chosen = list(targets) if targets else default_targets()
    with console.status("benchmarking …") as status:
        rows = run_bench(chosen, settings, progress=lambda text: status.update(text))
    if not rows:
        raise UserInputError("nothing was measured: --runtimes none counts params/MACs of model names only")
    console.print(rich_table(rows))
    written = write_reports(
        rows,
        json_path=str(json_path) if json_path else None,
        markdown_path=str(markdown_path) if markdown_path else None,
    )
    console.print("wrote " + ", ".join(written), highlight=False)
