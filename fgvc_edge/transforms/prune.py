"""Structured channel pruning on Torch-Pruning (Fang et al., DepGraph, CVPR 2023; ``torch-pruning`` on PyPI).

Torch-Pruning traces one forward, groups every coupled channel (a conv's outputs with the BN after it, the
next conv's inputs, everything joined by a residual add or a concat) and removes whole groups, ranked by
importance: ``l1`` / ``l2`` (group weight magnitude) or ``taylor`` (|w·∂L/∂w|, Molchanov et al. 2019).

Taylor importance needs gradients and this step has no data: they come from ``TAYLOR_BATCHES`` random
N(0, 1) batches with random labels through the model's own training loss (``model.loss`` on its train-mode
outputs, BatchNorm kept on its running statistics so the buffers do not move). It is a data-free proxy —
it ranks channels by how much the loss surface at the current weights leans on them, not by real images.

What is never pruned, and why, each model family says through hooks on the model
(:class:`fgvc_edge.models.base.FgvcModel`; this module imports no model class): ``pruning_ignored_layers()``
→ [(module name, reason)] — classifier heads always, and every structure whose width is read outside the
traced channels (attention internals reshaped into heads, ConvLSTM gates sliced by hand, RBI's batch-mixing
projections, CMAL's CAM that multiplies head weights into the expert maps); ``pruning_surrogates()`` — modules
traced through a stand-in with the same channel boundary (ACANet's FCSA, whose 49-offset window loop makes the
dependency graph explode; CN-CNN's ConvLSTM; Swin's patch merging); ``pruning_fixed_parameters()`` — loose
parameters of kept internals; ``pruning_swaps()`` — drop-in classes swapped in first (Swin's window attention,
so a stage's residual width can shrink while the heads keep theirs); and a block's ``after_pruning()`` syncs
channel counts it keeps as plain attributes. An ignored module keeps its output width; its input width still
follows the layer that feeds it. A module without hooks keeps the Linear layers that produce its class count.

The result is recorded as the structure transform ``prune``: for every module whose shape changed, its
type, the shape attributes that changed (channels, features, groups, normalized_shape…; weight shapes
alone cannot tell a grouped conv) and the new shape of each of its tensors. Loading replays that record
on a freshly built model — no pruner, no tracing — before the tensors are loaded.
"""
import contextlib
import copy
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fgvc_edge.errors import FgvcError, UserInputError, require
from fgvc_edge.models.complexity import count_macs, count_params
from fgvc_edge.structure import (
    PRUNE_TRANSFORM,
    SWAP_TRANSFORM,
    recorded_transforms,
    shape_attributes,
    swap_module_classes,
    tensor_shapes,
)
from fgvc_edge.transforms._modules import example_input, train_mode_frozen_bn

IMPORTANCES = ("l1", "l2", "taylor")
TAYLOR_BATCHES = 4
TAYLOR_BATCH_SIZE = 4
MAX_RATIO = 0.95  # --target-macs searches ratios up to this (a layer keeps at least 5% of its channels)
SEARCH_STEPS = 8  # bisection steps for --target-macs (ratio resolution 0.95 / 2**8 ≈ 0.004)

Surrogate = Callable[[nn.Module], Callable[..., Any]]  # as fgvc_edge.models.base.TracingSurrogate


@dataclass(frozen=True)
class IgnoredLayer:
    name: str
    reason: str


@dataclass
class PruneReport:
    model: str
    input_size: int
    ratio: float
    importance: str
    global_pruning: bool
    round_to: Optional[int]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    ignored: List[IgnoredLayer]
    changed_modules: List[str]
    target_macs: Optional[int] = None

    @property
    def macs_reduction(self) -> float:
        return 1.0 - self.macs_after / self.macs_before


@dataclass
class _Plan:
    """What a model family needs: layers to leave alone, modules to trace through a stand-in."""

    ignored: List[IgnoredLayer] = field(default_factory=list)
    surrogates: Dict[str, Surrogate] = field(default_factory=dict)
    fixed_params: List[str] = field(default_factory=list)  # loose parameters of kept internals


# -- what the model asks for (its hooks) ------------------------------------------------------------------

CLASS_OUTPUT = "produces the class logits"


def pruning_plan(model: nn.Module) -> _Plan:
    """The layers ``model`` must keep, stand-ins for tracing and kept loose parameters, from its hooks."""
    hook = getattr(model, "pruning_ignored_layers", None)
    if callable(hook):
        ignored = [IgnoredLayer(name, reason) for name, reason in hook()]
    else:
        num_classes = getattr(getattr(model, "config", None), "num_classes", None)
        ignored = [IgnoredLayer(n, CLASS_OUTPUT) for n, m in model.named_modules()
                   if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not ignored:
        raise UserInputError("no pruning rule for {}: define pruning_ignored_layers() (at least its classifier "
                             "head)".format(type(model).__name__))
    return _Plan(ignored, dict(_hook(model, "pruning_surrogates", {})), list(_hook(model, "pruning_fixed_parameters", [])))


def _hook(model: nn.Module, name: str, default: Any) -> Any:
    hook = getattr(model, name, None)
    return hook() if callable(hook) else default


def swap_modules(model: nn.Module) -> Dict[str, str]:
    """Swap in the drop-in classes the model asks for (``pruning_swaps()``); returns {module name: class name}."""
    return swap_module_classes(model, _hook(model, "pruning_swaps", []))


# -- pruning -----------------------------------------------------------------------------------------------


def prune_model(
    model: nn.Module,
    *,
    ratio: Optional[float] = None,
    target_macs: Optional[int] = None,
    importance: str = "l2",
    global_pruning: bool = False,
    round_to: Optional[int] = 8,
    inplace: bool = False,
    example: Optional[torch.Tensor] = None,
) -> Tuple[nn.Module, PruneReport]:
    """Prune ``model`` (a copy unless ``inplace``) by channel ``ratio`` or down to ``target_macs`` MACs at its
    input size; returns the model (eval mode, transform recorded) and a report."""
    _check_options(ratio, target_macs, importance, round_to)
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    x = example_input(model, example)
    input_size = getattr(getattr(model, "config", None), "input_size", None) or x.shape[-1]
    swapped = swap_modules(model)
    plan = pruning_plan(model)
    with torch.no_grad():
        reference_shape = tuple(model(x).shape)
    params_before, (macs_before, _) = count_params(model), count_macs(model, input_size)
    if importance == "taylor":
        _taylor_gradients(model, x.shape[-1])
    if target_macs is not None:
        ratio = _search_ratio(model, x, plan, target_macs, input_size, macs_before, importance, global_pruning, round_to)
    changes = _prune_once(model, x, plan, ratio, importance, global_pruning, round_to)
    if not changes:
        raise UserInputError("nothing would be pruned: at ratio {:.3f} with --round-to {} every layer keeps its width; "
                             "raise --ratio or lower --round-to".format(ratio, round_to))
    model.zero_grad(set_to_none=True)
    _check_pruned(model, x, reference_shape)
    steps = [{"name": SWAP_TRANSFORM, "modules": swapped}] if swapped else []
    steps.append({
        "name": PRUNE_TRANSFORM, "ratio": ratio, "importance": importance, "global": global_pruning,
        "round_to": round_to, "modules": changes,
    })
    model.structure_transforms = recorded_transforms(model) + steps
    report = PruneReport(
        model=getattr(getattr(model, "config", None), "name", type(model).__name__),
        input_size=input_size, ratio=ratio, importance=importance, global_pruning=global_pruning,
        round_to=round_to, params_before=params_before, params_after=count_params(model),
        macs_before=macs_before, macs_after=count_macs(model, input_size)[0], ignored=plan.ignored,
        changed_modules=[c["module"] for c in changes], target_macs=target_macs,
    )
    return model.eval(), report


def _check_options(ratio: Optional[float], target_macs: Optional[int], importance: str, round_to: Optional[int]) -> None:
    if (ratio is None) == (target_macs is None):
        raise UserInputError("give exactly one of --ratio and --target-macs")
    if ratio is not None and not 0.0 < ratio < 1.0:
        raise UserInputError("--ratio must be in (0, 1), got {}".format(ratio))
    if target_macs is not None and target_macs <= 0:
        raise UserInputError("--target-macs must be > 0")
    if importance not in IMPORTANCES:
        raise UserInputError("--importance must be one of {}, not {!r}".format(", ".join(IMPORTANCES), importance))
    if round_to is not None and round_to < 1:
        raise UserInputError("--round-to must be >= 1, got {}".format(round_to))


def _importance(name: str) -> Any:
    tp = require("torch_pruning", "toolkit")
    if name == "taylor":
        return tp.importance.TaylorImportance()
    return tp.importance.MagnitudeImportance(p=1 if name == "l1" else 2)


def _prune_once(
    model: nn.Module, x: torch.Tensor, plan: _Plan, ratio: float, importance: str, global_pruning: bool,
    round_to: Optional[int],
) -> List[Dict[str, Any]]:
    """One Torch-Pruning pass at ``ratio``; returns the shape record of every module it changed."""
    tp = require("torch_pruning", "toolkit")
    before = _shape_snapshot(model)
    ignored = [model.get_submodule(item.name) for item in plan.ignored]
    # Parameters an ignored module holds outside Conv/Linear/norm layers (FCSA's rates, Swin's bias table)
    # would otherwise be taken for channel-prunable tensors.
    loose = [p for m in ignored for sub in m.modules() for p in sub.parameters(recurse=False) if not _standard(sub)]
    loose += [model.get_parameter(name) for name in plan.fixed_params]
    with _surrogates(model, plan.surrogates), warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.BasePruner(
            model, x, importance=_importance(importance), pruning_ratio=ratio, global_pruning=global_pruning,
            ignored_layers=ignored + loose, round_to=round_to,
        )
        pruner.step()
    _sync_block_attributes(model)
    return _shape_changes(model, before)


def _standard(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm))


@contextlib.contextmanager
def _surrogates(model: nn.Module, surrogates: Dict[str, Surrogate]) -> Iterator[None]:
    modules = {name: model.get_submodule(name) for name in surrogates}
    for name, module in modules.items():
        module.forward = surrogates[name](module)
    try:
        yield
    finally:
        for module in modules.values():
            del module.forward


def _sync_block_attributes(model: nn.Module) -> None:
    """Blocks that keep their channel counts as plain attributes take them back from their tensors."""
    for module in model.modules():
        if callable(getattr(module, "after_pruning", None)):
            module.after_pruning()


def _search_ratio(
    model: nn.Module, x: torch.Tensor, plan: _Plan, target_macs: int, input_size: int, macs_before: int,
    importance: str, global_pruning: bool, round_to: Optional[int],
) -> float:
    """Smallest ratio whose pruned copy has at most ``target_macs`` MACs (bisection; MACs fall with the ratio)."""
    if target_macs >= macs_before:
        raise UserInputError("the model already has {:.3f} GMACs <= the target".format(macs_before / 1e9))

    def macs_at(ratio: float) -> int:
        trial = copy.deepcopy(model)
        _prune_once(trial, x, plan, ratio, importance, global_pruning, round_to)  # the plan names modules
        return count_macs(trial, input_size)[0]

    high = MAX_RATIO
    smallest = macs_at(high)
    if smallest > target_macs:
        raise UserInputError(
            "cannot reach {:.3f} GMACs: ratio {} still leaves {:.3f}".format(target_macs / 1e9, high, smallest / 1e9)
        )
    low = 0.0
    for _ in range(SEARCH_STEPS):
        middle = (low + high) / 2
        if macs_at(middle) <= target_macs:
            high = middle
        else:
            low = middle
    return high


def _taylor_gradients(model: nn.Module, size: int, seed: int = 0) -> None:
    """∂L/∂w from random batches through ``model.loss`` (see the module docstring), left in ``.grad``."""
    generator = torch.Generator().manual_seed(seed)
    num_classes = getattr(getattr(model, "config", None), "num_classes", None)
    loss_fn = getattr(model, "loss", None)
    model.zero_grad(set_to_none=True)
    with train_mode_frozen_bn(model), torch.enable_grad():
        for _ in range(TAYLOR_BATCHES):
            images = torch.randn(TAYLOR_BATCH_SIZE, 3, size, size, generator=generator)
            outputs = model(images)
            classes = num_classes or _first_tensor(outputs).shape[-1]
            labels = torch.randint(0, classes, (TAYLOR_BATCH_SIZE,), generator=generator)
            loss = loss_fn(outputs, labels) if callable(loss_fn) else F.cross_entropy(outputs, labels)
            loss.backward()
    for param in model.parameters():
        if param.grad is None:  # a parameter the loss does not reach ranks as unimportant, not as an error
            param.grad = torch.zeros_like(param)


def _first_tensor(outputs: Any) -> torch.Tensor:
    return outputs if isinstance(outputs, torch.Tensor) else next(t for t in outputs if isinstance(t, torch.Tensor))


def _check_pruned(model: nn.Module, x: torch.Tensor, reference_shape: Tuple[int, ...]) -> None:
    """The pruned model still runs: same eval output shape, and a finite training loss (fine-tuning needs it)."""
    try:
        with torch.no_grad():
            shape = tuple(model(x).shape)
            with train_mode_frozen_bn(model):
                outputs = model(x)
                labels = torch.zeros(x.shape[0], dtype=torch.long)
                loss = model.loss(outputs, labels) if callable(getattr(model, "loss", None)) else None
    except RuntimeError as exc:
        raise FgvcError("pruning broke {}: {}".format(type(model).__name__, str(exc).splitlines()[0])) from None
    if shape != reference_shape:
        raise FgvcError("pruning changed the output shape {} → {}".format(reference_shape, shape))
    if loss is not None and not torch.isfinite(loss):
        raise FgvcError("the pruned model's training loss is not finite")


# -- shape record (what the checkpoint stores) and its replay -------------------------------------------------


def _shape_snapshot(model: nn.Module) -> Dict[str, Tuple[Dict[str, Any], Dict[str, Tuple[int, ...]]]]:
    return {name: (shape_attributes(m), tensor_shapes(m)) for name, m in model.named_modules()}


def _shape_changes(model: nn.Module, before: Dict[str, Any]) -> List[Dict[str, Any]]:
    changes = []
    for name, module in model.named_modules():
        old_attrs, old_shapes = before[name]
        attrs, shapes = shape_attributes(module), tensor_shapes(module)
        changed_attrs = {k: _jsonable(v) for k, v in attrs.items() if old_attrs.get(k) != v}
        changed_tensors = {k: list(v) for k, v in shapes.items() if old_shapes.get(k) != v}
        if not changed_attrs and not changed_tensors:
            continue
        transient = [k for k in changed_tensors if k in module._buffers and k in module._non_persistent_buffers_set]
        if transient:
            raise FgvcError("pruning resized non-persistent buffer(s) {} of {}; a checkpoint could not restore "
                            "them".format(transient, name))
        changes.append({"module": name, "type": type(module).__name__, "attrs": changed_attrs, "tensors": changed_tensors})
    return changes


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def prune_checkpoint(
    model_name: str,
    output: str,
    *,
    checkpoint: Optional[str] = None,
    num_classes: Optional[int] = None,
    input_size: Optional[int] = None,
    mode: Optional[str] = None,
    before_save: Optional[Callable[[nn.Module], Any]] = None,
    **options: Any,
) -> Tuple[str, PruneReport]:
    """Build (or restore) ``model_name``, prune it (``options`` as :func:`prune_model`), save to ``output``.

    ``before_save(model)`` runs on the pruned model before it is saved: the CLI fine-tunes there, so ``output``
    holds the fine-tuned weights (pruned weights alone are usually near chance)."""
    from fgvc_edge.checkpoint import check_checkpoint_output, save_checkpoint
    from fgvc_edge.models import create_model
    from fgvc_edge.models.configs import variant_kwargs

    check_checkpoint_output(output)
    model = create_model(model_name, checkpoint=checkpoint, num_classes=num_classes, input_size=input_size,
                         **variant_kwargs(model_name, mode))
    model, report = prune_model(model, inplace=True, **options)
    if before_save is not None:
        before_save(model)
    folder = save_checkpoint(model, output, class_names=getattr(model, "class_names", None))
    return folder, report
