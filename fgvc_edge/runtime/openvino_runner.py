"""OpenVINO runner: an OpenVINO IR (``.xml`` + ``.bin``, e.g. NNCF's INT8) or an ONNX file on OpenVINO's CPU plugin.

The same interface and sidecar contract as ``OnnxRunner``: ``<file>.json`` gives preprocessing and labels. CPU settings are OpenVINO's latency recipe: ``PERFORMANCE_HINT:
LATENCY`` and ``INFERENCE_NUM_THREADS``, and a dynamic batch is made static when ``batch`` is given (the
CPU plugin compiles shape-specialised kernels). ``openvino`` is imported here only, so the rest of the runtime
does not need it. Valid on Python 3.8.
"""
import os
from typing import Any, Dict, Optional

import numpy as np

from fgvc_edge._io import sha256_file
from fgvc_edge.contract.sidecar import REBUILD_HINT, check_digest, check_graph, read_sidecar, sidecar_path
from fgvc_edge.errors import UserInputError, require
from fgvc_edge.runtime.base import Runner

SUFFIXES = (".xml", ".onnx")


def latency_config(threads: Optional[int]) -> Dict[str, Any]:
    """OpenVINO's CPU settings for one request at a time on ``threads`` cores."""
    config = {"PERFORMANCE_HINT": "LATENCY"}  # type: Dict[str, Any]
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVinoRunner(Runner):
    """Run an OpenVINO IR or ONNX file with OpenVINO on ``device`` (CPU by default)."""

    def __init__(self, path: str, threads: Optional[int] = None, batch: Optional[int] = None,
                 device: str = "CPU") -> None:
        ov = require("openvino", "openvino")
        path = str(path)
        if not os.path.isfile(path):
            raise UserInputError("no such model file: {}".format(path))
        if not path.lower().endswith(SUFFIXES):
            raise UserInputError("OpenVINO runs .xml (IR) or .onnx files, not {}".format(path))
        record = read_sidecar(path)
        if record is not None:
            check_digest(path, record)
            weights = os.path.splitext(path)[0] + ".bin"
            if record.get("bin_sha256") and (not os.path.isfile(weights) or sha256_file(weights) != record["bin_sha256"]):
                raise UserInputError("{} does not belong to {} (the weights' sha256 differs: the IR was not written "
                                     "together, or one file was replaced){}".format(sidecar_path(path), weights, REBUILD_HINT))
        core = ov.Core()
        try:
            model = core.read_model(path)
        except Exception as exc:  # openvino raises RuntimeError subclasses with multi-line text
            raise UserInputError("cannot read {} with OpenVINO: {}".format(path, str(exc).splitlines()[0])) from None
        if len(model.inputs) != 1:
            raise UserInputError("{} has {} inputs; a classifier has one image input".format(path, len(model.inputs)))
        shape = model.inputs[0].get_partial_shape()
        if batch is not None and shape[0].is_dynamic:
            shape[0] = int(batch)
            model.reshape({model.inputs[0].get_any_name(): shape})
        self._batch = shape[0].get_length() if shape[0].is_static else None  # type: Optional[int]
        self.device = device
        self.compiled = core.compile_model(model, device, latency_config(threads))
        self.request = self.compiled.create_infer_request()
        if record is not None:
            out_shape = model.outputs[0].get_partial_shape()
            size = shape[-1].get_length() if shape[-1].is_static else None
            classes = out_shape[-1].get_length() if out_shape[-1].is_static else None
            check_graph(path, record, image_size=size, outputs=classes, batch=self._batch)
        super().__init__(path, record)
        self.input_name = model.inputs[0].get_any_name()
        self.output_name = model.outputs[0].get_any_name()

    @property
    def fixed_batch(self) -> Optional[int]:
        return self._batch

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.array(self.request.infer({0: batch})[0], copy=True)

    def close(self) -> None:
        self.request = None
        self.compiled = None

    def describe(self) -> Dict[str, Any]:
        ov = require("openvino", "openvino")
        return {"runtime": "openvino", "device": self.device, "openvino": ov.__version__, "path": self.path}

