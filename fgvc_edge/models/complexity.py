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
        skipped = dict(analysis.unsupported_ops())
        total += _uncounted_macs(model, x)
    finally:
        model.train(was_training)
    return total, skipped


def _uncounted_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs fvcore cannot see: modules computing products elementwise (ACANet's FCSA window attention is
    q·k and attention·v as Mul + ReduceSum) report them through ``uncounted_macs(input)``."""
    counters = [m for m in model.modules() if callable(getattr(m, "uncounted_macs", None))]
    if not counters:
        return 0
    found = []
    hooks = [m.register_forward_hook(lambda mod, args, out: found.append(int(mod.uncounted_macs(args[0]))))
             for m in counters]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return sum(found)
