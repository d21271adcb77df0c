"""``create_model``: a registered name (random init) or an fgvc-edge checkpoint → the model (toolkit; torch)."""
import logging
from dataclasses import replace
from typing import Any, Optional

from fgvc_edge.checkpoint import load_state_strict, read_checkpoint
from fgvc_edge.contract.limits import MAX_INPUT_SIZE
from fgvc_edge.contract.preprocess import Preprocess
from fgvc_edge.errors import UserInputError
from fgvc_edge.models._registry import get_builder
from fgvc_edge.models.base import FgvcModel
from fgvc_edge.models.configs import get_model_config
from fgvc_edge.structure import apply_structure

log = logging.getLogger(__name__)


def create_model(
    name: str,
    *,
    num_classes: Optional[int] = None,
    checkpoint: Optional[str] = None,
    input_size: Optional[int] = None,
    **kwargs: Any,
) -> FgvcModel:
    """Build a registered model (random init) or restore it from an fgvc-edge checkpoint.

    With ``checkpoint``, the record's constructor arguments and class count are used, overridden by
    explicit arguments only where they agree with the stored tensors.
    """
    record = state = None
    if checkpoint is not None:
        record, state = read_checkpoint(checkpoint)
        if record["model"] != name:
            raise UserInputError("{} holds {!r}, not {!r}".format(checkpoint, record["model"], name))
        if num_classes is not None and num_classes != record["num_classes"]:
            raise UserInputError(
                "{} has {} classes; --num-classes {} disagrees".format(checkpoint, record["num_classes"], num_classes)
            )
        num_classes = record["num_classes"]
        kwargs = {**record.get("model_args", {}), **kwargs}
        trained = record.get("input_size")
        if input_size is None:
            input_size = trained
        elif trained and int(trained) != input_size:
            log.warning("%s was trained at %s px; at %s px its accuracy may change (measure it with `fgvc-edge "
                        "eval`)", checkpoint, trained, input_size)
    config = get_model_config(name)
    if num_classes is not None and num_classes < 1:
        raise UserInputError("num_classes must be >= 1, got {}".format(num_classes))
    if input_size is not None and not config.min_input_size <= input_size <= MAX_INPUT_SIZE:
        raise UserInputError("{} needs an input size in {}..{}, got {}".format(
            name, config.min_input_size, MAX_INPUT_SIZE, input_size))
    config = config.with_overrides(num_classes=num_classes, input_size=input_size)
    try:
        model = get_builder(name)(num_classes=config.num_classes, **kwargs)
    except UserInputError:
        raise
    except (TypeError, ValueError) as exc:  # arguments from a record: unknown names, wrong types or values
        raise UserInputError("bad arguments for {}: {}".format(name, exc)) from None
    model.config = config
    model.model_args = dict(kwargs)
    if record is not None:
        if record.get("preprocess"):
            # The checkpoint's recipe (resize mode, interpolation, mean/std) at the size being built: every
            # artifact's sidecar must describe the graph it sits beside.
            recipe = Preprocess.from_dict(record["preprocess"]).for_input_size(config.input_size)
            model.config = replace(model.config, preprocess=recipe)
        apply_structure(model, record.get("structure", {}), state)
        load_state_strict(model, state, checkpoint)
        model.class_names = record.get("class_names")
    return model.eval()
