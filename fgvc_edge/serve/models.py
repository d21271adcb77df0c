"""One served model: requests of encoded images or preprocessed tensors → logits and top-k, on any runner.

Pure numpy over :mod:`fgvc_edge.runtime`; nothing here knows Triton, so the request handling is testable
without a server. A request carries exactly one of two inputs:

* ``image``: BYTES, shape ``[n, 1]`` — encoded images (JPEG, PNG, …), preprocessed here with the artifact's
  own :class:`~fgvc_edge.contract.preprocess.Preprocess` (the numbers in its sidecar);
* ``input``: FP32, shape ``[n, 3, S, S]`` — images already preprocessed.

Each answer holds ``logits`` ``[n, C]`` and the top-k classes: ``topk_index`` (INT64), ``topk_label`` (BYTES)
and ``topk_prob`` (FP32, softmax) of shape ``[n, k]``. Requests batched together by Triton run as one batch,
except for a batch-dependent model (RBI), whose every request runs alone at exactly its exported batch.
Valid on Python 3.8.
"""
import os
import re
from typing import Any, List, Mapping, Sequence

import numpy as np

from fgvc_edge.errors import UserInputError
from fgvc_edge.runtime.base import Runner, softmax

IMAGE_INPUT = "image"
TENSOR_INPUT = "input"
OUTPUTS = ("logits", "topk_index", "topk_label", "topk_prob")
DEFAULT_TOPK = 5

Request = Mapping[str, np.ndarray]
Response = dict


def model_name(artifact: str) -> str:
    """The Triton model name of an artifact: its file stem, with characters Triton refuses replaced by ``_``."""
    stem = os.path.splitext(os.path.basename(str(artifact)))[0]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).strip(".")
    if not name:
        raise UserInputError("cannot name a model after {!r}: rename the file".format(artifact))
    return name


def check_unique_names(artifacts: Sequence[str]) -> List[str]:
    names = [model_name(a) for a in artifacts]
    seen = {}  # type: dict
    for artifact, name in zip(artifacts, names):
        if name in seen:
            raise UserInputError(
                "{} and {} would both be served as model {!r}: rename one".format(seen[name], artifact, name)
            )
        seen[name] = artifact
    return names


def label_bytes(class_names: Sequence[str], num_classes: int) -> np.ndarray:
    """UTF-8 label of every class (its index where the sidecar names none), as Triton BYTES elements."""
    names = [class_names[i] if i < len(class_names) else str(i) for i in range(num_classes)]
    return np.array([name.encode("utf-8") for name in names], dtype=object)


def topk(logits: np.ndarray, k: int, labels: np.ndarray) -> Response:
    """Top-k of each row as :meth:`Runner.predict` ranks them: softmax in float64, stable descending order."""
    probs = softmax(logits.astype(np.float64))
    order = np.argsort(-probs, axis=1, kind="stable")[:, : min(k, probs.shape[1])]
    return {
        "topk_index": order.astype(np.int64),
        "topk_label": labels[order],
        "topk_prob": np.take_along_axis(probs, order, axis=1).astype(np.float32),
    }


class ServedModel:
    """A runner behind Triton: decodes and preprocesses images, batches requests, answers logits and top-k."""

    def __init__(self, runner: Runner, name: str, k: int = DEFAULT_TOPK) -> None:
        if k < 1:
            raise UserInputError("--topk must be >= 1")
        if runner.preprocess is None:
            raise UserInputError("{} has no preprocessing record (no sidecar): it cannot take images".format(runner.path))
        self.runner = runner
        self.name = name
        self.size = int(runner.preprocess.crop_size)
        self.num_classes = int(runner.record.get("num_classes") or len(runner.class_names) or 0)
        if self.num_classes < 1:
            raise UserInputError("{}'s sidecar gives no num_classes".format(runner.path))
        self.k = min(int(k), self.num_classes)
        self.labels = label_bytes(runner.class_names, self.num_classes)

    @property
    def batch_dependent(self) -> bool:
        return self.runner.batch_dependent

    def __call__(self, requests: Sequence[Request]) -> List[Response]:
        """Triton's execute: one response per request, in order; a bad request raises UserInputError."""
        if self.batch_dependent:
            # Batching requests together would change each one's output: every request runs alone.
            return [self._answer(self.runner.infer(self.tensor(request))) for request in requests]
        tensors = [self.tensor(request) for request in requests]
        logits = self.runner.infer(np.concatenate(tensors)) if len(tensors) > 1 else self.runner.infer(tensors[0])
        answers, start = [], 0
        for tensor in tensors:
            answers.append(self._answer(logits[start : start + tensor.shape[0]]))
            start += tensor.shape[0]
        return answers

    def tensor(self, request: Request) -> np.ndarray:
        """The NCHW float32 batch of one request, from whichever input it carries."""
        given = [name for name in (IMAGE_INPUT, TENSOR_INPUT) if _get(request, name) is not None]
        if len(given) != 1:
            raise UserInputError(
                "a request to {} carries exactly one input, {!r} (encoded images) or {!r} (N×3×{}×{} float32); "
                "got {}".format(self.name, IMAGE_INPUT, TENSOR_INPUT, self.size, self.size, given or "none")
            )
        if given[0] == IMAGE_INPUT:
            return self._decode(_get(request, IMAGE_INPUT))
        array = np.asarray(_get(request, TENSOR_INPUT))
        if array.dtype != np.float32 or array.ndim != 4 or array.shape[1:] != (3, self.size, self.size):
            raise UserInputError(
                "{}: input {!r} must be N×3×{}×{} float32, got {} {}".format(
                    self.name, TENSOR_INPUT, self.size, self.size, "×".join(map(str, array.shape)), array.dtype
                )
            )
        return array

    def _decode(self, encoded: np.ndarray) -> np.ndarray:
        items = np.asarray(encoded, dtype=object).reshape(-1)
        if items.size == 0:
            raise UserInputError("{}: the request holds no image".format(self.name))
        batch = []
        for position, item in enumerate(items):
            if not isinstance(item, (bytes, bytearray)):
                raise UserInputError("{}: image {} is not bytes".format(self.name, position))
            try:
                batch.append(self.runner.preprocess(bytes(item)))  # type: ignore[misc]
            except UserInputError as exc:
                raise UserInputError("{}: image {} of the request: {}".format(self.name, position, exc)) from None
        return np.stack(batch)

    def _answer(self, logits: np.ndarray) -> Response:
        response = {"logits": np.ascontiguousarray(logits, dtype=np.float32)}
        response.update(topk(logits, self.k, self.labels))
        return response

    def close(self) -> None:
        self.runner.close()


def _get(request: Request, name: str) -> Any:
    # PyTriton's Request is dict-like but has no .get(); plain dicts serve in tests.
    return request[name] if name in request.keys() else None
