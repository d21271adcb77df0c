"""Reading an ONNX artifact's record and writing typed ONNX files with theirs (sidecar + metadata_props)."""
import json
import os
import shutil
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from fgvc_edge._io import sha256_file
from fgvc_edge.contract.preprocess import Preprocess
from fgvc_edge.contract.sidecar import (
    METADATA_KEY,
    REBUILD_HINT,
    SCHEMA_VERSION,
    check_digest,
    onnx_metadata_record,
    read_sidecar,
    write_artifact,
)
from fgvc_edge.errors import UserInputError, not_a_file, require


@dataclass
class TypedOnnx:
    """A typed (FP16 / INT8) ONNX written by this package: where it is, its record, whether it was reused."""

    path: str
    record: Dict[str, Any]
    cache_hit: bool


def load_onnx(path: str) -> Any:
    onnx = require("onnx", "toolkit")
    if os.path.isdir(path):
        raise not_a_file(path, "an ONNX file")
    if not os.path.isfile(path):
        raise UserInputError("no such ONNX file: {}".format(path))
    try:
        return onnx.load(path)
    except Exception as exc:  # protobuf DecodeError and friends
        raise UserInputError("cannot read {} as ONNX: {}".format(path, str(exc).splitlines()[0])) from None


def source_record(path: str, proto: Any = None) -> Dict[str, Any]:
    """The sidecar of an ONNX file, else the facts in its metadata; refuses a file with neither."""
    record = read_sidecar(path)
    if record is None:
        proto = proto if proto is not None else load_onnx(path)
        record = onnx_metadata_record([(p.key, p.value) for p in proto.metadata_props])
    else:
        check_digest(path, record)
    if not record or not record.get("preprocess"):
        raise UserInputError(
            "{} has no preprocessing record (no {}.json sidecar, no fgvc_edge metadata): "
            "export it with `fgvc-edge export`".format(path, path)
        )
    return dict(record)


def record_preprocess(record: Dict[str, Any]) -> Preprocess:
    return Preprocess.from_dict(record["preprocess"])


def graph_io(proto: Any) -> Tuple[str, str, Optional[int], int]:
    """Input name, output name, fixed batch (None when dynamic) and square input size of a classifier graph."""
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1 or not proto.graph.output:
        raise UserInputError("expected a classifier graph with one image input, found {} inputs".format(len(inputs)))
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise UserInputError("expected an N×3×H×W input, got rank {}".format(len(dims)))
    batch = dims[0].dim_value if dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    return inputs[0].name, proto.graph.output[0].name, batch, int(dims[3].dim_value)


def save_typed_onnx(proto: Any, path: str, record: Dict[str, Any]) -> Dict[str, Any]:
    """Write ``proto`` with ``record`` in its metadata and its sidecar (with its sha256), as one pair."""
    onnx = require("onnx", "toolkit")
    facts = {"schema_version": SCHEMA_VERSION}
    facts.update(record)
    facts.pop("sha256", None)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(facts, sort_keys=True, default=str)
    return write_artifact(path, lambda tmp: onnx.save(proto, tmp), record)


def copy_artifact(source: str, target: str, record: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Copy an artifact with its sidecar as one pair (``record``: the sidecar to give the copy, default the
    source's); refuses a source whose sidecar does not describe it."""
    record = dict(record if record is not None else read_sidecar(source) or {})

    def copy(tmp: str) -> None:
        shutil.copyfile(source, tmp)
        if record.get("sha256") not in (None, sha256_file(tmp)):
            raise UserInputError("{}.json does not belong to {} (sha256 differs){}".format(
                source, source, REBUILD_HINT))

    return write_artifact(target, copy, record)


def compare_outputs(reference: np.ndarray, candidate: np.ndarray) -> Dict[str, float]:
    """Relative L2 error, max abs error, cosine similarity and top-1 agreement of two logit arrays."""
    ref = reference.astype(np.float64).reshape(reference.shape[0], -1)
    cand = candidate.astype(np.float64).reshape(candidate.shape[0], -1)
    norm = max(float(np.linalg.norm(ref)), 1e-12)
    cosines = (ref * cand).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1), 1e-12)
    return {
        "rel_error": float(np.linalg.norm(cand - ref) / norm),
        "max_abs_error": float(np.abs(cand - ref).max()),
        "min_cosine": float(cosines.min()),
        "top1_agreement": float(np.mean(ref.argmax(1) == cand.argmax(1))),
        "samples": int(ref.shape[0]),
    }
