"""Triton Python-backend model written by ``fgvc-edge triton-repo``: encoded images → preprocessed tensors.

Input ``image`` (BYTES, one encoded JPEG/PNG/… per row) → output ``input`` (FP32, N×3×S×S), the classifier's
input, so the ensemble beside this model takes images. The preprocessing is fgvc-edge's own: its contract
module is copied next to this file as ``fgvc_preprocess.py`` and run with the numbers in this model's
``config.pbtxt`` (parameter ``preprocess``), so the served model sees exactly the tensors it was validated on.

Needs numpy and Pillow in the server's Python (the tritonserver container has numpy; ``pip install pillow``),
not fgvc-edge. Each request is answered on its own: an undecodable image fails only the request it came in.
"""
import importlib.util
import json
import os
import sys
import types

import numpy as np
import triton_python_backend_utils as pb_utils

IMAGE_INPUT = "image"
TENSOR_OUTPUT = "input"
PREPROCESS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fgvc_preprocess.py")


def load_preprocess_module() -> types.ModuleType:
    """The copied contract module; its one fgvc-edge import (the error class) is provided when fgvc-edge is absent."""
    try:
        import fgvc_edge.errors  # noqa: F401  (fgvc-edge installed in the container: its own error class)
    except ImportError:
        errors = types.ModuleType("fgvc_edge.errors")
        errors.UserInputError = type("UserInputError", (ValueError,), {})
        package = types.ModuleType("fgvc_edge")
        package.errors = errors
        sys.modules.setdefault("fgvc_edge", package)
        sys.modules["fgvc_edge.errors"] = errors
    spec = importlib.util.spec_from_file_location("fgvc_preprocess", PREPROCESS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def preprocess_encoded(preprocess, encoded: np.ndarray) -> np.ndarray:
    """Rows of encoded images → N×3×S×S float32; ValueError (the contract's UserInputError) names the bad one."""
    items = encoded.reshape(-1)
    if items.size == 0:
        raise ValueError("the request holds no image")
    batch = []
    for position, item in enumerate(items):
        try:
            batch.append(preprocess(bytes(item)))
        except (ValueError, TypeError) as exc:
            raise ValueError("image {} of the request: {}".format(position, exc)) from None
    return np.stack(batch).astype(np.float32, copy=False)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        numbers = json.loads(config["parameters"]["preprocess"]["string_value"])
        self.preprocess = load_preprocess_module().Preprocess.from_dict(numbers)

    def execute(self, requests):
        responses = []
        for request in requests:
            encoded = pb_utils.get_input_tensor_by_name(request, IMAGE_INPUT).as_numpy()
            try:
                batch = preprocess_encoded(self.preprocess, encoded)
            except ValueError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(TENSOR_OUTPUT, batch)]))
        return responses
