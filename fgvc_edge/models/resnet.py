"""Baselines: torchvision's ResNet-18/50 with our own head size.

The class subclasses torchvision's ``ResNet`` so the state-dict keys are torchvision's own and
torchvision-format backbone weights load as they are. Paper figures: CMAL-Net Table 9 (ResNet50 @448,
100 classes) and CARE-Net Table 2 (ImageNet 1000-class parameter counts).
"""
from typing import Any, Type, Union

from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from fgvc_edge.models._registry import register_model
from fgvc_edge.models.base import FgvcModel


class ResNetClassifier(FgvcModel, ResNet):
    """torchvision ResNet; eval and train forward both return logits."""


def _create_resnet(block: Type[Union[BasicBlock, Bottleneck]], layers: list, **kwargs: Any) -> ResNetClassifier:
    return ResNetClassifier(block, layers, **kwargs)


@register_model("resnet18")
def resnet18(**kwargs: Any) -> ResNetClassifier:
    return _create_resnet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model("resnet50")
def resnet50(**kwargs: Any) -> ResNetClassifier:
    return _create_resnet(Bottleneck, [3, 4, 6, 3], **kwargs)
