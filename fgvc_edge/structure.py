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
    steps = structure.get("transforms", []) if isinstance(structure, dict) else None
    if not isinstance(steps, list):
        raise UserInputError("the checkpoint's structure record must hold a list of transforms")
    for step in steps:
        name = step.get("name") if isinstance(step, dict) else None
        if name not in _TRANSFORMS:
            raise UserInputError(
                "checkpoint needs structure transform {!r}, which this fgvc-edge does not know".format(name)
            )
        _TRANSFORMS[name](model, step, state)
        applied.append(step)
    model.structure_transforms = applied


def record_module(model: nn.Module, name: Any, transform: str) -> nn.Module:
    """The submodule a structure record names, or a one-line refusal (the record comes from a file)."""
    if not isinstance(name, str):
        raise UserInputError("{} record: module names must be strings, got {!r}".format(transform, name))
    if not name:
        return model
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise UserInputError("{} record names module {!r}, which {} does not have".format(
            transform, name, type(model).__name__)) from None


def _record_list(step: Dict[str, Any], key: str, transform: str) -> List[Any]:
    value = step.get(key)
    if not isinstance(value, list):
        raise UserInputError("{} record: {!r} must be a list, got {!r}".format(transform, key, value))
    return value


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
    modules = step.get("modules")
    if not isinstance(modules, dict):
        raise UserInputError("{} record: 'modules' must map module names to classes".format(SWAP_TRANSFORM))
    for name, cls_name in modules.items():
        module = record_module(model, name, SWAP_TRANSFORM)
        base, cls = _SWAPS.get(cls_name, (None, None))
        if cls is None or type(module) is not base:
            raise UserInputError("cannot swap {!r} ({}) to {!r}".format(name, type(module).__name__, cls_name))
        module.__class__ = cls


# -- reparameterization and BN folding -------------------------------------------------------------------------


@register_transform(REPARAM_TRANSFORM)
def _replay_reparameterize(model: nn.Module, step: Dict[str, Any], state: Dict[str, torch.Tensor]) -> None:
    for name in _record_list(step, "blocks", REPARAM_TRANSFORM):
        block = record_module(model, name, REPARAM_TRANSFORM)
        if not callable(getattr(block, "reparameterize", None)):
            raise UserInputError("{} record names {!r}, which is not a reparameterizable block".format(
                REPARAM_TRANSFORM, name))
        block.reparameterize()


@register_transform(FOLD_BN_TRANSFORM)
def _replay_fold_bn(model: nn.Module, step: Dict[str, Any], state: Dict[str, torch.Tensor]) -> None:
    for pair in _record_list(step, "pairs", FOLD_BN_TRANSFORM):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise UserInputError("{} record: pairs must be [conv, bn] names, got {!r}".format(
                FOLD_BN_TRANSFORM, pair))
        conv_name, bn_name = pair
        conv = record_module(model, conv_name, FOLD_BN_TRANSFORM)
        bn = record_module(model, bn_name, FOLD_BN_TRANSFORM)
        if not isinstance(conv, nn.modules.conv._ConvNd) or not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            raise UserInputError("{} record pairs {!r} ({}) with {!r} ({}): not a convolution and a "
                                 "BatchNorm".format(FOLD_BN_TRANSFORM, conv_name, type(conv).__name__, bn_name,
                                                    type(bn).__name__))
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.empty(conv.out_channels, dtype=conv.weight.dtype))
        replace_submodule(model, bn_name, nn.Identity())


# -- pruning -----------------------------------------------------------------------------------------------------


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


def shape_attributes(module: nn.Module) -> Dict[str, Any]:
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


def tensor_shapes(module: nn.Module) -> Dict[str, Tuple[int, ...]]:
    tensors = dict(module._parameters)
    tensors.update(module._buffers)
    return {k: tuple(v.shape) for k, v in tensors.items() if v is not None}


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
    if key not in shape_attributes(module) or not same_kind:
        raise UserInputError("pruning record sets {!r} of {!r} to {!r}: not a shape attribute of {}".format(
            key, name, value, type(module).__name__))


def _check_pruned_shape(module: nn.Module, name: str, key: str, shape: Any) -> None:
    current = tensor_shapes(module).get(key)
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


def recorded_transforms(model: nn.Module) -> List[Dict[str, Any]]:
    """The transforms applied to ``model`` so far, in order (what a checkpoint stores)."""
    return list(getattr(model, "structure_transforms", []))
