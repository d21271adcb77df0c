"""Structured channel pruning on Torch-Pruning (Fang et al., DepGraph, CVPR 2023; ``torch-pruning`` on PyPI).

Torch-Pruning traces one forward, groups every coupled channel (a conv's outputs with the BN after it, the
next conv's inputs, everything joined by a residual add or a concat) and removes whole groups, ranked by
importance: ``l1`` / ``l2`` (group weight magnitude) or ``taylor`` (|w·∂L/∂w|, Molchanov et al. 2019).

Taylor importance needs gradients and this step has no data: they come from ``TAYLOR_BATCHES`` random
N(0, 1) batches with random labels through the model's own training loss (``model.loss`` on its train-mode
outputs, BatchNorm kept on its running statistics so the buffers do not move). It is a data-free proxy —
it ranks channels by how much the loss surface at the current weights leans on them, not by real images.

What is never pruned, and why, is a per-family rule (``IGNORE_RULES``, keyed by model class; a model may
instead define ``pruning_ignored_layers() -> [(module name, reason)]``): classifier heads always, and every
structure whose width is read outside the traced channels — attention internals reshaped into heads,
ConvLSTM gates sliced by hand, RBI's batch-mixing projections, CMAL's CAM that multiplies head weights into
the expert maps. An ignored module keeps its output width; its input width still follows the layer that
feeds it. Two structures are made prunable instead of ignored:

* ACANet's FCSA is traced through a stand-in (q + k + v of its input): its 49-offset window loop makes the
  dependency graph explode, and only its boundary matters once its internals are ignored;
* Swin's window attention is swapped for a same-output class (:mod:`fgvc_edge.transforms.swaps`) so a Swin
  stage's residual width can shrink while the heads keep theirs; CN-CNN's ConvLSTM reads its input columns by
  the input's width, so the pyramid shrinks while the hidden width stays.

The result is recorded as the structure transform ``prune``: for every module whose shape changed, its
type, the shape attributes that changed (channels, features, groups, normalized_shape…; weight shapes
alone cannot tell a grouped conv) and the new shape of each of its tensors. Loading replays that record
on a freshly built model — no pruner, no tracing — before the tensors are loaded.
"""
import contextlib
import copy
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fgvc_edge.errors import FgvcError, UserInputError, require
from fgvc_edge.models.complexity import count_macs, count_params
from fgvc_edge.models.structure import record_module, register_transform
from fgvc_edge.transforms import swaps
from fgvc_edge.transforms._modules import example_input, train_mode_frozen_bn

PRUNE_TRANSFORM = "prune"
IMPORTANCES = ("l1", "l2", "taylor")
TAYLOR_BATCHES = 4
TAYLOR_BATCH_SIZE = 4
MAX_RATIO = 0.95  # --target-macs searches ratios up to this (a layer keeps at least 5% of its channels)
SEARCH_STEPS = 8  # bisection steps for --target-macs (ratio resolution 0.95 / 2**8 ≈ 0.004)

Surrogate = Callable[[nn.Module], Callable[..., Any]]


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


# -- per-family rules -------------------------------------------------------------------------------------

HEAD = "classifier head: the class outputs are never pruned"


def _rules_resnet(model: nn.Module) -> _Plan:
    return _Plan([IgnoredLayer("fc", HEAD)])


def _rules_acanet(model: nn.Module) -> _Plan:
    from fgvc_edge.models.acanet import FCSA

    plan = _Plan([IgnoredLayer("fc", HEAD)])
    for name, module in model.named_modules():
        if isinstance(module, FCSA):
            plan.ignored.append(IgnoredLayer(
                name, "FCSA internals: q/k/v widths are reshaped into 4 heads for window attention and mixed by the "
                "shift conv (ACmix); its input width is pruned, its output width stays"))
            plan.surrogates[name] = _fcsa_boundary
    return plan


def _fcsa_boundary(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    # Same channel boundary as FCSA (input → q, k, v; output width = q's), without the window loop.
    return lambda x: module.q(x) + module.k(x) + module.v(x)


def _rules_cmal(model: nn.Module) -> _Plan:
    plan = _Plan()
    for i in range(len(model.heads)):
        plan.ignored.append(IgnoredLayer("heads.{}".format(i), "expert classifier head (BN1d → Linear → BN1d → ELU → Linear)"))
    plan.ignored.append(IgnoredLayer("concat_head", "concatenation classifier head"))
    for i in range(len(model.blocks)):
        plan.ignored.append(IgnoredLayer(
            "blocks.{}.1".format(i), "expert map x'' (1024 ch): the CAM multiplies it by head weights W4[k]·W1 outside "
            "the traced graph (detached), so its width stays; its input width is pruned"))
    return plan


def _rules_cncnn(model: nn.Module) -> _Plan:
    plan = _Plan()
    if model.top_down is not None:
        # The pyramid only feeds the ConvLSTM's input columns, so it shrinks; the hidden state is the fused
        # level every later stage reads.
        plan.ignored.append(IgnoredLayer(
            "top_down.gates", "ConvLSTM gates: one conv split into i, f, o, g, hidden width 256 fed back as input; "
            "its pyramid-input columns are pruned"))
        plan.surrogates["top_down"] = _convlstm_boundary
    else:
        for name in ("lateral5", "lateral4", "lateral3"):
            plan.ignored.append(IgnoredLayer(name, "pyramid width 256 read by attention and heads; input width is pruned"))
    if model.low_to_high:
        for name in ("attention3", "attention4", "attention5"):
            plan.ignored.append(IgnoredLayer(name, "level attention: channel masks are averaged across levels"))
    for name in ("head3", "head4", "head5", "head_concat"):
        plan.ignored.append(IgnoredLayer(name, HEAD))
    return plan


def _convlstm_boundary(module: nn.Module) -> Callable[[List[torch.Tensor]], List[torch.Tensor]]:
    """The ConvLSTM for tracing: every level through the full cell from a zero state (the same values as the
    first-step shortcut, which reads the kernel by slicing and would hide it from the tracer)."""

    def forward(levels: List[torch.Tensor]) -> List[torch.Tensor]:
        first = levels[0]
        hidden = cell = first.new_zeros(first.shape[0], module.hidden, *first.shape[2:])
        outputs = []
        for x in levels:
            hidden, cell = module.step(x, hidden, cell)
            outputs.append(hidden)
        return outputs

    return forward


def _rules_care(model: nn.Module) -> _Plan:
    shared = "width C shared by the laterals, guidance, fusion and the training-only reconstruction branch"
    plan = _Plan([IgnoredLayer("lateral", shared + "; input width is pruned")])
    for name in ("guidance", "fusion", "reconstruction"):
        if getattr(model, name) is not None:
            plan.ignored.append(IgnoredLayer(name, shared))
    plan.ignored.append(IgnoredLayer("fc", HEAD))
    return plan


def _rules_rbi(model: nn.Module) -> _Plan:
    from torchvision.models.swin_transformer import PatchMerging

    embed = model.rra.query.in_features
    embedding = [n for n, m in model.backbone.named_modules() if isinstance(m, nn.Linear) and m.out_features == embed]
    plan = _Plan()
    if embedding:
        plan.ignored.append(IgnoredLayer(
            "backbone." + embedding[-1], "encoder embedding: D = {} (the paper's width) is what RRA mixes".format(embed)))
    plan.ignored.append(IgnoredLayer("rra", "RRA projections W_Q, W_K, W_V, W_S, W_β (eqs. 3-13) mix the batch"))
    plan.ignored.append(IgnoredLayer("classifier", HEAD))
    for name, module in model.named_modules():
        if isinstance(module, swaps.ShiftedWindowAttention):
            plan.ignored.append(IgnoredLayer(
                name + ".qkv", "window attention internals: q, k, v are reshaped into heads (so proj's inputs stay "
                "too); the stage width (qkv inputs, proj outputs) is pruned"))
            plan.fixed_params.append(name + ".relative_position_bias_table")
        if isinstance(module, PatchMerging):
            plan.surrogates[name] = _patch_merging_boundary
    return plan


def _patch_merging_boundary(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Swin's 2×2 patch merging for tracing: the four strided spatial slices of a channels-last map read as
    channel slices to Torch-Pruning, so the stand-in pools 2×2 instead and concatenates four copies."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x.permute(0, 3, 1, 2), 2, ceil_mode=True).permute(0, 2, 3, 1)
        return module.reduction(module.norm(torch.cat([pooled * 1.0 for _ in range(4)], dim=-1)))

    return forward


def _family_rules() -> List[Tuple[type, Callable[[nn.Module], _Plan]]]:
    from fgvc_edge.models.acanet import ACANet
    from fgvc_edge.models.care import CareNet
    from fgvc_edge.models.cmal import CmalNet
    from fgvc_edge.models.cncnn import CNCNN
    from fgvc_edge.models.rbi import RBIClassifier
    from fgvc_edge.models.resnet import ResNetClassifier

    return [
        (ResNetClassifier, _rules_resnet),
        (ACANet, _rules_acanet),
        (CmalNet, _rules_cmal),
        (CNCNN, _rules_cncnn),
        (CareNet, _rules_care),
        (RBIClassifier, _rules_rbi),
    ]


def pruning_plan(model: nn.Module) -> _Plan:
    """The layers ``model`` must keep (and stand-ins for tracing): its own hook, else its family's rule."""
    hook = getattr(model, "pruning_ignored_layers", None)
    if callable(hook):
        return _Plan([IgnoredLayer(name, reason) for name, reason in hook()])
    for cls, rule in _family_rules():
        if isinstance(model, cls):
            return rule(model)
    num_classes = getattr(getattr(model, "config", None), "num_classes", None)
    outputs = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not outputs:
        raise UserInputError("no pruning rule for {} and no Linear with its class count".format(type(model).__name__))
    return _Plan([IgnoredLayer(name, "produces the class logits") for name in outputs])


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
    swapped = swaps.swap_modules(model)
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
    steps = [{"name": swaps.SWAP_TRANSFORM, "modules": swapped}] if swapped else []
    steps.append({
        "name": PRUNE_TRANSFORM, "ratio": ratio, "importance": importance, "global": global_pruning,
        "round_to": round_to, "modules": changes,
    })
    model.structure_transforms = list(getattr(model, "structure_transforms", [])) + steps
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
    """Blocks that keep their channel counts as plain attributes get them back from their convs."""
    from fgvc_edge.models.acanet import ACCB

    for module in model.modules():
        if isinstance(module, ACCB):
            conv = module.fused if module.fused is not None else module.square.conv
            module.in_ch, module.out_ch = conv.in_channels, conv.out_channels


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


def _shape_attributes(module: nn.Module) -> Dict[str, Any]:
    """Public int / int-tuple attributes: channel and feature counts, groups, normalized_shape, …"""
    found = {}
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training" or isinstance(value, bool):
            continue
        if isinstance(value, int) or (
            isinstance(value, (tuple, list)) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            found[key] = value
    return found


def _tensor_shapes(module: nn.Module) -> Dict[str, Tuple[int, ...]]:
    tensors = dict(module._parameters)
    tensors.update(module._buffers)
    return {k: tuple(v.shape) for k, v in tensors.items() if v is not None}


def _shape_snapshot(model: nn.Module) -> Dict[str, Tuple[Dict[str, Any], Dict[str, Tuple[int, ...]]]]:
    return {name: (_shape_attributes(m), _tensor_shapes(m)) for name, m in model.named_modules()}


def _shape_changes(model: nn.Module, before: Dict[str, Any]) -> List[Dict[str, Any]]:
    changes = []
    for name, module in model.named_modules():
        old_attrs, old_shapes = before[name]
        attrs, shapes = _shape_attributes(module), _tensor_shapes(module)
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


@register_transform(PRUNE_TRANSFORM)
def _replay_prune(model: nn.Module, step: Dict[str, Any], state: Dict[str, torch.Tensor]) -> None:
    """Give every recorded module its pruned shape (empty tensors; the checkpoint's tensors fill them)."""
    for change in _checked_changes(step):
        module = record_module(model, change["module"], PRUNE_TRANSFORM)
        if type(module).__name__ != change["type"]:
            raise UserInputError("pruning record expects {} at {!r}, the model has {}".format(
                change["type"], change["module"], type(module).__name__))
        for key, value in change["attrs"].items():
            _check_shape_attribute(module, change["module"], key, value)
            setattr(module, key, tuple(value) if isinstance(getattr(module, key, None), tuple) else value)
        for key, shape in change["tensors"].items():
            _check_pruned_shape(module, change["module"], key, shape)
            _resize_tensor(module, key, tuple(shape))


# Validation of a pruning record read from a file: it may only shrink tensors the module has.


def _checked_changes(step: Dict[str, Any]) -> List[Dict[str, Any]]:
    changes = step.get("modules")
    if not isinstance(changes, list) or not all(
            isinstance(c, dict) and isinstance(c.get("module"), str) and isinstance(c.get("type"), str)
            and isinstance(c.get("attrs"), dict) and isinstance(c.get("tensors"), dict) for c in changes):
        raise UserInputError("pruning record: 'modules' must list {module, type, attrs, tensors} objects")
    return changes


def _check_shape_attribute(module: nn.Module, name: str, key: str, value: Any) -> None:
    current = getattr(module, key, None) if not key.startswith("_") else None
    plain_int = isinstance(value, int) and not isinstance(value, bool)
    int_list = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    same_kind = (plain_int and isinstance(current, int)) or (int_list and isinstance(current, (tuple, list)))
    if key not in _shape_attributes(module) or not same_kind:
        raise UserInputError("pruning record sets {!r} of {!r} to {!r}: not a shape attribute of {}".format(
            key, name, value, type(module).__name__))


def _check_pruned_shape(module: nn.Module, name: str, key: str, shape: Any) -> None:
    current = _tensor_shapes(module).get(key)
    if current is None:
        raise UserInputError("pruning record resizes {!r} of {!r}, which has no such tensor".format(key, name))
    valid = isinstance(shape, list) and len(shape) == len(current) and all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= c for d, c in zip(shape, current))
    if not valid:
        raise UserInputError("pruning record gives {}.{} the shape {!r}; pruning can only shrink {}".format(
            name, key, shape, list(current)))


def _resize_tensor(module: nn.Module, key: str, shape: Sequence[int]) -> None:
    if key in module._parameters:
        old = module._parameters[key]
        module._parameters[key] = nn.Parameter(old.new_empty(shape), requires_grad=old.requires_grad)
    else:
        module._buffers[key] = module._buffers[key].new_empty(shape)


def prune_checkpoint(
    model_name: str,
    output: str,
    *,
    checkpoint: Optional[str] = None,
    num_classes: Optional[int] = None,
    input_size: Optional[int] = None,
    **options: Any,
) -> Tuple[str, PruneReport]:
    """Build (or restore) ``model_name``, prune it (``options`` as :func:`prune_model`), save to ``output``."""
    from fgvc_edge.checkpoint import check_checkpoint_output, save_checkpoint
    from fgvc_edge.models import create_model

    check_checkpoint_output(output)
    model = create_model(model_name, checkpoint=checkpoint, num_classes=num_classes, input_size=input_size)
    model, report = prune_model(model, inplace=True, **options)
    folder = save_checkpoint(model, output, class_names=getattr(model, "class_names", None))
    return folder, report
