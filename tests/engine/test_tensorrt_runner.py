"""TensorRTRunner's data flow and refusals on CPU: stand-in tensorrt/pycuda, outputs compared with OnnxRunner."""
import numpy as np
import pytest

from fake_tensorrt import VERSIONS, load_api, make_tensorrt
from fgvc_edge.engine.tensorrt_builder import BatchProfile, GpuInfo, TensorRTSettings, build_engine
from fgvc_edge.errors import FgvcError, UserInputError
from fgvc_edge.runtime import OnnxRunner, load, read_sidecar
from fgvc_edge.contract.sidecar import write_sidecar
from fgvc_edge.runtime.tensorrt_runner import TensorRTRunner, check_engine_compatible, numpy_dtype


def _engine(trt, onnx_path, tmp_path, profile, version_compatible=False):
    path = str(tmp_path / "m.engine")
    settings = TensorRTSettings("fp16", profile, version_compatible=version_compatible)
    facts = build_engine(onnx_path, path, settings, trt=trt, gpu=GpuInfo("Orin", "8.7"))
    write_sidecar(path, dict(read_sidecar(onnx_path), **facts))
    return path


def _calls(trt, name):
    return [args for call, args in trt.calls if call == name]


def _after_last_push(events):
    return events[len(events) - events[::-1].index("push"):]


# What the runner frees, in order, while its context is current; then the context goes.
TEARDOWN = ["free device", "free device", "free host", "free host", "free event", "free event", "free stream",
            "pop", "detach"]


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
    assert cuda.events.count("push") == cuda.events.count("pop")
    # Teardown: buffers, events and stream freed while the context is current, then it is popped and detached.
    assert _after_last_push(cuda.events) == TEARDOWN
    # Plugins are registered right before every deserialization (Polygraphy's habit).
    names = [call for call, _ in trt.calls]
    loads = [i for i, call in enumerate(names) if call == "Runtime.deserialize_cuda_engine"]
    assert loads and all(names[i - 1] == "init_libnvinfer_plugins" for i in loads)


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
    check_engine_compatible(record, "m.engine", "10.3.0", gpu)
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


@pytest.mark.parametrize("built,installed", [("8.6", "8.6"), ("8.6", "10.3"), ("10.3", "11.4")])
def test_version_compatible_engine_loads_with_host_code_allowed(built, installed, tiny_onnx, tmp_path, monkeypatch,
                                                                fake_gpu_stack):
    builder_trt = make_tensorrt(built, {})
    path = _engine(builder_trt, tiny_onnx["fixed"], tmp_path, BatchProfile.fixed(1), version_compatible=True)
    trt, _ = fake_gpu_stack(installed)
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with OnnxRunner(tiny_onnx["fixed"]) as reference, TensorRTRunner(path) as runner:
        np.testing.assert_allclose(runner.infer(x), reference.infer(x), rtol=1e-5, atol=1e-5)
    assert _calls(trt, "Runtime.engine_host_code_allowed") == [True]


@pytest.mark.parametrize("switch,error,message", [
    ("deserialize", UserInputError, "cannot load .*rebuild it here"),
    ("set_input_shape", FgvcError, r"refused input shape \(4, 3, 32, 32\)"),
    ("set_tensor_address", FgvcError, "refused the address of .* tensor input"),
])
@pytest.mark.parametrize("version", ["8.5", "10.3", "11.4"])
def test_a_failed_load_says_so_and_frees_everything(switch, error, message, version, fake_gpu_stack, tiny_onnx,
                                                    tmp_path):
    trt, cuda = fake_gpu_stack(version)
    path = _engine(trt, tiny_onnx["dynamic"], tmp_path, BatchProfile(1, 2, 4))
    trt.fail.add(switch)
    with pytest.raises(error, match=message) as info:
        TensorRTRunner(path)
    assert "\n" not in str(info.value)
    assert _after_last_push(cuda.events)[-2:] == ["pop", "detach"]
    assert cuda.events.count("free device") == cuda.events.count("free host")  # what was allocated was freed


@pytest.mark.parametrize("switch,message", [("execute", "execution failed"), ("set_input_shape", "refused input shape")])
def test_a_failed_run_says_so(switch, message, fake_gpu_stack, tiny_onnx, tmp_path):
    trt, cuda = fake_gpu_stack("10.13")
    path = _engine(trt, tiny_onnx["dynamic"], tmp_path, BatchProfile(1, 2, 4))
    with TensorRTRunner(path) as runner:
        trt.fail.add(switch)
        with pytest.raises(FgvcError, match=message):
            runner.infer(np.zeros((2, 3, 32, 32), np.float32))
    assert _after_last_push(cuda.events) == TEARDOWN


@pytest.mark.parametrize("version", VERSIONS)
def test_numpy_types_of_every_tensorrt_type(version):
    """Our own table, not trt.nptype (8.5.2's raises on NumPy >= 1.24, NVIDIA/TensorRT#2557)."""
    trt = make_tensorrt(version, {})
    members = load_api(version)["enums"]["DataType"]
    expected = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
                "UINT8": np.uint8, "BOOL": np.bool_}
    for name in members:
        dtype = getattr(trt.DataType, name)
        if name in expected:
            assert numpy_dtype(trt, dtype, "m.engine") == np.dtype(expected[name])
        else:  # BF16, FP8, INT4, FP4, E8M0: NumPy has no such type
            with pytest.raises(UserInputError, match="m.engine has a {} input/output".format(name)):
                numpy_dtype(trt, dtype, "m.engine")


def test_cli_exits_2_in_one_line_when_tensorrt_fails(fake_gpu_stack, tiny_onnx, tmp_path, monkeypatch):
    from PIL import Image
    from typer.testing import CliRunner

    from fgvc_edge.cli import app

    monkeypatch.chdir(tmp_path)
    trt, _ = fake_gpu_stack("8.5")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    trt.fail.add("parse")
    built = CliRunner().invoke(app, ["build", tiny_onnx["fixed"], "--fp32", "-o", "m.engine"])
    trt.fail.clear()
    assert built.exit_code == 2 and len(built.output.strip().splitlines()) == 1 and "cannot parse" in built.output
    assert not (tmp_path / "m.engine").exists()
    assert CliRunner().invoke(app, ["build", tiny_onnx["fixed"], "--fp32", "-o", "m.engine"]).exit_code == 0
    trt.fail.add("execute")
    ran = CliRunner().invoke(app, ["predict", str(image), "--model", "m.engine"])
    assert ran.exit_code == 2 and ran.output.strip().splitlines() == [
        "error: TensorRT execution failed for m.engine"]
