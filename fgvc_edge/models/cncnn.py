"""CN-CNN: cross-layer navigation — ConvLSTM from high to low level, attention from low to high level.

Paper: Guo, Xie, Liang, Sun, Ma, "Cross-layer Navigation Convolutional Neural Network for Fine-grained
Visual Classification", arXiv:2106.10920 (2021), §2. Official code: github.com/PRIS-CV/CN-CNN (MIT),
``model/resnet50.py``, read for the layer sizes; everything here is our own code.

Pipeline (ResNet-50; S3, S4, S5 = layer2, layer3, layer4 outputs; 56/28/14 px at 448 input):

* pyramid (§2.2, official ``PyramidFeatures``): every level to 256 channels at S3's resolution —
  F5 = nearest-upsample(S5) → "SimpleFPA" (1×1 conv-BN-ReLU of the map + 1×1 conv-BN-ReLU of its global
  average, added); F4 = nearest-upsample(S4) → 1×1 conv (with bias); F3 = 1×1 conv(S3).
  We project first and upsample after: nearest upsampling by a whole factor commutes with 1×1 convs,
  BN and ReLU and leaves a global average unchanged, so the result is identical at any input that is a
  multiple of 32 (448 included) and the 1×1 convs run on 16×/4× fewer pixels (−2.2 GMACs at 448).
  Levels are resized to S3's exact size (not by a fixed ×4/×2) so other input sizes work too.
* high → low (HL) pathway (§2.2): one ConvLSTM cell (hidden 256, 3×3, bias; one conv 512 → 1024 giving the
  gates i, f, o, g in that order), run over the levels as a sequence F5 → F4 → F3, zero initial state;
  the fused level i is the hidden state after reading F_i. The official code stacks the three levels on
  the ConvLSTM's *batch* axis and the images on its *time* axis, so it recurs over the images of a batch
  and never mixes levels; we follow the paper. Parameter shapes are the same either way. The first step
  (h = c = 0) uses only the input half of the kernel and skips the forget gate: exact, −9.2 GMACs at 448.
* low → high (LH) pathway (§2.3, official ``PyramidAttentions``): per level, a spatial mask
  s = σ(ConvTranspose 3×3, 256 → 1) and a channel mask c = σ(1×1 16 → 256 (ReLU(1×1 256 → 16 (GAP F))));
  the channel masks pass upwards, c4 ← (c4 + c3)/2, c5 ← (c5 + c4)/2 (c4 already averaged);
  A_i = s_i·F_i + c_i·F_i.
* heads (official ``cls3/4/5``, ``cls_concate``): GAP → BN1d(256) → Linear → BN1d → ELU → Linear on each
  A_i, and the same on the concatenation of GAP(F3), GAP(F4), GAP(F5) (768, the fused features before
  attention); hidden width 512 for 200 classes, else 256 (the official rule; ``head_hidden`` overrides it).
  Prediction = mean of the four logits; training loss = sum of the four cross-entropies.

Where the paper and the code differ or the paper is silent:

* §2.1 says "three independent classifiers"; the code has four (with the concat head) and averages
  them. We follow the code.
* §2.3 says the maps are "resized into their original size" before the spatial attention; the code
  applies the attention at S3's resolution. We follow the code (the heads pool globally either way).
* ConvLSTM over levels (paper), not over the batch (code bug): an image's output does not depend on its
  batch mates. Weights trained with the official code load (``fgvc_edge.importers.cncnn``) but were
  trained for the other recurrence, so they are a starting point for fine-tuning, not the paper's model.
* Initialisation as the code: He-normal (fan-out) for the new 1×1/3×3 convs; BN momentum 0.01 in the
  SimpleFPA convs (the code's ``BasicConv``), PyTorch defaults elsewhere.
* Preprocessing as the code's CUB config (``configs/config_birds.yaml``, 200 classes, our default):
  Resize((600, 600)) → CenterCrop(448), ImageNet mean/std. Its Cars config resizes to 448, Aircraft to 512.

Ablation switches (builder kwargs, recorded in checkpoints) rebuild Tables 2-3 (CUB, ResNet-50):

* Baseline, Table 2 (84.1): the plain ``resnet50`` model at 448 — 84.1 is Table 1's "FT ResNet50" [21];
* HL, Table 2 (86.6): ``high_to_low="add", low_to_high=False``;
* HL+LH, Table 2 = w/o ConvLSTM, Table 3 (87.2): ``high_to_low="add"``;
* w/ ConvLSTM, Table 3 (88.9): the defaults, ``high_to_low="convlstm", low_to_high=True``.

``high_to_low="add"`` is §3.3's "directly adding the feature maps together, same as FPN":
P5 = F5, P4 = F4 + P5, P3 = F3 + P4. ``high_to_low="none", low_to_high=False`` keeps the pyramid and the
four heads with no cross-level pathway at all (a control on this model's structure, not a paper row).
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from fgvc_edge.errors import UserInputError
from fgvc_edge.models._registry import register_model
from fgvc_edge.models.base import HEAD, FgvcModel, TracingSurrogate
from fgvc_edge.structure import register_swap
from fgvc_edge.models.layers import ResNetTrunk

PYRAMID_WIDTH = 256  # official ``feature_size`` / ConvLSTM hidden size
CHANNEL_REDUCTION = 16  # channel mask 256 → 16 → 256 (official ``ChannelGate``)
FPA_BN_MOMENTUM = 0.01  # official ``BasicConv``
HIGH_TO_LOW = ("convlstm", "add", "none")
HeadOutputs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _he_init(conv: nn.Conv2d) -> nn.Conv2d:
    # The official code's init, normal(0, sqrt(2 / (k·k·C_out))), is He-normal in fan-out mode.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        _he_init(nn.Conv2d(in_channels, out_channels, 1, bias=False)),
        nn.BatchNorm2d(out_channels, momentum=FPA_BN_MOMENTUM),
        nn.ReLU(inplace=True),
    )


class GlobalContextProjection(nn.Module):
    """The official "SimpleFPA" for S5: 1×1 conv-BN-ReLU of the map plus the same on its global average."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.local = _conv_bn_relu(in_channels, out_channels)
        self.context = _conv_bn_relu(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local(x) + self.context(x.mean((2, 3), keepdim=True))


class LevelConvLSTM(nn.Module):
    """One ConvLSTM cell read over pyramid levels, highest first; returns the hidden state after each level."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden = channels
        # Input and hidden state concatenated → gates i, f, o, g (the official cell's order and shapes).
        self.gates = _he_init(nn.Conv2d(2 * channels, 4 * channels, kernel_size, padding=kernel_size // 2))

    def forward(self, levels: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        hidden, cell = self.first_step(levels[0])
        outputs = [hidden]
        for x in levels[1:]:
            hidden, cell = self.step(x, hidden, cell)
            outputs.append(hidden)
        return outputs

    def first_step(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``step(x, 0, 0)``: the zero hidden state meets only the kernel's hidden half and the zero cell
        only the forget gate, so both are left out (exact). The input columns are sliced by the input's own
        width, so a pruned pyramid (narrower than the hidden state) needs nothing special."""
        n, width = self.hidden, x.shape[1]
        weight = torch.cat([self.gates.weight[:n, :width], self.gates.weight[2 * n :, :width]])
        bias = torch.cat([self.gates.bias[:n], self.gates.bias[2 * n :]])
        i, o, g = F.conv2d(x, weight, bias, padding=self.gates.padding).chunk(3, dim=1)
        cell = torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(cell), cell

    def step(self, x: torch.Tensor, hidden: torch.Tensor, cell: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        i, f, o, g = self.gates(torch.cat([x, hidden], dim=1)).chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(cell), cell


def _convlstm_boundary(module: nn.Module) -> Callable[[List[torch.Tensor]], List[torch.Tensor]]:
    """The ConvLSTM for tracing: every level through the full cell from a zero state (the same values as the
    first-step shortcut, which reads the kernel by slicing and would hide it from the tracer)."""

    def forward(levels: List[torch.Tensor]) -> List[torch.Tensor]:
        first = levels[0]
        hidden = cell = first.new_zeros(first.shape[0], module.hidden, *first.shape[2:])
        outputs = []
        for x in levels:
            hidden, cell = module.step(x, hidden, cell)
            outputs.append(hidden)
        return outputs

    return forward


@register_swap(LevelConvLSTM)
class InputWidthConvLSTM(LevelConvLSTM):
    """Kept only so checkpoints pruned by fgvc-edge 0.1.0 (which swapped ``LevelConvLSTM`` for it) still load;
    ``LevelConvLSTM.first_step`` now slices by the input's width itself, so nothing swaps it in any more."""


class ChannelMask(nn.Module):
    """σ(1×1 ↑(ReLU(1×1 ↓(GAP x)))), one weight per channel (official ``ChannelGate``)."""

    def __init__(self, channels: int, reduction: int = CHANNEL_REDUCTION) -> None:
        super().__init__()
        self.reduce = _he_init(nn.Conv2d(channels, channels // reduction, 1))
        self.expand = _he_init(nn.Conv2d(channels // reduction, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True)))))


class LevelAttention(nn.Module):
    """§2.3 for one level: A = s·F + c·F, with c averaged with the channel mask passed up from below."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # A 3×3 "deconvolution" (stride 1, pad 1) as the paper and code have it; weight shape (C, 1, 3, 3).
        self.spatial = nn.ConvTranspose2d(channels, 1, 3, padding=1)
        self.channel = ChannelMask(channels)

    def forward(self, x: torch.Tensor, channel_below: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        spatial = torch.sigmoid(self.spatial(x))
        channel = self.channel(x)
        if channel_below is not None:
            channel = (channel + channel_below) / 2
        return spatial * x + channel * x, channel


class Classifier(nn.Module):
    """BN1d → Linear → BN1d → ELU → Linear on pooled features (official ``cls*`` minus the pooling)."""

    def __init__(self, in_features: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.norm_in = nn.BatchNorm1d(in_features)
        self.fc1 = nn.Linear(in_features, hidden)
        self.norm_hidden = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.elu(self.norm_hidden(self.fc1(self.norm_in(x)))))


def official_head_hidden(num_classes: int) -> int:
    """The official code's head width: 512 for CUB's 200 classes, 256 otherwise."""
    return 512 if num_classes == 200 else 256


class CNCNN(FgvcModel):
    """CN-CNN on a torchvision ResNet; eval ``forward`` returns the mean of the four heads' logits."""

    def __init__(
        self,
        depth: str = "resnet50",
        *,
        num_classes: int = 200,
        high_to_low: str = "convlstm",
        low_to_high: bool = True,
        head_hidden: Optional[int] = None,
    ) -> None:
        super().__init__()
        width = PYRAMID_WIDTH
        hidden = head_hidden or official_head_hidden(num_classes)
        self.high_to_low, self.low_to_high = high_to_low, low_to_high
        self.backbone = ResNetTrunk(depth)
        c3, c4, c5 = self.backbone.channels[1:]
        self.lateral5 = GlobalContextProjection(c5, width)
        self.lateral4 = _he_init(nn.Conv2d(c4, width, 1))
        self.lateral3 = _he_init(nn.Conv2d(c3, width, 1))
        self.top_down = LevelConvLSTM(width) if high_to_low == "convlstm" else None
        if low_to_high:
            self.attention3, self.attention4, self.attention5 = (LevelAttention(width) for _ in range(3))
        self.head3, self.head4, self.head5 = (Classifier(width, hidden, num_classes) for _ in range(3))
        self.head_concat = Classifier(3 * width, hidden, num_classes)

    def pruning_ignored_layers(self) -> List[Tuple[str, str]]:
        ignored = []
        if self.top_down is not None:
            # The pyramid only feeds the ConvLSTM's input columns, so it shrinks; the hidden state is the fused
            # level every later stage reads.
            ignored.append(("top_down.gates", "ConvLSTM gates: one conv split into i, f, o, g, hidden width 256 fed "
                            "back as input; its pyramid-input columns are pruned"))
        else:
            ignored += [(name, "pyramid width 256 read by attention and heads; input width is pruned")
                        for name in ("lateral5", "lateral4", "lateral3")]
        if self.low_to_high:
            ignored += [(name, "level attention: channel masks are averaged across levels")
                        for name in ("attention3", "attention4", "attention5")]
        return ignored + [(name, HEAD) for name in ("head3", "head4", "head5", "head_concat")]

    def pruning_surrogates(self) -> Dict[str, TracingSurrogate]:
        return {"top_down": _convlstm_boundary} if self.top_down is not None else {}

    def pyramid(self, s3: torch.Tensor, s4: torch.Tensor, s5: torch.Tensor) -> List[torch.Tensor]:
        """[F3, F4, F5], 256 channels each at S3's size (projected, then nearest-upsampled: see the docstring)."""
        size = s3.shape[-2:]
        f5 = F.interpolate(self.lateral5(s5), size=size, mode="nearest")
        f4 = F.interpolate(self.lateral4(s4), size=size, mode="nearest")
        return [self.lateral3(s3), f4, f5]

    def fuse_high_to_low(self, levels: List[torch.Tensor]) -> List[torch.Tensor]:
        """HL pathway on [F3, F4, F5]; returns the fused [F3, F4, F5]."""
        f3, f4, f5 = levels
        if self.top_down is not None:
            h5, h4, h3 = self.top_down([f5, f4, f3])
            return [h3, h4, h5]
        if self.high_to_low == "add":
            p4 = f4 + f5
            return [f3 + p4, p4, f5]
        return levels

    def attend_low_to_high(self, levels: List[torch.Tensor]) -> List[torch.Tensor]:
        """LH pathway: attended [A3, A4, A5], the channel mask passed from each level to the next one up."""
        a3, c3 = self.attention3(levels[0], None)
        a4, c4 = self.attention4(levels[1], c3)
        a5, _ = self.attention5(levels[2], c4)
        return [a3, a4, a5]

    def head_logits(self, x: torch.Tensor) -> HeadOutputs:
        """Logits of the level-3, level-4, level-5 and concat heads."""
        _, s3, s4, s5 = self.backbone(x)
        fused = self.fuse_high_to_low(self.pyramid(s3, s4, s5))
        attended = self.attend_low_to_high(fused) if self.low_to_high else fused
        pooled = [level.mean((2, 3)) for level in fused]
        return (
            self.head3(attended[0].mean((2, 3))),
            self.head4(attended[1].mean((2, 3))),
            self.head5(attended[2].mean((2, 3))),
            self.head_concat(torch.cat(pooled, dim=1)),
        )

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, HeadOutputs]:
        logits = self.head_logits(x)
        if self.training:
            return logits
        return (logits[0] + logits[1] + logits[2] + logits[3]) / 4

    def loss(self, outputs: Union[torch.Tensor, HeadOutputs], targets: torch.Tensor) -> torch.Tensor:
        """Sum of the four heads' cross-entropies (official ``loss3 + loss4 + loss5 + loss_concate``);
        eval-mode logits (validation) give their plain cross-entropy."""
        if isinstance(outputs, torch.Tensor):
            return F.cross_entropy(outputs, targets)
        return sum((F.cross_entropy(logits, targets) for logits in outputs), outputs[0].new_zeros(()))


def _create_cncnn(
    depth: str,
    *,
    num_classes: int = 200,
    high_to_low: str = "convlstm",
    low_to_high: bool = True,
    head_hidden: Optional[int] = None,
) -> CNCNN:
    if high_to_low not in HIGH_TO_LOW:
        raise UserInputError("high_to_low must be one of {}, not {!r}".format(HIGH_TO_LOW, high_to_low))
    if not isinstance(low_to_high, bool):
        raise UserInputError("low_to_high must be true or false, not {!r}".format(low_to_high))
    if head_hidden is not None and head_hidden < 1:
        raise UserInputError("head_hidden must be >= 1, got {}".format(head_hidden))
    return CNCNN(
        depth, num_classes=num_classes, high_to_low=high_to_low, low_to_high=low_to_high, head_hidden=head_hidden
    )


@register_model("cncnn_resnet50")
def cncnn_resnet50(**kwargs: Any) -> CNCNN:
    return _create_cncnn("resnet50", **kwargs)
