"""The interface every runner shares (Polygraphy's habit): a context manager with ``infer`` and ``predict``.

``infer(batch) -> logits`` takes a preprocessed NCHW float32 array (or ``{"input": array}``);
``predict(images, topk)`` takes paths, PIL images or HWC arrays and returns, per image, a list of
``Prediction(index, label, prob)``. Fixed-batch artifacts are fed in chunks of their batch; a model whose
output depends on the batch (RBI) runs image by image at batch 1 and, built for a larger batch, refuses any
other count instead of being padded silently.
Valid on Python 3.8.
"""
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np

from fgvc_edge.errors import UserInputError
from fgvc_edge.contract.preprocess import ImageLike, Preprocess


class Prediction(NamedTuple):
    index: int
    label: str
    prob: float


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class Runner:
    """Base class: subclasses set ``record`` (the sidecar) and implement ``_run`` and ``close``."""

    input_name = "input"
    output_name = "logits"

    def __init__(self, path: str, record: Optional[Dict[str, Any]]) -> None:
        self.path = str(path)
        self.record = record or {}
        pre = self.record.get("preprocess")
        self.preprocess = Preprocess.from_dict(pre) if pre else None  # type: Optional[Preprocess]
        self.class_names = list(self.record.get("class_names") or [])  # type: List[str]

    # -- subclass hooks -----------------------------------------------------------------------------
    @property
    def fixed_batch(self) -> Optional[int]:
        """The batch an artifact was built for, or None when its batch is dynamic."""
        raise NotImplementedError

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- shared interface ---------------------------------------------------------------------------
    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def batch_dependent(self) -> bool:
        return bool(self.record.get("batch_dependent", False))

    def infer(self, batch: Union[np.ndarray, Dict[str, np.ndarray]]) -> np.ndarray:
        if isinstance(batch, dict):
            if self.input_name not in batch:
                raise UserInputError("infer() needs the input {!r}".format(self.input_name))
            batch = batch[self.input_name]
        array = np.ascontiguousarray(batch, dtype=np.float32)
        if array.ndim != 4 or array.shape[1] != 3:
            raise UserInputError("infer() takes an N×3×H×W array, got shape {}".format(array.shape))
        expected = self.record.get("input_size")
        if expected and tuple(array.shape[2:]) != (expected, expected):
            raise UserInputError(
                "{} expects {}×{} inputs, got {}×{}".format(self.path, expected, expected, *array.shape[2:])
            )
        fixed = self.fixed_batch
        if fixed is None or array.shape[0] == fixed:
            return self._run(array)
        if self.batch_dependent and fixed > 1:
            # Only here does chunking change results; at batch 1 every image is its own batch (RBI's
            # attention then reduces to a function of the image alone), so the images run one at a time.
            raise UserInputError(
                "{} was exported for batch {} and its output depends on the batch (model {}); feed exactly {} "
                "images, or export at batch 1 (the default) for per-image results".format(
                    self.path, fixed, self.record.get("model"), fixed
                )
            )
        return self._run_in_chunks(array, fixed)

    def _run_in_chunks(self, array: np.ndarray, fixed: int) -> np.ndarray:
        outputs = []
        for start in range(0, array.shape[0], fixed):
            chunk = array[start : start + fixed]
            real = chunk.shape[0]
            if real < fixed:
                # Images are independent here, so padding the last chunk changes no real output.
                pad = np.zeros((fixed - real,) + chunk.shape[1:], dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            outputs.append(self._run(chunk)[:real])
        return np.concatenate(outputs)

    def preprocess_images(self, images: Sequence[ImageLike]) -> np.ndarray:
        if self.preprocess is None:
            raise UserInputError(
                "{} has no preprocessing record (no sidecar {}.json); use infer() with a ready array".format(
                    self.path, self.path
                )
            )
        return self.preprocess.batch(images)

    def predict(self, images: Union[ImageLike, Sequence[ImageLike]], topk: int = 5) -> List[List[Prediction]]:
        if isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "getpixel"):
            images = [images]  # type: ignore[list-item]
        if topk < 1:
            raise UserInputError("topk must be >= 1")
        probs = softmax(self.infer(self.preprocess_images(images)).astype(np.float64))
        k = min(topk, probs.shape[1])
        results = []
        for row in probs:
            order = np.argsort(-row, kind="stable")[:k]
            results.append([Prediction(int(i), self.label(int(i)), float(row[i])) for i in order])
        return results

    def label(self, index: int) -> str:
        if index < len(self.class_names):
            return self.class_names[index]
        return str(index)
