"""Structure transforms: the record of changes made to a module tree after construction, and their replay.

A checkpoint records the transforms applied to a model, in order (reparameterization, BN folding, module
class swaps, pruning); loading replays them on a freshly built model before the tensors are loaded, so the
shapes fit without pickling modules. The replays need only ``torch.nn``: this module imports neither the
models nor the transforms (the transforms that *make* these records live downstream in
:mod:`fgvc_edge.transforms`; models register the drop-in classes they own with :func:`register_swap`).
"""
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from fgvc_edge.errors import UserInputError

REPARAM_TRANSFORM = "reparameterize"
FOLD_BN_TRANSFORM = "fold_bn"
SWAP_TRANSFORM = "swap_module_class"
PRUNE_TRANSFORM = "prune"

Transform = Callable[[nn.Module, Dict[str, Any], Dict[str, torch.Tensor]], None]
_TRANSFORMS: Dict[str, Transform] = {}
# Drop-in classes a record may name → (the exact class each replaces, the class).
_SWAPS: Dict[str, Tuple[type, type]] = {}


def register_transform(name: str) -> Callable[[Transform], Transform]:
    def decorator(fn: Transform) -> Transform:
        if name in _TRANSFORMS:
            raise ValueError("structure transform {!r} registered twice".format(name))
        _TRANSFORMS[name] = fn
        return fn

    return decorator


def apply_structure(model: nn.Module, structure: Dict[str, Any], state: Dict[str, torch.Tensor]) -> None:
    """Replay the recorded transforms on ``model`` (built fresh) so ``state`` loads into it."""
    applied = []
    for step in structure.get("transforms", []):
        name = step.get("name") if isinstance(step, dict) else None
        if name not in _TRANSFORMS:
            raise UserInputError(
                "checkpoint needs structure transform {!r}, which this fgvc-edge does not know".format(name)
            )
        _TRANSFORMS[name](model, step, state)
        applied.append(step)
    model.structure_transforms = applied


def replace_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the dotted ``name`` is (works for Sequential/ModuleList indices too)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if child not in parent._modules:
        raise UserInputError("{} has no submodule {!r}".format(type(model).__name__, name))
    parent._modules[child] = new


# -- module class swaps -------------------------------------------------------------------------------------


def register_swap(base: type) -> Callable[[type], type]:
    """Declare ``cls`` (decorated) a drop-in for exactly ``base``: same parameters, buffers, state-dict keys and
    outputs, a structure transform may swap one for the other by class."""

    def decorator(cls: type) -> type:
        if cls.__name__ in _SWAPS:
            raise ValueError("swap class {!r} registered twice".format(cls.__name__))
        _SWAPS[cls.__name__] = (base, cls)
        return cls

    return decorator


def swap_module_classes(model: nn.Module, classes: Sequence[type]) -> Dict[str, str]:
    """Swap every module whose exact class is the base of one of ``classes``; returns {module name: class name}."""
    swapped = {}
    for name, module in model.named_modules():
        for cls in classes:
            base, registered = _SWAPS[cls.__name__]
            if registered is cls and type(module) is base:
                module.__class__ = cls
                swapped[name] = cls.__name__
    return swapped


@register_transform(SWAP_TRANSFORM)
def _replay_swaps(model: nn.Module, step: Dict[str, Any], state: Dict[str, torch.Tensor]) -> None:
    for name, cls_name in step["modules"].items():
        module = model.get_submodule(name)
        base, cls = _SWAPS.get(cls_name, (None, None))
        if cls is None or type(module) is not base:
            raise UserInputError("cannot swap {!r} ({}) to {!r}".format(name, type(module).__name__, cls_name))
        module.__class__ = cls


# -- reparameterization and BN folding -------------------------------------------------------------------------


@register_transform(REPARAM_TRANSFORM)
def _replay_reparameterize(model: nn.Module, step: Dict[str, Any], state: Dict[str, torch.Tensor]) -> None:
    for name in step["blocks"]:
        model.get_submodule(name).reparameterize()


@register_transform(FOLD_BN_TRANSFORM)
def _replay_fold_bn(model: nn.Module, step: Dict[str, Any], state: Dict[str, torch.Tensor]) -> None:
    for conv_name, bn_name in step["pairs"]:
        conv = model.get_submodule(conv_name)
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.empty(conv.out_channels, dtype=conv.weight.dtype))
        replace_submodule(model, bn_name, nn.Identity())


# -- pruning -----------------------------------------------------------------------------------------------------


@register_transform(PRUNE_TRANSFORM)
def _replay_prune(model: nn.Module, step: Dict[str, Any], state: Dict[str, torch.Tensor]) -> None:
    """Give every recorded module its pruned shape (empty tensors; the checkpoint's tensors fill them)."""
    for change in step["modules"]:
        module = model.get_submodule(change["module"]) if change["module"] else model
        if type(module).__name__ != change["type"]:
            raise UserInputError("pruning record expects {} at {!r}, the model has {}".format(
                change["type"], change["module"], type(module).__name__))
        for key, value in change["attrs"].items():
            setattr(module, key, tuple(value) if isinstance(getattr(module, key, None), tuple) else value)
        for key, shape in change["tensors"].items():
            _resize_tensor(module, key, tuple(shape))


def _resize_tensor(module: nn.Module, key: str, shape: Sequence[int]) -> None:
    if key in module._parameters:
        old = module._parameters[key]
        module._parameters[key] = nn.Parameter(old.new_empty(shape), requires_grad=old.requires_grad)
    else:
        module._buffers[key] = module._buffers[key].new_empty(shape)


def recorded_transforms(model: nn.Module) -> List[Dict[str, Any]]:
    """The transforms applied to ``model`` so far, in order (what a checkpoint stores)."""
    return list(getattr(model, "structure_transforms", []))
