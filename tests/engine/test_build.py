"""`build` end to end on CPU: ONNX Runtime deployables, cached intermediates, engines via the stand-ins, CLI."""
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from fgvc_edge.cli import app
from fgvc_edge.engine import BatchProfile, BuildSettings, ModelOptions, build, synthetic_int8_deployable
from fgvc_edge.errors import UserInputError
from fgvc_edge.runtime import OnnxRunner, read_sidecar


def test_cli_refuses_tensorrt_without_it_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["build", "resnet18", "--fp16", "--input-size", "32"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--target onnxruntime" in lines[0] and "TensorRT" in lines[0]
    assert not os.path.exists("engines")  # refused before exporting anything


def test_onnxruntime_fp16_from_a_model_name_reuses_intermediates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = BuildSettings("fp16", "onnxruntime")
    first = build("resnet18", settings, model=ModelOptions(num_classes=4, input_size=32))
    assert first.path == os.path.join("engines", "resnet18-random-fp16-b1.onnx") and first.reused == []
    record = read_sidecar(first.path)
    assert record["precision"] == "fp16" and record["target"] == "onnxruntime"
    assert record["fp16_check"]["top1_agreement"] == 1.0 and record["fp16_check"]["rel_error"] < 1e-2
    second = build("resnet18", settings, model=ModelOptions(num_classes=4, input_size=32))
    assert second.reused == ["fp32", "fp16"]
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with OnnxRunner(first.intermediates["fp32"]) as fp32, OnnxRunner(first.path) as fp16:
        ref, out = fp32.infer(x), fp16.infer(x)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-2
    # A different head size is a different model: nothing reused.
    third = build("resnet18", settings, model=ModelOptions(num_classes=5, input_size=32))
    assert third.reused == [] and third.intermediates["fp32"] != first.intermediates["fp32"]
    # A new export revision (the exporter's graph or record changed) is not served a stale export.
    monkeypatch.setattr("fgvc_edge.export.onnx_export.EXPORT_REVISION", 10**6)
    fourth = build("resnet18", settings, model=ModelOptions(num_classes=4, input_size=32))
    assert "fp32" not in fourth.reused and fourth.intermediates["fp32"] != first.intermediates["fp32"]


def test_tensorrt_engine_sidecar_and_deepstream_files(fake_gpu_stack, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trt, _ = fake_gpu_stack("10.13")
    result = build(tiny_onnx["dynamic"], BuildSettings("fp16", profile=BatchProfile(1, 2, 4), intermediate_dir=str(tmp_path / "c")))
    assert result.path == os.path.join("engines", "resnet18-random-fp16-bdyn.engine")
    record = read_sidecar(result.path)
    assert record["schema_version"] == 1 and record["tensorrt_version"] == "10.13.3.9"
    assert record["gpu"] == {"name": "Orin", "compute_capability": "8.7"}
    assert record["precision"] == "fp16" and record["batch_profile"] == {"min": 1, "opt": 2, "max": 4}
    assert record["preprocess"]["crop_size"] == 32 and record["num_classes"] == 4
    assert len(record["source_onnx_sha256"]) == 64 and record["network_flags"] == ["STRONGLY_TYPED"]
    config, labels = result.extra_files
    text = open(config).read()
    assert "model-engine-file=resnet18-random-fp16-bdyn.engine" in text and "network-mode=2" in text
    assert "infer-dims=3;32;32" in text and "batch-size=4" in text and "offsets=123.675;116.28;103.53" in text
    assert open(labels).read().strip() == "0;1;2;3"


def test_model_options_refused_for_an_onnx_file(tiny_onnx):
    with pytest.raises(UserInputError, match="--checkpoint/--num-classes apply to a model name"):
        build(tiny_onnx["fixed"], BuildSettings("fp32", "onnxruntime"), model=ModelOptions(checkpoint="x", num_classes=3))


def test_mode_refused_for_a_model_without_variants(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserInputError, match="has no modes"):
        build("resnet18", BuildSettings("fp32", "onnxruntime"), model=ModelOptions(mode="raw", input_size=32))


def test_int8_needs_calibration_data(tmp_path, monkeypatch, tiny_onnx):
    with pytest.raises(UserInputError, match="--calib-data"):
        build(tiny_onnx["fixed"], BuildSettings("int8", "onnxruntime"))


def test_synthetic_int8_deployable_is_labelled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = synthetic_int8_deployable("resnet18", model=ModelOptions(input_size=32), num_images=8)
    record = read_sidecar(result.path)
    assert result.path.endswith("resnet18-random-int8-b1.onnx")
    assert record["calibration_note"].startswith("calibrated on synthetic images")
    assert record["quantization"]["target"] == "onnxruntime" and record["quantization"]["images"]["synthetic"]
    with OnnxRunner(result.path) as runner:
        assert runner.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 200)


@pytest.mark.parametrize("form,accepted", [("onnxruntime", False), ("tensorrt", True)])
def test_tensorrt_build_takes_only_tensorrt_form_int8(form, accepted, fake_gpu_stack, tiny_onnx, tmp_path, monkeypatch):
    """An ONNX Runtime-form INT8 ONNX (UINT8 activations, asymmetric) is refused before TensorRT sees it."""
    from fgvc_edge.precision import SyntheticImages, calibrate_onnx

    monkeypatch.chdir(tmp_path)
    trt, _ = fake_gpu_stack("8.6")
    int8 = calibrate_onnx(tiny_onnx["fixed"], SyntheticImages(8, 40, seed=0), num_images=8, target=form,
                          cache_dir=str(tmp_path / "calib"), output=str(tmp_path / "int8.onnx")).path
    settings = BuildSettings("int8", "tensorrt", profile=BatchProfile.fixed(1))
    if accepted:
        assert os.path.isfile(build(int8, settings, output="m.engine").path)
        assert [args for call, args in trt.calls if call == "IBuilderConfig.set_flag"] == ["INT8"]
        return
    import onnx

    from fgvc_edge.precision.int8 import qdq_violations

    assert any(problem.endswith("is UINT8, not INT8") for problem in qdq_violations(onnx.load(int8)))
    with pytest.raises(UserInputError, match=r"int8.onnx is not TensorRT-form Q/DQ \(\d+ problem"):
        build(int8, settings, output="m.engine")
    assert not os.path.exists("m.engine") and not [c for c, _ in trt.calls if c == "OnnxParser.parse_from_file"]
