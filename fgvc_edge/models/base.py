"""The one interface every model follows, so tests, trainer, exporter, transforms and bench treat them alike.

* eval mode: ``forward(x) -> logits`` (N×K), nothing else — this is what gets exported;
* train mode: ``forward`` may return richer outputs (per-expert logits, auxiliary losses) and
  ``loss(outputs, targets)`` turns them into one scalar;
* pruning hooks: what a family needs from structured pruning (:mod:`fgvc_edge.transforms.prune` walks these
  hooks and imports no model class) — the layers that must keep their output width and why, stand-ins for
  modules a graph tracer cannot follow, loose parameters of kept internals, and drop-in classes to swap in
  first. A block whose channel counts live in plain attributes syncs them in ``after_pruning()``.
"""
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fgvc_edge.models.configs import ModelConfig

HEAD = "classifier head: the class outputs are never pruned"

# name of a submodule → a function of that module returning the forward to trace instead of its own.
TracingSurrogate = Callable[[nn.Module], Callable[..., Any]]


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

    # -- pruning hooks ------------------------------------------------------------------------------------

    def pruning_ignored_layers(self) -> List[Tuple[str, str]]:
        """(module name, reason) of every layer pruning must leave at its output width.

        Default: the Linear layers that produce the class logits. An ignored module's input width still
        follows the layer that feeds it.
        """
        classes = self.config.num_classes if self.config is not None else None
        return [(name, HEAD) for name, m in self.named_modules() if isinstance(m, nn.Linear) and m.out_features == classes]

    def pruning_surrogates(self) -> Dict[str, TracingSurrogate]:
        """Submodules to trace through a stand-in with the same channel boundary (their internals are ignored)."""
        return {}

    def pruning_fixed_parameters(self) -> List[str]:
        """Loose parameters (outside Conv/Linear/norm layers) of kept internals, never to be taken as channels."""
        return []

    def pruning_swaps(self) -> List[type]:
        """Drop-in classes (registered with ``fgvc_edge.structure.register_swap``) to swap in before pruning."""
        return []
