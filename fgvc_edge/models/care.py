"""CARE-Net: cross-layer guidance, scale-adaptive fusion and a training-only reconstruction branch.

Paper: Yao & Chen, "CARE-Net: A Fine-Grained Image Classification Network via Cross-Layer Semantic
Recalibration", §3 (no official code; everything below is written from the equations).

Pipeline (§3.A): ResNet layer1..layer4 → v2..v5, each through a 1×1 conv (with bias, as eq. (11) counts
it) to C channels, then

* guidance, eqs. (1)-(3): for i ∈ {2, 3, 4}, ṽ5 = bilinear(v5, size of v_i);
  A_i = σ(Conv1×1(ReLU(Conv1×1(GAP(ṽ5))))); v_i' = v_i · (1 + λ·A_i), λ = 0.2 fixed (a buffer, never
  trained); v5' = v5;
* scale-adaptive fusion, eqs. (4)-(7) at v2's resolution: g_i = GAP(v_i'), ḡ = mean of the four,
  α = softmax over the 4 scales of MLP([ḡ; g5]), v_f = Σ α_i · bilinear(v_i', size of v2');
* classifier: GAP(v_f) → Linear(C, K);
* reconstruction, eq. (8), training only: R_i = 1×1 conv C → C per scale applied to v_f, MSE to v_i';
  loss, eq. (9): CE + λ_recon · L_recon with λ_recon = 0.3 (§4.A.3, Table 4).

The eval forward returns logits and never calls the reconstruction branch, so exported graphs hold none
of it; the train forward returns ``CareTrainOutput(logits, recon_terms)``.

Choices where the paper is silent (each documented with its effect on the parameter count):

* C, the unified width, is not given. Counting the training-time model (all four parts) with 200 classes
  on ResNet-50: C=128 → 24.11M, C=256 → 24.87M, C=512 → 26.86M; Table 2 says 25.0M, so C = 256.
  Without the reconstruction branch (what is deployed) C=256 gives 24.60M (24,601,980); the train-time
  count is 24,865,148. care_resnet18 (no paper figure) keeps C = 256: 11.80M train, 11.53M deploy.
  Table 2 counts the train-time model: "the total number of parameters is the sum of all learnable
  parameters across layers" (§IV.A.2, eqs. (11)-(12)), and the reconstruction branch is learnable. The
  bench shows both counts, labelled train and deploy (``deploy_parameters()``), and compares 25.0M with the
  train count; its MACs are those of the deployed graph.
* Attention hidden width (eq. (2)): C/16, SE's reduction [33] — 8,464 parameters per scale at C=256.
  One attention module per guided scale (A_i carries the index i): 3 × 8,464 = 25,392 parameters.
* Fusion MLP (eq. (6)): Linear(2C, C/4) → ReLU (the paper's activation of eq. (2)) → Linear(C/4, 4),
  33,092 parameters at C=256. Even with both hidden widths equal to C (+0.47M at C=256), C = 256 stays
  the closest of 128/256/512 to 25.0M (25.33M vs 24.22M / 28.73M).
* Eq. (8) writes a squared norm and the text says MSE: each scale's term is the mean squared error, the
  four are summed. The reconstruction is made at v_f's resolution; it is compared with v_i' at v_i's
  own resolution after area (average) pooling, done before the 1×1 conv, which commutes with it.
  The targets are not detached: eq. (8) has no stop-gradient.
* Eq. (2) pools the upsampled ṽ5, as written (close to, but not exactly, GAP(v5) with bilinear edges).
  The laterals are bare 1×1 convs (no BN or activation), as §3.A describes them.
* Bilinear resizing uses ``align_corners=False``.

Measured at 224 px, 200 classes (fvcore, one multiply-add = one MAC): 4.51 GMACs deployed (ResNet-50:
4.11); the training forward adds 0.28 GMACs of reconstruction. care_resnet18: 1.93 GMACs.

Ablation switches (builder kwargs, recorded in checkpoints) rebuild Table 3: row 2 ``guidance=False,
reconstruction=False`` (fusion only), row 3 ``reconstruction=False``, row 4 the defaults (full model);
row 1 is the plain ``resnet50`` model. ``width`` (C) and ``recon_weight`` (λ_recon, Table 4's sweep) are
builder kwargs too.
"""
from typing import Any, List, NamedTuple, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from fgvc_edge.errors import UserInputError
from fgvc_edge.models._registry import register_model
from fgvc_edge.models.base import HEAD, FgvcModel
from fgvc_edge.models.layers import ResNetTrunk

CARE_WIDTH = 256  # C, inferred from Table 2's 25.0M (see the module docstring)
GUIDANCE_SCALE = 0.2  # λ of eq. (3), §3.B
RECON_WEIGHT = 0.3  # λ_recon of eq. (9), §4.A.3 / Table 4
ATTENTION_REDUCTION = 16  # hidden width C/16 in eq. (2), SE's default [33]
FUSION_HIDDEN_DIVISOR = 4  # hidden width C/4 of eq. (6)'s MLP
NUM_SCALES = 4  # v2..v5


class CareTrainOutput(NamedTuple):
    """Train-mode forward: logits and the per-scale reconstruction MSEs of eq. (8) (empty without the branch)."""

    logits: torch.Tensor
    recon_terms: torch.Tensor


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class ChannelGuidance(nn.Module):
    """Eq. (2): channel weights A_i from the upsampled guide ṽ5."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, guide: torch.Tensor) -> torch.Tensor:
        pooled = guide.mean((2, 3), keepdim=True)
        return torch.sigmoid(self.expand(F.relu(self.reduce(pooled))))


class CrossLayerGuidance(nn.Module):
    """Eqs. (1)-(3): v5 recalibrates v2, v3, v4; v5 passes through."""

    def __init__(self, channels: int, scale: float = GUIDANCE_SCALE) -> None:
        super().__init__()
        hidden = max(channels // ATTENTION_REDUCTION, 1)
        self.attention = nn.ModuleList(ChannelGuidance(channels, hidden) for _ in range(NUM_SCALES - 1))
        # §3.B: λ "remains fixed during training and is excluded from gradient updates".
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        *lower, top = features
        guided = [v * (1 + self.scale * attention(_resize(top, v))) for v, attention in zip(lower, self.attention)]
        return guided + [top]


class ScaleAdaptiveFusion(nn.Module):
    """Eqs. (4)-(7): per-image softmax weights over the scales, weighted sum at v2's resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // FUSION_HIDDEN_DIVISOR, 1)
        self.mlp = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, NUM_SCALES))

    def weights(self, features: List[torch.Tensor]) -> torch.Tensor:
        """α of eq. (6), N × 4, each row summing to one."""
        pooled = [v.mean((2, 3)) for v in features]
        mean = torch.stack(pooled, 0).mean(0)  # ḡ, eq. (5)
        return torch.softmax(self.mlp(torch.cat([mean, pooled[-1]], 1)), dim=1)

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        alpha = self.weights(features)
        reference = features[0]
        fused = alpha[:, 0].view(-1, 1, 1, 1) * reference
        for i, v in enumerate(features[1:], start=1):
            fused = fused + alpha[:, i].view(-1, 1, 1, 1) * _resize(v, reference)
        return fused


class ReconstructionBranch(nn.Module):
    """Eq. (8), training only: a 1×1 conv per scale rebuilds each v_i' from v_f; returns the four MSEs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(NUM_SCALES))

    def forward(self, fused: torch.Tensor, targets: List[torch.Tensor]) -> torch.Tensor:
        terms = []
        for conv, target in zip(self.convs, targets):
            # Area pooling to the target's size commutes with the 1×1 conv, so pooling first is cheaper.
            size = target.shape[-2:]
            source = fused if fused.shape[-2:] == size else F.adaptive_avg_pool2d(fused, size)
            terms.append(F.mse_loss(conv(source), target))
        return torch.stack(terms)


class CareNet(FgvcModel):
    """ResNet trunk → 1×1 laterals → guidance → scale-adaptive fusion → GAP → Linear (+ reconstruction in training)."""

    def __init__(
        self,
        depth: str,
        *,
        num_classes: int,
        width: int = CARE_WIDTH,
        guidance: bool = True,
        reconstruction: bool = True,
        recon_weight: float = RECON_WEIGHT,
    ) -> None:
        super().__init__()
        self.backbone = ResNetTrunk(depth)
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in self.backbone.channels)
        self.guidance = CrossLayerGuidance(width) if guidance else None
        self.fusion = ScaleAdaptiveFusion(width)
        self.reconstruction = ReconstructionBranch(width) if reconstruction else None
        self.fc = nn.Linear(width, num_classes)
        self.recon_weight = float(recon_weight)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, CareTrainOutput]:
        features = [lateral(v) for lateral, v in zip(self.lateral, self.backbone(x))]
        if self.guidance is not None:
            features = self.guidance(features)
        fused = self.fusion(features)
        logits = self.fc(fused.mean((2, 3)))
        if not self.training:
            return logits
        if self.reconstruction is None:
            return CareTrainOutput(logits, logits.new_zeros(0))
        return CareTrainOutput(logits, self.reconstruction(fused, features))

    def loss(self, outputs: Union[torch.Tensor, CareTrainOutput], targets: torch.Tensor) -> torch.Tensor:
        """Eq. (9): CE + λ_recon · Σ_i MSE_i; eval-mode logits (validation) give the CE alone."""
        if isinstance(outputs, torch.Tensor):
            return F.cross_entropy(outputs, targets)
        return F.cross_entropy(outputs.logits, targets) + self.recon_weight * outputs.recon_terms.sum()

    def pruning_ignored_layers(self) -> List[Tuple[str, str]]:
        shared = "width C shared by the laterals, guidance, fusion and the training-only reconstruction branch"
        ignored = [("lateral", shared + "; input width is pruned")]
        ignored += [(name, shared) for name in ("guidance", "fusion", "reconstruction") if getattr(self, name) is not None]
        return ignored + [("fc", HEAD)]

    def deploy_parameters(self) -> int:
        """Parameters the exported graph holds: all but the training-only reconstruction branch."""
        branch = sum(p.numel() for p in self.reconstruction.parameters()) if self.reconstruction is not None else 0
        return sum(p.numel() for p in self.parameters()) - branch


def _create_care(depth: str, *, num_classes: int = 200, width: int = CARE_WIDTH, **kwargs: Any) -> CareNet:
    if width < 1:
        raise UserInputError("CARE-Net width must be >= 1, got {}".format(width))
    if kwargs.get("recon_weight", RECON_WEIGHT) < 0:
        raise UserInputError("recon_weight must be >= 0, got {}".format(kwargs["recon_weight"]))
    return CareNet(depth, num_classes=num_classes, width=width, **kwargs)


@register_model("care_resnet50")
def care_resnet50(**kwargs: Any) -> CareNet:
    return _create_care("resnet50", **kwargs)


@register_model("care_resnet18")
def care_resnet18(**kwargs: Any) -> CareNet:
    return _create_care("resnet18", **kwargs)
