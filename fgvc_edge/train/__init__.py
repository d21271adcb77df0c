"""Training with each paper's recipe (toolkit; needs torch).

``train(TrainOptions(...))`` is what ``fgvc-edge train`` (and ``torchrun -m fgvc_edge.cli train``) runs;
``finetune(model, data, epochs, out=...)`` fine-tunes a model object in place (the pruning command's hook).
Recipes: :mod:`fgvc_edge.train.recipes`; the loop: :mod:`fgvc_edge.train.trainer`.
"""
from fgvc_edge.errors import require

require("torch", "toolkit")

from fgvc_edge.train.recipes import PAPER_RECIPES, SIMPLE_RECIPE, Recipe, get_recipe  # noqa: E402
from fgvc_edge.train.trainer import Reporter, TrainOptions, TrainResult, finetune, train  # noqa: E402

__all__ = ["PAPER_RECIPES", "SIMPLE_RECIPE", "Recipe", "Reporter", "TrainOptions", "TrainResult", "finetune",
           "get_recipe", "train"]
