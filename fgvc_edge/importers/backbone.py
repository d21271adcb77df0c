"""Backbone weights from a local file: torchvision format, and timm where its architecture's keys match.

The file is a ``.safetensors`` file or a ``torch.save`` of a state dict (either torch format), read by
:func:`fgvc_edge.importers.safe_pickle.load_torch_file` — tensors and containers only, never a pickled class. Common wrappers are
opened (``{"state_dict": …}``, ``{"model": …}``, a ``module.`` prefix from DataParallel, a ``backbone.``
prefix). The weights go into ``model.backbone`` when the model has one (CMAL-Net, CARE-Net, CN-CNN, RBI:
torchvision key names), else into the model itself (the ResNet baselines, ACANet).

Tensors load by name where the shapes agree; everything else is reported, never silently forced:

* **missing** — in the model, not in the file (new modules: heads, ACANet's asymmetric branches…); BatchNorm's
  ``num_batches_tracked`` counters are not counted (files older than torch 0.4 have none, and the counter only
  matters for BN with ``momentum=None``);
* **unexpected** — in the file, not in the model (the ImageNet ``fc`` of a torchvision ResNet);
* **shape mismatch** — same name, other shape (an ImageNet classifier where we have a 1024-d embedding).

Key formats:

* torchvision ResNet / DenseNet / MobileNetV3 / ConvNeXt / Swin: as they are. The legacy DenseNet keys of
  torchvision's published files (``denselayer1.norm.1.weight``) are renamed as torchvision's own loader does
  (``denselayer1.norm1.weight``).
* timm ResNet (``resnet18``, ``resnet50`` …): timm uses torchvision's names (``conv1``, ``bn1``,
  ``layer1.0.conv1`` …, ``fc``), so they load as they are. timm's ConvNeXt/Swin/DenseNet name their modules
  differently from torchvision; such files load nothing and are refused with the report.
"""
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Tuple

import torch
from torch import nn

from fgvc_edge.errors import UserInputError, require
from fgvc_edge.importers.safe_pickle import load_torch_file

_WRAPPERS = ("state_dict", "model", "model_state", "model_state_dict", "net", "module")
_STRIP_PREFIXES = ("module.", "backbone.", "model.")
# torchvision's densenet._load_state_dict pattern: "denselayerN.norm.1.weight" → "denselayerN.norm1.weight".
_LEGACY_DENSENET = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


@dataclass
class ImportReport:
    source: str
    target: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)

    def summary(self) -> str:
        parts = ["loaded {} of {} tensors of {} from {}".format(
            len(self.loaded), len(self.loaded) + len(self.missing) + len(self.mismatched), self.target, self.source)]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                parts.append("{} {} (e.g. {})".format(len(keys), label, ", ".join(keys[:3])))
        if self.mismatched:
            key, theirs, ours = self.mismatched[0]
            parts.append("{} shape mismatch (e.g. {}: file {} vs model {})".format(
                len(self.mismatched), key, list(theirs), list(ours)))
        return "; ".join(parts)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "loaded": len(self.loaded),
            "missing": self.missing,
            "unexpected": self.unexpected,
            "mismatched": [{"key": k, "file": list(a), "model": list(b)} for k, a, b in self.mismatched],
        }


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a local weights file, unwrapped and with DataParallel/backbone prefixes removed."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise UserInputError("no such weights file: {}".format(path))
    if path.endswith(".safetensors"):
        safetensors_torch = require("safetensors.torch", "toolkit")
        try:
            state: Any = safetensors_torch.load_file(path)
        except Exception as exc:  # SafetensorError / OSError on corrupt files
            raise UserInputError("cannot read {}: {}".format(path, _first_line(exc))) from None
    else:
        state = load_torch_file(path)
    while isinstance(state, Mapping) and not _is_tensor_dict(state):
        inner = next((state[k] for k in _WRAPPERS if k in state and isinstance(state[k], Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not _is_tensor_dict(state):
        raise UserInputError("{} holds no state dict of tensors".format(path))
    return {_canonical_key(k): v for k, v in state.items()}


def load_backbone_weights(model: nn.Module, path: str) -> ImportReport:
    """Load ``path`` into ``model.backbone`` (or ``model``) by name and shape; refuse a file that fits nothing."""
    target_name = "backbone" if isinstance(getattr(model, "backbone", None), nn.Module) else "model"
    target = model.backbone if target_name == "backbone" else model
    state = read_state_dict(path)
    own = target.state_dict()
    report = ImportReport(source=str(path), target=target_name)
    matched: Dict[str, torch.Tensor] = {}
    for key, tensor in own.items():
        theirs = state.get(key)
        if theirs is None:
            if not key.endswith("num_batches_tracked"):
                report.missing.append(key)
        elif tuple(theirs.shape) != tuple(tensor.shape):
            report.mismatched.append((key, tuple(theirs.shape), tuple(tensor.shape)))
        else:
            matched[key] = theirs.to(dtype=tensor.dtype)
            report.loaded.append(key)
    report.unexpected = [k for k in state if k not in own]
    # A file whose weights fit no parameter is the wrong file, not a partial import.
    if not any(key in matched for key, _ in target.named_parameters()):
        raise UserInputError("{} fits nothing in {}: {}".format(path, target_name, report.summary()))
    target.load_state_dict(matched, strict=False)
    return report


def _canonical_key(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    match = _LEGACY_DENSENET.match(key)
    return match.group(1) + match.group(2) if match else key


def _is_tensor_dict(state: Mapping) -> bool:
    return bool(state) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
