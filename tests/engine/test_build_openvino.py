"""`build --target openvino`: an OpenVINO IR (FP32 or NNCF INT8) with the same sidecar contract, run by load()."""
import importlib.util

import numpy as np
import pytest

from fgvc_edge.engine import BatchProfile, BuildSettings, CalibrationSettings, ModelOptions, build
from fgvc_edge.errors import UserInputError

HAVE_OPENVINO = all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf"))
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="the openvino extra (openvino, nncf) is not installed")
MODEL = ModelOptions(num_classes=4, input_size=32)


def dirs(tmp_path):
    return dict(intermediate_dir=str(tmp_path / "cache"), calibration_dir=str(tmp_path / "calib"))


@needs_openvino
def test_fp32_ir_runs_like_the_onnx(tmp_path):
    from fgvc_edge.runtime import OnnxRunner, load

    result = build("resnet18", BuildSettings("fp32", "openvino", **dirs(tmp_path)), model=MODEL,
                   output=str(tmp_path / "r18.xml"))
    assert result.path.endswith("r18.xml") and (tmp_path / "r18.bin").exists()
    assert result.record["target"] == "openvino" and result.record["format"] == "openvino-ir"
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with load(result.path) as runner, OnnxRunner(result.intermediates["fp32"]) as reference:
        assert type(runner).__name__ == "OpenVinoRunner" and runner.record["input_size"] == 32
        ours, theirs = runner.infer(x), reference.infer(x)
        top = runner.predict([np.zeros((40, 40, 3), np.uint8)], topk=1)[0]
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) < 1e-5
    assert len(top) == 1


@needs_openvino
def test_int8_ir_is_nncf_quantized_and_labelled(tmp_path):
    from fgvc_edge.precision.data import SyntheticImages

    settings = BuildSettings("int8", "openvino", calibration=CalibrationSettings(SyntheticImages(8, size=36), "minmax", 8),
                             **dirs(tmp_path))
    result = build("resnet18", settings, model=MODEL, output=str(tmp_path / "r18-int8.xml"))
    record = result.record
    assert record["precision"] == "int8" and record["quantization"]["quantizer"].startswith("nncf")
    assert "synthetic" in record["calibration_note"] and record["int8_check"]["samples"] == 8


@pytest.mark.parametrize("kwargs,needle", [
    (dict(precision="fp16", target="openvino"), "--fp32 or --int8"),
    (dict(precision="fp32", target="openvino", profile=BatchProfile(1, 4, 8)), "fixed --batch"),
    (dict(precision="int8", target="tensorrt", calibration=CalibrationSettings(latency_aware=True)), "--latency-aware"),
])
def test_openvino_and_latency_aware_settings_are_checked(kwargs, needle):
    with pytest.raises(UserInputError, match=needle):
        BuildSettings(**kwargs)
