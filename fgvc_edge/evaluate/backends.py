"""What an artifact is to the evaluator: preprocessing, class names, batch rules, and ``infer(batch) -> logits``.

A checkpoint (folder or its ``model.safetensors``) runs in PyTorch (imported only then); an ``.onnx`` file
or an ``.engine``/``.plan`` runs in the project's runners (:func:`fgvc_edge.runtime.load`), so ONNX
Runtime and TensorRT artifacts are evaluated exactly as they are deployed. Every backend takes the same
preprocessed NCHW float32 batches from the same code and returns logits.
"""
import os
from typing import Any, List, Optional

import numpy as np

from fgvc_edge.errors import UserInputError
from fgvc_edge.contract.preprocess import Preprocess

CHECKPOINT_FILES = ("model.safetensors", "fgvc.json")


class Backend:
    """Common shape of the backends; see the module docstring."""

    path: str
    runtime: str
    precision: str
    preprocess: Preprocess
    class_names: List[str]
    num_classes: Optional[int]
    fixed_batch: Optional[int]
    batch_dependent: bool

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def is_checkpoint(path: str) -> bool:
    return os.path.isdir(path) or os.path.basename(path) in CHECKPOINT_FILES


def open_backend(path: str, *, threads: Optional[int] = None) -> Backend:
    path = str(path)
    if not os.path.exists(path):
        raise UserInputError("no such artifact: {}".format(path))
    if is_checkpoint(path):
        return CheckpointBackend(path, threads=threads)
    return RunnerBackend(path, threads=threads)


class ModuleBackend(Backend):
    """A PyTorch model already in memory (an ``fgvc_edge`` model), in eval mode, FP32 on the CPU."""

    runtime = "pytorch"
    precision = "fp32"

    def __init__(self, model: Any, path: str, class_names: Optional[List[str]] = None) -> None:
        import torch

        self._torch = torch
        self.path = path
        self.model = model.eval()
        config = model.config
        self.preprocess = config.preprocess
        self.class_names = list(class_names or [])
        self.num_classes = config.num_classes
        self.fixed_batch = None
        self.batch_dependent = config.batch_dependent
        self.input_size = config.input_size

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).float().numpy()


class CheckpointBackend(ModuleBackend):
    """An fgvc-edge checkpoint in PyTorch eval mode, FP32 on the CPU."""

    def __init__(self, path: str, threads: Optional[int] = None) -> None:
        from fgvc_edge.checkpoint import read_checkpoint
        from fgvc_edge.models import create_model

        import torch

        if threads:
            torch.set_num_threads(int(threads))
        record, _ = read_checkpoint(path)
        super().__init__(create_model(record["model"], checkpoint=path), path, record.get("class_names"))


class RunnerBackend(Backend):
    """An ONNX file or TensorRT engine through its runner (sidecar or ONNX metadata required)."""

    def __init__(self, path: str, threads: Optional[int] = None) -> None:
        from fgvc_edge.runtime import load

        kwargs = {"threads": threads} if threads and path.lower().endswith(".onnx") else {}
        self.runner = load(path, **kwargs)
        record = self.runner.record
        if self.runner.preprocess is None:
            self.runner.close()
            raise UserInputError(
                "{} has no sidecar ({}.json) or metadata: its preprocessing is unknown".format(path, path)
            )
        self.path = path
        self.runtime = "tensorrt" if not path.lower().endswith(".onnx") else "onnxruntime"
        self.precision = str(record.get("precision") or "fp32")
        self.preprocess = self.runner.preprocess
        self.class_names = list(self.runner.class_names)
        self.num_classes = record.get("num_classes")
        self.fixed_batch = self.runner.fixed_batch
        self.batch_dependent = self.runner.batch_dependent

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.runner.infer(batch), dtype=np.float32)

    def close(self) -> None:
        self.runner.close()
