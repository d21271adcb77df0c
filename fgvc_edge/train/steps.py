"""One optimisation iteration per batch: the standard step, and CMAL-Net's multi-step mutual learning.

CMAL-Net, Algorithm 1 (§3.3) in the order, inputs and loss weights of the official training script
(train_FGVC_Aircraft_ResNet50.py; five optimizer steps per batch):

1. e3 on the raw batch: CE(p3). The attention maps of all three experts come from this forward, their CAM
   weights are read *after* this step's update (the official script reads ``state_dict()`` after
   ``optimizer.step()``); A1, A2, A3 and A_oval are cropped from the raw batch.
2. e2 on one input chosen for the whole batch by ``torch.rand(1)``: < 1/3 → A3, < 2/3 → A1, else raw; CE(p2).
3. e1 likewise from {A3, A2, raw}; CE(p1).
4. all heads on A_oval: CE(p1) + CE(p2) + CE(p3) + 2·CE(p_concat).
5. the concatenation head on the raw batch: 2·CE(p_concat).

Every step adds 0 × the logits its loss leaves out, so every parameter receives a gradient (exact zeros
where its loss does not reach it): torch 1.x's ``zero_grad()`` (the official code's) left zero gradients in
place, so weight decay and momentum acted on every parameter at every step; the zeros reproduce that, and
DistributedDataParallel needs every parameter it watches to receive a gradient.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fgvc_edge.train.losses import TrainingModule


@dataclass
class StepContext:
    """What a step needs: the (possibly DDP-wrapped) training module, the optimizer, AMP."""

    net: nn.Module
    module: TrainingModule
    optimizer: torch.optim.Optimizer
    device: torch.device
    scaler: Optional[Any] = None

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> Any:
        with self.autocast():
            return self.net(images, targets)

    def autocast(self) -> Any:
        # AMP only on CUDA (fp16 autocast on CPU is slow and changes numerics the tests pin down).
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.scaler is not None)

    def update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


@dataclass
class StepResult:
    loss: float
    logits: torch.Tensor
    parts: Dict[str, float] = field(default_factory=dict)


def standard_step(ctx: StepContext, images: torch.Tensor, targets: torch.Tensor) -> StepResult:
    """forward → the recipe's loss (the model's own, focal or MC) → one optimizer step."""
    outputs = ctx.forward(images, targets)
    with ctx.autocast():
        loss = ctx.module.loss(outputs, targets)
    ctx.update(loss)
    return StepResult(float(loss.detach()), training_logits(ctx.module, outputs).detach())


def cmal_mutual_step(ctx: StepContext, images: torch.Tensor, targets: torch.Tensor) -> StepResult:
    """CMAL-Net's five steps on one batch (see the module docstring)."""
    from fgvc_edge.models.cmal import attention_box, crop_regions, overall_attention

    model = ctx.module.model
    first = ctx.forward(images, targets)
    loss3 = F.cross_entropy(first.p3.float(), targets)
    ctx.update(loss3 + _untouched(first.logits, keep=(2,)))

    with torch.no_grad():
        maps = model.attention_maps(_as_float(first), images.shape[-2:])
        regions = [crop_regions(images, attention_box(m, model.threshold)) for m in maps]
        aoval = crop_regions(images, attention_box(overall_attention(maps), model.threshold))

    parts = {"e3": float(loss3.detach())}
    for name, head, pool in (("e2", 1, (regions[2], regions[0], images)), ("e1", 0, (regions[2], regions[1], images))):
        out = ctx.forward(_mutual_choice(pool), targets)
        loss = F.cross_entropy(out.logits[head].float(), targets)
        ctx.update(loss + _untouched(out.logits, keep=(head,)))
        parts[name] = float(loss.detach())

    out = ctx.forward(aoval, targets)
    weights = (1.0, 1.0, 1.0, 2.0)
    loss_att = sum(w * F.cross_entropy(p.float(), targets) for w, p in zip(weights, out.logits))
    ctx.update(loss_att)
    parts["aoval"] = float(loss_att.detach())

    last = ctx.forward(images, targets)
    loss_concat = 2.0 * F.cross_entropy(last.p_concat.float(), targets)
    ctx.update(loss_concat + _untouched(last.logits, keep=(3,)))
    parts["concat"] = float(loss_concat.detach())
    # The official script reports training accuracy from step 5's concatenation head.
    return StepResult(sum(parts.values()), last.p_concat.detach(), parts)


STEPS: Dict[str, Callable[[StepContext, torch.Tensor, torch.Tensor], StepResult]] = {
    "standard": standard_step,
    "cmal": cmal_mutual_step,
}


def training_logits(module: TrainingModule, outputs: Any) -> torch.Tensor:
    """The class scores of a training forward, for training accuracy (heads summed: same arg-max as the mean)."""
    if module.kind == "mc":
        outputs = outputs[0]
    if isinstance(outputs, torch.Tensor):
        return outputs
    logits = getattr(outputs, "logits", outputs)
    if isinstance(logits, torch.Tensor):
        return logits
    return torch.stack([t.float() for t in logits]).sum(dim=0)


def _mutual_choice(pool: Sequence[torch.Tensor]) -> torch.Tensor:
    """One input for the whole batch, as the official ``flag = torch.rand(1)`` thirds."""
    flag = float(torch.rand(1))
    return pool[0] if flag < 1.0 / 3.0 else pool[1] if flag < 2.0 / 3.0 else pool[2]


def _untouched(logits: Sequence[torch.Tensor], keep: Sequence[int]) -> torch.Tensor:
    """0 × the other heads' logits: zero gradients for every parameter this step's loss does not reach."""
    return sum(0.0 * p.float().sum() for i, p in enumerate(logits) if i not in keep)


def _as_float(output: Any) -> Any:
    return type(output)(*[t.float() for t in output.logits], tuple(m.float() for m in output.maps))
