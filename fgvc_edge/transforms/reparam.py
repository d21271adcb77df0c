"""Structural reparameterization: training-time blocks → deploy blocks, optionally Conv→BN folding.

``reparameterize_model`` walks any model and calls every block's ``reparameterize()`` (RepVGG/ACNet/timm
habit: blocks expose a pure ``get_equivalent_kernel_bias()`` and an idempotent ``reparameterize()``; for
ACANet the ACCB's three conv-BN branches become one 3×3 conv with bias). With ``fold_bn`` it also folds
every BatchNorm2d into the Conv2d that feeds it (K·γ/σ, (b − μ)·γ/σ + β with σ = √(var + eps)).

Which BN belongs to which conv is read from the autograd graph of one eval forward, never guessed from
module order. A pair is folded only when it is a pure chain, for every call of both modules:

* each output of the conv is consumed by exactly one op, a call of that BN, and is not a model output;
* each input of the BN is an output of that conv;
* the conv's and the BN's parameters are used by their own calls only (no functional reuse elsewhere,
  e.g. a kernel sliced by hand as CN-CNN's first ConvLSTM step does).

The result is then checked numerically on the same input against the untouched model; uses the graph
cannot show (``.detach()``, ``no_grad`` regions) would surface there as an error.
Both steps are recorded in ``model.structure_transforms`` and replayed on checkpoint load (:mod:`fgvc_edge.structure`).
"""
import contextlib
import copy
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from fgvc_edge.errors import FgvcError, UserInputError
from fgvc_edge.structure import FOLD_BN_TRANSFORM, REPARAM_TRANSFORM, recorded_transforms, replace_submodule
from fgvc_edge.transforms._modules import example_input
# Whole-model guard after the transform (float32 reassociation gives ~1e-6; a wrong fold gives O(1)).
CHECK_TOLERANCE = 1e-4


@dataclass
class ReparamReport:
    blocks: List[str] = field(default_factory=list)  # reparameterized blocks
    folded: List[Tuple[str, str]] = field(default_factory=list)  # (conv, bn) pairs folded
    rel_error: float = 0.0  # ‖after − before‖₂ / ‖before‖₂ of the logits on the check input


def reparameterize_model(
    model: nn.Module, *, inplace: bool = False, fold_bn: bool = False, example: Optional[torch.Tensor] = None
) -> nn.Module:
    """The deploy form of ``model`` (a copy unless ``inplace``); see the module docstring."""
    return reparameterize_with_report(model, inplace=inplace, fold_bn=fold_bn, example=example)[0]


def reparameterize_with_report(
    model: nn.Module, *, inplace: bool = False, fold_bn: bool = False, example: Optional[torch.Tensor] = None
) -> Tuple[nn.Module, ReparamReport]:
    """:func:`reparameterize_model`, also returning what was changed and the measured output error."""
    if not inplace:
        model = copy.deepcopy(model)
    was_training = model.training
    model.eval()
    x = example_input(model, example)
    with torch.no_grad():
        reference = model(x)
    report = ReparamReport(blocks=reparameterize_blocks(model))
    steps = [{"name": REPARAM_TRANSFORM, "blocks": report.blocks}] if report.blocks else []
    if fold_bn:
        report.folded = find_conv_bn_pairs(model, x)
        for conv_name, bn_name in report.folded:
            fold_conv_bn(model, conv_name, bn_name)
        if report.folded:
            steps.append({"name": FOLD_BN_TRANSFORM, "pairs": [list(p) for p in report.folded]})
    with torch.no_grad():
        report.rel_error = _rel_error(reference, model(x))
    if report.rel_error > CHECK_TOLERANCE:
        raise FgvcError(
            "reparameterization changed the outputs (relative error {:.2e}): a block or conv is used outside "
            "the traced forward; run without --fold-bn or fix the block's reparameterize()".format(report.rel_error)
        )
    model.structure_transforms = recorded_transforms(model) + steps
    model.train(was_training)
    return model, report


# -- blocks ---------------------------------------------------------------------------------------------


def reparameterize_blocks(model: nn.Module) -> List[str]:
    """Call ``reparameterize()`` on every submodule that has one; returns the names of those it changed.

    A block counts as changed when its state-dict keys change (an idempotent call on a block already in
    deploy form changes nothing and is not recorded). Children of a block it removed are skipped.
    """
    changed = []
    for name, module in list(model.named_modules()):
        if not name or not callable(getattr(module, "reparameterize", None)):
            continue
        if not _still_attached(model, name, module):
            continue
        keys = set(module.state_dict())
        module.reparameterize()
        if set(module.state_dict()) != keys:
            changed.append(name)
    return changed


def _still_attached(model: nn.Module, name: str, module: nn.Module) -> bool:
    try:
        return model.get_submodule(name) is module
    except AttributeError:
        return False


# -- Conv→BN pairs ----------------------------------------------------------------------------------------


@dataclass
class _Calls:
    """Autograd nodes of every call of the convs and BNs during one forward."""

    conv_out: Dict[nn.Module, List[Any]] = field(default_factory=lambda: defaultdict(list))
    bn_in: Dict[nn.Module, List[Any]] = field(default_factory=lambda: defaultdict(list))
    bn_out: Dict[nn.Module, List[Any]] = field(default_factory=lambda: defaultdict(list))


def find_conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> List[Tuple[str, str]]:
    """(conv name, BN name) of every pure Conv2d → BatchNorm2d chain, in module order (see module docstring)."""
    names = {module: name for name, module in model.named_modules()}
    convs = [m for m in names if type(m) is nn.Conv2d]
    bns = [m for m in names if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None]
    calls = _Calls()
    with _all_params_require_grad(model), _recording(convs, bns, calls), torch.enable_grad():
        output = model(example)
    roots = [t.grad_fn for t in _tensors(output) if t.grad_fn is not None]
    consumers = _consumers(roots)
    param_users = {id(node.variable): users for node, users in consumers.items() if hasattr(node, "variable")}
    producer_of = {node: conv for conv, nodes in calls.conv_out.items() for node in nodes}
    bn_of = {node: bn for bn, nodes in calls.bn_out.items() for node in nodes}
    pairs = []
    for bn in bns:
        inputs = calls.bn_in.get(bn, [])
        conv = producer_of.get(inputs[0]) if inputs else None
        if conv is None or any(producer_of.get(node) is not conv for node in inputs):
            continue
        if _pure_chain(conv, bn, calls, consumers, param_users, bn_of, set(roots)):
            pairs.append((names[conv], names[bn]))
    order = {name: i for i, name in enumerate(names.values())}
    return sorted(pairs, key=lambda pair: order[pair[0]])


def _pure_chain(
    conv: nn.Module,
    bn: nn.Module,
    calls: _Calls,
    consumers: Dict[Any, List[Any]],
    param_users: Dict[int, List[Any]],
    bn_of: Dict[Any, nn.Module],
    roots: set,
) -> bool:
    if conv.out_channels != bn.num_features:
        return False
    for node in calls.conv_out[conv]:
        users = consumers.get(node, [])
        if node in roots or len(users) != 1 or bn_of.get(users[0]) is not bn:
            return False
    # Parameters read only by their own module's calls (users of their AccumulateGrad nodes).
    for module, nodes in ((conv, set(calls.conv_out[conv])), (bn, set(calls.bn_out[bn]))):
        for param in module.parameters(recurse=False):
            if any(user not in nodes for user in param_users.get(id(param), [])):
                return False
    return True


def _consumers(roots: List[Any]) -> Dict[Any, List[Any]]:
    """Every autograd node reachable from ``roots`` → the nodes that consume it (one entry per edge)."""
    consumers: Dict[Any, List[Any]] = defaultdict(list)
    stack, seen = list(roots), set(roots)
    while stack:
        node = stack.pop()
        for child, _ in getattr(node, "next_functions", ()):
            if child is None:
                continue
            consumers[child].append(node)
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return consumers


@contextlib.contextmanager
def _recording(convs: List[nn.Module], bns: List[nn.Module], calls: _Calls) -> Iterator[None]:
    def conv_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        calls.conv_out[module].append(output.grad_fn)

    def bn_pre_hook(module: nn.Module, inputs: Any) -> None:
        calls.bn_in[module].append(inputs[0].grad_fn)

    def bn_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        calls.bn_out[module].append(output.grad_fn)

    handles = [m.register_forward_hook(conv_hook) for m in convs]
    handles += [m.register_forward_pre_hook(bn_pre_hook) for m in bns]
    handles += [m.register_forward_hook(bn_hook) for m in bns]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _all_params_require_grad(model: nn.Module) -> Iterator[None]:
    # Frozen parameters have no AccumulateGrad node; the parameter-reuse check needs every one of them.
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _tensors(output: Any) -> List[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    return []


def fold_conv_bn(model: nn.Module, conv_name: str, bn_name: str) -> None:
    """Fold the BN into the conv (eval statistics) and put an Identity where the BN was."""
    conv = model.get_submodule(conv_name)
    bn = model.get_submodule(bn_name)
    with torch.no_grad():
        # float64 so the fold adds no rounding of its own beyond the final cast.
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        shift = -bn.running_mean.double() * scale
        if bn.affine:
            scale, shift = scale * bn.weight.double(), shift * bn.weight.double() + bn.bias.double()
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        weight = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
        new_bias = bias * scale + shift
        conv.weight.copy_(weight.to(conv.weight.dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.empty_like(new_bias, dtype=conv.weight.dtype))
        conv.bias.copy_(new_bias.to(conv.bias.dtype))
    replace_submodule(model, bn_name, nn.Identity())


def _rel_error(reference: Any, candidate: Any) -> float:
    ref = torch.cat([t.detach().double().flatten() for t in _tensors(reference)])
    out = torch.cat([t.detach().double().flatten() for t in _tensors(candidate)])
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-12))


# -- checkpoint → deploy checkpoint (what `fgvc-edge reparam` runs) ----------------------------------------------


@dataclass
class ReparamResult:
    folder: str
    report: ReparamReport
    input_size: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


def reparameterize_checkpoint(
    model_name: str,
    output: str,
    *,
    checkpoint: Optional[str] = None,
    fold_bn: bool = False,
    num_classes: Optional[int] = None,
    input_size: Optional[int] = None,
    mode: Optional[str] = None,
) -> ReparamResult:
    """Build (or restore) ``model_name``, reparameterize it and save the deploy checkpoint to ``output``."""
    from fgvc_edge.checkpoint import check_checkpoint_output, save_checkpoint
    from fgvc_edge.models import create_model
    from fgvc_edge.models.complexity import count_macs, count_params
    from fgvc_edge.models.configs import variant_kwargs

    check_checkpoint_output(output)
    model = create_model(model_name, checkpoint=checkpoint, num_classes=num_classes, input_size=input_size,
                         **variant_kwargs(model_name, mode))
    size = model.config.input_size
    params_before, macs_before = count_params(model), count_macs(model, size)[0]
    model, report = reparameterize_with_report(model, inplace=True, fold_bn=fold_bn)
    if not report.blocks and not report.folded:
        # A copy of the input under a new name would pass for a deploy model; write nothing instead.
        hint = "" if fold_bn else " (--fold-bn folds Conv→BatchNorm pairs)"
        raise UserInputError("nothing to reparameterize in {}: no multi-branch blocks{}{}; nothing written".format(
            checkpoint or model_name, ", no Conv→BatchNorm pairs" if fold_bn else "", hint))
    folder = save_checkpoint(model, output, class_names=getattr(model, "class_names", None))
    return ReparamResult(
        folder=folder, report=report, input_size=size, params_before=params_before,
        params_after=count_params(model), macs_before=macs_before, macs_after=count_macs(model, size)[0],
    )
