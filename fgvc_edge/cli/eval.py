"""`fgvc-edge eval`: accuracy of checkpoints, ONNX files and engines on a data set, and their drop vs the first."""
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import JsonOpt, ThreadsOpt, console, err_console, print_json, renamed
from fgvc_edge.cli.train import DataOpt, DatasetOpt
from fgvc_edge.contract.limits import MAX_BATCH


def eval_cmd(
    artifacts: Annotated[List[Path], typer.Argument(help="Checkpoint folders, .onnx files, .engine files; the first is the reference.", show_default=False)],
    data: DataOpt,
    dataset: DatasetOpt = "auto",
    split: Annotated[str, typer.Option("--split", help="train or test (val: the held-out split, the same as test).")] = "test",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, max=MAX_BATCH, help="Batch (a fixed-batch artifact uses its own).")] = 32,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate this many images, spread over the split.")] = None,
    threads: ThreadsOpt = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Image decoding threads.")] = 4,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output folder (metrics, per-class CSV, confusion PNGs; default runs/eval).")] = None,
    old_out: Annotated[Optional[Path], typer.Option("--out", hidden=True)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate ARTIFACTS on --data: top-1, top-5, per-class accuracy, confusion matrix, drop vs the first."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from fgvc_edge.evaluate import evaluate_artifacts, top1_change

    out = renamed(output, old_out, "--output", "--out") or Path("runs/eval")

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        tasks: List[int] = []

        def on_start(artifact: str, total: int) -> None:
            tasks.append(progress.add_task(artifact, total=total))

        report = evaluate_artifacts(
            [str(a) for a in artifacts], str(data), dataset=dataset, split=split, batch_size=batch_size,
            out=str(out), limit=limit, threads=threads, workers=workers, on_start=on_start,
            on_batch=lambda n: progress.advance(tasks[-1], n),
        )
    if as_json:
        print_json({"path": report.out, "rows": report.rows, "skipped": len(report.skipped_paths)})
        return
    info = report.data.describe()
    table = Table(title="{} {} split: {} images, {} classes".format(info["layout"], split, report.results[0].metrics.images
                                                                   + report.results[0].skipped, info["num_classes"]))
    for column in ("artifact", "runtime", "precision", "top-1", "top-5", "class-mean", "top-1 vs first", "agree", "ms/img"):
        table.add_column(column, justify="left" if column in ("artifact", "runtime", "precision") else "right")
    for row in report.rows:
        table.add_row(row["artifact"], row["runtime"], row["precision"], "{:.2%}".format(row["top1"]),
                      "{:.2%}".format(row["top5"]), "{:.2%}".format(row["mean_class_accuracy"]),
                      top1_change(row["top1_drop_pp"]), "{:.1%}".format(row["agreement_with_first"]),
                      "{:.2f}".format(row["ms_per_image"]))
    console.print(table)
    console.print("wrote {}/summary.{{json,csv,md}} and per-artifact metrics.json, per_class.csv, confusion.png".format(
        report.out), highlight=False)
    if report.skipped_paths:
        err_console.print("{} unreadable images skipped (e.g. {})".format(
            len(report.skipped_paths), report.skipped_paths[0]), highlight=False, markup=False)
