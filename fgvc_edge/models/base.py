"""The one interface every model follows, so tests, trainer, exporter and bench treat them alike.

* eval mode: ``forward(x) -> logits`` (N×K), nothing else — this is what gets exported;
* train mode: ``forward`` may return richer outputs (per-expert logits, auxiliary losses) and
  ``loss(outputs, targets)`` turns them into one scalar.
"""
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from fgvc_edge.models._registry import ModelConfig


class FgvcModel(nn.Module):
    """Mixin for registered models. ``create_model`` fills ``config`` and ``model_args``."""

    config: Optional[ModelConfig] = None
    model_args: Dict[str, Any] = {}

    def loss(self, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on plain logits; models with richer training outputs override this."""
        return F.cross_entropy(outputs, targets)

    @property
    def variant(self) -> Optional[str]:
        return None
