"""Data set readers: the standard fine-grained layouts as lists of (image path, label) and class names.

Torch-free: evaluation of ONNX/engine artifacts reads data sets without torch. ``load_dataset(root)``
detects the layout (``name="auto"``); see :mod:`fgvc_edge.datasets.readers` for the files each one reads::

    from fgvc_edge.datasets import load_dataset

    data = load_dataset("~/data/CUB_200_2011")          # layout "cub", 200 classes
    data.train[:2], data.class_names[:2]
"""
import os
from typing import List

from fgvc_edge.datasets.base import IMAGE_SUFFIXES, DatasetSplits, Sample, open_image
from fgvc_edge.datasets.readers import LAYOUTS
from fgvc_edge.errors import UserInputError

__all__ = [
    "DATASET_CHOICES", "DatasetSplits", "IMAGE_SUFFIXES", "Sample", "detect_layout", "load_dataset", "open_image",
]

DATASET_CHOICES: List[str] = ["auto"] + list(LAYOUTS)


def detect_layout(root: str) -> str:
    """The name of the first layout whose annotation files are in ``root`` (or its release sub-folder)."""
    for name, (detect, _) in LAYOUTS.items():
        if detect(root) is not None:
            return name
    raise UserInputError(
        "cannot tell the data set layout of {}: found none of CUB's images.txt, Cars' cars_meta.mat/cars_annos.mat, "
        "Dogs' train_list.mat, Aircraft's images_variant_trainval.txt, Flowers' imagelabels.mat, Food-11's "
        "training/+evaluation/, or train/+test/ folders; name it with --dataset".format(root)
    )


def load_dataset(root: str, name: str = "auto") -> DatasetSplits:
    """Read the data set at ``root`` (layout ``name`` or detected); every split must hold images."""
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise UserInputError("data folder {} does not exist".format(root))
    if name == "auto":
        name = detect_layout(root)
    if name not in LAYOUTS:
        raise UserInputError("unknown data set layout {!r}; choose from {}".format(name, ", ".join(DATASET_CHOICES)))
    detect, read = LAYOUTS[name]
    data = read(detect(root) or root)
    for split in ("train", "test"):
        if not data.split(split):
            raise UserInputError("{} data set at {}: the {} split has no images".format(name, data.root, split))
    if data.num_classes < 2:
        raise UserInputError("{} data set at {}: {} class; a classifier needs at least 2".format(
            name, data.root, data.num_classes))
    labels = {label for _, label in data.train + data.test}
    if min(labels) < 0 or max(labels) >= data.num_classes:
        raise UserInputError("{} data set at {}: labels outside 0..{}".format(name, data.root, data.num_classes - 1))
    return data
