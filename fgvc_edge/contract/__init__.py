"""The contract every stage shares: the preprocessing record and the sidecar schema.

Torch-free and valid on Python 3.8 (numpy and PIL only): models and checkpoints carry a
:class:`~fgvc_edge.contract.preprocess.Preprocess`, the export, precision and engine stages write artifacts
and their sidecars as one pair with :mod:`fgvc_edge.contract.sidecar`, and the runtime reads and checks both.
:mod:`~fgvc_edge.contract.limits` bounds the sizes anything may ask for; :mod:`~fgvc_edge.contract.fields`
checks the fields of records read from files. Nothing here imports another stage.
"""
from fgvc_edge.contract.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImageLike, Preprocess, to_rgb
from fgvc_edge.contract.sidecar import (
    METADATA_KEY,
    SCHEMA_VERSION,
    check_digest,
    check_graph,
    check_schema,
    onnx_metadata_record,
    read_sidecar,
    sidecar_path,
    validate_sidecar,
    write_artifact,
    write_sidecar,
)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "ImageLike", "METADATA_KEY", "Preprocess", "SCHEMA_VERSION", "check_digest",
    "check_graph", "check_schema", "onnx_metadata_record", "read_sidecar", "sidecar_path", "to_rgb",
    "validate_sidecar", "write_artifact", "write_sidecar",
]
