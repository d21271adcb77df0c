"""Structure transforms: changes to a module tree after construction (reparameterization, pruning).

A checkpoint records the transforms applied, in order; loading replays them on a freshly built model
before the tensors are loaded, so the shapes fit without pickling modules. Each later stage registers
its transform here with ``register_transform``.
"""
from typing import Any, Callable, Dict

import torch
from torch import nn

from fgvc_edge.errors import UserInputError

Transform = Callable[[nn.Module, Dict[str, Any], Dict[str, torch.Tensor]], None]
_TRANSFORMS: Dict[str, Transform] = {}


def register_transform(name: str) -> Callable[[Transform], Transform]:
    def decorator(fn: Transform) -> Transform:
        if name in _TRANSFORMS:
            raise ValueError("structure transform {!r} registered twice".format(name))
        _TRANSFORMS[name] = fn
        return fn

    return decorator


def apply_structure(model: nn.Module, structure: Dict[str, Any], state: Dict[str, torch.Tensor]) -> None:
    """Replay the recorded transforms on ``model`` (built fresh) so ``state`` loads into it."""
    _load_transform_modules()
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


def _load_transform_modules() -> None:
    # Importing the transform modules runs their @register_transform decorators (they import this module,
    # so the import waits until a checkpoint needs them).
    from fgvc_edge.transforms import prune, reparam  # noqa: F401
