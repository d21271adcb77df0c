"""Weights trained with the official CMAL-Net code (github.com/Dichao-Liu/CMAL, train_*_ResNet50.py).

The official scripts save ``torch.save(net)``: a whole-module pickle of ``__main__.Network_Wrapper``
(holding ``__main__.Features``, ``basic_conv.BasicConv``, torchvision's ``Bottleneck`` and torch.nn layers),
which :mod:`fgvc_edge.importers.safe_pickle` reads without running any of it. A plain state dict with the
same keys (``torch.save(net.state_dict())``) is read the same way, in either torch file format (the zip
archive of torch ≥ 1.6 or the legacy one before it), by the reader every importer shares; a ``module.``
prefix (a saved ``DataParallel``) is dropped. No weights were released, so these are checkpoints users trained themselves.

=========================================  ==========================================================
official key                               ours (``fgvc_edge.models.cmal.CmalNet``)
=========================================  ==========================================================
``Features.net_layer_0.0.*``               ``backbone.conv1.*``
``Features.net_layer_1.0.*``               ``backbone.bn1.*``   (net_layer_2/3: ReLU, max pool)
``Features.net_layer_{N+3}.*``             ``backbone.layer{N}.*``   (N = 1..4, torchvision block keys)
``conv_block{i}.{j}.{conv,bn}.*``          ``blocks.{i-1}.{j}.{conv,bn}.*``   (i = 1..3, j = 0 1×1, 1 3×3)
``classifier{i}.{0,1,2,4}.*``              ``heads.{i-1}.{0,1,2,4}.*``   (BN1d, Linear, BN1d, -, Linear)
``classifier_concat.{0,1,2,4}.*``          ``concat_head.{0,1,2,4}.*``
=========================================  ==========================================================

The class count is read from ``classifier_concat.4.weight``. The official network is ResNet-50 based;
a checkpoint of the same layout on ResNet-18 blocks loads into ``cmal_resnet18``.
"""
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch

from fgvc_edge.errors import UserInputError
from fgvc_edge.importers._keys import rename_official_keys
from fgvc_edge.importers.safe_pickle import (
    TORCH_LAYER_CLASSES,
    TORCHVISION_RESNET_CLASSES,
    flat_state_dict,
    load_torch_file,
)

MODELS = ("cmal_resnet50", "cmal_resnet18")
OFFICIAL_CLASSES = (
    TORCH_LAYER_CLASSES
    | TORCHVISION_RESNET_CLASSES
    | {
        "__main__.Network_Wrapper",
        "__main__.Features",
        "basic_conv.BasicConv",
        "torch.nn.parallel.data_parallel.DataParallel",
    }
)

_Replacement = Union[str, Callable[["re.Match[str]"], str]]
_RENAMES: List[Tuple[str, _Replacement]] = [
    (r"Features\.net_layer_0\.0\.", "backbone.conv1."),
    (r"Features\.net_layer_1\.0\.", "backbone.bn1."),
    (r"Features\.net_layer_([4-7])\.", lambda m: "backbone.layer{}.".format(int(m.group(1)) - 3)),
    (r"conv_block([1-3])\.([01])\.(conv|bn)\.", lambda m: "blocks.{}.{}.{}.".format(int(m.group(1)) - 1, *m.group(2, 3))),
    (r"classifier([1-3])\.([0124])\.", lambda m: "heads.{}.{}.".format(int(m.group(1)) - 1, m.group(2))),
    (r"classifier_concat\.([0124])\.", r"concat_head.\1."),
]
_COMPILED = [(re.compile(pattern), repl) for pattern, repl in _RENAMES]


def our_key(key: str) -> Optional[str]:
    """The key of ``key`` (official) in our model, or None when it is not part of the official layout."""
    for pattern, repl in _COMPILED:
        match = pattern.match(key)
        if match:
            return pattern.sub(repl, key, count=1)
    return None


def convert_official_state_dict(state: Mapping[str, torch.Tensor], where: str) -> Dict[str, torch.Tensor]:
    """The official tensors under our key names; an unknown key is an error, never dropped."""
    return rename_official_keys(state, our_key, "{} is not an official CMAL-Net checkpoint".format(where))


def load_official_checkpoint(model_name: str, path: str, *, num_classes: Optional[int] = None,
                             input_size: Optional[int] = None, **model_args: Any) -> torch.nn.Module:
    """An official ``model.pth`` (whole-module pickle or state dict) as our model, eval mode, default mode."""
    from fgvc_edge.checkpoint import load_state_strict
    from fgvc_edge.models import create_model

    pickled = load_torch_file(path, module_classes=OFFICIAL_CLASSES)
    state = convert_official_state_dict(flat_state_dict(pickled, path), path)
    head = state.get("concat_head.4.weight")
    if head is None or head.ndim != 2:
        raise UserInputError(
            "{} is not an official CMAL-Net checkpoint: no 2-D classifier_concat.4.weight".format(path)
        )
    if num_classes is not None and num_classes != head.shape[0]:
        raise UserInputError("{} has {} classes; --num-classes {} disagrees".format(path, head.shape[0], num_classes))
    model = create_model(model_name, num_classes=int(head.shape[0]), input_size=input_size, **model_args)
    load_state_strict(model, state, path)
    return model.eval()
