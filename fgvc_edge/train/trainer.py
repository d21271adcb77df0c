"""The training loop: one code path for every recipe, one process or many (torchrun), fresh or resumed.

A run folder (``--out``) holds::

    run.json              options, recipe, data set, devices, backbone-import report, final result
    metrics.csv           one row per epoch (loss, top-1/top-5, lr, steps/s, skipped images)
    curves.png            loss and accuracy against the epoch
    last/                 checkpoint + training_state.pt after the latest epoch (what --resume continues)
    best/                 checkpoint with the best validation top-1
    skipped_images.txt    images that could not be read (when there are any)

Exact resume: the state after epoch e (weights, optimizer, scheduler, every process's RNG, metrics history)
is written as one unit; the data order of epoch e+1 depends only on (seed, e+1); so N epochs straight and
N/2 + ``--resume`` N/2 give the same parameters, bit for bit, on the same machine.
"""
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fgvc_edge._io import check_output_dir, read_json, write_json
from fgvc_edge.checkpoint import load_training_state, save_checkpoint
from fgvc_edge.contract.limits import MAX_BATCH, MAX_INPUT_SIZE, MAX_SEED
from fgvc_edge.datasets import DatasetSplits, load_dataset
from fgvc_edge.errors import UserInputError
from fgvc_edge.evaluate.core import EVAL_SHUFFLE_SEED
from fgvc_edge.train import data as train_data
from fgvc_edge.train.curves import plot_curves, write_metrics_csv
from fgvc_edge.train.distributed import (
    DistContext,
    all_gather,
    all_min,
    all_sum,
    barrier,
    init_distributed,
    shutdown,
)
from fgvc_edge.train.losses import TrainingModule
from fgvc_edge.train.recipes import Recipe, check_initialisation, get_recipe
from fgvc_edge.train.state import capture_rng, last_checkpoint, restore_rng
from fgvc_edge.train.steps import STEPS, StepContext

log = logging.getLogger(__name__)

# What a resumed run reads from training_state.pt.
_STATE_KEYS = ("epoch", "optimizer", "scheduler", "rng", "history", "best_top1", "options")
# Options a resumed run must keep (the rest — epochs, stop_after, workers, device — may change).
_FIXED_ON_RESUME = ("model", "dataset", "recipe", "loss", "batch_size", "lr", "input_size", "seed")


@dataclass
class TrainOptions:
    """Everything ``fgvc-edge train`` takes; None means "the recipe's value"."""

    model: str
    data: str
    dataset: str = "auto"
    out: Optional[str] = None
    recipe: str = "paper"
    loss: Optional[str] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    input_size: Optional[int] = None
    # The data set decides the class count; given, it must agree (a check, as for every model-creating command).
    num_classes: Optional[int] = None
    backbone_weights: Optional[str] = None
    # Train a recipe whose paper starts from ImageNet weights from random initialisation instead.
    from_scratch: bool = False
    official_checkpoint: Optional[str] = None
    checkpoint: Optional[str] = None
    resume: bool = False
    stop_after: Optional[int] = None
    seed: int = 0
    workers: int = 0
    threads: Optional[int] = None
    device: str = "auto"
    amp: bool = True
    model_args: Dict[str, Any] = field(default_factory=dict)

    @property
    def out_dir(self) -> str:
        return self.out or os.path.join("runs", self.model)


@dataclass
class TrainResult:
    out: str
    best: Optional[str]
    last: str
    history: List[Dict[str, Any]]
    best_top1: float
    skipped: List[str]
    notes: List[str] = field(default_factory=list)
    # finetune(): validation top-1 of the model as it was given, before the first step.
    initial_top1: Optional[float] = None


class Reporter:
    """Progress hooks; the CLI's subclass draws rich progress bars. Called on the main process only."""

    def start(self, info: Dict[str, Any]) -> None:
        log.info("training %s", info)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, loss: float) -> None:
        pass

    def epoch_end(self, row: Dict[str, Any]) -> None:
        log.info("epoch %s: %s", row["epoch"], row)

    def note(self, text: str) -> None:
        log.warning("%s", text)


@dataclass
class _Run:
    """The pieces of one run, fresh or resumed."""

    model: nn.Module
    splits: DatasetSplits
    recipe: Recipe
    epochs: int
    options: TrainOptions
    state: Optional[Dict[str, Any]] = None
    notes: List[str] = field(default_factory=list)
    backbone_report: Optional[Dict[str, Any]] = None


def train(options: TrainOptions, reporter: Optional[Reporter] = None) -> TrainResult:
    """Train ``options.model`` on ``options.data`` (fresh, or ``resume`` from ``<out>/last``)."""
    _check_options(options)
    if options.threads is not None:
        torch.set_num_threads(_positive(options.threads, "--threads"))
    ctx = init_distributed(options.device)
    try:
        run = _resume_run(options) if options.resume else _fresh_run(options)
        return fit(run, ctx, reporter or Reporter())
    finally:
        shutdown(ctx)


def finetune(
    model: nn.Module,
    data: str,
    epochs: int,
    *,
    out: str,
    dataset: str = "auto",
    recipe: str = "simple",
    lr: Optional[float] = None,
    batch_size: Optional[int] = None,
    seed: int = 0,
    workers: int = 0,
    reporter: Optional[Reporter] = None,
) -> TrainResult:
    """Fine-tune an existing model (e.g. a pruned one) in place with the trainer; ``fgvc-edge prune
    --finetune-data DIR --epochs N`` calls this. Its structure transforms travel into the checkpoints; the
    result also holds the validation top-1 before fine-tuning (``initial_top1``), and the model takes the data
    set's class names."""
    config = getattr(model, "config", None)
    if config is None:
        raise UserInputError("finetune() needs a model made by create_model()")
    options = TrainOptions(model=config.name, data=str(data), dataset=dataset, out=out, recipe=recipe,
                           epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, workers=workers)
    _check_options(options)
    splits = load_dataset(options.data, dataset)
    _check_classes(model, splits)
    run = _make_run(model, splits, options)
    ctx = init_distributed("auto")
    _refuse_existing_run(run)
    try:
        initial, _ = evaluate_loader(model.to(ctx.device), _val_loader(run, ctx), ctx)
        result = fit(run, ctx, reporter or Reporter())
    finally:
        shutdown(ctx)
    result.initial_top1 = initial["val_top1"]
    model.class_names = list(splits.class_names)
    return result


# -- building a run ---------------------------------------------------------------------------------------


def _fresh_run(options: TrainOptions) -> _Run:
    from fgvc_edge.models import create_model

    splits = load_dataset(options.data, options.dataset)
    if options.num_classes is not None and options.num_classes != splits.num_classes:
        raise UserInputError("--num-classes {} disagrees with {} ({} classes)".format(
            options.num_classes, options.data, splits.num_classes))
    _seed_all(options.seed)
    if options.official_checkpoint and options.checkpoint:
        raise UserInputError("give --checkpoint or --official-checkpoint, not both")
    if options.official_checkpoint:
        from fgvc_edge.importers import import_official_checkpoint

        model = import_official_checkpoint(options.model, options.official_checkpoint, num_classes=splits.num_classes,
                                           **options.model_args)
    else:
        model = create_model(options.model, num_classes=splits.num_classes, checkpoint=options.checkpoint,
                             input_size=options.input_size, **options.model_args)
    if options.input_size is not None and model.config.input_size != options.input_size:
        raise UserInputError("{} is built for {} px; --input-size {} disagrees".format(
            options.model, model.config.input_size, options.input_size))
    _check_classes(model, splits)
    run = _make_run(model, splits, options)
    if not (options.official_checkpoint or options.checkpoint):
        check_initialisation(options.model, run.recipe, backbone_weights=options.backbone_weights,
                             from_scratch=options.from_scratch)
        if options.from_scratch and run.recipe.pretrained_backbone:
            run.notes.append("--from-scratch: the {} paper recipe starts from ImageNet weights; this run does "
                             "not".format(run.recipe.name))
    if options.backbone_weights:
        from fgvc_edge.importers.backbone import load_backbone_weights

        report = load_backbone_weights(model, options.backbone_weights)
        run.backbone_report = report.to_dict()
        run.notes.append(report.summary())
    return run


def _make_run(model: nn.Module, splits: DatasetSplits, options: TrainOptions) -> _Run:
    recipe = get_recipe(model.config.name, options.recipe, loss=options.loss).with_lr(options.lr)
    if options.batch_size is not None:
        recipe = dataclasses.replace(recipe, batch_size=_positive(options.batch_size, "--batch-size"))
    epochs = _positive(options.epochs if options.epochs is not None else recipe.epochs, "--epochs")
    return _Run(model, splits, recipe, epochs, options, notes=list(splits.notes))


def _resume_run(options: TrainOptions) -> _Run:
    from fgvc_edge.models import create_model

    folder = last_checkpoint(os.path.join(options.out_dir, "last"))
    if folder is None:
        raise UserInputError("nothing to resume: {} has no last/ checkpoint".format(options.out_dir))
    state = load_training_state(folder)
    if state is None:
        raise UserInputError("{} has no training state to resume from".format(folder))
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise UserInputError("{}: the training state lacks {}; start a new run".format(folder, ", ".join(missing)))
    try:
        stored = TrainOptions(**state["options"])
    except TypeError:
        raise UserInputError("{}: the training state's options are not this fgvc-edge's; start a new run".format(
            folder)) from None
    for name in _FIXED_ON_RESUME:
        given = getattr(options, name)
        default = TrainOptions.__dataclass_fields__[name].default
        if given is not None and given != default and given != getattr(stored, name):
            raise UserInputError("--{} {} disagrees with the run being resumed ({})".format(
                name.replace("_", "-"), given, getattr(stored, name)))
    if os.path.abspath(os.path.expanduser(options.data)) != os.path.abspath(os.path.expanduser(stored.data)):
        raise UserInputError("--data {} is not the run's data set ({})".format(options.data, stored.data))
    merged = dataclasses.replace(
        stored, resume=True, out=options.out_dir, stop_after=options.stop_after, workers=options.workers,
        threads=options.threads, device=options.device, amp=options.amp,
        epochs=options.epochs if options.epochs is not None else stored.epochs,
    )
    splits = load_dataset(merged.data, merged.dataset)
    model = create_model(stored.model, checkpoint=folder)
    _check_classes(model, splits)
    run = _make_run(model, splits, merged)
    run.state = state
    if merged.epochs != stored.epochs:
        run.notes.append(
            "--epochs changed from {} to {}: the schedule's horizon changes".format(stored.epochs, merged.epochs)
        )
    return run


# -- the loop ---------------------------------------------------------------------------------------------


def fit(run: _Run, ctx: DistContext, reporter: Reporter) -> TrainResult:
    """Train ``run.model`` for the remaining epochs; checkpoints and metrics go to the run folder."""
    out, recipe, splits = run.options.out_dir, run.recipe, run.splits
    _refuse_existing_run(run)
    check_output_dir(out)
    module = TrainingModule(run.model, recipe.loss).to(ctx.device)
    if run.state is not None and run.state.get("aux") is not None and module.mc is not None:
        module.mc.load_state_dict(run.state["aux"])
    net: nn.Module = module
    if ctx.enabled:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
    optimizer = build_optimizer(module, recipe)
    epochs = run.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: recipe.lr_factor(e, epochs))
    scaler = torch.amp.GradScaler("cuda") if run.options.amp and ctx.device.type == "cuda" else None
    step_ctx = StepContext(net=net, module=module, optimizer=optimizer, device=ctx.device, scaler=scaler)
    step = STEPS[recipe.step]

    preprocess = run.model.config.preprocess
    loader, sampler, generator = train_data.train_loader(
        splits.train, preprocess, recipe.augment, batch_size=recipe.batch_size, seed=run.options.seed,
        rank=ctx.rank, world_size=ctx.world_size, workers=run.options.workers,
    )
    val_loader = _val_loader(run, ctx)

    progress = _restore(run, ctx, optimizer, scheduler, scaler)
    if ctx.is_main:
        _write_run_json(out, run, ctx, status="running")
        reporter.start(_run_info(run, ctx))
        for note in run.notes:
            reporter.note(note)

    for epoch in range(progress.epoch, epochs):
        if run.options.stop_after is not None and epoch >= run.options.stop_after:
            break
        train_data.start_epoch(sampler, generator, run.options.seed, epoch)
        lr = optimizer.param_groups[0]["lr"]
        if ctx.is_main:
            reporter.epoch_start(epoch + 1, epochs, len(loader))
        try:
            train_stats, train_skipped = _train_epoch(step, step_ctx, loader, ctx, reporter)
        except _Diverged as exc:
            if ctx.is_main:
                _write_run_json(out, run, ctx, status="diverged")
            kept = ("{} holds the last good checkpoint (epoch {})".format(os.path.join(out, "last"), progress.epoch)
                    if progress.epoch else "no checkpoint was written")
            raise UserInputError("training stopped: the loss became {} in epoch {} (step {}); {}; lower --lr "
                                 "(it was {:g})".format(exc.loss, epoch + 1, exc.step, kept, lr)) from None
        scheduler.step()
        val_stats, val_skipped = evaluate_loader(module.model, val_loader, ctx)
        progress.skipped |= {splits.train[i][0] for i in train_skipped} | {splits.test[i][0] for i in val_skipped}
        row = {"epoch": epoch + 1, "lr": lr, **train_stats, **val_stats,
               "skipped_train": len(train_skipped), "skipped_val": len(val_skipped)}
        progress.history.append(row)
        progress.epoch = epoch + 1
        improved = row["val_top1"] > progress.best_top1
        progress.best_top1 = max(progress.best_top1, row["val_top1"])
        rng_states = all_gather(ctx, capture_rng())
        if ctx.is_main:
            state = {
                "epoch": progress.epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_states,
                "aux": module.aux_state(), "history": progress.history, "best_top1": progress.best_top1,
                "skipped": sorted(progress.skipped), "options": dataclasses.asdict(run.options),
                "world_size": ctx.world_size,
            }
            _save_epoch(out, run, module.model, state, improved)
            reporter.epoch_end(row)
        barrier(ctx)

    best = os.path.join(out, "best") if progress.best_top1 >= 0 else None
    result = TrainResult(out=out, best=best, last=os.path.join(out, "last"), history=progress.history,
                         best_top1=progress.best_top1, skipped=sorted(progress.skipped), notes=run.notes)
    if ctx.is_main:
        _write_run_json(out, run, ctx, status="finished" if progress.epoch == epochs else "stopped", result=result)
    return result


def _refuse_existing_run(run: _Run) -> None:
    out = run.options.out_dir
    if run.state is None and last_checkpoint(os.path.join(out, "last")) is not None:
        raise UserInputError("{} already holds a run: continue it with --resume or choose another --output".format(out))


def _val_loader(run: _Run, ctx: DistContext) -> Any:
    return train_data.eval_loader(
        run.splits.test, run.model.config.preprocess, batch_size=run.recipe.batch_size, rank=ctx.rank,
        world_size=ctx.world_size, workers=run.options.workers,
        shuffle_seed=EVAL_SHUFFLE_SEED if run.model.config.batch_dependent else None,
    )


@dataclass
class _Progress:
    """Where a run stands: epochs done, metrics so far, best validation top-1, unreadable images."""

    epoch: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)
    best_top1: float = -1.0
    skipped: Set[str] = field(default_factory=set)


def _restore(run: _Run, ctx: DistContext, optimizer: torch.optim.Optimizer, scheduler: Any,
             scaler: Optional[Any]) -> _Progress:
    """Fresh run: seed this process. Resumed run: optimizer, scheduler, scaler, progress and RNG as saved."""
    if run.state is None:
        _seed_all(run.options.seed + ctx.rank)
        return _Progress()
    state = run.state
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    progress = _Progress(int(state["epoch"]), list(state["history"]), float(state["best_top1"]),
                         set(state.get("skipped", [])))
    if len(state["rng"]) == ctx.world_size:
        restore_rng(state["rng"][ctx.rank])
    else:
        _seed_all(run.options.seed + 7919 * (progress.epoch + 1) + ctx.rank)
        run.notes.append("resumed on {} processes, saved on {}: the random streams restart".format(
            ctx.world_size, len(state["rng"])))
    return progress


def _save_epoch(out: str, run: _Run, model: nn.Module, state: Dict[str, Any], improved: bool) -> None:
    class_names = run.splits.class_names
    save_checkpoint(model, os.path.join(out, "last"), class_names=class_names, training_state=state)
    if improved:
        save_checkpoint(model, os.path.join(out, "best"), class_names=class_names)
    _write_epoch_outputs(out, run, state["history"], set(state["skipped"]))


def build_optimizer(module: TrainingModule, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer: parameters under ``backbone.`` at ``backbone_lr``, the rest at ``lr``."""
    heads, backbone = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        in_backbone = recipe.backbone_lr is not None and name.startswith("model.backbone.")
        (backbone if in_backbone else heads).append(param)
    groups = [{"params": heads, "lr": recipe.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": recipe.backbone_lr})
    if recipe.optimizer == "radam":
        return torch.optim.RAdam(groups, lr=recipe.lr, eps=recipe.eps, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def _train_epoch(step: Any, step_ctx: StepContext, loader: Any, ctx: DistContext,
                 reporter: Reporter) -> Tuple[Dict[str, float], List[int]]:
    step_ctx.module.train()
    loss_sum = correct = seen = steps = 0.0
    skipped: List[int] = []
    started = time.perf_counter()
    for batch in loader:
        skipped += batch.skipped
        # Every process must take the same steps (DDP): a batch too small after skipping is skipped by all.
        size = all_min(ctx, len(batch))
        if size < 2:
            continue
        images = batch.images.to(ctx.device, non_blocking=True)
        targets = batch.targets.to(ctx.device, non_blocking=True)
        result = step(step_ctx, images, targets)
        if not math.isfinite(result.loss):
            # The weights are already poisoned; nothing of this epoch may reach a checkpoint.
            raise _Diverged(result.loss, int(steps) + 1)
        n = int(targets.shape[0])
        loss_sum += result.loss * n
        correct += float((result.logits.argmax(dim=1) == targets).sum())
        seen += n
        steps += 1
        if ctx.is_main:
            reporter.step(result.loss)
    seconds = time.perf_counter() - started
    loss_sum, correct, seen, skipped_count = all_sum(ctx, [loss_sum, correct, seen, len(skipped)])
    all_skipped = sorted({i for part in all_gather(ctx, skipped) for i in part})
    stats = {
        "train_loss": loss_sum / max(seen, 1),
        "train_top1": correct / max(seen, 1),
        "train_images": int(seen),
        "steps": int(steps),
        "steps_per_s": steps / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
    }
    return stats, all_skipped


class _Diverged(Exception):
    def __init__(self, loss: float, step: int) -> None:
        super().__init__(loss, step)
        self.loss, self.step = loss, step


@torch.no_grad()
def evaluate_loader(model: nn.Module, loader: Any, ctx: DistContext) -> Tuple[Dict[str, float], List[int]]:
    """Validation: CE of the eval-mode logits, top-1, top-5 over the test split (sharded over processes)."""
    model.eval()
    loss_sum = top1 = top5 = seen = 0.0
    skipped: List[int] = []
    for batch in loader:
        skipped += batch.skipped
        if not len(batch):
            continue
        logits = model(batch.images.to(ctx.device)).float()
        targets = batch.targets.to(ctx.device)
        k = min(5, logits.shape[1])
        ranked = logits.topk(k, dim=1).indices
        loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
        top1 += float((ranked[:, 0] == targets).sum())
        top5 += float((ranked == targets.unsqueeze(1)).any(dim=1).sum())
        seen += int(targets.shape[0])
    loss_sum, top1, top5, seen = all_sum(ctx, [loss_sum, top1, top5, seen])
    all_skipped = sorted({i for part in all_gather(ctx, skipped) for i in part})
    stats = {"val_loss": loss_sum / max(seen, 1), "val_top1": top1 / max(seen, 1), "val_top5": top5 / max(seen, 1)}
    return stats, all_skipped


# -- helpers ----------------------------------------------------------------------------------------------


def _check_classes(model: nn.Module, splits: DatasetSplits) -> None:
    if model.config.num_classes != splits.num_classes:
        raise UserInputError("{} has {} classes; the data set at {} has {}".format(
            model.config.name, model.config.num_classes, splits.root, splits.num_classes))


def _check_options(options: TrainOptions) -> None:
    """Ranges checked before any work (the recipe checks --lr)."""
    if not 0 <= options.seed <= MAX_SEED:
        raise UserInputError("--seed must be in 0..{}, got {}".format(MAX_SEED, options.seed))
    if options.batch_size is not None and not 1 <= options.batch_size <= MAX_BATCH:
        raise UserInputError("--batch-size must be in 1..{}, got {}".format(MAX_BATCH, options.batch_size))
    if options.input_size is not None and not 1 <= options.input_size <= MAX_INPUT_SIZE:
        raise UserInputError("--input-size must be in 1..{}, got {}".format(MAX_INPUT_SIZE, options.input_size))


def _positive(value: int, option: str) -> int:
    if value < 1:
        raise UserInputError("{} must be >= 1, got {}".format(option, value))
    return int(value)


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _run_info(run: _Run, ctx: DistContext) -> Dict[str, Any]:
    return {
        "model": run.model.config.name,
        "recipe": dataclasses.asdict(run.recipe),
        "epochs": run.epochs,
        "data": run.splits.describe(),
        "input_size": run.model.config.input_size,
        "world_size": ctx.world_size,
        "device": str(ctx.device),
        "amp": run.options.amp and ctx.device.type == "cuda",
        "torch": torch.__version__,
    }


def _write_run_json(
    out: str, run: _Run, ctx: DistContext, *, status: str, result: Optional[TrainResult] = None
) -> None:
    path = os.path.join(out, "run.json")
    record = read_json(path) if run.options.resume and os.path.exists(path) else {}
    record.update({"status": status, "options": dataclasses.asdict(run.options), **_run_info(run, ctx)})
    if run.backbone_report is not None:
        record["backbone_import"] = run.backbone_report
    record["notes"] = run.notes
    if result is not None:
        record["result"] = {"best": result.best, "last": result.last, "best_top1": result.best_top1,
                            "epochs_done": len(result.history), "skipped_images": len(result.skipped)}
    write_json(path, record)


def _write_epoch_outputs(out: str, run: _Run, history: List[Dict[str, Any]], skipped: Set[str]) -> None:
    write_metrics_csv(os.path.join(out, "metrics.csv"), history)
    plot_curves(os.path.join(out, "curves.png"), history,
                "{} on {} ({} recipe)".format(run.model.config.name, run.splits.layout, run.recipe.name))
    if skipped:
        from fgvc_edge._io import atomic_path

        with atomic_path(os.path.join(out, "skipped_images.txt")) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write("\n".join(sorted(skipped)) + "\n")
