"""The checkpoint format every stage reads and writes — no pickle anywhere.

A checkpoint is a folder::

    model.safetensors     every tensor of the state dict
    fgvc.json             model name, constructor arguments, num_classes, class names, input size,
                          preprocessing, variant, and the structure record (transforms applied, e.g.
                          reparameterization or pruning, so the module shapes can be rebuilt before loading)
    training_state.pt     optional: optimizer / scheduler / epoch / RNG, loadable with
                          ``torch.load(weights_only=True)`` (tensors and primitives only)

``--checkpoint`` accepts the folder or its ``model.safetensors``.

A checkpoint folder is only ever written whole (:func:`save_checkpoint`, which train, prune, reparam and
import all use): into a temporary folder beside it, swapped in when complete (:func:`fgvc_edge._io.atomic_dir`),
so its weights, record and training state always belong together and the previous folder survives a crash.
Every record read is validated (:func:`validate_record`) before any field is used.
"""
import io
import os
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from fgvc_edge._io import atomic_dir, check_output_dir, dump_json, read_json, recover_dir, write_bytes
from fgvc_edge._version import __version__
from fgvc_edge.contract.fields import field
from fgvc_edge.contract.limits import MAX_CLASSES, MAX_INPUT_SIZE
from fgvc_edge.contract.preprocess import Preprocess
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
    _check_replaceable(folder)
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
    # Serialized in memory and written with plain file writes, so a full disk is an OSError (ENOSPC) rather
    # than torch's "unexpected pos" or a SafetensorError.
    weights = safetensors_torch.save(tensors, metadata={"format": "pt"})
    state_bytes = None
    if training_state is not None:
        buffer = io.BytesIO()
        torch.save(training_state, buffer)
        state_bytes = buffer.getvalue()
    with atomic_dir(folder) as tmp:
        write_bytes(os.path.join(tmp, WEIGHTS_FILE), weights)
        if state_bytes is not None:
            write_bytes(os.path.join(tmp, TRAINING_STATE_FILE), state_bytes)
        dump_json(os.path.join(tmp, RECORD_FILE), record)
    return folder


def check_checkpoint_output(path: str) -> None:
    """Refuse, before any work, a checkpoint output that :func:`save_checkpoint` could not write."""
    folder = checkpoint_dir(path)
    _check_replaceable(folder)
    check_output_dir(os.path.dirname(os.path.abspath(folder)), output=folder)


def _check_replaceable(folder: str) -> None:
    """The whole folder is replaced: refuse a file there, or a folder holding anything a checkpoint does not."""
    recover_dir(folder)
    if not os.path.exists(folder):
        return
    if not os.path.isdir(folder):
        raise UserInputError("checkpoint path {} exists and is not a folder".format(folder))
    foreign = sorted(set(os.listdir(folder)) - {WEIGHTS_FILE, RECORD_FILE, TRAINING_STATE_FILE})
    if foreign:
        raise UserInputError("{} holds files that are not part of a checkpoint ({}); writing a checkpoint replaces "
                             "the whole folder: choose another output folder".format(folder, ", ".join(foreign[:3])))


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
    recover_dir(folder)  # a swap that a crash interrupted: the previous folder comes back
    if not os.path.exists(folder):
        raise UserInputError("no such checkpoint: {}".format(path))
    record_path = os.path.join(folder, RECORD_FILE)
    if not os.path.isdir(folder) or not os.path.exists(record_path):
        raise UserInputError(
            "{} is not an fgvc-edge checkpoint (a folder with {} and {})".format(path, WEIGHTS_FILE, RECORD_FILE)
        )
    return validate_record(read_json(record_path), record_path)


_RECORD_HINT = "; the checkpoint record is damaged: restore it, or write the checkpoint again"


def validate_record(record: Any, where: str) -> Dict[str, Any]:
    """``record`` if every field has its type, range and length (structure transforms are checked where
    they are replayed); else one line naming the field."""
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError("{} is not an fgvc-edge checkpoint record".format(where))
    hint = _RECORD_HINT
    version = field(record, "schema_version", "int", where, required=True, low=1, hint=hint)
    if version > CHECKPOINT_SCHEMA:
        raise UserInputError("{} needs a newer fgvc-edge (schema {})".format(where, version))
    field(record, "model", "str", where, required=True, hint=hint)
    args = field(record, "model_args", "dict", where, hint=hint) or {}
    for key, value in args.items():
        if not isinstance(value, (str, int, float, bool, list, type(None))):
            raise UserInputError("{}: model_args[{!r}] must be a JSON value, got {!r}{}".format(
                where, key, value, hint))
    classes = field(record, "num_classes", "int", where, required=True, low=1, high=MAX_CLASSES, hint=hint)
    names = field(record, "class_names", "str_list", where, hint=hint)
    if names is not None and len(names) != classes:
        raise UserInputError("{}: {} class names for {} classes{}".format(where, len(names), classes, hint))
    size = field(record, "input_size", "int", where, low=1, high=MAX_INPUT_SIZE, hint=hint)
    field(record, "variant", "str", where, hint=hint)
    if record.get("preprocess") is not None:
        try:
            crop = Preprocess.from_dict(record["preprocess"]).crop_size
        except UserInputError as exc:
            raise UserInputError("{}: {}{}".format(where, exc, hint)) from None
        if size is not None and crop != size:
            raise UserInputError("{}: preprocessing crops {} px for a {} px input{}".format(where, crop, size, hint))
    structure = field(record, "structure", "dict", where, hint=hint) or {}
    steps = field(structure, "transforms", "list", where + " structure", hint=hint) or []
    for step in steps:
        if not isinstance(step, dict) or not isinstance(step.get("name"), str):
            raise UserInputError("{}: every structure transform must be an object with a name, got {!r}{}".format(
                where, step, hint))
    return record


def load_training_state(path: str) -> Optional[Dict[str, Any]]:
    state_path = os.path.join(checkpoint_dir(path), TRAINING_STATE_FILE)
    if not os.path.exists(state_path):
        return None
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises UnpicklingError/RuntimeError/EOFError/…; its text advises weights_only=False
        raise UserInputError("{} is not a training state fgvc-edge wrote (corrupt, or made by other code); "
                             "nothing in it was run — resume from another run or start a new one".format(
                                 state_path)) from None
    if not isinstance(state, dict):
        raise UserInputError("{} is not a training state fgvc-edge wrote".format(state_path))
    return state


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
