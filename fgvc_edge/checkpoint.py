"""The checkpoint format every stage reads and writes — no pickle anywhere.

A checkpoint is a folder::

    model.safetensors     every tensor of the state dict
    fgvc.json             model name, constructor arguments, num_classes, class names, input size,
                          preprocessing, variant, and the structure record (transforms applied, e.g.
                          reparameterization or pruning, so the module shapes can be rebuilt before loading)
    training_state.pt     optional: optimizer / scheduler / epoch / RNG, loadable with
                          ``torch.load(weights_only=True)`` (tensors and primitives only)

``--checkpoint`` accepts the folder or its ``model.safetensors``.
"""
import os
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from fgvc_edge._io import atomic_path, read_json, write_json
from fgvc_edge._version import __version__
from fgvc_edge.errors import UserInputError, require
from fgvc_edge.structure import recorded_transforms

CHECKPOINT_FORMAT = "fgvc-edge-checkpoint"
CHECKPOINT_SCHEMA = 1
WEIGHTS_FILE = "model.safetensors"
RECORD_FILE = "fgvc.json"
TRAINING_STATE_FILE = "training_state.pt"


def checkpoint_dir(path: str) -> str:
    path = str(path)
    if os.path.basename(path) in (WEIGHTS_FILE, RECORD_FILE):
        return os.path.dirname(path) or "."
    return path


def save_checkpoint(
    model: nn.Module,
    path: str,
    *,
    class_names: Optional[List[str]] = None,
    training_state: Optional[Dict[str, Any]] = None,
) -> str:
    """Write ``model`` (a registered model from ``create_model``) as a checkpoint folder; returns the folder."""
    safetensors_torch = require("safetensors.torch", "toolkit")
    config = getattr(model, "config", None)
    if config is None:
        raise UserInputError("only models made by create_model() can be saved (no config on {})".format(type(model)))
    if class_names is not None and len(class_names) != config.num_classes:
        raise UserInputError("{} class names for {} classes".format(len(class_names), config.num_classes))
    folder = checkpoint_dir(path)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserInputError("checkpoint path {} exists and is not a folder".format(folder))
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    record = {
        "format": CHECKPOINT_FORMAT,
        "schema_version": CHECKPOINT_SCHEMA,
        "fgvc_edge_version": __version__,
        "model": config.name,
        "model_args": dict(getattr(model, "model_args", {})),
        "num_classes": config.num_classes,
        "class_names": list(class_names) if class_names is not None else None,
        "input_size": config.input_size,
        "preprocess": config.preprocess.to_dict(),
        "variant": getattr(model, "variant", None),
        "structure": structure_record(model),
    }
    with atomic_path(os.path.join(folder, WEIGHTS_FILE)) as tmp:
        safetensors_torch.save_file(tensors, tmp, metadata={"format": "pt"})
    if training_state is not None:
        with atomic_path(os.path.join(folder, TRAINING_STATE_FILE)) as tmp:
            torch.save(training_state, tmp)
    # The record goes last: a folder with a record always has its weights.
    write_json(os.path.join(folder, RECORD_FILE), record)
    return folder


def structure_record(model: nn.Module) -> Dict[str, Any]:
    """What was done to the module tree after construction, in order (empty for a freshly built model)."""
    return {
        "transforms": recorded_transforms(model),
        "num_params": sum(p.numel() for p in model.parameters()),
    }


def read_checkpoint(path: str) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """(record, state dict) of a checkpoint folder; a clear error for anything else."""
    safetensors_torch = require("safetensors.torch", "toolkit")
    record = read_checkpoint_record(path)
    weights_path = os.path.join(checkpoint_dir(path), WEIGHTS_FILE)
    try:
        state = safetensors_torch.load_file(weights_path)
    except FileNotFoundError:
        raise UserInputError("checkpoint {} has no {}".format(path, WEIGHTS_FILE)) from None
    except Exception as exc:  # safetensors raises SafetensorError / OSError on corrupt files
        raise UserInputError("cannot read {}: {}".format(weights_path, str(exc).splitlines()[0])) from None
    return record, state


def read_checkpoint_record(path: str) -> Dict[str, Any]:
    """The ``fgvc.json`` record of a checkpoint folder, without loading its tensors."""
    folder = checkpoint_dir(path)
    if not os.path.exists(folder):
        raise UserInputError("no such checkpoint: {}".format(path))
    record_path = os.path.join(folder, RECORD_FILE)
    if not os.path.isdir(folder) or not os.path.exists(record_path):
        raise UserInputError(
            "{} is not an fgvc-edge checkpoint (a folder with {} and {})".format(path, WEIGHTS_FILE, RECORD_FILE)
        )
    record = read_json(record_path)
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError("{} is not an fgvc-edge checkpoint record".format(record_path))
    if int(record.get("schema_version", 0)) > CHECKPOINT_SCHEMA:
        raise UserInputError("{} needs a newer fgvc-edge (schema {})".format(path, record.get("schema_version")))
    return record


def load_training_state(path: str) -> Optional[Dict[str, Any]]:
    state_path = os.path.join(checkpoint_dir(path), TRAINING_STATE_FILE)
    if not os.path.exists(state_path):
        return None
    return torch.load(state_path, map_location="cpu", weights_only=True)


def load_state_strict(model: nn.Module, state: Dict[str, torch.Tensor], where: str) -> None:
    """load_state_dict(strict=True) with a one-line account of what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                parts.append("{} {} (e.g. {})".format(len(keys), label, ", ".join(keys[:3])))
        raise UserInputError("{} does not fit the model: {}".format(where, "; ".join(parts)))
    model.load_state_dict(state, strict=True)
