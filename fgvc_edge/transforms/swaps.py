"""Drop-in module classes that make a structure prunable; swapped in by class, recorded, replayed on load.

A swap changes only ``module.__class__`` to a subclass with the same parameters, buffers and state-dict
keys, and the same outputs (checked bit for bit in tests/transforms). It is recorded as the structure
transform ``swap_module_class`` ({module name: class name}); only the classes in ``SWAPS`` can be named.

* :class:`ModuleWindowAttention` — torchvision's ``ShiftedWindowAttention`` passes ``qkv.weight`` and
  ``proj.weight`` to a function (the modules are never called, so a graph tracer cannot see them) and
  reshapes the qkv output with the *input* width C. Ours is the same computation (Liu et al., Swin
  Transformer, ICCV 2021, §3.2: windowed multi-head self-attention with relative position bias, cyclic
  shift, −100 between regions of a shifted window) calling ``qkv`` and ``proj`` as modules, with the head
  width taken from ``qkv.out_features``: a Swin stage's residual width can then shrink while heads keep theirs.
* :class:`InputWidthConvLSTM` — kept only so checkpoints pruned by fgvc-edge 0.1.0 (which swapped CN-CNN's
  ``LevelConvLSTM`` for it) still load; ``LevelConvLSTM.first_step`` now slices by the input's width itself,
  so nothing is swapped for it any more.
"""
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.swin_transformer import ShiftedWindowAttention

from fgvc_edge.errors import UserInputError
from fgvc_edge.models.cncnn import LevelConvLSTM
from fgvc_edge.models.structure import record_module, register_transform

SWAP_TRANSFORM = "swap_module_class"
MASK_VALUE = -100.0  # Swin's additive mask between tokens of different regions of a shifted window


def _region_labels(length: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Region of each row (column) of a cyclically shifted map: 0 | 1 | 2, split at L − window and L − shift."""
    if shift == 0:
        return torch.zeros(length, dtype=torch.long, device=device)
    index = torch.arange(length, device=device)
    return (index >= length - window).long() + (index >= length - shift).long()


def _partition(x: torch.Tensor, window: List[int]) -> torch.Tensor:
    """(B, H, W, C) → (B·nW, wh·ww, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window[0], window[0], w // window[1], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


def _merge(windows: torch.Tensor, batch: int, h: int, w: int, window: List[int]) -> torch.Tensor:
    """Inverse of :func:`_partition`: (B·nW, wh·ww, C) → (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(batch, h // window[0], w // window[1], window[0], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, h, w, c)


def _shift_mask(h: int, w: int, window: List[int], shift: List[int], device: torch.device) -> torch.Tensor:
    """(nW, L, L) additive mask: 0 within a region, −100 between regions of one shifted window."""
    rows = _region_labels(h, window[0], shift[0], device)
    cols = _region_labels(w, window[1], shift[1], device)
    labels = (rows.unsqueeze(1) * 3 + cols.unsqueeze(0)).to(torch.float32)
    labels = _partition(labels.view(1, h, w, 1), window).squeeze(-1)
    different = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(different.shape, device=device).masked_fill(different, MASK_VALUE)


class ModuleWindowAttention(ShiftedWindowAttention):
    """torchvision's ``ShiftedWindowAttention`` with a module-call forward (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        window = list(self.window_size)
        pad_b = (window[0] - height % window[0]) % window[0]
        pad_r = (window[1] - width % window[1]) % window[1]
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        padded_h, padded_w = x.shape[1], x.shape[2]
        # No shift along an axis the window already covers (Swin's rule for small maps).
        shift = [0 if window[0] >= padded_h else self.shift_size[0], 0 if window[1] >= padded_w else self.shift_size[1]]
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = _partition(x, window)
        qkv = self.qkv(windows)
        inner, tokens = qkv.shape[-1] // 3, windows.shape[1]
        head_dim = inner // self.num_heads
        q, k, v = qkv.reshape(-1, tokens, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        attn = (q * head_dim ** -0.5).matmul(k.transpose(-2, -1)) + self.get_relative_position_bias()
        if sum(shift) > 0:
            mask = _shift_mask(padded_h, padded_w, window, shift, x.device).to(attn.dtype)
            attn = attn.view(batch, mask.shape[0], self.num_heads, tokens, tokens) + mask.unsqueeze(1)
            attn = attn.view(-1, self.num_heads, tokens, tokens)
        attn = F.dropout(F.softmax(attn, dim=-1), p=self.attention_dropout, training=self.training)
        out = attn.matmul(v).transpose(1, 2).reshape(-1, tokens, inner)
        out = _merge(F.dropout(self.proj(out), p=self.dropout, training=self.training), batch, padded_h, padded_w, window)
        if sum(shift) > 0:
            out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
        return out[:, :height, :width, :].contiguous()


class InputWidthConvLSTM(LevelConvLSTM):
    """Legacy name (see the module docstring): the same as ``LevelConvLSTM``."""


# Classes a record may name → (the exact class they replace, the replacement); AUTO_SWAPS are made by pruning.
SWAPS: Dict[str, Tuple[type, type]] = {
    cls.__name__: (base, cls)
    for base, cls in ((ShiftedWindowAttention, ModuleWindowAttention), (LevelConvLSTM, InputWidthConvLSTM))
}
AUTO_SWAPS = ("ModuleWindowAttention",)


def swap_modules(model: nn.Module) -> Dict[str, str]:
    """Swap every module whose class has a replacement; returns {module name: replacement class name}."""
    swapped = {}
    for name, module in model.named_modules():
        for cls_name in AUTO_SWAPS:
            base, cls = SWAPS[cls_name]
            if type(module) is base:
                module.__class__ = cls
                swapped[name] = cls_name
    return swapped


@register_transform(SWAP_TRANSFORM)
def _replay_swaps(model: nn.Module, step: Dict[str, Any], state: Dict[str, torch.Tensor]) -> None:
    modules = step.get("modules")
    if not isinstance(modules, dict):
        raise UserInputError("{} record: 'modules' must map module names to classes".format(SWAP_TRANSFORM))
    for name, cls_name in modules.items():
        module = record_module(model, name, SWAP_TRANSFORM)
        base, cls = SWAPS.get(cls_name, (None, None))
        if cls is None or type(module) is not base:
            raise UserInputError("cannot swap {!r} ({}) to {!r}".format(name, type(module).__name__, cls_name))
        module.__class__ = cls
