"""Weights trained with the official CN-CNN code (github.com/PRIS-CV/CN-CNN, ``model/resnet50.py``).

The official ``train.py`` saves ``torch.save(net.state_dict())``: a plain state dict of tensors. Its
README pins torch 0.4.1, whose files are in the pre-1.6 legacy format; the reader every importer shares
(:func:`fgvc_edge.importers.safe_pickle.load_torch_file`) reads it and the zip format alike and refuses
anything but tensors and containers, without running pickled code. Backbone keys are torchvision's; the
rest are renamed to our module names (``fgvc_edge.models.cncnn``):

=====================================  =======================================================
official key prefix                    ours
=====================================  =======================================================
``conv1.`` ``bn1.`` ``layer1-4.``      ``backbone.`` + the same key
``fpn.F5_1.conv_master.{conv,bn}.``    ``lateral5.local.{0,1}.``   (SimpleFPA map branch)
``fpn.F5_1.conv_gpb.{conv,bn}.``       ``lateral5.context.{0,1}.`` (SimpleFPA global branch)
``fpn.F4_1.`` / ``fpn.F3_1.``          ``lateral4.`` / ``lateral3.``
``fpn.convlstm.cell_list.0.conv.``     ``top_down.gates.``          (gates i, f, o, g in both)
``apn.A{i}_1.conv.``                   ``attention{i}.spatial.``    (i = 3, 4, 5)
``apn.A{i}_2.conv1.`` / ``.conv2.``    ``attention{i}.channel.reduce.`` / ``.expand.``
``cls{i}.{2,3,4,6}.``                  ``head{i}.{norm_in,fc1,norm_hidden,fc2}.`` (0 pool, 1 flatten, 5 ELU)
``cls_concate.{1,2,3,5}.``             ``head_concat.{norm_in,fc1,norm_hidden,fc2}.`` (0 flatten, 4 ELU)
=====================================  =======================================================

The class count and head width are read from the tensors; the model is built with its default
switches (ConvLSTM + attention), the only layout the official code has. Note that the official code runs
its ConvLSTM over the images of a batch, ours over the levels (see the model's docstring): the weights
load, but the network they were trained in differs, so fine-tune before trusting accuracies.
"""
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from fgvc_edge.errors import UserInputError
from fgvc_edge.importers._keys import rename_official_keys
from fgvc_edge.importers.safe_pickle import flat_state_dict, load_torch_file

MODELS = ("cncnn_resnet50",)
_BACKBONE_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
_HEAD_LAYERS = ("norm_in", "fc1", "norm_hidden", "fc2")


def _renames() -> List[Tuple[str, str]]:
    renames = [
        ("fpn.F5_1.conv_master.conv.", "lateral5.local.0."),
        ("fpn.F5_1.conv_master.bn.", "lateral5.local.1."),
        ("fpn.F5_1.conv_gpb.conv.", "lateral5.context.0."),
        ("fpn.F5_1.conv_gpb.bn.", "lateral5.context.1."),
        ("fpn.F4_1.", "lateral4."),
        ("fpn.F3_1.", "lateral3."),
        ("fpn.convlstm.cell_list.0.conv.", "top_down.gates."),
    ]
    for level in (3, 4, 5):
        renames += [
            ("apn.A{}_1.conv.".format(level), "attention{}.spatial.".format(level)),
            ("apn.A{}_2.conv1.".format(level), "attention{}.channel.reduce.".format(level)),
            ("apn.A{}_2.conv2.".format(level), "attention{}.channel.expand.".format(level)),
        ]
        # nn.Sequential indices of the official heads' BN1d, Linear, BN1d, Linear.
        for index, ours in zip((2, 3, 4, 6), _HEAD_LAYERS):
            renames.append(("cls{}.{}.".format(level, index), "head{}.{}.".format(level, ours)))
    for index, ours in zip((1, 2, 3, 5), _HEAD_LAYERS):
        renames.append(("cls_concate.{}.".format(index), "head_concat.{}.".format(ours)))
    return renames


_RENAMES = _renames()


def _our_key(key: str) -> Optional[str]:
    if key.startswith(_BACKBONE_PREFIXES):
        return "backbone." + key
    for official, ours in _RENAMES:
        if key.startswith(official):
            return ours + key[len(official) :]
    return None


def convert_official_state_dict(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The official state dict under our key names; an unknown key is an error, never dropped."""
    return rename_official_keys(state, _our_key, "not an official CN-CNN state dict")


def official_model_args(state: Mapping[str, torch.Tensor]) -> Tuple[int, Dict[str, Any]]:
    """(num_classes, builder kwargs) that give our model the official tensors' shapes."""
    from fgvc_edge.models.cncnn import official_head_hidden

    try:
        hidden, _ = state["cls_concate.2.weight"].shape
        num_classes, _ = state["cls_concate.5.weight"].shape
    except (KeyError, ValueError):
        raise UserInputError("not an official CN-CNN state dict: no 2-D cls_concate.2/.5 weights") from None
    kwargs = {} if hidden == official_head_hidden(num_classes) else {"head_hidden": int(hidden)}
    return int(num_classes), kwargs


def load_official_state_dict(
    state: Mapping[str, torch.Tensor],
    model_name: str = MODELS[0],
    *,
    num_classes: Optional[int] = None,
    where: str = "state dict",
    input_size: Optional[int] = None,
    **model_args: Any,
) -> Any:
    """Our model (eval mode, from ``create_model``) holding the official tensors."""
    from fgvc_edge.checkpoint import load_state_strict
    from fgvc_edge.models import create_model

    converted = convert_official_state_dict(state)
    found, kwargs = official_model_args(state)
    if num_classes is not None and num_classes != found:
        raise UserInputError("{} has {} classes; --num-classes {} disagrees".format(where, found, num_classes))
    model = create_model(model_name, num_classes=found, input_size=input_size, **kwargs, **model_args)
    load_state_strict(model, converted, where)
    return model.eval()


def load_official_checkpoint(model_name: str, path: str, *, num_classes: Optional[int] = None,
                             input_size: Optional[int] = None, **model_args: Any) -> Any:
    """An official ``model_best.pth`` / ``model_final.pth`` (tensors only) as our model (the
    ``fgvc_edge.importers`` importer signature)."""
    state = flat_state_dict(load_torch_file(path), path)
    return load_official_state_dict(state, model_name, num_classes=num_classes, where=path, input_size=input_size,
                                    **model_args)
