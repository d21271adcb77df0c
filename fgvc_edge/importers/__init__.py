"""Checkpoints trained with the papers' official code, converted to our models without running their code.

``import_official_checkpoint(model_name, path)`` returns our model (eval mode) holding the official tensors;
``fgvc-edge import`` writes it as an fgvc-edge checkpoint. Pickles are read by
:mod:`fgvc_edge.importers.safe_pickle`, which refuses anything but tensors and allowed module classes.
"""
from typing import Any, Callable, Dict, Optional

from fgvc_edge.errors import UserInputError, require

require("torch", "toolkit")

from fgvc_edge.importers import cmal, cncnn  # noqa: E402

Importer = Callable[..., Any]
# model name -> importer(model_name, path, *, num_classes, input_size, **model_args)
IMPORTERS: Dict[str, Importer] = {
    **{name: cmal.load_official_checkpoint for name in cmal.MODELS},
    **{name: cncnn.load_official_checkpoint for name in cncnn.MODELS},
}


def import_official_checkpoint(model_name: str, path: str, *, num_classes: Optional[int] = None,
                               input_size: Optional[int] = None, **model_args: Any) -> Any:
    """Our ``model_name`` holding the tensors of an official checkpoint at ``path``; ``input_size`` and
    ``model_args`` (e.g. CMAL-Net's ``mode``) as for ``create_model``."""
    if model_name not in IMPORTERS:
        known = ", ".join(sorted(IMPORTERS))
        raise UserInputError("no importer for {!r}; official checkpoints import into: {}".format(model_name, known))
    return IMPORTERS[model_name](model_name, str(path), num_classes=num_classes, input_size=input_size, **model_args)
