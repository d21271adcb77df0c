"""RBI: Relationship Batch Integration — a torchvision backbone, then Residual Relationship Attention over the batch.

Paper: Le, Bui, Tran, Tran, Pham, "Enhancing Fine-grained Image Classification through Attentive Batch
Training" (arXiv 2412.19606; ../shared/papers/004_b8f56994cc814a27.txt). No official code is public; every
choice below is our reading of eqs. 1–13.

Pipeline (Fig. 2): images X (B×3×H×W) → Relationship Position Encoding S (B×B, eqs. 1–2) and, in parallel,
backbone → embeddings N (B×D, D = 1024) → Residual Relationship Attention (eqs. 3–13) → Linear → logits.

**Batch semantics.** The output of an image depends on the other images of its batch: RRA mixes the
embeddings of the whole batch, weighted by attention and by the pixel similarity S. The batch is therefore
part of the model. It is exported with a fixed batch (``batch_dependent=True``; ``export_onnx`` refuses
``dynamic``) and runners refuse any other batch instead of padding or chunking. At batch 1 the softmax of
eq. 10 is over a 1×1 matrix, so A = 1 and S = s₀ = 20·log10(1/ε); RRA then reduces to a function of the
image's own embedding n alone: z = W_V n + s₀, r = W_S n, β = σ(W_β[z‖r‖z−r]), C = BN((1−β)z + βr);
W_Q and W_K have no effect.

Choices where the paper is silent or ambiguous:
* Input. "Initially, all input images are resized to 224x224 pixels" (implementation details): a square
  resize to 224×224 (aspect ratio not kept, nothing cropped), for training and test, and the RPE of eqs. 1–2
  compares those pixels. Checkpoints made before this default (Resize(256) → CenterCrop(224)) record their
  preprocessing and keep it when loaded.
* RPE input. The model takes the normalised tensor of its ``Preprocess``; it un-normalises (x·std + mean,
  with the mean/std of ``model.config.preprocess``, so a checkpoint's own preprocessing is honoured) and
  clips to [0, 1] so that MAX = 1 in eq. 2 and PSNR is always defined. S is a fixed encoding of the pixels:
  no gradient flows through it (√MSE has an infinite derivative on the diagonal, where MSE = 0).
* ε of eq. 2 (unspecified, "very small"): ``psnr_eps`` = 1/255, one 8-bit grey level, so identical images
  score 48.1 dB, the PSNR of an RMS error of one grey level. A "very small" ε (1e-8) puts 160 dB on the
  diagonal against ≈10 dB between unrelated images: the diagonal then saturates eq. 10's softmax and,
  added to every feature in eq. 11, leaves FP16 (spacing 0.125 at 160) no precision for the features.
  For unrelated images (PSNR ≈ 10 dB) 1/255 moves S by ≈ 0.1 dB.
* "·" in eqs. 10–11 is the element-wise product, S broadcast over the D features. We compute eqs. 7–11
  without building the B×B×D tensors, using Σ_d q_id (k_jd + s_ij) = q_i·k_j + s_ij Σ_d q_id.
* Softmax axis of eq. 10 (unspecified): over i, the index eq. 11 sums over, so each Z_j is a convex
  combination of the (v_i + s_ij). Note Q and V are duplicated horizontally (row i) and K vertically
  (column j): image j's key meets the other images' queries and values.
* W_Q, W_K, W_V, W_S are D×D matrices without bias, as written. W_β maps 3D → 1: one gate per image, as in
  the gated residual of Shi et al. 2021 (UniMP, IJCAI), which eqs. 12–13 follow term for term.
* "Embedding of the encoder set to 1024": each backbone's ImageNet classifier layer becomes a Linear
  (features → 1024) (torchvision's ``num_classes=1024``), for every backbone, including those already
  1024 wide. MobileNetV3 keeps its 960 → 1280 Hardswish stage. "Fully connected layers" on top: one
  Linear(1024 → classes); the paper gives no hidden size, so we add none.
* Stochastic depth: torchvision's from-scratch ImageNet rates (ConvNeXt 0.1/0.5, Swin 0.2/0.3) are a
  training recipe the paper does not mention; it is off (p = 0), so every block trains on every step.

Parameters at 224 px / 120 classes against the paper's text (Table 1 is lost in our extraction):
rbi_swin_s 53.9M (paper 61.7M), rbi_convnext_base 92.9M (paper 103.4M). The equations add 4D² + 3D
(W_Q, W_K, W_V, W_S, W_β) + 2D (BN) + 1024·F + 1024 (embedding) + 1024·K + K on top of the backbone's
feature extractor; the gaps (7.8M, 10.5M) are not one consistent extra layer (they differ by ≈2.7M where
the backbones' feature widths 768 vs 1024 would explain 0.26M), so we add nothing to close them.
"""
import math
from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tv_models
from torchvision.models.swin_transformer import PatchMerging, ShiftedWindowAttention
from torchvision.ops import StochasticDepth

from fgvc_edge.errors import UserInputError
from fgvc_edge.models._registry import register_model
from fgvc_edge.models.base import HEAD, FgvcModel, TracingSurrogate
from fgvc_edge.models.swin import ModuleWindowAttention
from fgvc_edge.contract.preprocess import IMAGENET_MEAN, IMAGENET_STD

EMBED_DIM = 1024  # "The dimension of the embedding of the encoder network is set to 1024."
PSNR_EPS = 1.0 / 255.0


def relationship_position_encoding(images: torch.Tensor, eps: float = PSNR_EPS) -> torch.Tensor:
    """Eqs. 1–2: S[i, j] = 20·log10(MAX / (√MSE(I_i, I_j) + ε)) for images in [0, 1] (MAX = 1); B×B.

    Differences are taken pixel by pixel (not via ‖a‖² + ‖b‖² − 2a·b), so the diagonal is exactly
    20·log10(1/ε) and S is exactly symmetric, in PyTorch and in ONNX Runtime alike.
    """
    flat = images.flatten(1)
    mse = torch.stack([(flat - row).pow(2).mean(dim=1) for row in flat])  # eq. 1, row i against all j
    return -20.0 * torch.log10(mse.sqrt() + eps)  # eq. 2 with MAX = 1


class ResidualRelationshipAttention(nn.Module):
    """Eqs. 3–13 on embeddings N (B×D) and relationship encodings S (B×B) → C (B×D)."""

    def __init__(self, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)  # W_Q
        self.key = nn.Linear(dim, dim, bias=False)  # W_K
        self.value = nn.Linear(dim, dim, bias=False)  # W_V
        self.skip = nn.Linear(dim, dim, bias=False)  # W_S
        self.gate = nn.Linear(3 * dim, 1, bias=False)  # W_β
        self.norm = nn.BatchNorm1d(dim)

    def attention(self, embeddings: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        """Eq. 10: A[i, j] = softmax_i(Σ_d q_id (k_jd + s_ij) / √D), with q_i = (N W_Q)_i, k_j = (N W_K)_j."""
        q, k = self.query(embeddings), self.key(embeddings)
        scores = q @ k.t() + relations * q.sum(dim=1, keepdim=True)
        return torch.softmax(scores / math.sqrt(q.shape[1]), dim=0)

    def forward(self, embeddings: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        attn = self.attention(embeddings, relations)
        # Eq. 11: Z_j = Σ_i A_ij (v_i + s_ij).
        z = attn.t() @ self.value(embeddings) + (attn * relations).sum(dim=0).unsqueeze(1)
        residual = self.skip(embeddings)
        beta = torch.sigmoid(self.gate(torch.cat([z, residual, z - residual], dim=1)))  # eq. 12
        return self.norm((1.0 - beta) * z + beta * residual)  # eq. 13


class RBIClassifier(FgvcModel):
    """Backbone (its ImageNet classifier → D-dim embedding) + RPE + RRA + Linear. See the module docstring."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        embed_dim: int = EMBED_DIM,
        psnr_eps: float = PSNR_EPS,
    ) -> None:
        super().__init__()
        if psnr_eps <= 0:
            raise UserInputError("psnr_eps must be > 0 so an image's similarity to itself stays finite")
        self.backbone = backbone
        self.rra = ResidualRelationshipAttention(embed_dim)
        self.classifier = nn.Linear(embed_dim, num_classes)
        self.psnr_eps = float(psnr_eps)

    def pixel_stats(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """Mean and std the input was normalised with: the model's Preprocess (ImageNet's before it has one)."""
        if self.config is None:
            return IMAGENET_MEAN, IMAGENET_STD
        return self.config.preprocess.mean, self.config.preprocess.std

    def relations(self, x: torch.Tensor) -> torch.Tensor:
        """S of eqs. 1-2 on the [0, 1] pixels recovered from the normalised input x."""
        mean, std = (torch.tensor(v, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) for v in self.pixel_stats())
        pixels = (x.detach() * std + mean).clamp(0.0, 1.0)
        return relationship_position_encoding(pixels, self.psnr_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.rra(self.backbone(x), self.relations(x)))

    def _window_attentions(self) -> List[str]:
        return [name for name, module in self.named_modules() if isinstance(module, ShiftedWindowAttention)]

    def pruning_ignored_layers(self) -> List[Tuple[str, str]]:
        embed = self.rra.query.in_features
        embedding = [n for n, m in self.backbone.named_modules() if isinstance(m, nn.Linear) and m.out_features == embed]
        ignored = []
        if embedding:
            ignored.append(("backbone." + embedding[-1],
                            "encoder embedding: D = {} (the paper's width) is what RRA mixes".format(embed)))
        ignored.append(("rra", "RRA projections W_Q, W_K, W_V, W_S, W_β (eqs. 3-13) mix the batch"))
        ignored.append(("classifier", HEAD))
        ignored += [(name + ".qkv", "window attention internals: q, k, v are reshaped into heads (so proj's inputs "
                     "stay too); the stage width (qkv inputs, proj outputs) is pruned") for name in self._window_attentions()]
        return ignored

    def pruning_fixed_parameters(self) -> List[str]:
        return [name + ".relative_position_bias_table" for name in self._window_attentions()]

    def pruning_surrogates(self) -> Dict[str, TracingSurrogate]:
        return {name: _patch_merging_boundary for name, m in self.named_modules() if isinstance(m, PatchMerging)}

    def pruning_swaps(self) -> List[type]:
        return [ModuleWindowAttention]


def _patch_merging_boundary(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Swin's 2×2 patch merging for tracing: the four strided spatial slices of a channels-last map read as
    channel slices to Torch-Pruning, so the stand-in pools 2×2 instead and concatenates four copies."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x.permute(0, 3, 1, 2), 2, ceil_mode=True).permute(0, 2, 3, 1)
        return module.reduction(module.norm(torch.cat([pooled * 1.0 for _ in range(4)], dim=-1)))

    return forward


def _torchvision_backbone(backbone: str, embed_dim: int) -> nn.Module:
    model = getattr(tv_models, backbone)(weights=None, num_classes=embed_dim)
    for module in model.modules():
        if isinstance(module, StochasticDepth):
            module.p = 0.0
    return model


def _create_rbi(
    backbone: str, *, num_classes: int, embed_dim: int = EMBED_DIM, psnr_eps: float = PSNR_EPS
) -> RBIClassifier:
    trunk = _torchvision_backbone(backbone, embed_dim)
    return RBIClassifier(trunk, num_classes, embed_dim=embed_dim, psnr_eps=psnr_eps)


@register_model("rbi_densenet121")
def rbi_densenet121(**kwargs: Any) -> RBIClassifier:
    return _create_rbi("densenet121", **kwargs)


@register_model("rbi_mobilenet_v3_large")
def rbi_mobilenet_v3_large(**kwargs: Any) -> RBIClassifier:
    return _create_rbi("mobilenet_v3_large", **kwargs)


@register_model("rbi_convnext_tiny")
def rbi_convnext_tiny(**kwargs: Any) -> RBIClassifier:
    return _create_rbi("convnext_tiny", **kwargs)


@register_model("rbi_swin_t")
def rbi_swin_t(**kwargs: Any) -> RBIClassifier:
    return _create_rbi("swin_t", **kwargs)


@register_model("rbi_swin_s")
def rbi_swin_s(**kwargs: Any) -> RBIClassifier:
    return _create_rbi("swin_s", **kwargs)


@register_model("rbi_convnext_base")
def rbi_convnext_base(**kwargs: Any) -> RBIClassifier:
    return _create_rbi("convnext_base", **kwargs)
