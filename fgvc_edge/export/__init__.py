"""PyTorch → ONNX: export, simplify, check, parity with ONNX Runtime, sidecar; the export cache.

The exporter needs torch and is loaded on first use (PEP 562 module ``__getattr__``), so the stages that
only read ONNX files (``build`` from an .onnx, ``calibrate``) and ``export.cache.ModelOptions`` stay torch-free.
"""
import importlib
from typing import Any

__all__ = ["ExportResult", "ParityError", "ParityReport", "default_onnx_path", "export_onnx"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))
    return getattr(importlib.import_module("fgvc_edge.export.onnx_export"), name)
