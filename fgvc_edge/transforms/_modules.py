"""Module-tree plumbing shared by the transforms: example inputs, frozen-BN training."""
import contextlib
from typing import Iterator, Optional

import torch
from torch import nn

from fgvc_edge.errors import UserInputError

TRACE_BATCH = 2  # >= 2 so batch-dependent models (RBI) and train-mode BatchNorm see a real batch


def example_input(model: nn.Module, example: Optional[torch.Tensor] = None, seed: int = 0) -> torch.Tensor:
    """``example`` if given, else a seeded N(0, 1) batch at the model's smallest accepted input size.

    Structure analysis (which conv feeds which BN, which channels are coupled) does not depend on the
    input size, so the smallest size every block accepts keeps tracing cheap.
    """
    if example is not None:
        return example
    config = getattr(model, "config", None)
    if config is None:
        raise UserInputError("{} has no config (not made by create_model); pass an example input".format(type(model).__name__))
    size = config.min_input_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(TRACE_BATCH, 3, size, size, generator=generator)


@contextlib.contextmanager
def train_mode_frozen_bn(model: nn.Module) -> Iterator[nn.Module]:
    """Train-mode forward (models return their training outputs) with every BatchNorm on its running
    statistics, so probing gradients leaves the model's buffers exactly as they were."""
    was_training = model.training
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    try:
        yield model
    finally:
        model.train(was_training)
