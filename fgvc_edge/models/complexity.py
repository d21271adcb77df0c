"""Parameters and MACs. fvcore counts one fused multiply-add as one flop, i.e. it reports MACs."""
import logging
from typing import Dict, Tuple

import torch
from torch import nn

from fgvc_edge.errors import require

log = logging.getLogger(__name__)


def count_params(model: nn.Module) -> int:
    """Every learnable parameter, training-only parts included (how the papers count)."""
    return sum(p.numel() for p in model.parameters())


def count_deploy_params(model: nn.Module) -> int:
    """Parameters the eval forward (and so the exported graph) uses: a model with training-only parts
    (CARE-Net's reconstruction branch) says so through ``deploy_parameters()``."""
    hook = getattr(model, "deploy_parameters", None)
    return int(hook()) if callable(hook) else count_params(model)


def count_macs(model: nn.Module, input_size: int, batch: int = 1) -> Tuple[int, Dict[str, int]]:
    """MACs for one forward at ``batch`` (eval mode), and the ops fvcore had no counter for (name → count)."""
    fvcore_nn = require("fvcore.nn", "toolkit")
    was_training = model.training
    model.eval()
    x = torch.zeros(batch, 3, input_size, input_size)
    try:
        analysis = fvcore_nn.FlopCountAnalysis(model, (x,))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        with torch.no_grad():
            total = int(analysis.total())
            traced = analysis.by_module()
        skipped = dict(analysis.unsupported_ops())
        total += sum(macs - int(traced.get(name, 0)) for name, macs in _declared_macs(model, x).items())
    finally:
        model.train(was_training)
    return total, skipped


def _declared_macs(model: nn.Module, x: torch.Tensor) -> Dict[str, int]:
    """MACs that modules state by their definition, in place of what fvcore traces in them (name → MACs).

    ACANet's window attention runs as GEMMs over padded tiles; its MACs are window² products per pixel and
    channel, not the tiles' (``WindowAttention.declared_macs``). The hook sees the module's real inputs.
    """
    named = {module: name for name, module in model.named_modules() if callable(getattr(module, "declared_macs", None))}
    found: Dict[str, int] = {}

    def record(module: nn.Module, args: Tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        name = named[module]
        found[name] = found.get(name, 0) + int(module.declared_macs(*args))

    hooks = [module.register_forward_hook(record) for module in named]
    try:
        if hooks:
            with torch.no_grad():
                model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return found
