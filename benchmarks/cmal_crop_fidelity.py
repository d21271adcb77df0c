"""CMAL-Net raw+A_oval against the official test() arithmetic, per image, in PyTorch and ONNX Runtime.

    python benchmarks/cmal_crop_fidelity.py [--model cmal_resnet50] [--input-size 448] [--threads 1] [--json out.json]

The network (random weights, seed 0) gets BatchNorm statistics from real photos (scikit-image's bundled
images: train-mode forward passes with cumulative averages), so its attention maps and predicted classes
differ between images and the crop path is really exercised. The reference is the official procedure run
per image in float32 (Dichao-Liu/CMAL utils.py, read for understanding): CAM W4[k]·(W1·F), upsample_bilinear
to the input, min-max normalisation, the three maps summed and normalised, box of the pixels ≥ 0.5 padded by
0.1·H with int() edges, the box sliced out of the image and upsample_bilinear (align_corners=True) back to
the input size, then the eight logits summed. Printed per image: the reference box, whether ours agrees,
and max|ours − reference| / max|reference| for PyTorch and for the exported ONNX graph; and, as the scale
of float32 noise on this network, the same measure between the official float32 logits and the official
arithmetic in float64 (given the same box), and between the official logits computed with one and with two
threads (PyTorch's upsample kernel rounds differently), and the official logits when half the pixels of its
crop are moved up by one float32 ulp: the float32 resolution of this network on that image. A whole-image box
gives the image itself, so there the ulp column is the same network fed a 1-ulp-different image.
"""
import argparse
import copy
import json
import os
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from real_images import PHOTO_NAMES, photo_batch, set_bn_statistics  # noqa: E402


def official_box(attention: torch.Tensor, theta: float = 0.5, padding_ratio: float = 0.1) -> Tuple[int, ...]:
    """attention_im/highlight_im's box of one (H, W) normalised map: int() edges, clamped."""
    height, width = attention.shape
    positive = torch.nonzero(attention >= theta)
    top = max(int(positive[:, 0].min().item() - padding_ratio * height), 0)
    bottom = min(int(positive[:, 0].max().item() + padding_ratio * height), height)
    left = max(int(positive[:, 1].min().item() - padding_ratio * width), 0)
    right = min(int(positive[:, 1].max().item() + padding_ratio * width), width)
    return top, bottom, left, right


def one_ulp_up(tensor: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Every other element (at random) moved to the next float32 up: the smallest change a different but
    equally exact resampling makes to a crop."""
    chosen = torch.randint(0, 2, tensor.shape, generator=torch.Generator().manual_seed(seed)).bool()
    return torch.where(chosen, torch.nextafter(tensor, torch.full_like(tensor, float("inf"))), tensor)


def official_aoval_logits(
    model: torch.nn.Module, image: torch.Tensor, box: Optional[Tuple[int, ...]] = None,
    perturb: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> Tuple[torch.Tensor, Tuple[int, ...]]:
    """The official test() on one (1, 3, H, W) image: sum of the raw and A_oval logits, and the box (computed,
    or the one given); ``perturb`` is applied to the crop before the network sees it."""
    size = image.shape[-2:]
    output = model.experts(image)
    if box is None:
        maps = []
        for features, logits, head in zip(output.maps, output.logits[:3], model.heads):
            w1, w4 = head[1].weight, head[4].weight
            channels, h, w = features.shape[1:]
            cam = (w4[int(logits[0].argmax())] @ (w1 @ features[0].reshape(channels, h * w))).reshape(1, 1, h, w)
            cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=True)[0, 0]
            maps.append((cam - cam.min()) / (cam.max() - cam.min() + 1e-6))
        total = maps[0] + maps[1] + maps[2]
        box = official_box((total - total.min()) / (total.max() - total.min() + 1e-6))
    top, bottom, left, right = box
    crop = F.interpolate(image[:, :, top:bottom, left:right], size=tuple(size), mode="bilinear", align_corners=True)
    if perturb is not None:
        crop = perturb(crop)
    return output.total() + model.experts(crop).total(), box


def with_threads(threads: int, fn: Callable[[], Any]) -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def measure(model_name: str, input_size: int, names: Sequence[str], threads: int) -> List[Dict[str, object]]:
    import onnxruntime as ort

    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(model_name, input_size=input_size, mode="raw+aoval")
    images = photo_batch(names, model.config.preprocess.for_input_size(input_size))
    set_bn_statistics(model, images)
    exact_model = copy.deepcopy(model).double()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, os.path.join(tmp, "cmal.onnx"), batch=1).path
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        rows = []
        for name, image in zip(names, images):
            x = image.unsqueeze(0)
            with torch.inference_mode():
                reference, box = official_aoval_logits(model, x)
                ours = model(x)
                own_box = model.aoval_box(model.experts(x), x.shape[-2:])[0]
                other_threads, _ = with_threads(2 if threads == 1 else 1, lambda: official_aoval_logits(model, x, box))
                exact, _ = official_aoval_logits(exact_model, x.double(), box)
                ulp, _ = official_aoval_logits(model, x, box, perturb=one_ulp_up)
            onnx_logits = session.run(["logits"], {"input": x.numpy()})[0]
            reference = reference.numpy()
            rows.append({
                "image": name,
                "box": list(box),
                "box_agrees": [int(v) for v in own_box] == list(box),
                "top1": int(reference.argmax()),
                "torch_rel_error": relative_error(ours.numpy(), reference),
                "onnx_rel_error": relative_error(onnx_logits, reference),
                "official_float32_vs_float64": relative_error(reference, exact.numpy()),
                "official_other_threads": relative_error(other_threads.numpy(), reference),
                "official_crop_one_ulp": relative_error(ulp.numpy(), reference),
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cmal_resnet50")
    parser.add_argument("--input-size", type=int, default=448)
    parser.add_argument("--threads", type=int, default=1, help="Intra-op threads (PyTorch and ONNX Runtime).")
    parser.add_argument("--json", help="Also write the rows to this file.")
    args = parser.parse_args()
    rows = measure(args.model, args.input_size, PHOTO_NAMES, args.threads)
    print("| image | box (top, bottom, left, right) | same box | top-1 | PyTorch | ONNX Runtime | official f32 vs f64 "
          "| official, other thread count | official, crop 1 ulp off |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| {image} | {box} | {box_agrees} | {top1} | {torch_rel_error:.2e} | {onnx_rel_error:.2e} | "
              "{official_float32_vs_float64:.2e} | {official_other_threads:.2e} | {official_crop_one_ulp:.2e} |"
              .format(**row))
    print("distinct top-1 classes: {}".format(len({row["top1"] for row in rows})))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
