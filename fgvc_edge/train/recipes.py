"""Each paper's training recipe as data, with where every number comes from and what we changed.

``--recipe paper`` picks the model family's recipe; ``--recipe simple`` is one plain SGD recipe for every
model (the model's own ``loss``), for quick runs and fine-tuning. ``--lr`` sets the recipe's main rate;
the backbone rate keeps the recipe's ratio to it.

* **cmal** — CMAL-Net §4.1 and the official train_*_ResNet50.py: SGD momentum 0.9, weight decay 5e-4,
  lr 0.002 for the experts' blocks and heads and 0.0002 for the backbone ("Features"), cosine annealing set
  per epoch (official ``cosine_anneal_schedule``), batch 16, 200 epochs; augmentation Resize((550, 550)) →
  RandomCrop(448, padding 8) → horizontal flip; the multi-step mutual learning of Algorithm 1 per batch
  (:func:`fgvc_edge.train.steps.cmal_mutual_step`). Deviation: every step gives every parameter a gradient
  (zeros where its loss does not reach it), which is what the official code gets from torch 1.x's
  ``zero_grad()`` (zeros, not None: weight decay and momentum act on every parameter at every step) and what
  DistributedDataParallel needs; only the very first step of a run differs (official: untouched parameters
  have no gradient yet).
* **care** — CARE-Net §4.A.3: SGD lr 0.005, momentum 0.9, weight decay 1e-4, batch 16, 60 epochs, random
  crop + horizontal flip at 224, CE + 0.3·L_recon (the model's ``loss``). The paper gives an "initial"
  rate and no schedule: we use cosine annealing per epoch (our choice).
* **cncnn** — CN-CNN §3.1: SGD momentum 0.9, weight decay 5e-4, 300 epochs, lr 0.1 for the new modules and
  0.001 for the backbone (paper text; the official birds branch uses lr and lr/10 with an unreleased
  config). Cosine annealing per epoch and Resize((R, R)) → RandomCrop → flip as the official train.py;
  batch 8 as the only released config (config_cars.yaml). Loss: the sum of the four heads' CE.
* **rbi** — RBI "Implementation details": RAdam (eps 1e-8) lr 1e-5, batch 32, 50 epochs, horizontal flip
  and random rotation. Unstated, our choices: constant rate, no weight decay (RAdam's default), rotation
  ±15°; the resize/centre crop follows the model's preprocessing. The batch is part of RBI's model, so its
  last incomplete batch is dropped like every other recipe's.
* **acanet** — ACANet §4 (ablation setup, the only training setup given): lr 0.1 for the whole network,
  ×0.1 at epochs 200 and 400 of 600 (we keep those fractions, 1/3 and 2/3, of ``--epochs``). Unstated, our
  choices: SGD momentum 0.9, weight decay 5e-4, batch 32, random crop + flip. Loss CE, or focal or MC-loss
  (``--loss``) as its Tables 2-4 compare.
* **baseline** — torchvision ResNets: plain SGD lr 0.01, momentum 0.9, weight decay 1e-4, cosine, batch 32,
  50 epochs, random crop + flip.
"""
import math
from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

from fgvc_edge.errors import UserInputError

RECIPE_KINDS = ("paper", "simple")
LOSSES = ("model", "focal", "mc")
OPTIMIZERS = ("sgd", "radam")
SCHEDULES = ("cosine", "multistep", "constant")


@dataclass(frozen=True)
class Augment:
    """Training augmentation after the model's resize: random crop (with zero padding), flip, rotation."""

    random_crop: bool = True
    crop_padding: int = 0
    hflip: bool = True
    rotation_degrees: float = 0.0


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str
    optimizer: str = "sgd"
    lr: float = 0.01
    # Learning rate of the parameters under ``backbone.`` (None: the same as ``lr``).
    backbone_lr: Optional[float] = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    eps: float = 1e-8
    schedule: str = "cosine"
    # Multistep milestones as fractions of the epochs, each multiplying the rate by ``gamma``.
    milestones: Tuple[float, ...] = ()
    gamma: float = 0.1
    epochs: int = 50
    batch_size: int = 32
    augment: Augment = Augment()
    step: str = "standard"
    loss: str = "model"

    def with_lr(self, lr: Optional[float]) -> "Recipe":
        """The recipe at main rate ``lr``; the backbone keeps its ratio to the main rate."""
        if lr is None:
            return self
        if not (math.isfinite(lr) and lr > 0):
            raise UserInputError("--lr must be a finite number > 0, got {}".format(lr))
        backbone = None if self.backbone_lr is None else self.backbone_lr * lr / self.lr
        return replace(self, lr=lr, backbone_lr=backbone)

    def lr_factor(self, epoch: int, epochs: int) -> float:
        """Multiplier of the base rates in (0-based) ``epoch`` of ``epochs``."""
        if self.schedule == "cosine":
            # The official CMAL / CN-CNN cosine_anneal_schedule: lr/2 · (cos(π·t/T) + 1).
            return 0.5 * (math.cos(math.pi * (epoch % epochs) / epochs) + 1.0)
        if self.schedule == "multistep":
            passed = sum(1 for m in self.milestones if epoch >= int(round(m * epochs)))
            return self.gamma ** passed
        return 1.0


PAPER_RECIPES: Dict[str, Recipe] = {
    "cmal": Recipe(
        name="cmal", source="CMAL-Net §4.1 + official train_*_ResNet50.py", lr=0.002, backbone_lr=0.0002,
        weight_decay=5e-4, epochs=200, batch_size=16, augment=Augment(crop_padding=8), step="cmal",
    ),
    "care": Recipe(
        name="care", source="CARE-Net §4.A.3", lr=0.005, weight_decay=1e-4, epochs=60, batch_size=16,
    ),
    "cncnn": Recipe(
        name="cncnn", source="CN-CNN §3.1 + official train.py", lr=0.1, backbone_lr=0.001, weight_decay=5e-4,
        epochs=300, batch_size=8,
    ),
    "rbi": Recipe(
        name="rbi", source="RBI implementation details", optimizer="radam", lr=1e-5, momentum=0.0,
        schedule="constant", epochs=50, batch_size=32, augment=Augment(random_crop=False, rotation_degrees=15.0),
    ),
    "acanet": Recipe(
        name="acanet", source="ACANet §4 (ablation setup)", lr=0.1, weight_decay=5e-4, schedule="multistep",
        milestones=(1.0 / 3.0, 2.0 / 3.0), epochs=600, batch_size=32,
    ),
    "baseline": Recipe(name="baseline", source="plain SGD fine-tuning", lr=0.01, weight_decay=1e-4, epochs=50),
}
SIMPLE_RECIPE = Recipe(name="simple", source="plain SGD, the model's own loss", lr=0.01, weight_decay=1e-4, epochs=30)

# Model-name prefix → paper recipe; anything else is a baseline.
_FAMILIES = (("cmal_", "cmal"), ("care_", "care"), ("cncnn_", "cncnn"), ("rbi_", "rbi"), ("acanet_", "acanet"))
# Recipes whose train forward returns plain logits, so another loss can replace the model's.
LOSS_SELECTABLE = ("acanet", "baseline", "simple")


def model_family(model_name: str) -> str:
    for prefix, family in _FAMILIES:
        if model_name.startswith(prefix):
            return family
    return "baseline"


def get_recipe(model_name: str, kind: str = "paper", *, loss: Optional[str] = None) -> Recipe:
    """The recipe ``kind`` for ``model_name``, with ``loss`` replacing the model's own where that is allowed."""
    if kind not in RECIPE_KINDS:
        raise UserInputError("--recipe must be one of {}, not {!r}".format(", ".join(RECIPE_KINDS), kind))
    recipe = PAPER_RECIPES[model_family(model_name)] if kind == "paper" else SIMPLE_RECIPE
    if loss is None or loss == "model":
        return recipe
    if loss not in LOSSES:
        raise UserInputError("--loss must be one of {}, not {!r}".format(", ".join(LOSSES), loss))
    if recipe.name not in LOSS_SELECTABLE or model_family(model_name) not in ("acanet", "baseline"):
        raise UserInputError(
            "--loss {} applies to single-output models (ACANet, ResNet baselines); {} trains with its own loss".format(
                loss, model_name
            )
        )
    return replace(recipe, loss=loss)
