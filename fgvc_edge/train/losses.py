"""Losses ACANet compares (its Tables 2-4): focal loss and the mutual-channel loss, and the module DDP wraps.

* Focal loss (Lin et al., ICCV 2017, eq. 5): FL = −(1 − p_t)^γ · log p_t with γ = 2, the paper's default;
  the α-balancing of its eq. 5 was tuned for binary detection and has no multi-class definition, so none.
* MC-loss (Chang et al., "The Devil is in the Channels", TIP 2020; official code
  github.com/dongliangchang/Mutual-Channel-Loss read for its constants): the last feature map carries
  ξ channels per class (ξ = 3). Discriminality: a random ⌈ξ/2⌉-of-ξ channel mask per class (the same for the
  whole batch, as the official ``Mask``), cross-channel max pooling, global average pooling → class scores
  → CE. Diversity: spatial softmax per channel, cross-channel max, summed over space, averaged, /ξ;
  the loss term is 1 − that. Total: CE(logits) + 1.5·L_dis + 20·L_div (the official defaults ``alpha_1``,
  ``beta_1``). Deviation: ResNet-18's 512 channels do not split into ξ·K groups, so a training-only 1×1 conv
  maps layer4 to ξ·K channels for the loss (the MC-loss paper instead widens the backbone's last conv, which
  would change the deployed model). It is dropped after training; its weights live in the training state.
  L_div needs a spatial map: at a 1×1 layer4 (ResNet input < 64 px) it is the constant 1 − 1/ξ.
"""
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

FOCAL_GAMMA = 2.0
MC_CHANNELS_PER_CLASS = 3
MC_DIS_WEIGHT = 1.5
MC_DIV_WEIGHT = 20.0


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    return (-((1.0 - log_p.exp()) ** gamma) * log_p).mean()


class MutualChannelLoss(nn.Module):
    """1×1 projection to ξ·K channels and the weighted MC-loss terms on it (training only)."""

    def __init__(self, in_channels: int, num_classes: int, channels_per_class: int = MC_CHANNELS_PER_CLASS) -> None:
        super().__init__()
        self.num_classes, self.per_class = num_classes, channels_per_class
        self.kept = (channels_per_class + 1) // 2  # official: 2 of 3 channels kept
        self.project = nn.Conv2d(in_channels, num_classes * channels_per_class, 1)

    def channel_mask(self, device: torch.device) -> torch.Tensor:
        """(K, ξ) 0/1: ``kept`` random channels of each class (torch's RNG, so runs resume exactly)."""
        order = torch.rand(self.num_classes, self.per_class).argsort(dim=1)
        return (order < self.kept).float().to(device)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.project(features).float()
        n, _, h, w = x.shape
        groups = x.reshape(n, self.num_classes, self.per_class, h * w)
        # Diversity: spatial softmax, cross-channel max, summed over space; 1 − mean/ξ as the official loss_2.
        spread = F.softmax(groups, dim=3).amax(dim=2).sum(dim=2)
        diversity = 1.0 - spread.mean() / self.per_class
        masked = groups * self.channel_mask(x.device)[None, :, :, None]
        discriminality = F.cross_entropy(masked.amax(dim=2).mean(dim=2), targets)
        return MC_DIS_WEIGHT * discriminality + MC_DIV_WEIGHT * diversity


class TrainingModule(nn.Module):
    """What the trainer (and DistributedDataParallel) runs: the model plus training-only loss heads.

    ``forward(images, targets)`` returns the model's training outputs (with the MC-loss term when selected);
    ``loss(outputs, targets)`` the scalar the recipe minimises.
    """

    def __init__(self, model: nn.Module, loss: str = "model") -> None:
        super().__init__()
        self.model = model
        self.kind = loss
        self.mc: Optional[MutualChannelLoss] = None
        if loss == "mc":
            self.mc = MutualChannelLoss(model.fc.in_features, model.fc.out_features)

    def forward(self, images: torch.Tensor, targets: Optional[torch.Tensor] = None) -> Any:
        if self.mc is None:
            return self.model(images)
        captured = []
        handle = self.model.layer4.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            logits = self.model(images)
        finally:
            handle.remove()
        return logits, self.mc(captured[0], targets)

    def loss(self, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        if self.kind == "focal":
            return focal_loss(outputs, targets)
        if self.kind == "mc":
            logits, mc_term = outputs
            return F.cross_entropy(logits, targets) + mc_term
        return self.model.loss(outputs, targets)

    def aux_state(self) -> Optional[dict]:
        return None if self.mc is None else {k: v.detach().cpu() for k, v in self.mc.state_dict().items()}
