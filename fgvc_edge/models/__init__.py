"""Model zoo: registry, configs, and ``create_model`` (toolkit; needs torch)."""
from dataclasses import replace
from typing import Any, Optional

from fgvc_edge.errors import UserInputError, require

require("torch", "toolkit")

from fgvc_edge.checkpoint import load_state_strict, read_checkpoint  # noqa: E402
from fgvc_edge.models._registry import (  # noqa: E402
    ModelConfig,
    get_builder,
    get_model_config,
    list_models,
    register_model,
)
from fgvc_edge.models.base import FgvcModel  # noqa: E402
from fgvc_edge.models.structure import apply_structure  # noqa: E402
from fgvc_edge.contract.limits import MAX_INPUT_SIZE  # noqa: E402
from fgvc_edge.contract.preprocess import Preprocess  # noqa: E402

__all__ = ["FgvcModel", "ModelConfig", "create_model", "get_model_config", "list_models", "register_model"]


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
        if input_size is None:
            input_size = record.get("input_size")
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
            # The record's recipe, at the input size asked for (a record's crop is its own input size).
            preprocess = Preprocess.from_dict(record["preprocess"]).for_input_size(model.config.input_size)
            model.config = replace(model.config, preprocess=preprocess)
        apply_structure(model, record.get("structure", {}), state)
        load_state_strict(model, state, checkpoint)
        model.class_names = record.get("class_names")
    return model.eval()
