"""TensorRTRunner's data flow and refusals on CPU: stand-in tensorrt/pycuda, outputs compared with OnnxRunner."""
import numpy as np
import pytest

from fgvc_edge.engine.tensorrt_builder import BatchProfile, GpuInfo, TensorRTSettings, build_engine
from fgvc_edge.errors import UserInputError
from fgvc_edge.runtime import OnnxRunner, load, read_sidecar
from fgvc_edge.contract.sidecar import write_sidecar
from fgvc_edge.runtime.tensorrt_runner import TensorRTRunner, check_engine_compatible


def _engine(trt, onnx_path, tmp_path, profile):
    path = str(tmp_path / "m.engine")
    facts = build_engine(onnx_path, path, TensorRTSettings("fp16", profile), trt=trt, gpu=GpuInfo("Orin", "8.7"))
    write_sidecar(path, dict(read_sidecar(onnx_path), **facts))
    return path


@pytest.mark.parametrize("version", ["8.5", "10.3", "11.4"])
def test_runner_matches_onnx_runtime_within_and_beyond_the_profile(version, fake_gpu_stack, tiny_onnx, tmp_path):
    trt, cuda = fake_gpu_stack(version)
    path = _engine(trt, tiny_onnx["dynamic"], tmp_path, BatchProfile(2, 2, 4))
    x = np.random.default_rng(0).standard_normal((7, 3, 32, 32)).astype(np.float32)
    with OnnxRunner(tiny_onnx["dynamic"]) as reference, load(path) as runner:
        assert isinstance(runner, TensorRTRunner)
        assert runner.fixed_batch is None and runner.batch_range == (2, 4)
        expected = reference.infer(x)
        np.testing.assert_allclose(runner.infer(x), expected, rtol=1e-5, atol=1e-5)  # 7 → 4 + 3 (two calls)
        np.testing.assert_allclose(runner.infer(x[:1]), expected[:1], rtol=1e-5, atol=1e-5)  # padded to the min, 2
        assert runner.last_gpu_ms == 0.25
        preds = runner.predict([np.full((40, 40, 3), 128, np.uint8)], topk=2)
        assert len(preds[0]) == 2 and preds[0][0].prob >= preds[0][1].prob
    shapes = [args for call, args in trt.calls if call == "IExecutionContext.set_input_shape"]
    assert shapes == [(4, 3, 32, 32), (4, 3, 32, 32), (3, 3, 32, 32), (2, 3, 32, 32), (2, 3, 32, 32)]
    assert [c for c, _ in trt.calls].count("IExecutionContext.execute_async_v3") == 4
    assert cuda.events.count("push") == cuda.events.count("pop") and cuda.events[-1] == "detach"


def test_fixed_batch_engine_is_fed_in_chunks(fake_gpu_stack, tiny_onnx, tmp_path):
    trt, _ = fake_gpu_stack("10.13")
    path = _engine(trt, tiny_onnx["fixed"], tmp_path, BatchProfile.fixed(1))
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with OnnxRunner(tiny_onnx["fixed"]) as reference, TensorRTRunner(path) as runner:
        assert runner.fixed_batch == 1
        np.testing.assert_allclose(runner.infer(x), reference.infer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("installed,gpu", [("10.3.0", ("Orin", (8, 7))), (None, ("RTX 4090", (8, 9)))])
def test_runner_refuses_another_tensorrt_or_gpu(installed, gpu, fake_gpu_stack, tiny_onnx, tmp_path):
    trt, _ = fake_gpu_stack("8.5", gpu=gpu)
    path = _engine(trt, tiny_onnx["fixed"], tmp_path, BatchProfile.fixed(1))  # sidecar: 8.5.2 on Orin, 8.7
    trt.__version__ = installed or trt.__version__
    with pytest.raises(UserInputError, match="built with TensorRT 8.5.2 for Orin .compute 8.7.*rebuild it here"):
        TensorRTRunner(path)


def test_version_compatible_engines_run_on_later_versions_only():
    record = {"tensorrt_version": "10.3.0", "version_compatible": True, "gpu": {"name": "A", "compute_capability": "8.7"}}
    gpu = {"name": "A", "compute_capability": "8.7"}
    check_engine_compatible(record, "m.engine", "10.13.3.9", gpu)
    with pytest.raises(UserInputError):
        check_engine_compatible(record, "m.engine", "8.6.1", gpu)
    with pytest.raises(UserInputError):
        check_engine_compatible(dict(record, version_compatible=False), "m.engine", "10.13.3.9", gpu)


def test_without_tensorrt_the_runner_says_so_in_one_line(tmp_path):
    path = tmp_path / "m.engine"
    path.write_bytes(b"x")
    with pytest.raises(UserInputError) as info:
        TensorRTRunner(str(path))
    assert "TensorRT is not usable here" in str(info.value) and "\n" not in str(info.value)
