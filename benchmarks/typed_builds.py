"""Every registry model (each variant) → FP16, INT8 TensorRT form and INT8 ONNX Runtime form, with parity.

    python benchmarks/typed_builds.py [--size default|min] [--weights fresh,trained] [--models a,b] [--out table.md]

For each model it exports the FP32 ONNX once per weight kind — fresh (seeded init) and trained-like (every
tensor moved by seeded noise, so no two initializers are equal) — then converts it to FP16 and calibrates
both INT8 forms on smooth synthetic images (speed-grade calibration: the parity figures say how far each
typed graph is from its FP32 ONNX, not what accuracy a real calibration set would give). A row records the
sidecar's ``fp16_check`` / ``int8_check`` (relative L2 error of the logits, top-1 agreement) or the one-line
error a failed build gives. Slow at the default sizes on a CPU: minutes per large model.
"""
import argparse
import importlib.util
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from fgvc_edge.engine import BuildSettings, CalibrationSettings, ModelOptions, build  # noqa: E402
from fgvc_edge.errors import FgvcError  # noqa: E402
from fgvc_edge.models import create_model, get_model_config, list_models  # noqa: E402
from fgvc_edge.precision import SyntheticImages, calibrate_onnx  # noqa: E402

CALIBRATION_IMAGES = 8
FORMS = ("fp16", "int8 tensorrt", "int8 onnxruntime")


def _tiny_data() -> Any:
    spec = importlib.util.spec_from_file_location("tiny_data", os.path.join(HERE, "..", "tests", "tiny_data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_options(name: str, variant: Optional[str], size: int, weights: str, work: str) -> ModelOptions:
    if weights == "fresh":
        return ModelOptions(mode=variant, input_size=size)
    from fgvc_edge.checkpoint import save_checkpoint

    import torch

    torch.manual_seed(0)
    model = _tiny_data().perturb_like_trained(create_model(name, input_size=size, **({"mode": variant} if variant else {})))
    folder = save_checkpoint(model, os.path.join(work, "{}-{}-trained".format(name, variant or "")))
    return ModelOptions(checkpoint=folder, mode=variant)


def typed_forms(name: str, variant: Optional[str], size: int, weights: str, work: str) -> Dict[str, Any]:
    dirs = dict(target="onnxruntime", intermediate_dir=os.path.join(work, "cache"),
                calibration_dir=os.path.join(work, "calibration"))
    options = model_options(name, variant, size, weights, work)
    start = time.time()
    fp32 = build(name, BuildSettings("fp32", **dirs), model=options, output=os.path.join(work, "fp32.onnx")).path
    row: Dict[str, Any] = {"export_s": time.time() - start}
    images = SyntheticImages(CALIBRATION_IMAGES, size=int(size * 1.15), seed=1)
    for form in FORMS:
        start = time.time()
        try:
            if form == "fp16":
                record = build(fp32, BuildSettings("fp16", **dirs), output=os.path.join(work, "fp16.onnx")).record
                check = record["fp16_check"]
            elif form == "int8 tensorrt":
                check = calibrate_onnx(fp32, images, num_images=CALIBRATION_IMAGES, target="tensorrt",
                                       cache_dir=dirs["calibration_dir"]).record["int8_check"]
            else:
                settings = BuildSettings("int8", calibration=CalibrationSettings(images, num_images=CALIBRATION_IMAGES),
                                         **dirs)
                check = build(fp32, settings, output=os.path.join(work, "int8.onnx")).record["int8_check"]
            row[form] = dict(check, seconds=time.time() - start)
        except FgvcError as exc:
            row[form] = {"error": str(exc).splitlines()[0]}
    return row


def cell(result: Dict[str, Any]) -> str:
    if "error" in result:
        return "FAILED: " + result["error"][:80]
    return "{:.1e} / {:.0%}".format(result["rel_error"], result["top1_agreement"])


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("default", "min"), default="default")
    parser.add_argument("--weights", default="fresh,trained")
    parser.add_argument("--models", default="")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n] or list_models()
    lines = ["| model | size | weights | " + " | ".join("{} rel L2 / top-1".format(f) for f in FORMS) + " |",
             "|---|---|---|" + "---|" * len(FORMS)]
    for name in names:
        config = get_model_config(name)
        size = config.input_size if args.size == "default" else config.min_input_size
        for variant in config.variants or (None,):
            for weights in args.weights.split(","):
                with tempfile.TemporaryDirectory(prefix="typed-") as work:
                    row = typed_forms(name, variant, size, weights, work)
                label = name + (" " + variant if variant else "")
                line = "| {} | {} | {} | {} |".format(label, size, weights, " | ".join(cell(row[f]) for f in FORMS))
                lines.append(line)
                print(line, "  ({})".format(", ".join("{:.0f} s".format(row[f].get("seconds", 0)) for f in FORMS)),
                      flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
