"""The version-specific TensorRT choices, checked against stand-ins with each real version's attribute set."""
import pytest

from fake_tensorrt import VERSIONS, load_api, make_tensorrt
from fgvc_edge.engine.tensorrt_builder import BatchProfile, GpuInfo, TensorRTSettings, build_engine
from fgvc_edge.errors import UserInputError

GPU = GpuInfo("Orin", "8.7")


def _build(version, onnx_path, tmp_path, **settings):
    trt = make_tensorrt(version, {})
    facts = build_engine(onnx_path, str(tmp_path / "m.engine"), TensorRTSettings(**settings), trt=trt, gpu=GPU)
    return trt, facts


def _calls(trt, name):
    return [args for call, args in trt.calls if call == name]


EXPECTED_NETWORK = {"8.5": 1 << 0, "8.6": 1 << 0, "10.3": 1 << 1, "10.13": 1 << 1, "11.4": 0}
EXPECTED_FLAGS = {
    ("8.5", "fp16"): ["FP16"], ("8.5", "int8"): ["INT8"], ("8.6", "fp16"): ["FP16"], ("8.6", "int8"): ["INT8"],
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_network_and_builder_flags_per_version(version, precision, tiny_onnx, tmp_path):
    trt, facts = _build(version, tiny_onnx["fixed"], tmp_path, precision=precision)
    assert _calls(trt, "Builder.create_network") == [EXPECTED_NETWORK[version]]
    assert _calls(trt, "IBuilderConfig.set_flag") == EXPECTED_FLAGS.get((version, precision), [])
    assert facts["strongly_typed"] is (not version.startswith("8."))
    assert facts["tensorrt_version"] == load_api(version)["version"]
    # The engine is written raw: exactly the bytes the builder serialized (here: the parsed ONNX).
    with open(tmp_path / "m.engine", "rb") as fh, open(tiny_onnx["fixed"], "rb") as src:
        assert fh.read() == src.read()


def test_removed_attributes_really_raise():
    trt11 = make_tensorrt("11.4", {})
    for name in ("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"):
        with pytest.raises(AttributeError):
            getattr(trt11.BuilderFlag, name)
    with pytest.raises(AttributeError):
        trt11.NetworkDefinitionCreationFlag.EXPLICIT_BATCH
    assert not hasattr(trt11, "IInt8EntropyCalibrator2")
    assert "int8_calibrator" not in load_api("11.4")["classes"]["IBuilderConfig"]
    assert "execute_async_v2" not in load_api("10.3")["classes"]["IExecutionContext"]
    assert "VERSION_COMPATIBLE" not in load_api("8.5")["enums"]["BuilderFlag"]


@pytest.mark.parametrize("version", VERSIONS)
def test_dynamic_profile_workspace_and_timing_cache(version, tiny_onnx, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    trt, facts = _build(version, tiny_onnx["dynamic"], tmp_path, precision="fp16", profile=BatchProfile(1, 4, 8),
                        workspace_gib=0.5, timing_cache=str(cache))
    assert _calls(trt, "IOptimizationProfile.set_shape") == [("input", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))]
    assert _calls(trt, "IBuilderConfig.set_memory_pool_limit") == [("WORKSPACE", 1 << 29)]
    assert _calls(trt, "IBuilderConfig.create_timing_cache") == [b"old"]
    assert _calls(trt, "IBuilderConfig.set_timing_cache") == [False]
    assert cache.read_bytes() == b"old+timings"
    assert facts["batch_profile"] == {"min": 1, "opt": 4, "max": 8}


def test_dynamic_onnx_gets_a_profile_even_for_one_batch(tiny_onnx, tmp_path):
    trt, _ = _build("10.13", tiny_onnx["dynamic"], tmp_path, profile=BatchProfile.fixed(2))
    assert _calls(trt, "IOptimizationProfile.set_shape") == [("input",) + ((2, 3, 32, 32),) * 3]


def test_fixed_onnx_refuses_another_batch(tiny_onnx, tmp_path):
    with pytest.raises(UserInputError, match="fixed batch of 1"):
        _build("10.3", tiny_onnx["fixed"], tmp_path, profile=BatchProfile(1, 2, 4))


@pytest.mark.parametrize("version,network,flags", [
    ("8.5", 1, ["FP16", "GPU_FALLBACK"]),
    ("10.3", 0, ["FP16", "GPU_FALLBACK"]),  # DLA builds stay weakly typed: DLA is driven by the precision flags
])
def test_dla_with_gpu_fallback(version, network, flags, tiny_onnx, tmp_path):
    trt, facts = _build(version, tiny_onnx["fixed"], tmp_path, precision="fp16", dla_core=1)
    assert _calls(trt, "Builder.create_network") == [network]
    assert _calls(trt, "IBuilderConfig.set_flag") == flags
    assert facts["dla_core"] == 1 and facts["strongly_typed"] is False


@pytest.mark.parametrize("version,settings,message", [
    ("11.4", dict(precision="fp16", dla_core=0), "no DLA path"),
    ("8.5", dict(precision="fp16", version_compatible=True), "needs TensorRT >= 8.6"),
    ("10.3", dict(precision="fp32", dla_core=0), "FP16 or INT8 only"),
])
def test_refusals(version, settings, message, tiny_onnx, tmp_path):
    with pytest.raises(UserInputError, match=message):
        _build(version, tiny_onnx["fixed"], tmp_path, **settings)


@pytest.mark.parametrize("version", ["8.6", "10.13", "11.4"])
def test_version_compatible_flag(version, tiny_onnx, tmp_path):
    trt, facts = _build(version, tiny_onnx["fixed"], tmp_path, version_compatible=True)
    assert "VERSION_COMPATIBLE" in _calls(trt, "IBuilderConfig.set_flag")
    assert facts["version_compatible"] is True


def test_plugins_initialised_only_when_the_graph_needs_them(tiny_onnx, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    trt, _ = _build("10.3", tiny_onnx["fixed"], tmp_path)
    assert _calls(trt, "init_libnvinfer_plugins") == []
    graph = helper.make_graph(
        [helper.make_node("RoiAlign", ["input", "rois", "idx"], ["logits"], output_height=2, output_width=2)],
        "roi", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor("rois", TensorProto.FLOAT, [1, 4], [0, 0, 4, 4]),
         helper.make_tensor("idx", TensorProto.INT64, [1], [0])],
    )
    path = str(tmp_path / "roi.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    trt, facts = _build("8.5", path, tmp_path)
    assert _calls(trt, "init_libnvinfer_plugins") == [""]
    assert facts["plugins"] is True


def test_api_data_files_name_their_source():
    for version in VERSIONS:
        api = load_api(version)
        assert api["source"] and api["version"].startswith(version)
        for needed in ("Builder", "IBuilderConfig", "ICudaEngine", "IExecutionContext", "Runtime", "OnnxParser"):
            assert needed in api["classes"]
        # The run API we use exists in every version (TENSORRT.md: arrived in 8.5, kept through 11).
        ctx = api["classes"]["IExecutionContext"]
        assert {"set_tensor_address", "execute_async_v3", "set_input_shape"} <= set(ctx)


# Positional arguments (besides self) fgvc_edge passes to each TensorRT call (tensorrt_builder.py,
# tensorrt_runner.py). Each must fit one real signature of every version: the type check that the
# stubs would give, made from the real modules' own pybind11 signatures (trt_api/*.json "signatures").
OUR_CALLS = {
    "Logger.__init__": 1, "Builder.__init__": 1, "Builder.create_network": 1, "Builder.create_builder_config": 0,
    "Builder.create_optimization_profile": 0, "Builder.build_serialized_network": 2,
    "IBuilderConfig.set_flag": 1, "IBuilderConfig.set_memory_pool_limit": 2,
    "IBuilderConfig.add_optimization_profile": 1, "IBuilderConfig.create_timing_cache": 1,
    "IBuilderConfig.set_timing_cache": 2, "INetworkDefinition.get_input": 1, "OnnxParser.__init__": 2,
    "OnnxParser.parse_from_file": 1, "OnnxParser.get_error": 1, "IOptimizationProfile.set_shape": 4,
    "ITimingCache.serialize": 0, "Runtime.__init__": 1, "Runtime.deserialize_cuda_engine": 1,
    "ICudaEngine.get_tensor_name": 1, "ICudaEngine.get_tensor_mode": 1, "ICudaEngine.get_tensor_shape": 1,
    "ICudaEngine.get_tensor_dtype": 1, "ICudaEngine.get_tensor_profile_shape": 2,
    "ICudaEngine.create_execution_context": 0, "IExecutionContext.set_input_shape": 2,
    "IExecutionContext.get_tensor_shape": 1, "IExecutionContext.set_tensor_address": 2,
    "IExecutionContext.execute_async_v3": 1, "init_libnvinfer_plugins": 2,
}


def _arity(signature):
    """(required, total) positional parameters of a pybind11 signature line, without self."""
    inner = signature[signature.index("(") + 1 : signature.rindex(") ->")]
    params, depth, current = [], 0, ""
    for char in inner:
        if char in "[(<":
            depth += 1
        elif char in "])>":
            depth -= 1
        if char == "," and depth == 0:
            params.append(current.strip())
            current = ""
        else:
            current += char
    params = [p for p in params + [current.strip()] if p and not p.startswith("self")]
    return sum("=" not in p for p in params), len(params)


def test_arity_parser():
    assert _arity("f(self: A, a: int, b: tuple[int, int] = (1, 2)) -> None") == (1, 2)
    assert _arity("g(logger: capsule, namespace: str) -> bool") == (2, 2)


@pytest.mark.parametrize("version", VERSIONS)
def test_our_calls_fit_the_real_signatures(version):
    signatures = load_api(version)["signatures"]
    for call, count in OUR_CALLS.items():
        overloads = signatures[call]
        assert overloads, call
        assert any(low <= count <= high for low, high in map(_arity, overloads)), (version, call, overloads)
