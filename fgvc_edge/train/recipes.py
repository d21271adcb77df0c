"""Each paper's training recipe as data, with where every number comes from and what we changed.

``--recipe paper`` picks the model family's recipe; ``--recipe simple`` is one plain SGD recipe for every
model (the model's own ``loss``), for quick runs and fine-tuning. ``--lr`` sets the recipe's main rate;
the backbone rate keeps the recipe's ratio to it.

What each paper starts from (``Recipe.pretrained_backbone``). A paper recipe whose paper fine-tunes an
ImageNet-pretrained trunk refuses to start from random weights: give ``--backbone-weights FILE`` (a
torchvision or timm state dict of the trunk that you have, read by :mod:`fgvc_edge.importers.backbone`; nothing
is downloaded), or opt out with ``--from-scratch``. Runs from ``--checkpoint``/``--official-checkpoint`` start
from trained weights and are not asked.

=========  ====================================================  ===========================================
recipe     the paper's starting point                            ``--recipe paper`` without backbone weights
=========  ====================================================  ===========================================
cmal       ImageNet ResNet-50: the official train_*_ResNet50.py  refused (``--backbone-weights`` or
           loads torchvision's resnet50-19c8e357.pth (§4.1 does  ``--from-scratch``)
           not say)
care       "ResNet50, initialized with ImageNet pre-trained      refused
           weights" (§4.A.3)
cncnn      "ImageNet-pretrained ResNet50" (§3.1; official        refused
           train.py loads resnet50-19c8e357.pth)
rbi        "pre-trained weights from the ImageNet1K dataset"     refused
           (implementation details)
acanet     none stated: the ablation trains the whole network    trains from random initialisation, as the
           at lr 0.1 for 600 epochs, as from scratch (§4)        paper appears to
baseline   not a paper recipe                                    trains from random initialisation
=========  ====================================================  ===========================================

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
  0.001 for the backbone. Where the paper is silent, the official code (github.com/PRIS-CV/CN-CNN, train.py
  and configs/config_birds.yaml, CUB being our default data set): batch 16, cosine annealing per epoch,
  Resize((600, 600)) → RandomCrop(448) → flip (the model's preprocessing). Loss: the sum of the four heads'
  CE. The official configs themselves train differently from the paper text: config_birds.yaml lr 0.001
  for layer4 and the new modules and 0.0001 for conv1–layer3, 100 epochs, batch 16, Resize 600;
  config_airs.yaml lr 0.001 for everything, 100 epochs, batch 16, Resize 512; config_cars.yaml the same
  with batch 8 and Resize 448. We keep the paper's rates and epochs.
* **rbi** — RBI "Implementation details": RAdam (eps 1e-8) lr 1e-5, batch 32, 50 epochs, horizontal flip
  and random rotation on images resized to 224×224. Unstated, our choices: constant rate, no weight decay
  (RAdam's default), rotation ±15°. The batch is part of RBI's model, so its last incomplete batch is
  dropped like every other recipe's.
* **acanet** — ACANet §4 (ablation setup, the only training setup given): lr 0.1 for the whole network,
  ×0.1 at epochs 200 and 400 of 600 (we keep those fractions, 1/3 and 2/3, of ``--epochs``). Unstated, our
  choices: SGD momentum 0.9, weight decay 5e-4, batch 32, random crop + flip. Loss CE, or focal or MC-loss
  (``--loss``) as its Tables 2-4 compare. No pretraining is stated, and its accuracies (CUB, ResNet-18
  backbone) are far below ImageNet-initialised ResNets': the recipe trains from scratch.
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
    # The paper fine-tunes an ImageNet-pretrained trunk: a fresh run needs backbone weights or --from-scratch.
    pretrained_backbone: bool = False

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
        pretrained_backbone=True,
    ),
    "care": Recipe(
        name="care", source="CARE-Net §4.A.3", lr=0.005, weight_decay=1e-4, epochs=60, batch_size=16,
        pretrained_backbone=True,
    ),
    "cncnn": Recipe(
        name="cncnn", source="CN-CNN §3.1 + official train.py, configs/config_birds.yaml", lr=0.1,
        backbone_lr=0.001, weight_decay=5e-4, epochs=300, batch_size=16, pretrained_backbone=True,
    ),
    "rbi": Recipe(
        name="rbi", source="RBI implementation details", optimizer="radam", lr=1e-5, momentum=0.0,
        schedule="constant", epochs=50, batch_size=32, augment=Augment(random_crop=False, rotation_degrees=15.0),
        pretrained_backbone=True,
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


def check_initialisation(
    model_name: str, recipe: Recipe, *, backbone_weights: Optional[str], from_scratch: bool
) -> None:
    """Refuse a fresh run of a recipe whose paper starts from ImageNet weights when none are given and
    training from scratch was not asked for explicitly (no weights can be downloaded here)."""
    if backbone_weights and from_scratch:
        raise UserInputError("give --backbone-weights or --from-scratch, not both")
    if not recipe.pretrained_backbone or backbone_weights or from_scratch:
        return
    trunk = backbone_name(model_name)
    raise UserInputError(
        "{}'s paper recipe ({}) fine-tunes an ImageNet-pretrained {}: give --backbone-weights FILE (torchvision or "
        "timm {} weights you have, .pth or .safetensors; they load into the model's backbone) or --from-scratch "
        "to train from random initialisation".format(model_name, recipe.source, trunk, trunk)
    )


def backbone_name(model_name: str) -> str:
    """The trunk architecture in a registered name: ``cmal_resnet50`` → ``resnet50``."""
    for prefix, _ in _FAMILIES:
        if model_name.startswith(prefix):
            return model_name[len(prefix):]
    return model_name


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
