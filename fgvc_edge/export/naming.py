"""Default artifact names, and the rule that an output never silently replaces an artifact of another source.

A default name says what the file is: ``engines/<model>[-<variant>]-<source>-<precision>-<batch>.<ext>``, e.g.
``engines/resnet18-random-fp32-b1.onnx`` or ``engines/resnet18-cub_best-fp32-bdyn.onnx``. The source is the
checkpoint folder's name — a trainer's ``best/`` or ``last/`` carries its run's name (``runs/cub/best`` →
``cub_best``) — or ``random`` for random-init weights, so exports of different weights never share a name.

The source of an artifact is its model, variant and checkpoint (the same folder, or weights with the same
sha256). Writing over an artifact whose sidecar names another source is refused unless forced; an artifact
of the same source (a re-export, another size or precision) is replaced, and so is a file without a sidecar.
"""
import os
import re
from typing import Any, Dict, Optional, Union

from fgvc_edge._io import sha256_file
from fgvc_edge.contract.sidecar import read_sidecar
from fgvc_edge.errors import UserInputError

ARTIFACT_DIR = "engines"
RANDOM_SOURCE = "random"
RANDOM_WEIGHTS_NOTE = "random weights (no --checkpoint): for speed and export checks, not for predictions"
# Folders a trainer writes inside a run folder: the run's name says more than they do.
_RUN_SUBFOLDERS = ("best", "last")
_CHECKPOINT_FILES = ("model.safetensors", "fgvc.json")


def checkpoint_folder(checkpoint: str) -> str:
    path = os.path.normpath(str(checkpoint))
    return os.path.dirname(path) if os.path.basename(path) in _CHECKPOINT_FILES else path


def source_label(checkpoint: Optional[str]) -> str:
    """``random``, or the checkpoint folder's name (``runs/cub/best`` → ``cub_best``), safe in a file name."""
    if not checkpoint:
        return RANDOM_SOURCE
    folder = checkpoint_folder(checkpoint)
    name = os.path.basename(folder)
    parent = os.path.basename(os.path.dirname(os.path.abspath(folder)))
    if name in _RUN_SUBFOLDERS and parent:
        name = "{}_{}".format(parent, name)
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name) or "checkpoint"


def batch_label(batch: Union[int, str]) -> str:
    return "bdyn" if batch == "dynamic" else "b{}".format(batch)


def artifact_path(model: str, variant: Optional[str], checkpoint: Optional[str], precision: str, batch: str,
                  suffix: str = ".onnx") -> str:
    """The default output of an export or build; ``batch`` is a label such as ``b1`` or ``bdyn``."""
    parts = [model] + ([variant.replace("+", "_")] if variant else []) + [source_label(checkpoint), precision, batch]
    return os.path.join(ARTIFACT_DIR, "-".join(parts) + suffix)


def checkpoint_sha256(checkpoint: Optional[str]) -> Optional[str]:
    """sha256 of a checkpoint's weights file: the provenance that survives moving or renaming the folder."""
    if not checkpoint:
        return None
    weights = os.path.join(checkpoint_folder(checkpoint), "model.safetensors")
    return sha256_file(weights) if os.path.isfile(weights) else None


def same_source(old: Dict[str, Any], new: Dict[str, Any]) -> bool:
    if (old.get("model"), old.get("variant")) != (new.get("model"), new.get("variant")):
        return False
    old_ck, new_ck = old.get("checkpoint"), new.get("checkpoint")
    if not old_ck or not new_ck:
        return not old_ck and not new_ck
    if old.get("checkpoint_sha256") and old.get("checkpoint_sha256") == new.get("checkpoint_sha256"):
        return True
    return os.path.realpath(checkpoint_folder(old_ck)) == os.path.realpath(checkpoint_folder(new_ck))


def describe_source(record: Dict[str, Any]) -> str:
    model = record.get("model") or "an unknown model"
    if record.get("variant"):
        model += "[{}]".format(record["variant"])
    return "{} from {}".format(model, record.get("checkpoint") or "random weights")


def refuse_other_source(path: str, record: Dict[str, Any], force: bool = False) -> None:
    """Refuse (one line) to write ``record``'s artifact over ``path`` when ``path``'s sidecar names another source."""
    if force or not os.path.exists(path):
        return
    existing = read_sidecar(path)
    if existing is None or same_source(existing, record):
        return
    raise UserInputError("{} holds {}, not {}: give another -o, or --force to replace it".format(
        path, describe_source(existing), describe_source(record)))
