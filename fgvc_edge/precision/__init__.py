"""Typed ONNX for deployment: FP16 conversion and INT8 Q/DQ calibration, both checked on CPU and cached.

Toolkit side (onnx, onnxruntime.quantization, onnxconverter-common); no torch.
"""
from fgvc_edge.precision.data import MIN_CALIBRATION_IMAGES, ImageStream, SyntheticImages, select_images
from fgvc_edge.precision._artifact import TypedOnnx
from fgvc_edge.precision.fp16 import convert_fp16
from fgvc_edge.precision.int8 import (
    METHODS,
    TARGETS,
    CalibrationResult,
    calibrate_onnx,
    check_tensorrt_qdq,
    is_quantized,
    qdq_violations,
)

__all__ = [
    "METHODS", "MIN_CALIBRATION_IMAGES", "TARGETS", "CalibrationResult", "ImageStream", "SyntheticImages", "TypedOnnx",
    "calibrate_onnx", "check_tensorrt_qdq", "convert_fp16", "is_quantized", "qdq_violations", "select_images",
]
