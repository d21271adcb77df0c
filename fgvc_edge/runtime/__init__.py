"""The deployable runtime: what a Jetson or CPU application embeds.

Imports only numpy, PIL and onnxruntime (TensorRT and pycuda, or OpenVINO, lazily, where present) — never
torch or typer — and stays valid on Python 3.8 (JetPack 5)::

    from fgvc_edge.runtime import load

    with load("engines/resnet50-cub_best-fp32-b1.onnx") as runner:
        top5 = runner.predict(["bird.jpg"], topk=5)[0]
"""
import os
from typing import Any

from fgvc_edge.errors import UserInputError, not_a_file
from fgvc_edge.runtime.base import Prediction, Runner
from fgvc_edge.runtime.onnx_runner import OnnxRunner
from fgvc_edge.contract.preprocess import Preprocess
from fgvc_edge.contract.sidecar import read_sidecar

__all__ = ["load", "OnnxRunner", "OpenVinoRunner", "Prediction", "Preprocess", "Runner", "TensorRTRunner", "read_sidecar"]


def __getattr__(name: str) -> Any:
    # TensorRTRunner is imported on first use (PEP 562), like tensorrt/pycuda inside it.
    if name == "TensorRTRunner":
        from fgvc_edge.runtime.tensorrt_runner import TensorRTRunner

        return TensorRTRunner
    if name == "OpenVinoRunner":
        from fgvc_edge.runtime.openvino_runner import OpenVinoRunner

        return OpenVinoRunner
    raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))


def load(path: str, **kwargs: Any) -> Runner:
    """Open an artifact with the runner its file type needs (``.onnx`` → ONNX Runtime, ``.engine``/``.plan`` →
    TensorRT, ``.xml`` → OpenVINO, each imported only then)."""
    path = str(path)
    if os.path.isdir(path):
        raise not_a_file(path, "an .onnx or .engine file")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".onnx":
        return OnnxRunner(path, **kwargs)
    if suffix in (".engine", ".plan"):
        from fgvc_edge.runtime.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(path, **kwargs)
    if suffix == ".xml":
        from fgvc_edge.runtime.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(path, **kwargs)
    raise UserInputError("cannot run {}: expected an .onnx, .engine, .plan or .xml (OpenVINO) file".format(path))
