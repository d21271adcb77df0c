"""CMAL-Net: cross-layer mutual attention learning — three experts, their attention regions, A_oval.

Paper: Liu, Zhao, Wang & Kato, "Learn from Each Other to Classify Better: Cross-layer Mutual Attention
Learning for Fine-grained Visual Classification", Pattern Recognition 140 (2023) 109550, §3. Structure and
region procedure follow the official code (github.com/Dichao-Liu/CMAL: basic_conv.py, utils.py,
train_FGVC_Aircraft_ResNet50.py; read for understanding, nothing copied) where it differs from the text.

Experts (§3.1, eqs. (1)-(3)): expert n reads ResNet stage layer2 / layer3 / layer4 (512/1024/2048 channels,
56/28/14 px at 448). Its block is conv 1×1 → 512 then conv 3×3 → 1024, each conv (no bias) → BN (eps 1e-5,
momentum 0.01) → activation, giving x_n''; global max pooling gives v_n (1024-d); the head f_n^clf is
BN1d → Linear(→512) → BN1d → ELU → Linear(→K). The concatenation head takes [v_1; v_2; v_3] (3072-d).
cmal_resnet18 (no paper figure) reads 128/256/512 channels and keeps the block widths 512/1024.

Attention region (§3.2, eqs. (4)-(7)), as the official ``map_generate`` / ``attention_im`` / ``highlight_im``:

* CAM Ω_n for the expert's predicted class k: the head's two Linear weights only (BN, ELU and biases are
  ignored, as in the official code), computed as (W4[k]·W1)·x_n'' — one vector per image times the map;
* bilinear upsampling to the input size (``align_corners=True``), min-max normalisation with +1e-6;
* mask = normalised ≥ t (t = 0.5); box of the positives, padded by 0.1·H (0.1·W), truncated with ``int()``,
  clamped to the image; crop and bilinear resize back to the input size (``align_corners=True``);
* A_oval: the three normalised maps summed, normalised again, same steps.

Inference (§3.4): ``mode="raw"`` sums the four logits of the raw image; ``mode="raw+aoval"`` (the paper's
figure, deployment default) adds the four logits of the A_oval crop — a sum of eight. Both are one static
graph: the box comes from max/min reductions over row/column indicators (no NonZero), and the batch is never
split into samples. The crop is two batched MatMuls, rows · image · cols, with per-image N×H×H and N×W×W
resampling matrices built from the box by comparisons with pixel indices (no Gather, GridSample or
data-dependent shape; MatMul, Floor, Min, Clip, Equal, Where parse in TensorRT 8.5+). Each matrix row holds
the two taps and weights that ``upsample_bilinear`` (align_corners=True) computes for the sliced box, in its
own float32 steps: ratio (h − 1)/(L − 1) rounded once, position ratio·i rounded once, floor, weight =
position − index. So the crop equals the official slice + resize except for the rounding of the last of the
two additions per axis (≤ 1 ulp, in some pixels), and a whole-image box returns the image itself, bit for
bit. (A sampling grid, as GridSample takes, rounds positions at image scale: up to 3e-5 px off at 448, and a
whole-image box is not an exact copy.) The crop runs in :class:`AovalCrop`, whose ONNX scope the FP16 and
INT8 stages keep in float. The train forward returns :class:`CmalOutput` (the four raw-image logits and the
detached maps); ``attention_maps`` / ``attention_box`` / ``crop_regions`` work on batches so a trainer can
build the mutual data augmentation of Algorithm 1 on them.

Fidelity, measured by ``benchmarks/cmal_crop_fidelity.py`` (cmal_resnet50 at 448, BN statistics of 15 real
photos, against the official test() run per image in float32): raw + A_oval logits equal the official ones
bit for bit where the box is the whole image and are within 2.3e-5 to 7.4e-5 of max|logit| where it is not
(the former GridSample crop: 0.8e-4 to 7.3e-4, issue #15). That is the float32 resolution of such a network,
not a fault of the crop: moving half the pixels of the official crop up by one ulp moves the official logits
by 1.7e-5 to 9.0e-5, and the official procedure itself changes by 1.3e-5 to 7.4e-5 between 1 and 2 threads
(PyTorch picks another upsample kernel, which rounds differently). Only the same kernel, thread count
included, can be closer.

Deviations from the paper text, all following the official code:

* the block activation is ReLU (eqs. (2)-(3) say ELU): builder kwarg ``activation="relu"|"elu"``;
* the mask uses ≥ t (eq. (6) says > t);
* A_oval sums the three maps (eq. (7) averages; after min-max normalisation only the ε differs);
* the inference sums the eight logits (the paper averages; the arg-max is the same).

Deviations from the official code: global max pooling is adaptive (the official MaxPool2d(56/28/14) is
global only at 448); a map with no pixel ≥ t (a constant map, where the official code crashes) yields the
whole image; a box is at least one pixel tall and wide (matters only below 10 px, where the official code
crashes on an empty slice). Float32 arithmetic for the padded edges reproduces the official float64
``int()`` results for every size up to 2048 (checked exhaustively).

Measured at 448 px, 100 classes (fvcore, one multiply-add = one MAC; it also counts BN, the CAM matmuls,
the bilinear resize and the crop's two MatMuls (0.54G), and skips only pooling, max/min reductions and
element-wise ops): cmal_resnet50 42.88M parameters (Table 9: 43M), 37.31G MACs RAW (37.4G), 75.00G RAW +
A_oval (74.8G). cmal_resnet18: 29.17M, 27.07G / 54.51G — the 3×3 block on layer2's 56×56 map (14.8G)
dominates either way.
"""
import logging
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fgvc_edge.errors import FgvcError, UserInputError, require
from fgvc_edge.models._registry import register_model
from fgvc_edge.models.configs import CMAL_MODES
from fgvc_edge.models.base import FgvcModel
from fgvc_edge.models.layers import ResNetTrunk

MODES = CMAL_MODES  # the config's variants; the first is the deployment default
BLOCK_HIDDEN = 512  # C_v/2: the 1×1 conv's width (eq. (3); official conv_block*.0)
BLOCK_WIDTH = 1024  # C_v: the descriptor length (eq. (2); official conv_block*.1)
HEAD_HIDDEN = 512  # official classifier*.1: Linear(→512)
BN_EPS, BN_MOMENTUM = 1e-5, 0.01  # official BasicConv
THRESHOLD = 0.5  # t, §4.1 and Table 3
PADDING_RATIO = 0.1  # official attention_im / highlight_im
NORM_EPS = 1e-6  # official min-max normalisation
# Parity probe: ONNX Runtime's box may differ by one pixel from PyTorch's only where the attention map is
# this close to t (two float32 runtimes differ by orders of magnitude less after normalisation).
THRESHOLD_TIE = 1e-3
ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU}

log = logging.getLogger(__name__)


class CmalOutput(NamedTuple):
    """Train-mode forward: the four raw-image logits and the three expert maps x_n'' (detached)."""

    p1: torch.Tensor
    p2: torch.Tensor
    p3: torch.Tensor
    p_concat: torch.Tensor
    maps: Tuple[torch.Tensor, ...]

    @property
    def logits(self) -> Tuple[torch.Tensor, ...]:
        return (self.p1, self.p2, self.p3, self.p_concat)

    def total(self) -> torch.Tensor:
        """p1 + p2 + p3 + p_concat, the official order of the sum."""
        return self.p1 + self.p2 + self.p3 + self.p_concat


# -- attention regions (batched, static-shaped) ------------------------------------------------------------


def class_activation_map(
    features: torch.Tensor, logits: torch.Tensor, hidden_weight: torch.Tensor, out_weight: torch.Tensor
) -> torch.Tensor:
    """Ω_n of eq. (4) for each image's predicted class: (W4[k]·W1)·x'' — (N, C, h, w) → (N, h, w)."""
    weights = out_weight[logits.argmax(dim=1)] @ hidden_weight
    height, width = features.shape[-2:]
    return torch.matmul(weights.unsqueeze(1), features.flatten(2)).reshape(-1, height, width)


def min_max_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Eq. (5) per image, with the official +1e-6 (a constant map becomes zeros, not NaN)."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    return (maps - low) / (high - low + NORM_EPS)


def upsample_attention(cam: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Ω̃_n^norm: the CAM resized to the input (bilinear, align_corners=True as upsample_bilinear), normalised."""
    upsampled = F.interpolate(cam.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=True)
    # [:, 0] rather than squeeze(1): the exporter guards a squeeze of a resized axis with an If node.
    return min_max_normalize(upsampled[:, 0])


def overall_attention(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Ω̃_oval^norm: the normalised expert maps summed (official highlight_im), normalised again."""
    total = maps[0]
    for attention in maps[1:]:
        total = total + attention
    return min_max_normalize(total)


def attention_box(
    attention: torch.Tensor, threshold: float = THRESHOLD, padding_ratio: float = PADDING_RATIO
) -> torch.Tensor:
    """Boxes (N, 4) = [top, bottom, left, right) in pixels (float, end exclusive) of attention (N, H, W) ≥ t.

    The first and last positive row (column) come from min/max reductions over row (column) indicators,
    so the graph has static shapes and no NonZero. No positive pixel → the whole image.
    """
    mask = (attention >= threshold).to(attention.dtype)
    height, width = attention.shape[-2:]
    top, bottom = _padded_span(mask.amax(dim=2), padding_ratio * height)
    left, right = _padded_span(mask.amax(dim=1), padding_ratio * width)
    return torch.stack([top, bottom, left, right], dim=1)


def _padded_span(hits: torch.Tensor, padding: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Official edges max(int(first − pad), 0) and min(int(last + pad), L) of the positive entries of (N, L)."""
    length = hits.shape[1]
    index = torch.arange(length, dtype=hits.dtype, device=hits.device)
    found = hits > 0
    first = torch.where(found, index, float(length)).amin(dim=1)
    last = torch.where(found, index, -1.0).amax(dim=1)
    # int() truncates; for a positive value that is floor, and a negative start is clamped to 0 anyway.
    start = torch.floor(first - padding).clamp(min=0.0)
    end = torch.minimum(torch.floor(last + padding), torch.full_like(last, float(length)))
    any_hit = hits.amax(dim=1) > 0
    start = torch.where(any_hit, start, torch.zeros_like(start))
    end = torch.where(any_hit, torch.maximum(end, start + 1.0), torch.full_like(end, float(length)))
    return start, end


def resize_matrices(boxes: torch.Tensor, height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Separable bilinear resampling of each box to H×W: (rows (N, H, H), cols (N, W, W)), so that
    ``rows @ image @ cols`` is the box sliced out of the image and resized with upsample_bilinear.

    Row i of ``rows`` holds the two taps and weights that interpolate(mode="bilinear", align_corners=True)
    computes for output row i of an h-row slice, in its own float32 steps (:func:`_bilinear_taps`); the
    slice offset is added to integer indices only, so no position is rounded at image scale.
    """
    return (
        _resize_matrix(boxes[:, 0], boxes[:, 1], height, source_axis=2),
        _resize_matrix(boxes[:, 2], boxes[:, 3], width, source_axis=1),
    )


def _bilinear_taps(start: torch.Tensor, end: torch.Tensor, length: int) -> Tuple[torch.Tensor, ...]:
    """(first, second, weight of second) (N, length) for resizing [start, end) to ``length`` pixels.

    As PyTorch's upsample kernel (area_pixel_compute_scale, guard_index_and_lambda): ratio (h − 1)/(L − 1)
    rounded once, source position ratio·i rounded once, index floor(position) ≤ h − 1, weight
    position − index in [0, 1], second tap index + 1 except on the last row. A whole-image box gives ratio
    1 and weight 0: the identity.
    """
    extent = (end - start).unsqueeze(1)
    ratio = (extent - 1.0) / max(length - 1, 1)
    positions = ratio * torch.arange(length, dtype=start.dtype, device=start.device)
    last = extent - 1.0
    index = torch.minimum(torch.floor(positions), last)
    weight = (positions - index).clamp(0.0, 1.0)
    offset = start.unsqueeze(1)
    return offset + index, offset + torch.minimum(index + 1.0, last), weight


def _resize_matrix(start: torch.Tensor, end: torch.Tensor, length: int, *, source_axis: int) -> torch.Tensor:
    """(N, L, L) weights, output pixels along axis 3 − ``source_axis``, source pixels along ``source_axis``."""
    first, second, weight = (t.unsqueeze(source_axis) for t in _bilinear_taps(start, end, length))
    shape = [1, 1, 1]
    shape[source_axis] = length
    pixels = torch.arange(length, dtype=start.dtype, device=start.device).reshape(shape)
    # Comparisons and selections only: no Gather/Scatter, static shapes (Equal, Where: in TensorRT 8.5's parser).
    return torch.where(pixels == first, 1.0 - weight, 0.0) + torch.where(pixels == second, weight, 0.0)


def box_from_matrices(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The boxes (N, 4) that :func:`resize_matrices` made ``rows``/``cols`` from; reads an exported graph's box.

    The first output pixel reads the box's first pixel alone; the last one reads the box's last pixel with a
    weight within a few ulp of 1.
    """
    top, bottom = rows[:, 0].argmax(dim=1), rows[:, -1].argmax(dim=1) + 1
    left, right = cols[:, :, 0].argmax(dim=1), cols[:, :, -1].argmax(dim=1) + 1
    return torch.stack([top, bottom, left, right], dim=1).to(rows.dtype)


def crop_regions(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """A_n: each image's box cropped and resized to the full input — two batched MatMuls.

    Columns first, then rows: the order in which upsample_bilinear's kernel combines its four taps.
    """
    rows, cols = resize_matrices(boxes.to(images.dtype), images.shape[-2], images.shape[-1])
    return torch.matmul(rows.unsqueeze(1), torch.matmul(images, cols.unsqueeze(1)))


# -- blocks ------------------------------------------------------------------------------------------------


class ConvBnAct(nn.Module):
    """The official BasicConv: conv (no bias) → BN(eps 1e-5, momentum 0.01) → activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, activation: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def expert_block(in_channels: int, activation: str) -> nn.Sequential:
    """Eqs. (3) then (2): 1×1 conv to C_v/2 = 512, 3×3 conv to C_v = 1024, giving x_n''."""
    return nn.Sequential(
        ConvBnAct(in_channels, BLOCK_HIDDEN, 1, activation), ConvBnAct(BLOCK_HIDDEN, BLOCK_WIDTH, 3, activation)
    )


class ExpertHead(nn.Sequential):
    """f^clf: BN1d → Linear(→512) → BN1d → ELU → Linear(→K), indices as the official classifier* (0-4)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__(
            nn.BatchNorm1d(in_features),
            nn.Linear(in_features, HEAD_HIDDEN),
            nn.BatchNorm1d(HEAD_HIDDEN),
            nn.ELU(),
            nn.Linear(HEAD_HIDDEN, num_classes),
        )

    def cam_weights(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(W1, W4): the two Linear weights the CAM uses, detached as the official state_dict() copies are."""
        return self[1].weight.detach(), self[4].weight.detach()


def expert_attention(
    output: CmalOutput, cam_weights: Sequence[Tuple[torch.Tensor, torch.Tensor]], size: Sequence[int]
) -> List[torch.Tensor]:
    """Ω̃_n^norm (N, H, W) of the three experts at ``size``, from their maps x_n'' and predicted classes."""
    return [
        upsample_attention(class_activation_map(x, p, *weights), size)
        for x, p, weights in zip(output.maps, output.logits[:3], cam_weights)
    ]


class AovalCrop(nn.Module):
    """The A_oval crop of the inference (§3.4): CAMs → overall attention → box → crop resized to the input.

    A module of its own so that its ONNX nodes share one scope, which the export records (``FP32_ARITHMETIC``)
    and the precision stages keep in float: the FP16 graph computes these coordinates, weights and thresholds
    in FP32 (an FP16 sample position at 448 px is up to 0.25 px off) and the INT8 graph leaves them
    unquantized (a quantized row index moves the crop). No parameters: the CAM weights are the heads'.
    """

    FP32_ARITHMETIC = True

    def forward(
        self,
        images: torch.Tensor,
        output: CmalOutput,
        cam_weights: Sequence[Tuple[torch.Tensor, torch.Tensor]],
        threshold: float,
    ) -> torch.Tensor:
        attention = overall_attention(expert_attention(output, cam_weights, images.shape[-2:]))
        return crop_regions(images, attention_box(attention, threshold))


# -- model -------------------------------------------------------------------------------------------------


class CmalNet(FgvcModel):
    """Eval: logits of ``mode``; train: :class:`CmalOutput` of the raw image."""

    def __init__(self, depth: str, num_classes: int, *, mode: str, activation: str, threshold: float) -> None:
        super().__init__()
        if mode not in MODES:
            raise UserInputError("CMAL-Net mode must be one of {}, not {!r}".format(", ".join(MODES), mode))
        if activation not in ACTIVATIONS:
            raise UserInputError("CMAL-Net activation must be relu or elu, not {!r}".format(activation))
        if not 0.0 <= threshold < 1.0:
            raise UserInputError("CMAL-Net threshold must be in [0, 1), got {}".format(threshold))
        self.mode = mode
        self.threshold = float(threshold)
        self.backbone = ResNetTrunk(depth)
        stage_channels = self.backbone.channels[1:]
        self.blocks = nn.ModuleList([expert_block(c, activation) for c in stage_channels])
        self.heads = nn.ModuleList([ExpertHead(BLOCK_WIDTH, num_classes) for _ in stage_channels])
        self.concat_head = ExpertHead(BLOCK_WIDTH * len(stage_channels), num_classes)
        self.aoval_crop = AovalCrop() if mode == "raw+aoval" else None

    @property
    def variant(self) -> Optional[str]:
        return self.mode

    def pruning_ignored_layers(self) -> List[Tuple[str, str]]:
        ignored = [("heads.{}".format(i), "expert classifier head (BN1d → Linear → BN1d → ELU → Linear)")
                   for i in range(len(self.heads))]
        ignored.append(("concat_head", "concatenation classifier head"))
        ignored += [("blocks.{}.1".format(i), "expert map x'' (1024 ch): the CAM multiplies it by head weights "
                     "W4[k]·W1 outside the traced graph (detached), so its width stays; its input width is pruned")
                    for i in range(len(self.blocks))]
        return ignored

    def experts(self, images: torch.Tensor) -> CmalOutput:
        """The three experts and the concatenation head on ``images`` (eq. (1): global max pooling)."""
        maps = [block(x) for block, x in zip(self.blocks, self.backbone(images)[1:])]
        descriptors = [m.amax(dim=(2, 3)) for m in maps]
        p1, p2, p3 = [head(v) for head, v in zip(self.heads, descriptors)]
        p_concat = self.concat_head(torch.cat(descriptors, dim=1))
        return CmalOutput(p1, p2, p3, p_concat, tuple(m.detach() for m in maps))

    def cam_weights(self) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        return [head.cam_weights() for head in self.heads]

    def attention_maps(self, output: CmalOutput, size: Sequence[int]) -> List[torch.Tensor]:
        """Ω̃_n^norm (N, H, W) of the three experts at ``size``, each for its own predicted class."""
        return expert_attention(output, self.cam_weights(), size)

    def aoval_box(self, output: CmalOutput, size: Sequence[int]) -> torch.Tensor:
        """The A_oval box of every image (N, 4) = [top, bottom, left, right)."""
        return attention_box(overall_attention(self.attention_maps(output, size)), self.threshold)

    def forward(self, images: torch.Tensor) -> Any:
        output = self.experts(images)
        if self.training:
            return output
        if self.aoval_crop is None:
            return output.total()
        crops = self.aoval_crop(images, output, self.cam_weights(), self.threshold)
        return output.total() + self.experts(crops).total()

    def loss(self, outputs: CmalOutput, targets: torch.Tensor) -> torch.Tensor:
        """Sum of the four heads' CE on the raw image (Algorithm 1's full multi-step recipe is the trainer's)."""
        return sum((F.cross_entropy(p, targets) for p in outputs.logits), torch.zeros((), device=targets.device))

    def onnx_parity_probe(self, proto: Any) -> Optional["AttentionBoxProbe"]:
        """export_onnx's hook: raw+aoval is judged on boxes and on logits given the box (None: plain logits)."""
        return AttentionBoxProbe(self, proto) if self.mode == "raw+aoval" else None


class AttentionBoxProbe:
    """Parity of a thresholded graph: the A_oval box is discontinuous in the input, so ±1 ulp can move it.

    The graph is run with the crop's two resampling matrices as extra outputs, from which ONNX Runtime's box
    is read. A box must equal PyTorch's, or differ by at most 1 px on a sample whose attention map has a
    pixel within THRESHOLD_TIE of t. The reference logits are PyTorch's given the accepted box (ONNX
    Runtime's when it is accepted, PyTorch's own otherwise — then the logits disagree and the export fails).
    """

    def __init__(self, model: CmalNet, proto: Any) -> None:
        onnx = require("onnx", "toolkit")
        self.model = model
        self.matrix_names = crop_matrix_names(proto)
        # Serialise with the extra outputs, then restore the graph that is shipped.
        for name in self.matrix_names:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        try:
            self.model_bytes = proto.SerializeToString()
        finally:
            del proto.graph.output[-len(self.matrix_names) :]

    def compare(self, session: Any, images: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
        """(reference, candidate) logits of ``images`` for export_onnx's comparison."""
        logits, rows, cols = session.run(["logits", *self.matrix_names], {"input": images.numpy()})
        onnx_boxes = box_from_matrices(torch.from_numpy(rows)[:, 0], torch.from_numpy(cols)[:, 0]).to(images.dtype)
        with torch.inference_mode():
            output = self.model.experts(images)
            attention = overall_attention(self.model.attention_maps(output, images.shape[-2:]))
            own_boxes = attention_box(attention, self.model.threshold)
            accepted = boxes_agree(own_boxes, onnx_boxes, attention, self.model.threshold)
            boxes = torch.where(accepted.unsqueeze(1), onnx_boxes, own_boxes)
            reference = output.total() + self.model.experts(crop_regions(images, boxes)).total()
        differing = int((own_boxes != onnx_boxes).any(dim=1).sum())
        if differing:
            log.warning(
                "parity: %d of %d A_oval boxes differ (%d within 1 px on the threshold, judged given the box)",
                differing, len(images), int((accepted & (own_boxes != onnx_boxes).any(dim=1)).sum()),
            )
        return reference.float().numpy(), logits


def crop_matrix_names(proto: Any) -> Tuple[str, str]:
    """Names of the (N, 1, H, H) and (N, 1, W, W) matrices of :func:`crop_regions` in an exported graph:
    the one MatMul that reads the graph input resamples columns, the MatMul that reads its product rows."""
    image = proto.graph.input[0].name
    matmuls = [node for node in proto.graph.node if node.op_type == "MatMul"]
    columns = [node for node in matmuls if node.input[0] == image]
    rows = [node for node in matmuls if columns and node.input[1] == columns[0].output[0]]
    if len(columns) != 1 or len(rows) != 1:
        raise FgvcError("the raw+aoval graph should resample the input with two MatMuls, found {} and {}".format(
            len(columns), len(rows)))
    return rows[0].input[0], columns[0].input[1]


def boxes_agree(
    own: torch.Tensor, other: torch.Tensor, attention: torch.Tensor, threshold: float, tie: float = THRESHOLD_TIE
) -> torch.Tensor:
    """Per image: equal boxes, or within 1 px where the attention map sits on the threshold."""
    equal = (own == other).all(dim=1)
    near = (own - other).abs().amax(dim=1) <= 1.0
    on_threshold = ((attention - threshold).abs() < tie).flatten(1).any(dim=1)
    return equal | (near & on_threshold)


def _create_cmal(
    depth: str,
    *,
    num_classes: int = 100,
    mode: str = MODES[0],
    activation: str = "relu",
    threshold: float = THRESHOLD,
) -> CmalNet:
    return CmalNet(depth, num_classes, mode=mode, activation=activation, threshold=threshold)


@register_model("cmal_resnet50")
def cmal_resnet50(**kwargs: Any) -> CmalNet:
    return _create_cmal("resnet50", **kwargs)


@register_model("cmal_resnet18")
def cmal_resnet18(**kwargs: Any) -> CmalNet:
    return _create_cmal("resnet18", **kwargs)
