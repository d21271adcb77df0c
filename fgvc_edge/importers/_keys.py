"""Renaming an official state dict's keys to ours, shared by the official-checkpoint importers."""
from typing import Callable, Dict, Mapping, Optional

import torch

from fgvc_edge.errors import UserInputError


def rename_official_keys(
    state: Mapping[str, torch.Tensor], our_key: Callable[[str], Optional[str]], what: str
) -> Dict[str, torch.Tensor]:
    """The tensors under our key names (a DataParallel ``module.`` prefix stripped); an unknown key is an
    error, never dropped. ``what`` names the source in the error, e.g. "x.pth is not an official CMAL-Net checkpoint"."""
    converted: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        ours = our_key(key[len("module.") :] if key.startswith("module.") else key)
        if ours is None:
            unknown.append(key)
        else:
            converted[ours] = tensor
    if unknown:
        raise UserInputError("{}: {} unknown keys (e.g. {})".format(what, len(unknown), ", ".join(unknown[:3])))
    return converted
