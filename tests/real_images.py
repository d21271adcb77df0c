"""Real photos for numeric checks: scikit-image's bundled sample images (no download), and BatchNorm
statistics measured on them, so that a randomly initialised network behaves like one that has seen images
(attention maps with structure, predictions that differ between images) instead of amplifying noise.

Loaded by path (tests/conftest.py, benchmarks/cmal_crop_fidelity.py): the suite runs with --import-mode=importlib.
"""
from typing import List, Sequence

import numpy as np
import torch
from torch import nn

# Photos and scans of varied content bundled with scikit-image (gray ones are converted to RGB).
PHOTO_NAMES = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
    "colorwheel", "camera", "coins", "moon", "page", "clock", "cell", "brick",
)


def photos(names: Sequence[str] = PHOTO_NAMES) -> List[np.ndarray]:
    """The named scikit-image sample images as uint8 arrays (H×W or H×W×3)."""
    import skimage.data

    return [getattr(skimage.data, name)() for name in names]


def photo_batch(names: Sequence[str], preprocess) -> torch.Tensor:
    """(N, 3, S, S) float32: the photos through a model's own preprocessing (fgvc_edge.contract.Preprocess)."""
    return torch.from_numpy(preprocess.batch(photos(names)))


def set_bn_statistics(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Replace every BatchNorm's running statistics by their averages over ``images`` and their mirror images
    (train-mode forward passes, cumulative averages), then leave the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: every batch counts equally
    model.train()
    with torch.no_grad():
        for batch in (images, images.flip(-1)):
            model(batch)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return model.eval()
