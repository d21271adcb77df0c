"""PyTorch → ONNX: export, simplify, check, parity with ONNX Runtime, sidecar."""
from fgvc_edge.export.onnx_export import ExportResult, ParityError, ParityReport, default_onnx_path, export_onnx

__all__ = ["ExportResult", "ParityError", "ParityReport", "default_onnx_path", "export_onnx"]
