"""Real TensorRT engines against ONNX Runtime (skipped without CUDA and TensorRT; see tests/conftest.py).

FP16 engine vs the FP32 ONNX on ORT: cosine ≥ 0.999 per image. INT8 engine vs the same Q/DQ ONNX on ORT
(CPU): top-1 agreement ≥ 98 % — both execute one quantized graph, so disagreement is TensorRT's kernels.
"""
import numpy as np
import pytest

from fgvc_edge.engine import BatchProfile, BuildSettings, CalibrationSettings, ModelOptions, build
from fgvc_edge.precision import SyntheticImages
from fgvc_edge.runtime import OnnxRunner
from fgvc_edge.runtime.tensorrt_runner import TensorRTRunner

pytestmark = pytest.mark.gpu
MODELS = [("resnet18", 224), ("cmal_resnet18", 224)]


def _images(runner, count=64, size=256):
    return runner.preprocess_images(list(SyntheticImages(count, size, seed=7)))


def _cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("name,size", MODELS)
def test_fp16_engine_matches_onnxruntime(name, size, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = build(name, BuildSettings("fp16", profile=BatchProfile(1, 8, 16)), model=ModelOptions(input_size=size))
    with TensorRTRunner(result.path) as engine, OnnxRunner(result.intermediates["fp32"]) as reference:
        x = _images(reference)
        assert _cosines(engine.infer(x), reference.infer(x)).min() >= 0.999


@pytest.mark.parametrize("name,size", MODELS)
def test_int8_engine_agrees_with_onnxruntime(name, size, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calibration = SyntheticImages(64, 256, seed=0)
    settings = BuildSettings("int8", profile=BatchProfile.fixed(1), calibration=CalibrationSettings(calibration, num_images=64))
    result = build(name, settings, model=ModelOptions(input_size=size))
    with TensorRTRunner(result.path) as engine, OnnxRunner(result.intermediates["int8"]) as reference:
        x = _images(reference)
        agreement = np.mean(engine.infer(x).argmax(1) == reference.infer(x).argmax(1))
    assert agreement >= 0.98
