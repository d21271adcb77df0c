"""Deployables: TensorRT engines (8.5–11.x, version-adaptive) and ONNX Runtime CPU artifacts, from a
registry model or an ONNX file. Toolkit side; TensorRT is imported only when an engine is built."""
from fgvc_edge.engine.pipeline import (
    BuildResult,
    BuildSettings,
    CalibrationSettings,
    TensorRTOptions,
    build,
    default_output,
    int8_deployable,
    synthetic_int8_deployable,
)
from fgvc_edge.engine.tensorrt_builder import BatchProfile, TensorRTSettings
from fgvc_edge.export.cache import ModelOptions

__all__ = [
    "BatchProfile", "BuildResult", "BuildSettings", "CalibrationSettings", "ModelOptions", "TensorRTOptions",
    "TensorRTSettings", "build", "default_output", "int8_deployable", "synthetic_int8_deployable",
]
