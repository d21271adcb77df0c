"""DeepStream ``nvinfer`` classifier config + labels file for a built engine.

nvinfer normalises as ``y = net-scale-factor × (x − offsets)`` on 0–255 pixels with ONE scale for all
channels, and resizes the whole frame/object to the network size (no shorter-side resize + centre crop).
Our preprocessing ``(x/255 − mean)/std`` maps exactly when std is equal per channel (CMAL-Net's 0.5);
with ImageNet's per-channel std we use the mean std (≤ 1.5 % off per channel) and say so in the file.
The engine outputs logits: nvinfer's default classifier parser takes the best class whose value passes
``classifier-threshold``, which is therefore set far below any logit.
"""
import os
from typing import Any, Dict, List, Tuple

from fgvc_edge._io import atomic_path

NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}


def normalisation(preprocess: Dict[str, Any]) -> Tuple[float, List[float], bool]:
    """(net-scale-factor, offsets, exact) for nvinfer from our mean/std."""
    mean, std = preprocess["mean"], preprocess["std"]
    scale_std = sum(std) / 3.0
    exact = max(std) - min(std) < 1e-9
    return 1.0 / (255.0 * scale_std), [255.0 * m for m in mean], exact


def class_labels(record: Dict[str, Any]) -> List[str]:
    names = record.get("class_names") or []
    return [str(n) for n in names] or [str(i) for i in range(int(record["num_classes"]))]


def write_deepstream_files(engine_path: str, record: Dict[str, Any]) -> Tuple[str, str]:
    stem = os.path.splitext(engine_path)[0]
    config_path, labels_path = stem + "_nvinfer.txt", stem + "_labels.txt"
    labels = class_labels(record)
    with atomic_path(labels_path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            # Classifier label files hold one line per output layer, labels separated by ';'.
            fh.write(";".join(label.replace(";", ",") for label in labels) + "\n")
    scale, offsets, exact = normalisation(record["preprocess"])
    size = int(record["input_size"])
    profile = record["batch_profile"]
    lines = [
        "# DeepStream nvinfer config written by fgvc-edge for {} ({}).".format(
            os.path.basename(engine_path), record.get("model")),
        "# Normalisation: {}.".format(
            "exact" if exact else "approximate (nvinfer has one scale; per-channel std {} averaged)".format(
                record["preprocess"]["std"])),
        "# nvinfer resizes to {0}x{0} directly; training used resize {1} + centre crop {0}.".format(
            size, record["preprocess"]["resize_size"]),
        "[property]",
        "gpu-id=0",
        "net-scale-factor={:.10g}".format(scale),
        "offsets={}".format(";".join("{:.6g}".format(o) for o in offsets)),
        "model-color-format=0",
        "model-engine-file={}".format(os.path.basename(engine_path)),
        "labelfile-path={}".format(os.path.basename(labels_path)),
        "infer-dims=3;{0};{0}".format(size),
        "batch-size={}".format(profile["max"]),
        "network-mode={}".format(NETWORK_MODE[record["precision"]]),
        "network-type=1",
        "process-mode=1",
        "output-blob-names={}".format(record.get("output_name", "logits")),
        "classifier-threshold=-1e30",
        "maintain-aspect-ratio=0",
        "gie-unique-id=1",
    ]
    if record.get("dla_core") is not None:
        lines += ["enable-dla=1", "use-dla-core={}".format(record["dla_core"])]
    with atomic_path(config_path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
    return config_path, labels_path
