"""The contract every stage shares: the preprocessing record and the sidecar schema.

Torch-free and valid on Python 3.8 (numpy and PIL only): models and checkpoints carry a
:class:`~fgvc_edge.contract.preprocess.Preprocess`, the export, precision and engine stages write sidecars
with :mod:`fgvc_edge.contract.sidecar`, and the runtime reads both. Nothing here imports another stage.
"""
from fgvc_edge.contract.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImageLike, Preprocess, to_rgb
from fgvc_edge.contract.sidecar import (
    METADATA_KEY,
    SCHEMA_VERSION,
    check_schema,
    onnx_metadata_record,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "ImageLike", "METADATA_KEY", "Preprocess", "SCHEMA_VERSION", "check_schema",
    "onnx_metadata_record", "read_sidecar", "sidecar_path", "to_rgb", "write_sidecar",
]
