"""`fgvc-edge bench`: params, MACs, latency of models (PyTorch + ONNX Runtime) or artifacts, vs the papers."""
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import CheckpointOpt, InputSizeOpt, NumClassesOpt, ThreadsOpt, console, err_console
from fgvc_edge.contract.limits import MAX_BATCH, MAX_BENCH_ITERS, MAX_BENCH_WARMUP
from fgvc_edge.errors import UserInputError


def _int_list(text: str, option: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserInputError("{} takes comma-separated numbers, e.g. 1,8; got {!r}".format(option, text)) from None
    if not values or not all(1 <= v <= MAX_BATCH for v in values):
        raise UserInputError("{} takes numbers in 1..{}, got {!r}".format(option, MAX_BATCH, text))
    return values


def bench_cmd(
    targets: Annotated[
        Optional[List[str]],
        typer.Argument(help="Model names, .onnx or .engine artifacts (default: every model a paper gives figures for).", show_default=False),
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
        Optional[str],
        typer.Option("--precisions", help="Precisions for model names: fp32; int8 for ONNX Runtime (calibrated on --data, else on synthetic images: speed only); fp16 for PyTorch with --device cuda (autocast). [default: fp32,int8; fp32 in the quick pass]", show_default=False),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="Where PyTorch eager runs: cpu, or cuda (timed with CUDA events).")] = "cpu",
    batch: Annotated[
        Optional[str], typer.Option("--batch", help="Batch sizes, comma-separated (default 1; a fixed-batch artifact: its own).")
    ] = None,
    iters: Annotated[Optional[int], typer.Option("--iters", min=1, max=MAX_BENCH_ITERS, help="Timed iterations per row. [default: 20; 5 in the quick pass]", show_default=False)] = None,
    warmup: Annotated[Optional[int], typer.Option("--warmup", min=0, max=MAX_BENCH_WARMUP, help="Untimed iterations first. [default: 3; 1 in the quick pass]", show_default=False)] = None,
    threads: ThreadsOpt = None,
    latency_aware: Annotated[
        bool,
        typer.Option("--latency-aware", help="Our INT8 rows with latency-aware mixed precision (profiled here at --threads)."),
    ] = False,
    full: Annotated[
        bool,
        typer.Option("--full", help="Without targets: the full sweep (every paper configuration timed, INT8 too, 20 iterations; `make bench-full`) instead of the quick pass (`make bench`)."),
    ] = False,
    data: Annotated[Optional[Path], typer.Option("--data", help="Image data set (any layout `eval` reads): top-1 per row and agreement with FP32; INT8 calibrated on its training images.")] = None,
    dataset: Annotated[str, typer.Option("--dataset", help="Layout of --data (auto detects it).")] = "auto",
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Score this many test images of --data, spread over the split.")] = None,
    wide: Annotated[bool, typer.Option("--wide", help="Every column in the terminal (the default fits 100 columns).")] = False,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="JSON output, overwritten (CSV and PNG beside it); default: a new run folder under benchmarks/results/.")] = None,
    markdown_path: Annotated[Optional[Path], typer.Option("--markdown", help="Markdown output, overwritten; default: a new run folder under benchmarks/results/.")] = None,
) -> None:
    """Measure params, MACs and per-image latency (and top-1 with --data); compare with the papers' tables.

    Without targets: the quick pass over every paper configuration that reports a latency (FP32, 5 iterations;
    the others get their params/MACs), or the full sweep with --full. Each run writes its own folder
    benchmarks/results/<UTC time>-<label>/ (bench.json, .csv, .md, .png) and points benchmarks/results/latest at it.
    """
    import os

    from fgvc_edge.bench.report import NARROW_WIDTH, rich_table, run_label, write_reports
    from fgvc_edge.bench.suite import BenchProgress, BenchSettings, default_targets, run_bench, sweep_defaults
    from fgvc_edge.cli._progress import progress_display

    if data is not None and not targets:
        raise UserInputError("--data needs model names or artifacts to score (the paper configurations have the "
                             "papers' class counts, not the data set's)")
    quick = not targets and not full
    default_iters, default_warmup, default_precisions = sweep_defaults(quick)
    selected = [] if runtimes.strip() == "none" else [r.strip() for r in runtimes.split(",") if r.strip()]
    settings = BenchSettings(
        runtimes=tuple(selected),
        precisions=tuple(p.strip() for p in precisions.split(",") if p.strip()) if precisions else default_precisions,
        batches=tuple(_int_list(batch, "--batch")) if batch is not None else None,
        iters=iters or default_iters,
        warmup=default_warmup if warmup is None else warmup,
        threads=threads or os.cpu_count() or 1,
        input_size=input_size,
        num_classes=num_classes,
        checkpoint=str(checkpoint) if checkpoint else None,
        mode=mode,
        before=before,
        device=device,
        quick=quick,
        data=str(data) if data else None,
        dataset=dataset,
        limit=limit,
        latency_aware=latency_aware,
    )
    chosen = list(targets) if targets else default_targets()
    with progress_display() as display:
        rows_done = display.task("bench")
        progress = BenchProgress(total=rows_done.set_total, step=rows_done.describe, row_done=rows_done.advance)
        rows = run_bench(chosen, settings, progress=progress)
    if not rows:
        raise UserInputError("nothing was measured: --runtimes none counts params/MACs of model names only")
    table = rich_table(rows, wide=wide)
    width = max(console.width, console.measure(table).maximum) if wide else min(console.width, NARROW_WIDTH)
    console.print(table, width=width)
    written = write_reports(
        rows,
        json_path=str(json_path) if json_path else None,
        markdown_path=str(markdown_path) if markdown_path else None,
        label=run_label(targets or [], default="paper-" + ("quick" if quick else "full")),
    )
    console.print("wrote " + written.summary(), highlight=False, soft_wrap=True)
    if written.latest:
        console.print("latest run: {}".format(written.latest), highlight=False)
    if quick:
        console.print("quick pass (FP32, {} iterations); `fgvc-edge bench --full` (make bench-full) times every paper "
                      "configuration, INT8 included".format(settings.iters), highlight=False)
    if written.no_plot:
        err_console.print(written.no_plot, markup=False, highlight=False)
