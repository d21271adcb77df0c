"""Blocks shared by several models. Model-specific blocks live in their model's file."""
from typing import Any, Dict, List, Type, Union

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

RESNET_SPECS: Dict[str, Dict[str, Any]] = {
    "resnet18": {"block": BasicBlock, "layers": [2, 2, 2, 2]},
    "resnet34": {"block": BasicBlock, "layers": [3, 4, 6, 3]},
    "resnet50": {"block": Bottleneck, "layers": [3, 4, 6, 3]},
    "resnet101": {"block": Bottleneck, "layers": [3, 4, 23, 3]},
}


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without pooling and head, returning the outputs of layer1..layer4.

    Submodule names are torchvision's (``conv1``, ``bn1``, ``layer1`` …), so torchvision-format backbone
    weights load into it by key; ``channels`` gives each stage's width (64/128/256/512 × expansion).
    """

    def __init__(self, depth: str = "resnet50", **resnet_kwargs: Any) -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError("unknown ResNet depth {!r}; choose from {}".format(depth, sorted(RESNET_SPECS)))
        spec = RESNET_SPECS[depth]
        block: Type[Union[BasicBlock, Bottleneck]] = spec["block"]
        full = ResNet(block, spec["layers"], **resnet_kwargs)
        self.conv1, self.bn1, self.relu, self.maxpool = full.conv1, full.bn1, full.relu, full.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = full.layer1, full.layer2, full.layer3, full.layer4
        self.channels: List[int] = [w * block.expansion for w in (64, 128, 256, 512)]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]
