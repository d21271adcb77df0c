"""The export stage's cache: a registry model → FP32 ONNX, reused while nothing that reaches the file changed.

Keyed by content — everything that reaches the file or its sidecar: model name, constructor arguments,
variant, class count and names, input size and preprocessing, batch, opset, weights, checkpoint, torch,
fgvc-edge and exporter revision — so a later stage asks for "this model as FP32 ONNX" and gets a file without
exporting twice, and an edited checkpoint record (class names, mean/std) is exported again. A random-init
model is built under a fixed seed, so its weights — and cache key — are reproducible.
"""
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

from fgvc_edge._version import __version__
from fgvc_edge.contract.sidecar import write_sidecar


@dataclass(frozen=True)
class ModelOptions:
    """Which model to build from a registry name: the options every model-creating command takes."""

    checkpoint: Optional[str] = None
    mode: Optional[str] = None
    num_classes: Optional[int] = None
    input_size: Optional[int] = None

    def given(self) -> Tuple[str, ...]:
        """The options set (their CLI names), e.g. to refuse them where a file is given instead of a name."""
        return tuple("--" + name.replace("_", "-") for name, value in vars(self).items() if value is not None)


def export_cached(name: str, options: ModelOptions, *, batch: Union[int, str], label: str,
                  intermediate_dir: str) -> Tuple[str, bool]:
    """(path, reused): ``name`` exported to FP32 ONNX at ``batch`` (an int or ``"dynamic"``) under
    ``intermediate_dir``, unless the same model, arguments and weights were exported already."""
    from fgvc_edge.models.configs import get_model_config, variant_kwargs

    kwargs = variant_kwargs(name, options.mode or get_model_config(name).default_variant)  # before torch loads

    import torch

    from fgvc_edge.contract.sidecar import cached_record, digest
    from fgvc_edge.export.onnx_export import DEFAULT_OPSET, EXPORT_REVISION, export_onnx
    from fgvc_edge.models import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random-init builds are reproducible (and so cacheable)
        model = create_model(name, num_classes=options.num_classes, checkpoint=options.checkpoint,
                             input_size=options.input_size, **kwargs)
    checkpoint = options.checkpoint
    variant = getattr(model, "variant", None)
    key = digest({"model": name, "args": model.model_args, "variant": variant,
                  "num_classes": model.config.num_classes, "class_names": getattr(model, "class_names", None),
                  "input_size": model.config.input_size, "preprocess": model.config.preprocess.to_dict(),
                  "batch": batch, "opset": DEFAULT_OPSET, "weights": _state_digest(model),
                  "checkpoint": str(checkpoint) if checkpoint else None, "torch": torch.__version__,
                  "fgvc_edge": __version__, "export_revision": EXPORT_REVISION})
    stem = name + ("-" + variant.replace("+", "_") if variant else "")
    path = os.path.join(intermediate_dir, "{}-fp32-{}-{}.onnx".format(stem, label, key[:16]))
    if cached_record(path, key) is not None:
        return path, True
    exported = export_onnx(model, path, batch=batch, checkpoint=checkpoint)
    write_sidecar(path, dict(exported.record, cache_key=key))
    return path, False


def _state_digest(model: Any) -> str:
    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        h.update(key.encode("utf-8"))
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
