"""ONNX Runtime runner: the CPU deployable, and CUDA/TensorRT execution providers where present."""
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from fgvc_edge.errors import UserInputError, not_a_file, require
from fgvc_edge.runtime.base import Runner
from fgvc_edge.contract.sidecar import check_digest, check_graph, onnx_metadata_record, read_sidecar

# Preferred order when the caller names none: the fastest provider that this onnxruntime build has.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def session_options(threads: Optional[int] = None, memory_arena: bool = True) -> Any:
    """ORT's best standard CPU settings: every graph optimisation, ``threads`` intra-op threads.

    ``memory_arena=False`` is for inputs whose batch varies from call to call (a server's batcher): ORT's CPU
    arena keeps every block it ever extended by and fragments as shapes change, so the process grows with
    each new mix of batch sizes (cmal_resnet18 @448, batches 1-16: 798 → 1373 MB over 32 batches, against a
    flat 405 → 412 MB without it, at the same speed). A fixed shape reuses the arena's blocks: keep it there.
    """
    ort = require("onnxruntime", "onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = bool(memory_arena)
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


class OnnxRunner(Runner):
    """Run an ONNX file with ONNX Runtime; its sidecar (or ONNX metadata) gives preprocessing and labels."""

    def __init__(self, path: str, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None,
                 memory_arena: bool = True) -> None:
        ort = require("onnxruntime", "onnxruntime")
        path = str(path)
        if os.path.isdir(path):
            raise not_a_file(path, "an ONNX file")
        if not os.path.isfile(path):
            raise UserInputError("no such ONNX file: {}".format(path))
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in PREFERRED_PROVIDERS if p in available]
        else:
            missing = [p for p in providers if p not in available]
            if missing:
                raise UserInputError(
                    "this onnxruntime lacks {}; it has {}".format(", ".join(missing), ", ".join(available))
                )
        try:
            options = session_options(threads, memory_arena)
            self.session = ort.InferenceSession(path, sess_options=options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise UserInputError("cannot load {} with onnxruntime: {}".format(path, str(exc).splitlines()[0])) from None
        record = read_sidecar(path)
        if record is None:
            record = onnx_metadata_record(self.session.get_modelmeta().custom_metadata_map.items())
        else:
            check_digest(path, record)
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self._input_shape = list(inputs[0].shape)
        if record is not None:
            check_graph(path, record, image_size=_dim(self._input_shape, -1), outputs=_dim(outputs[0].shape, -1),
                        batch=self.fixed_batch)
        super().__init__(path, record)
        self.providers: List[str] = self.session.get_providers()

    @property
    def fixed_batch(self) -> Optional[int]:
        first = self._input_shape[0]
        return first if isinstance(first, int) and first > 0 else None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def close(self) -> None:
        self.session = None

    def describe(self) -> Dict[str, Any]:
        return {"runtime": "onnxruntime", "providers": self.providers, "path": self.path}


def _dim(shape: Sequence[Any], index: int) -> Optional[int]:
    """A fixed dimension of a graph shape, or None when it is symbolic."""
    value = shape[index] if shape else None
    return value if isinstance(value, int) and value > 0 else None
