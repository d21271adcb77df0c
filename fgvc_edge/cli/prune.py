"""`fgvc-edge prune`: structured channel pruning (Torch-Pruning) → checkpoint, with what was left alone and why."""
import os
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from fgvc_edge.cli._common import (
    CheckpointOpt,
    InputSizeOpt,
    JsonOpt,
    ModeOpt,
    ModelArg,
    NumClassesOpt,
    OutputOpt,
    console,
    err_console,
    print_json,
)
from fgvc_edge.errors import UserInputError

FINETUNE_EPOCHS = 1


def prune_cmd(
    model: ModelArg,
    checkpoint: CheckpointOpt = None,
    ratio: Annotated[Optional[float], typer.Option("--ratio", help="Channel ratio removed per layer group, e.g. 0.3.")] = None,
    target_macs: Annotated[
        Optional[float], typer.Option("--target-macs", help="Prune until at most this many GMACs at the input size.")
    ] = None,
    importance: Annotated[str, typer.Option("--importance", help="l1, l2 (weight magnitude) or taylor.")] = "l2",
    global_pruning: Annotated[bool, typer.Option("--global", help="Rank channels across layers, not per layer.")] = False,
    round_to: Annotated[int, typer.Option("--round-to", min=1, help="Keep channel counts multiples of this.")] = 8,
    mode: ModeOpt = None,
    num_classes: NumClassesOpt = None,
    input_size: InputSizeOpt = None,
    finetune_data: Annotated[
        Optional[Path], typer.Option("--finetune-data", help="Fine-tune the pruned model on this data set folder before saving.")
    ] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Fine-tuning epochs (default 1).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", min=1, help="Fine-tuning batch (default: the simple recipe's).")] = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Prune MODEL's channels (classifier heads and unsafe structures excluded) and write a checkpoint (-o).

    Pruned weights need fine-tuning: --finetune-data DIR fine-tunes before saving (the run, with metrics and
    curves, goes beside it to OUTPUT-finetune) and reports top-1 before and after."""
    from fgvc_edge.models.configs import variant_kwargs

    variant_kwargs(model, mode)  # a bad name or mode fails here, before torch loads
    if output is None:
        raise UserInputError("give the output checkpoint folder with -o")
    if finetune_data is None and (epochs is not None or batch_size is not None):
        raise UserInputError("--epochs and --batch-size apply to fine-tuning: add --finetune-data DIR")
    from fgvc_edge.transforms.prune import prune_checkpoint

    status = (err_console if as_json else console).status("pruning {} …".format(model))
    tuned: List[Any] = []  # the fine-tuning run's result, when there is one

    def fine_tune(net: Any) -> None:
        tuned.append(_finetune(net, finetune_data, epochs or FINETUNE_EPOCHS, batch_size, output, status))

    with status:
        folder, report = prune_checkpoint(
            model, str(output), checkpoint=checkpoint and str(checkpoint), num_classes=num_classes,
            input_size=input_size, mode=mode, ratio=ratio,
            target_macs=None if target_macs is None else int(target_macs * 1e9),
            importance=importance, global_pruning=global_pruning, round_to=round_to,
            before_save=None if finetune_data is None else fine_tune,
        )
    if as_json:
        print_json({"path": folder, "model": model, "input_size": report.input_size, "ratio": report.ratio,
                    "importance": report.importance, "global": report.global_pruning, "round_to": report.round_to,
                    "params_before": report.params_before, "params_after": report.params_after,
                    "macs_before": report.macs_before, "macs_after": report.macs_after,
                    "changed_modules": len(report.changed_modules),
                    "not_pruned": [{"name": item.name, "reason": item.reason} for item in report.ignored]})
        return
    console.print(
        "{} @{}: {} importance, {} ratio {:.3f}, channels rounded to {}".format(
            model, report.input_size, report.importance, "global" if report.global_pruning else "per-layer",
            report.ratio, report.round_to,
        ),
        highlight=False,
    )
    table = Table()
    for column in ("", "params M", "GMACs"):
        table.add_column(column, justify="right")
    table.add_row("before", "{:.3f}".format(report.params_before / 1e6), "{:.3f}".format(report.macs_before / 1e9))
    table.add_row("after", "{:.3f}".format(report.params_after / 1e6), "{:.3f}".format(report.macs_after / 1e9))
    table.add_row("change", "{:+.1%}".format(report.params_after / report.params_before - 1), "{:+.1%}".format(-report.macs_reduction))
    console.print(table)
    ignored = Table(title="not pruned (output width kept)")
    ignored.add_column("modules")
    ignored.add_column("why")
    for names, reason in _by_reason(report.ignored):
        ignored.add_row(names, reason)
    console.print(ignored)
    console.print("{} modules resized; wrote {}".format(len(report.changed_modules), folder), highlight=False)
    if not tuned:
        console.print("note: pruned weights need fine-tuning before use (top-1 often falls to chance): add "
                      "--finetune-data DIR --epochs N, or run `fgvc-edge train {} -c {} --data DIR`".format(
                          model, folder), highlight=False, markup=False)
        return
    result = tuned[0]
    console.print("fine-tuned {} epoch(s) on {}: top-1 {:.2%} before → {:.2%} after  (run: {})".format(
        len(result.history), finetune_data, result.initial_top1, result.history[-1]["val_top1"], result.out),
        highlight=False)


def _finetune(net: Any, data: Path, epochs: int, batch_size: Optional[int], output: Path, status: Any) -> Any:
    """Fine-tune the pruned model in place, its run folder beside the output checkpoint folder (a checkpoint
    folder is written whole and swapped in, so it holds nothing else)."""
    from fgvc_edge.cli.train import RichReporter
    from fgvc_edge.train import finetune

    status.stop()  # the epoch progress bars take over the terminal
    with RichReporter() as reporter:
        return finetune(net, str(data), epochs, out=os.path.normpath(str(output)) + "-finetune", batch_size=batch_size,
                        reporter=reporter)


def _by_reason(items: list) -> list:
    """One row per reason (16 FCSA blocks share one), first-seen order; long name lists shortened."""
    groups: dict = {}
    for item in items:
        groups.setdefault(item.reason, []).append(item.name)
    rows = []
    for reason, names in groups.items():
        text = ", ".join(names) if len(names) <= 3 else "{}, {}, …, {} ({})".format(names[0], names[1], names[-1], len(names))
        rows.append((text, reason))
    return rows
