"""Tiny generated data sets for the data, train and evaluate tests (loaded by path from their conftest.py).

Images are separable by colour: class k is a noisy patch of one of a few distinct colours on a grey field,
so a few SGD steps visibly reduce the loss. Layouts are written exactly as the releases ship them.
"""
import os
from typing import List, Sequence

import numpy as np
from PIL import Image

COLOURS = [(220, 40, 40), (40, 200, 60), (40, 70, 230), (230, 210, 40), (200, 50, 210), (40, 210, 210)]


def tiny_image(label: int, index: int, size: int = 40, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng([seed, label, index])
    canvas = np.full((size, size, 3), 128, dtype=np.float64)
    patch = size // 2
    top, left = rng.integers(0, size - patch, size=2)
    canvas[top:top + patch, left:left + patch] = COLOURS[label % len(COLOURS)]
    canvas += rng.normal(0, 12, size=canvas.shape)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")


def write_imagefolder(root: str, classes: int = 3, train_per_class: int = 8, test_per_class: int = 4,
                      size: int = 40) -> List[str]:
    names = ["class_{}".format(chr(ord("a") + k)) for k in range(classes)]
    for split, count, offset in (("train", train_per_class, 0), ("test", test_per_class, 1000)):
        for label, name in enumerate(names):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                tiny_image(label, offset + i, size).save(os.path.join(folder, "{:03d}.png".format(i)))
    return names


def write_cub(root: str, classes: int = 3, train_per_class: int = 8, test_per_class: int = 4, size: int = 40) -> List[str]:
    """CUB_200_2011 layout: images/<NNN.Name>/<file>.jpg and the four annotation files (1-based ids)."""
    names = ["Bird_{}".format(k) for k in range(classes)]
    images, splits, labels = [], [], []
    image_id = 0
    for label, name in enumerate(names):
        folder = "{:03d}.{}".format(label + 1, name)
        os.makedirs(os.path.join(root, "images", folder), exist_ok=True)
        for i in range(train_per_class + test_per_class):
            image_id += 1
            rel = "{}/{}_{:04d}.jpg".format(folder, name, i)
            tiny_image(label, i, size).save(os.path.join(root, "images", rel), quality=95)
            images.append("{} {}".format(image_id, rel))
            splits.append("{} {}".format(image_id, 1 if i < train_per_class else 0))
            labels.append("{} {}".format(image_id, label + 1))
    _write(root, "images.txt", images)
    _write(root, "train_test_split.txt", splits)
    _write(root, "image_class_labels.txt", labels)
    _write(root, "classes.txt", ["{} {:03d}.{}".format(k + 1, k + 1, n) for k, n in enumerate(names)])
    return names


def _write(root: str, name: str, lines: Sequence[str]) -> None:
    with open(os.path.join(root, name), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def perturb_like_trained(model, seed: int = 0):
    """Move every float parameter and buffer of ``model`` by seeded noise, in place; returns the model.

    A fresh model is full of equal tensors (zero biases, unit norm weights, unit running variances) that
    exporters and onnxsim merge into one initializer — sharing a trained model never has. After this no two
    tensors are equal, as after training; running variances stay positive."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.mul_(1 + 0.1 * noise.abs())
            else:
                tensor.add_(noise * (0.1 * float(tensor.abs().mean()) + 0.01))
    return model
