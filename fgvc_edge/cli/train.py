"""`fgvc-edge train`: train a registered model with its paper's recipe (or a simple one) on a data set folder."""
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import (
    InputSizeOpt,
    JsonOpt,
    ModeOpt,
    ModelArg,
    NumClassesOpt,
    ThreadsOpt,
    console,
    err_console,
    print_json,
    renamed,
)
from fgvc_edge.contract.limits import MAX_BATCH, MAX_SEED

DatasetOpt = Annotated[
    str,
    typer.Option("--dataset", help="Layout: auto, cub, cars, dogs, aircraft, flowers102, food11, imagefolder."),
]
DataOpt = Annotated[Path, typer.Option("--data", "-d", help="Data set folder.", show_default=False)]


def train_cmd(
    model: ModelArg,
    data: DataOpt,
    dataset: DatasetOpt = "auto",
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epochs (default: the recipe's).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", min=1, max=MAX_BATCH, help="Per-process batch (default: the recipe's).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Main learning rate; the backbone keeps the recipe's ratio.")] = None,
    input_size: InputSizeOpt = None,
    mode: ModeOpt = None,
    num_classes: NumClassesOpt = None,
    recipe: Annotated[str, typer.Option("--recipe", help="paper (the model family's published recipe) or simple.")] = "paper",
    loss: Annotated[Optional[str], typer.Option("--loss", help="ACANet / ResNet: model (CE), focal or mc.")] = None,
    backbone_weights: Annotated[Optional[Path], typer.Option("--backbone-weights", help="Local torchvision/timm weights (.pth/.safetensors) for the backbone; the paper recipes of CMAL-Net, CARE-Net, CN-CNN and RBI need them.")] = None,
    from_scratch: Annotated[bool, typer.Option("--from-scratch", help="Train a paper recipe that starts from ImageNet weights from random initialisation instead.")] = False,
    official_checkpoint: Annotated[Optional[Path], typer.Option("--official-checkpoint", help="Start from a checkpoint of the paper's official code (CMAL-Net, CN-CNN).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="Start from an fgvc-edge checkpoint.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --output from its last/ checkpoint.")] = False,
    stop_after: Annotated[Optional[int], typer.Option("--stop-after", min=1, help="End this session after that epoch (continue later with --resume).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Run folder (default: runs/MODEL).")] = None,
    old_out: Annotated[Optional[Path], typer.Option("--out", hidden=True)] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help="Seed of the data order, augmentation and initialisation.")] = 0,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Data loader worker processes.")] = 0,
    threads: ThreadsOpt = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Train MODEL on the data set in --data; metrics, curves and checkpoints go to --output."""
    from fgvc_edge.errors import UserInputError
    from fgvc_edge.models.configs import variant_kwargs

    out = renamed(output, old_out, "--output", "--out")
    variant = variant_kwargs(model, mode)  # a bad name or mode fails here, before torch loads
    if device not in ("auto", "cpu", "cuda"):
        raise UserInputError("--device must be auto, cpu or cuda, not {!r}".format(device))
    from fgvc_edge.train import TrainOptions, train

    options = TrainOptions(
        model=model, data=str(data), dataset=dataset, out=str(out) if out else None, recipe=recipe, loss=loss,
        epochs=epochs, batch_size=batch_size, lr=lr, input_size=input_size, num_classes=num_classes,
        backbone_weights=_opt(backbone_weights), from_scratch=from_scratch, official_checkpoint=_opt(official_checkpoint),
        checkpoint=_opt(checkpoint), resume=resume, stop_after=stop_after, seed=seed, workers=workers, threads=threads,
        device=device, model_args=variant,
    )
    is_main = int(os.environ.get("RANK", "0")) == 0
    with RichReporter(enabled=is_main) as reporter:
        result = train(options, reporter)
    if as_json and is_main:
        print_json({"path": result.out, "best": result.best, "last": result.last, "epochs": len(result.history),
                    "best_top1": result.best_top1, "history": result.history, "skipped": len(result.skipped)})
        return
    if is_main and result.history:
        last = result.history[-1]
        console.print(
            "done: {} epochs, val top-1 {:.2%} (best {:.2%})  →  {}  (metrics.csv, curves.png, best/, last/)".format(
                len(result.history), last["val_top1"], result.best_top1, result.out
            ),
            highlight=False,
        )
        if result.skipped:
            err_console.print("{} unreadable images were skipped; see {}".format(
                len(result.skipped), os.path.join(result.out, "skipped_images.txt")), highlight=False)


def _opt(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None


class RichReporter:
    """Progress bar per epoch and one line of metrics after it (rank 0 only)."""

    def __init__(self, enabled: bool = True) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.enabled = enabled
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(), console=err_console, transient=True, disable=not enabled,
        )
        self.task: Optional[Any] = None
        self.losses: List[float] = []

    def __enter__(self) -> "RichReporter":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start(self, info: Dict[str, Any]) -> None:
        data = info["data"]
        recipe = info["recipe"]
        self.progress.console.print(
            "{model} on {layout} ({classes} classes, {train} train / {test} test images) at {size} px — recipe {recipe} "
            "(lr {lr:g}, batch {batch}, {epochs} epochs), {world} process(es) on {device}{amp}".format(
                model=info["model"], layout=data["layout"], classes=data["num_classes"], train=data["train_images"],
                test=data["test_images"], size=info["input_size"], recipe=recipe["name"], lr=recipe["lr"],
                batch=recipe["batch_size"], epochs=info["epochs"], world=info["world_size"], device=info["device"],
                amp=", AMP" if info["amp"] else "",
            ),
            highlight=False,
        )

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.losses = []
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("epoch {}/{}".format(epoch, epochs), total=steps, loss="-")

    def step(self, loss: float) -> None:
        self.losses.append(loss)
        if self.task is not None:
            mean = sum(self.losses) / len(self.losses)
            self.progress.update(self.task, advance=1, loss="{:.4f}".format(mean))

    def epoch_end(self, row: Dict[str, Any]) -> None:
        self.progress.console.print(
            "epoch {epoch}: lr {lr:.3g}  train loss {train_loss:.4f} top-1 {train_top1:.2%}  "
            "val loss {val_loss:.4f} top-1 {val_top1:.2%} top-5 {val_top5:.2%}  {steps_per_s:.2f} steps/s".format(**row),
            highlight=False,
        )

    def note(self, text: str) -> None:
        self.progress.console.print("note: {}".format(text), highlight=False, markup=False)
