"""ACANet: ResNet with asymmetric-convolution blocks (ACCB), convolution/attention fusion (FCSA) and a 2×2
downsampling layer in the residual shortcuts.

Paper: Z. Tan, Z.-H. Xu, "ACANet: A Fine-grained Image Classification Optimization Method Based on
Convolution and Attention Fusion" (2023); no official code. ACCB follows ACNet (Ding et al., DingXiaoH/ACNet,
MIT) and FCSA follows ACmix (Pan et al., LeapLabTHU/ACmix); both are re-implemented here from the papers'
equations and ../shared/papers/README.md. The paper's figures are lost in our text, so the layout is our reading:

* **Residual block (Fig. 1, Fig. 2(c), §3).** In a basic block the first 3×3 conv (the strided one when the
  block downsamples) is an ACCB and the second 3×3 conv is an FCSA followed by the block's BN. In a bottleneck
  (ResNet-50, not in the paper) the 3×3 conv is an ACCB and an FCSA + BN + ReLU follows it. The stem (7×7 conv,
  3×3 max pool) and the head are ResNet's.
* **ACCB (§3.1, eqs. 1–4).** 3×3, 1×3 and 3×1 convs, each with its own BN, summed with no activation inside.
  ``reparameterize()`` folds every BN into its conv (K·γ/σ, β − μγ/σ; eqs. 2–3) and adds the 1×3 kernel into
  the centre row and the 3×1 kernel into the centre column of the 3×3 kernel (eq. 1: I∗K₁ + I∗K₂ = I∗(K₁+K₂)).
* **FCSA (§3.2, eqs. 5–11, Fig. 6).** Shared 1×1 q/k/v projections (stage I); attention path: 4 heads, 7×7
  local windows, relative positional encoding, softmax over the window (eq. 9); conv path: a 1×1 "fc" mixing the
  3·heads projected maps into k² = 9 maps, then a grouped 3×3 "shift" conv initialised to one-hot shift kernels
  (eqs. 6–8); output = rate_att·attention + rate_conv·conv with learnable rates, both initialised to 0.5. The
  paper gives no heads/window; 4 heads and a 7×7 window are ACmix's ResNet settings. §4.2 adds that "we
  finally set different parameter Settings for the above three recognized loss functions" (CE, focal, MC-loss)
  without saying what they are: we use this one setting (4 heads, 7×7 window, rates initialised to 0.5) with
  every loss.
* **Downsampling layer (§3.3, Fig. 7(b), Fig. 2(c) caption).** "The downsampling layer used in the virtual
  curve [the shortcut that changes the map size] is the one using 2×2 convolution", padded "only [on] two sides":
  we pad right and bottom by one zero and apply a 2×2 stride-2 conv + BN. This gives ceil(H/2), the size of the
  strided 3×3 main path, for even and odd H alike. Shortcuts that only change channels (stride 1) stay 1×1.
  Fig. 7 contrasts the layer with the stem's 3×3 max pool, which could also be read as the stem's pool being
  replaced; the Fig. 2(c) caption places it in the shortcuts, so that is what we build.

Deviations from ACmix, and why:

* **Window borders.** ACmix reflection-pads k, v and the positional encoding by 3 before unfolding; reflection
  is undefined when the pad is ≥ the map size (ResNet-18 at 64 px reaches 2×2 maps). We pad by gathering
  reflected indices instead, extended periodically beyond one reflection (numpy's ``pad(mode="reflect")``
  rule). Whenever the map is larger than 3 (every map at 224 px) this is exactly ACmix's reflection padding.
  The reflection is folded into constant Gather indices (no Pad(reflect), which older TensorRT parsers
  reject). Map sizes are read as Python ints, so an export fixes H and W (as every export here does) while the
  batch axis stays free.
* **Window attention as tiled GEMMs.** Instead of unfolding 49 copies of k and v, each 4×4 tile of queries
  meets its 10×10 key halo in one batched MatMul with a constant −∞ mask outside each query's window
  (``WindowAttention``; same sums, 3.4–4× faster in ONNX Runtime than walking the offsets, the measurements
  and why stacking the 49 windows is slower are in its docstring).
* **Positional encoding.** ACmix adds q·(pe_q − pe_k) with pe = Conv1×1(2 → head_dim, bias)(xy grid). The
  bias cancels in the difference (it would never get a gradient), so ours has none; q·pe_q is the same for
  every key of a query and cancels in the softmax, so we compute softmax(q·(k − pe)) — the same attention,
  and in the export pe is one head_dim × H × W constant.

Table 4 ablation switches (builder kwargs, recorded as ``model_args``): ``accb=False`` replaces every ACCB by a
3×3 conv + BN ("Minus ACCB"); ``fcsa=False`` replaces every FCSA by a 3×3 conv + BN ("ACCB and FCSA is
replaced by 3×3 convolution"; in a bottleneck the inserted FCSA is removed instead). Of the "Minus (FCSA+ACCB)"
row the paper says it cannot tell whether "the attention mechanism or the new downsampling layer" caused the
change, i.e. the 2×2 layer went with FCSA, so ``TABLE4_ROWS`` builds that row with ``shortcut="conv1x1"`` —
exactly torchvision's ResNet-18. (Its 48.98 % is below Table 2's ResNet-18 52.50 %, which would fit the other
reading, 2×2 shortcuts kept; ``shortcut`` is a switch of its own so both can be built.)

FCSA has no normalisation inside the attention: with large activations (random BN statistics, untrained deep
stacks) the window logits reach 10⁴–10⁶, the softmax becomes an argmax and float32 round-off between
backends shows at the 1e-4 level; at initialisation and with sane statistics parity is ~1e-6–1e-5.
"""
import functools
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Type, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fgvc_edge.errors import UserInputError
from fgvc_edge.models._registry import register_model
from fgvc_edge.models.base import HEAD, FgvcModel, TracingSurrogate

SHORTCUTS = ("conv2x2", "conv1x1")

# Table 4 of the paper as builder kwargs (ResNet-18, CUB-200-2011, 224 px).
TABLE4_ROWS: Dict[str, Dict[str, Any]] = {
    "complete": {},
    "minus_accb": {"accb": False},
    "minus_fcsa_accb": {"accb": False, "fcsa": False, "shortcut": "conv1x1"},
}


class ConvBN(nn.Sequential):
    """Bias-free conv followed by BN (one ACCB branch, or a plain ResNet conv)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: Tuple[int, int], stride: int, padding: Tuple[int, int]):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def fused_kernel_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """BN folded into the conv with running statistics (eqs. 2–3): K·γ/σ and β − μ·γ/σ."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return self.conv.weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class ACCB(nn.Module):
    """Asymmetric Convolution and Convolution Block (§3.1): k×k + 1×k + k×1 conv-BN branches, summed.

    ``padding`` is the k×k branch's; the asymmetric branches are padded (or, when ``padding < k // 2``, their
    input cropped) so that their kernels sit on the k×k kernel's centre row/column at every stride.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError("ACCB needs an odd kernel size, got {}".format(kernel_size))
        self.in_ch, self.out_ch = in_ch, out_ch
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        offset = padding - kernel_size // 2  # centre row/column of the square kernel, seen from the 1-D ones
        self.crop = max(-offset, 0)
        self.square = ConvBN(in_ch, out_ch, (kernel_size, kernel_size), stride, (padding, padding))
        self.hor = ConvBN(in_ch, out_ch, (1, kernel_size), stride, (max(offset, 0), padding))
        self.ver = ConvBN(in_ch, out_ch, (kernel_size, 1), stride, (padding, max(offset, 0)))
        self.fused: Optional[nn.Conv2d] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        c = self.crop
        x_hor = x[:, :, c : x.shape[2] - c, :] if c else x
        x_ver = x[:, :, :, c : x.shape[3] - c] if c else x
        return self.square(x) + self.hor(x_hor) + self.ver(x_ver)

    def get_equivalent_kernel_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The k×k kernel and bias of the one conv equal to this block in eval mode (eq. 4); modifies nothing."""
        if self.fused is not None:
            return self.fused.weight.detach().clone(), self.fused.bias.detach().clone()
        with torch.no_grad():
            kernel, bias = self.square.fused_kernel_bias()
            k_hor, b_hor = self.hor.fused_kernel_bias()
            k_ver, b_ver = self.ver.fused_kernel_bias()
            centre = self.kernel_size // 2
            kernel = kernel.clone()
            kernel[:, :, centre : centre + 1, :] += k_hor
            kernel[:, :, :, centre : centre + 1] += k_ver
            return kernel, bias + b_hor + b_ver

    def reparameterize(self) -> None:
        """Replace the three branches by one k×k conv with bias; a second call does nothing."""
        if self.fused is not None:
            return
        kernel, bias = self.get_equivalent_kernel_bias()
        # Widths from the tensors, not from __init__: a pruned block has fewer channels than it was built with.
        out_ch, in_ch = int(kernel.shape[0]), int(kernel.shape[1])
        fused = nn.Conv2d(
            in_ch, out_ch, self.kernel_size, stride=self.stride, padding=self.padding, bias=True
        ).to(device=kernel.device, dtype=kernel.dtype)
        fused.weight.data.copy_(kernel)
        fused.bias.data.copy_(bias)
        del self.square, self.hor, self.ver
        self.fused = fused

    def after_pruning(self) -> None:
        """Take the channel counts back from the convs (pruning changes the tensors, not these attributes)."""
        conv = self.fused if self.fused is not None else self.square.conv
        self.in_ch, self.out_ch = conv.in_channels, conv.out_channels


@functools.lru_cache(maxsize=None)
def reflect_pad_index(size: int, radius: int) -> Tuple[int, ...]:
    """Source index of each position of a map padded by ``radius`` on both sides, by reflection.

    For radius < size this is ReflectionPad's index map (ACmix); larger radii keep reflecting (numpy's
    ``pad(mode="reflect")``), so a window larger than the map stays defined. Plain Python, so the exporter
    records the indices as constants.
    """
    if size == 1:
        return (0,) * (1 + 2 * radius)
    period = 2 * (size - 1)
    folded = [i % period for i in range(-radius, size + radius)]
    return tuple(period - i if i >= size else i for i in folded)


@functools.lru_cache(maxsize=None)
def position_grid(h: int, w: int) -> np.ndarray:
    """ACmix's position grid: (1, 2, H, W), x then y, each linspace(−1, 1); float32, read-only."""
    grid = np.stack(np.meshgrid(np.linspace(-1.0, 1.0, w), np.linspace(-1.0, 1.0, h), indexing="xy"))
    grid = grid[None].astype(np.float32)
    grid.setflags(write=False)
    return grid


class TileLayout(NamedTuple):
    """Where each tile's queries and key halo sit in a flattened H·W map (see WindowAttention)."""

    tile: int
    tiles: int
    queries: np.ndarray  # (tiles·tile²,) pixel of each query slot (padding slots read pixel 0)
    halo: np.ndarray  # (tiles·halo²,) pixel of each halo position, reflected at the borders
    slots: np.ndarray  # (H·W,) query slot of each pixel: the way back from tiles to the map
    mask: np.ndarray  # (tile², halo²) 0 inside a query's window, float32's lowest outside


@functools.lru_cache(maxsize=None)
def tile_layout(h: int, w: int, window: int, tile: int) -> TileLayout:
    """Constant index maps and mask of the tiled window attention for an H×W map (plain numpy: the exporter
    records them as constants)."""
    radius, side = window // 2, tile + 2 * (window // 2)
    tiles_h, tiles_w = -(-h // tile), -(-w // tile)
    # Rows/columns of the reflected map; positions past it are seen only by padding slots (any pixel will do).
    rows = np.array(reflect_pad_index(h, radius) + (0,) * (tiles_h * tile - h))
    cols = np.array(reflect_pad_index(w, radius) + (0,) * (tiles_w * tile - w))
    ti, tj, a, b = np.meshgrid(np.arange(tiles_h), np.arange(tiles_w), np.arange(side), np.arange(side), indexing="ij")
    halo = rows[ti * tile + a] * w + cols[tj * tile + b]
    ti, tj, u, v = np.meshgrid(np.arange(tiles_h), np.arange(tiles_w), np.arange(tile), np.arange(tile), indexing="ij")
    i, j = ti * tile + u, tj * tile + v
    inside = (i < h) & (j < w)
    queries = np.where(inside, i * w + j, 0)
    slots = np.zeros(h * w, dtype=np.int64)
    slots[(i * w + j)[inside]] = np.arange(queries.size).reshape(queries.shape)[inside]
    u, v, a, b = np.meshgrid(np.arange(tile), np.arange(tile), np.arange(side), np.arange(side), indexing="ij")
    seen = (a >= u) & (a < u + window) & (b >= v) & (b < v + window)
    # float32's lowest, not −inf: exp() gives the same 0, and INT8 calibration, which also collects ranges of
    # this float-only Add, gets a finite range instead of a NaN zero point.
    mask = np.where(seen, 0.0, np.finfo(np.float32).min).astype(np.float32).reshape(tile * tile, side * side)
    arrays = [queries.reshape(-1).astype(np.int64), halo.reshape(-1).astype(np.int64), slots, mask]
    for array in arrays:
        array.setflags(write=False)
    return TileLayout(tile, tiles_h * tiles_w, *arrays)


class WindowAttention(nn.Module):
    """softmax_ab(q·k_ab) v_ab over each pixel's reflected window × window neighbourhood (eq. 9), per head.

    No parameters (FCSA's state dict is unchanged). The map is cut into ``TILE``×``TILE`` tiles; each tile's
    queries meet its (TILE + window − 1)² key halo in one dense batched MatMul, a constant mask (−∞ in effect) keeps
    each query to its own window, and a second MatMul gathers v. Exported: 3 Gathers, 2 MatMuls, 1 Softmax
    and a few Transposes/Reshapes per block, instead of 49 offsets × Slice/Mul/ReduceSum.

    Why this layout (ONNX Runtime, one FCSA block of ACANet-18 layer1, 64 ch at 56², 1 thread, CPU time):

    * walking the 49 offsets (the previous export, ~325 nodes): 38.5 ms. Its Softmax over the window axis,
      which is not the last axis, alone took 15.5 ms (ORT transposes around it), the 49 × (Slice, Mul,
      ReduceSum, Mul, Add) on 0.8 MB tensors the rest.
    * stacking the 49 shifted copies of k and v (one Concat, one broadcast Mul + ReduceSum each, ~234 nodes):
      55 ms, 1.4× slower. It materialises 49 × 0.8 MB = 39 MB per tensor — more than the last-level cache —
      and streams it three times (Concat 9.7 ms, broadcast Mul 14 ms, each for k and for v): memory traffic,
      not arithmetic, is what the stacked layout adds. A fixed one-hot (depthwise) convolution or an unfold
      builds the same 49× tensor and has the same cost.
    * tiles: the halo is only (TILE + 6)²/TILE² = 6.25× q's size at TILE 4 and the window products become
      GEMMs; 11.4 ms (3.4× faster than the offset walk; 4× at layers 2–4). The tile trades halo copies
      (fewer with big tiles) against masked products (fewer with small ones): 2 → 15.5, 3 → 13.5, 4 → 11.4,
      5 → 13.5, 7 → 14.5, 8 → 14.4, 14 → 18.9 ms; 4 is at or near the best at every stage's map size.

    MACs are counted by the definition (window² per pixel and channel, twice), not by the padded tiles:
    see ``declared_macs``.
    """

    TILE = 4

    def __init__(self, heads: int, window: int) -> None:
        super().__init__()
        self.heads, self.window = heads, window

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (already scaled), k, v: (N, C, H, W) with C = heads · head_dim → (N, C, H, W)."""
        c, h, w = q.shape[1], int(q.shape[2]), int(q.shape[3])  # fixed H, W: the index maps are constants
        head_dim = c // self.heads
        layout = tile_layout(h, w, self.window, min(self.TILE, max(h, w)))
        queries, halo, slots = (torch.tensor(a, device=q.device) for a in layout[2:5])
        mask = torch.tensor(layout.mask, device=q.device, dtype=q.dtype)

        def pixels_last(t: torch.Tensor) -> torch.Tensor:  # (N·heads, H·W, head_dim): gathers copy whole rows
            return t.reshape(-1, head_dim, h * w).transpose(1, 2)

        q_tiles = pixels_last(q)[:, queries].reshape(-1, layout.tiles, layout.tile ** 2, head_dim)
        k_halo = pixels_last(k)[:, halo].reshape(-1, layout.tiles, mask.shape[1], head_dim)
        v_halo = pixels_last(v)[:, halo].reshape(-1, layout.tiles, mask.shape[1], head_dim)
        attn = torch.softmax(q_tiles @ k_halo.transpose(-1, -2) + mask, dim=-1)
        out = (attn @ v_halo).reshape(-1, layout.tiles * layout.tile ** 2, head_dim)[:, slots]
        return out.transpose(1, 2).reshape(-1, c, h, w)

    def declared_macs(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
        """q·k and attention·v over window² offsets for every pixel and channel (the padded tiles' extra
        products are an implementation detail; ``count_macs`` uses this instead of tracing them)."""
        return 2 * self.window ** 2 * q.numel()


class FCSA(nn.Module):
    """Fusion of Convolution and Self-Attention (§3.2), ACmix-style, stride 1, ``channels`` in and out."""

    # INT8 quantizes only FCSA's convolutions; the window attention (Gathers, two MatMuls of computed
    # operands, the softmax) stays float.
    INT8_FLOAT_ARITHMETIC = True

    def __init__(self, channels: int, heads: int = 4, window: int = 7, kernel_conv: int = 3) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError("FCSA channels {} are not divisible by heads {}".format(channels, heads))
        if window % 2 == 0 or kernel_conv % 2 == 0:
            raise ValueError("FCSA window and conv kernel must be odd")
        self.channels, self.heads, self.window, self.kernel_conv = channels, heads, window, kernel_conv
        self.head_dim = channels // heads
        # Stage I (eq. 10): projections shared by both paths.
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.pos_embed = nn.Conv2d(2, self.head_dim, 1, bias=False)
        self.attention = WindowAttention(heads, window)
        # Conv path (eqs. 6–8): per-pixel linear map from the 3·heads projected maps to k² shift inputs,
        # then a grouped k×k conv that starts as pure shifts (Shift(·, a − k/2, b − k/2), summed).
        self.fc = nn.Conv2d(3 * heads, kernel_conv * kernel_conv, 1, bias=False)
        self.shift_conv = nn.Conv2d(
            kernel_conv * kernel_conv * self.head_dim,
            channels,
            kernel_conv,
            padding=kernel_conv // 2,
            groups=self.head_dim,
            bias=True,
        )
        self.rate_att = nn.Parameter(torch.tensor(0.5))
        self.rate_conv = nn.Parameter(torch.tensor(0.5))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The ACmix module's own initialisation: PyTorch's defaults for the projections, one-hot shifts, rates 0.5.

        ACmix's ResNet wrapper re-initialises every conv with Kaiming fan-out afterwards, shift kernels included;
        we do not. With Kaiming fan-out every FCSA amplifies its input several times over, and with the
        identity BN of an untrained model in eval mode ResNet-50's layer4 attention logits reach 1e17: float32
        results then differ between PyTorch and ONNX Runtime by 1e-2 (export parity fails at 224 px).
        """
        for conv in (self.q, self.k, self.v, self.pos_embed, self.fc):
            conv.reset_parameters()
        with torch.no_grad():
            self.rate_att.fill_(0.5)
            self.rate_conv.fill_(0.5)
        self._reset_shift_kernels()

    def _reset_shift_kernels(self) -> None:
        k = self.kernel_conv
        shifts = torch.zeros(k * k, k, k)
        for i in range(k * k):
            shifts[i, i // k, i % k] = 1.0
        with torch.no_grad():
            self.shift_conv.weight.copy_(shifts.unsqueeze(0).expand(self.channels, -1, -1, -1))
            self.shift_conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        return self.rate_att * self._attention(q, k, v) + self.rate_conv * self._conv(q, k, v)

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Eq. 9 with ACmix's positional term: softmax_ab(q·(k_ab + pe_ij − pe_ab)/√d) v_ab.

        q·pe_ij is the same for every window position of a query, so it cancels in the softmax; what is left
        is q·(k − pe)_ab with pe = W·xy evaluated on the unpadded grid (padding reflects pe like k, so
        subtracting before the window gather is the same). In the export pe is a head_dim × H × W constant.
        """
        h, w = int(q.shape[2]), int(q.shape[3])
        grid = torch.tensor(position_grid(h, w), device=q.device, dtype=q.dtype)
        pe = F.conv2d(grid, self.pos_embed.weight).unsqueeze(1)  # (1, 1, head_dim, H, W), shared by the heads
        k = (k.reshape(-1, self.heads, self.head_dim, h, w) - pe).reshape(k.shape)
        return self.attention(q * self.head_dim ** -0.5, k, v)

    def _conv(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h, w = int(q.shape[2]), int(q.shape[3])
        per_head = [t.reshape(-1, self.heads, self.head_dim, h * w) for t in (q, k, v)]
        mixed = self.fc(torch.cat(per_head, dim=1))  # (N, k², head_dim, H·W)
        mixed = mixed.permute(0, 2, 1, 3).reshape(-1, self.head_dim * self.kernel_conv ** 2, h, w)
        return self.shift_conv(mixed)


class Downsample2x2(nn.Sequential):
    """§3.3 / Fig. 7(b): zero-pad right and bottom by one, 2×2 stride-2 conv, BN → ceil(H/2) × ceil(W/2)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.conv = nn.Conv2d(in_ch, out_ch, 2, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)


def _shortcut(in_ch: int, out_ch: int, stride: int, kind: str) -> Optional[nn.Module]:
    if stride == 1 and in_ch == out_ch:
        return None
    if stride == 2 and kind == "conv2x2":
        return Downsample2x2(in_ch, out_ch)
    return ConvBN(in_ch, out_ch, (1, 1), stride, (0, 0))


def _conv3x3(in_ch: int, out_ch: int, stride: int, accb: bool) -> nn.Module:
    if accb:
        return ACCB(in_ch, out_ch, 3, stride=stride, padding=1)
    return ConvBN(in_ch, out_ch, (3, 3), stride, (1, 1))


class AcaBasicBlock(nn.Module):
    """ResNet basic block with conv1 → ACCB and conv2 → FCSA (+ BN)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, *, accb: bool, fcsa: bool, shortcut: str) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, planes, stride, accb)
        self.conv2 = nn.Sequential(FCSA(planes), nn.BatchNorm2d(planes)) if fcsa else _conv3x3(planes, planes, 1, False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, planes, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.relu(self.conv1(x))) + identity)


class AcaBottleneck(nn.Module):
    """ResNet bottleneck: 1×1 → ACCB 3×3 (strided) → FCSA + BN → 1×1 (×4)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, *, accb: bool, fcsa: bool, shortcut: str) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = ConvBN(in_ch, planes, (1, 1), 1, (0, 0))
        self.conv2 = _conv3x3(planes, planes, stride, accb)
        self.fcsa = nn.Sequential(FCSA(planes), nn.BatchNorm2d(planes)) if fcsa else None
        self.conv3 = ConvBN(planes, out_ch, (1, 1), 1, (0, 0))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.conv2(self.relu(self.conv1(x))))
        if self.fcsa is not None:
            out = self.relu(self.fcsa(out))
        return self.relu(self.conv3(out) + identity)


Block = Union[Type[AcaBasicBlock], Type[AcaBottleneck]]


class ACANet(FgvcModel):
    """ResNet stem and head around stages of ACANet blocks; eval and train forward both return logits."""

    def __init__(
        self,
        block: Block,
        layers: List[int],
        num_classes: int,
        *,
        accb: bool = True,
        fcsa: bool = True,
        shortcut: str = "conv2x2",
    ) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise UserInputError("shortcut must be one of {}, not {!r}".format(SHORTCUTS, shortcut))
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch, stages = 64, []
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(in_ch, planes, stride, accb=accb, fcsa=fcsa, shortcut=shortcut))
                in_ch = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's ResNet initialisation, then ACmix's own for the FCSA modules.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, FCSA):
                m.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def _fcsa_names(self) -> List[str]:
        return [name for name, module in self.named_modules() if isinstance(module, FCSA)]

    def pruning_ignored_layers(self) -> List[Tuple[str, str]]:
        fcsa = ("FCSA internals: q/k/v widths are reshaped into 4 heads for window attention and mixed by the "
                "shift conv (ACmix); its input width is pruned, its output width stays")
        return [("fc", HEAD)] + [(name, fcsa) for name in self._fcsa_names()]

    def pruning_surrogates(self) -> Dict[str, TracingSurrogate]:
        # FCSA's 49-offset window loop makes the dependency graph explode; only its boundary matters.
        return {name: _fcsa_boundary for name in self._fcsa_names()}


def _fcsa_boundary(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Same channel boundary as FCSA (input → q, k, v; output width = q's), without the window loop."""
    return lambda x: module.q(x) + module.k(x) + module.v(x)


def _create_acanet(block: Block, layers: List[int], num_classes: int, **switches: Any) -> ACANet:
    return ACANet(block, layers, num_classes, **switches)


@register_model("acanet_resnet18")
def acanet_resnet18(
    *, num_classes: int = 200, accb: bool = True, fcsa: bool = True, shortcut: str = "conv2x2"
) -> ACANet:
    return _create_acanet(AcaBasicBlock, [2, 2, 2, 2], num_classes, accb=accb, fcsa=fcsa, shortcut=shortcut)


@register_model("acanet_resnet50")
def acanet_resnet50(
    *, num_classes: int = 200, accb: bool = True, fcsa: bool = True, shortcut: str = "conv2x2"
) -> ACANet:
    return _create_acanet(AcaBottleneck, [3, 4, 6, 3], num_classes, accb=accb, fcsa=fcsa, shortcut=shortcut)
