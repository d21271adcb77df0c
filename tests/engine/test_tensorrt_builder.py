"""The version-specific TensorRT choices, checked against stand-ins with each real version's attribute set."""
import logging
import os

import pytest

from fake_tensorrt import VERSIONS, load_api, make_tensorrt
from fgvc_edge.engine.tensorrt_builder import BatchProfile, GpuInfo, TensorRTSettings, build_engine
from fgvc_edge.errors import FgvcError, UserInputError

GPU = GpuInfo("Orin", "8.7")


def _build(version, onnx_path, tmp_path, fail=(), installed=None, **settings):
    trt = make_tensorrt(version, {})
    trt.fail.update(fail)
    trt.__version__ = installed or trt.__version__
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
    # The engine is written raw: exactly the bytes the builder serialized, nothing prepended.
    with open(tmp_path / "m.engine", "rb") as fh:
        assert [fh.read()] == _calls(trt, "serialized")
    # The FP32 ONNX of this test has no FP16 tensors, hence no FP32 islands to constrain.
    assert _calls(trt, "ILayer.precision") == [] and facts["fp32_layers"] == []


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
    # 8.5.2's parser has no flags (NATIVE_INSTANCENORM came with 8.6); 11 has no per-layer precision.
    assert "set_flag" not in load_api("8.5")["classes"]["OnnxParser"] and "OnnxParserFlag" not in load_api("8.5")["module"]
    assert not {"precision", "set_output_type"} & set(load_api("11.4")["classes"]["ILayer"])


@pytest.mark.parametrize("version", VERSIONS)
def test_dynamic_profile_workspace_and_timing_cache(version, tiny_onnx, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    trt, facts = _build(version, tiny_onnx["dynamic"], tmp_path, precision="fp16", profile=BatchProfile(1, 4, 8),
                        workspace_gib=0.5, timing_cache=str(cache))
    assert _calls(trt, "IOptimizationProfile.set_shape") == [("input", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))]
    assert _calls(trt, "IBuilderConfig.set_memory_pool_limit") == [("WORKSPACE", 1 << 29)]
    assert _calls(trt, "IBuilderConfig.create_timing_cache")[0] == b"old"
    assert _calls(trt, "IBuilderConfig.set_timing_cache") == [False]  # foreign timings are never trusted
    entries = set(cache.read_bytes().split(b";"))
    assert b"old" in entries and len(entries) == 2  # the old entries and this build's, merged
    assert facts["batch_profile"] == {"min": 1, "opt": 4, "max": 8}


def test_timing_cache_merges_what_another_build_wrote_meanwhile(tiny_onnx, tmp_path, monkeypatch):
    from fgvc_edge.engine import timing_cache

    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    real_save = timing_cache.save_timing_cache

    def save_after_another_build(config, path, merge):
        cache.write_bytes(b"old;other")  # a concurrent build on the same GPU finished first
        real_save(config, path, merge)

    monkeypatch.setattr(timing_cache, "save_timing_cache", save_after_another_build)
    trt, _ = _build("10.3", tiny_onnx["fixed"], tmp_path, timing_cache=str(cache))
    entries = set(cache.read_bytes().split(b";"))
    assert {b"old", b"other"} < entries and len(entries) == 3
    assert _calls(trt, "ITimingCache.combine") == [False]
    assert sorted(os.listdir(tmp_path)) == ["m.engine", "timing.cache", "timing.cache.lock"]  # no temp file left


@pytest.mark.parametrize("version", ["8.5", "10.13", "11.4"])
def test_a_rejected_timing_cache_is_said_and_replaced(version, tiny_onnx, tmp_path, caplog):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"from-another-gpu")
    with caplog.at_level(logging.WARNING, logger="fgvc_edge.engine.timing_cache"):
        trt, _ = _build(version, tiny_onnx["fixed"], tmp_path, fail={"set_timing_cache"}, timing_cache=str(cache))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "another GPU or TensorRT version" in warnings[0] and "\n" not in warnings[0]
    # The build went on with a fresh cache, and the file now holds this build's timings only.
    assert _calls(trt, "IBuilderConfig.create_timing_cache") == [b"from-another-gpu", b""]
    assert _calls(trt, "Builder.build_serialized_network") == [None]
    assert b"from-another-gpu" not in cache.read_bytes() and cache.read_bytes().startswith(b"tactics-")
    assert _calls(trt, "ITimingCache.combine") == []


def test_dynamic_onnx_gets_a_profile_even_for_one_batch(tiny_onnx, tmp_path):
    trt, _ = _build("10.13", tiny_onnx["dynamic"], tmp_path, profile=BatchProfile.fixed(2))
    assert _calls(trt, "IOptimizationProfile.set_shape") == [("input",) + ((2, 3, 32, 32),) * 3]


def test_fixed_onnx_refuses_another_batch(tiny_onnx, tmp_path):
    with pytest.raises(UserInputError, match="fixed batch of 1"):
        _build("10.3", tiny_onnx["fixed"], tmp_path, profile=BatchProfile(1, 2, 4))


@pytest.mark.parametrize("version,installed,network,flags,strong", [
    ("8.5", None, 1, ["FP16", "GPU_FALLBACK"], False),
    ("10.3", None, 0, ["FP16", "GPU_FALLBACK"], False),  # DLA on 10.x: weakly typed, driven by the precision flags
    # 11.4.1+: DLA on AGX Orin again, strongly typed, no precision flags (11.4.1 API = the recorded 11.4.0's).
    ("11.4", "11.4.1.3", 0, ["GPU_FALLBACK"], True),
])
def test_dla_with_gpu_fallback(version, installed, network, flags, strong, tiny_onnx, tmp_path):
    trt, facts = _build(version, tiny_onnx["fixed"], tmp_path, installed=installed, precision="fp16", dla_core=1)
    assert _calls(trt, "Builder.create_network") == [network]
    assert _calls(trt, "IBuilderConfig.set_flag") == flags
    assert _calls(trt, "IBuilderConfig.default_device_type") == ["DLA"]
    assert _calls(trt, "IBuilderConfig.DLA_core") == [1]
    assert facts["dla_core"] == 1 and facts["strongly_typed"] is strong


@pytest.mark.parametrize("version,installed,settings,message", [
    ("11.4", None, dict(precision="fp16", dla_core=0), "TensorRT 11.4.0 has no DLA on Jetson"),  # Windows on ARM only
    ("11.4", "11.3.0.1", dict(precision="int8", dla_core=0), "TensorRT 11.3.0 has no DLA on Jetson"),
    ("10.13", None, dict(precision="fp16", dla_core=0), "TensorRT 10.13.3 has no DLA on Jetson"),  # 10.7 was the last
    ("11.4", "11.4.1.3", dict(precision="fp32", dla_core=0), "FP16 or INT8 only"),
    ("8.5", None, dict(precision="fp16", version_compatible=True), "needs TensorRT >= 8.6"),
    ("10.3", None, dict(precision="fp32", dla_core=0), "FP16 or INT8 only"),
    ("10.3", None, dict(precision="fp16", dla_core=0, version_compatible=True), "cannot run on a DLA"),
])
def test_refusals(version, installed, settings, message, tiny_onnx, tmp_path):
    with pytest.raises(UserInputError, match=message):
        _build(version, tiny_onnx["fixed"], tmp_path, installed=installed, **settings)
    assert not (tmp_path / "m.engine").exists()


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


def _fp16_graph_with_islands(path):
    """An FP16-typed graph as our converter writes them: FP16 body, FP32 islands behind Cast pairs.

    FP32 islands: mean32 (ReduceMean), softmax32, argmax32 (FP32 in, index out), gt32 (FP32 in, bool out).
    Not islands: the Casts, the FP16 nodes, and the FP16 Relu that happens to be named like a second layer
    of mean32 ("mean32_9")."""
    import numpy as np
    import onnx
    from onnx import TensorProto as T, helper, numpy_helper

    nodes = [
        helper.make_node("Cast", ["input"], ["x16"], name="cast_in", to=T.FLOAT16),
        helper.make_node("Mul", ["x16", "two"], ["scaled16"], name="scale16"),
        helper.make_node("Cast", ["scaled16"], ["scaled32"], name="up", to=T.FLOAT),
        helper.make_node("ReduceMean", ["scaled32"], ["pooled32"], name="mean32", axes=[2, 3], keepdims=0),
        helper.make_node("Softmax", ["pooled32"], ["probs32"], name="softmax32", axis=1),
        helper.make_node("ArgMax", ["probs32"], ["index"], name="argmax32", axis=1, keepdims=0),
        helper.make_node("Greater", ["probs32", "half"], ["confident"], name="gt32"),
        helper.make_node("Cast", ["probs32"], ["probs16"], name="down", to=T.FLOAT16),
        helper.make_node("Relu", ["probs16"], ["relu16"], name="mean32_9"),
        helper.make_node("Cast", ["relu16"], ["logits"], name="out", to=T.FLOAT),
    ]
    graph = helper.make_graph(
        nodes, "islands", [helper.make_tensor_value_info("input", T.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", T.FLOAT, [1, 3]), helper.make_tensor_value_info("index", T.INT64, [1]),
         helper.make_tensor_value_info("confident", T.BOOL, [1, 3])],
        [numpy_helper.from_array(np.array(2, np.float16), "two"), numpy_helper.from_array(np.array(0.5, np.float32), "half")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


# The stand-in parser names layers as onnx-tensorrt does; ReduceMean and Softmax get a second layer ("_<n>").
ISLAND_LAYERS = ["mean32", "mean32_0", "softmax32", "softmax32_1", "argmax32", "gt32"]
FLOAT_OUTPUTS = [("mean32", 0, "FLOAT"), ("mean32_0", 0, "FLOAT"), ("softmax32", 0, "FLOAT"), ("softmax32_1", 0, "FLOAT")]


@pytest.mark.parametrize("version,dla,constrained", [
    ("8.5", None, True), ("8.6", None, True), ("10.3", 0, True),  # weakly typed: FP16 flag + constraints
    ("10.3", None, False), ("10.13", None, False), ("11.4", None, False),  # strongly typed: types come from the ONNX
])
def test_fp32_islands_are_kept_fp32_on_weakly_typed_builds(version, dla, constrained, tmp_path):
    path = _fp16_graph_with_islands(str(tmp_path / "islands.onnx"))
    trt, facts = _build(version, path, tmp_path, precision="fp16", dla_core=dla)
    layers = [args[0] for args in _calls(trt, "ILayer.precision")]
    assert layers == (ISLAND_LAYERS if constrained else [])
    assert set(args[1] for args in _calls(trt, "ILayer.precision")) <= {"FLOAT"}
    assert _calls(trt, "ILayer.set_output_type") == (FLOAT_OUTPUTS if constrained else [])
    assert ("OBEY_PRECISION_CONSTRAINTS" in _calls(trt, "IBuilderConfig.set_flag")) is constrained
    assert facts["fp32_layers"] == (ISLAND_LAYERS if constrained else [])


def test_int8_builds_need_no_precision_constraints(tmp_path):
    path = _fp16_graph_with_islands(str(tmp_path / "islands.onnx"))
    trt, facts = _build("8.6", path, tmp_path, precision="int8")
    assert _calls(trt, "IBuilderConfig.set_flag") == ["INT8"] and _calls(trt, "ILayer.precision") == []


@pytest.mark.slow
def test_cmal_fp16_islands_are_found_in_the_real_converter_output(tmp_path):
    """CMAL-Net's box/crop arithmetic, as our FP16 converter leaves it, gets FP32 constraints (8.6)."""
    import onnx
    import torch

    from fgvc_edge.engine.layer_precision import tensor_types
    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model
    from fgvc_edge.precision import convert_fp16

    torch.manual_seed(0)
    fp32 = export_onnx(create_model("cmal_resnet18", num_classes=4, input_size=64), str(tmp_path / "c.onnx")).path
    fp16 = convert_fp16(fp32, cache_dir=str(tmp_path / "c16")).path
    trt, facts = _build("8.6", fp16, tmp_path, precision="fp16")
    proto, types = onnx.load(fp16), tensor_types(onnx.load(fp16))
    by_name = {node.name: node for node in proto.graph.node}
    constrained = {name for name, _ in _calls(trt, "ILayer.precision")}
    ops = {by_name[name].op_type for name in constrained}
    assert {"ReduceMax", "ArgMax", "Resize", "ReduceMin"} <= ops and "Conv" not in ops and "Cast" not in ops
    for name in constrained:  # every constrained node computes on FP32 tensors only
        node = by_name[name]
        assert all(types[t] != onnx.TensorProto.FLOAT16 for t in list(node.input) + list(node.output) if t)
    assert "OBEY_PRECISION_CONSTRAINTS" in facts["builder_flags"] and len(constrained) == len(facts["fp32_layers"])


@pytest.mark.parametrize("switch,message", [
    ("parse", r"cannot parse .*\(2 error\(s\), first: In node 3 .*stand-in parse failure\)$"),
    ("build", "failed to build"),
    ("add_optimization_profile", r"rejected the batch profile 1/2/4"),
])
@pytest.mark.parametrize("version", ["8.5", "10.3", "11.4"])
def test_failed_tensorrt_calls_stop_the_build_in_one_line(switch, message, version, tiny_onnx, tmp_path):
    with pytest.raises(FgvcError, match=message) as info:
        _build(version, tiny_onnx["dynamic"], tmp_path, fail={switch}, profile=BatchProfile(1, 2, 4))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "m.engine").exists() and os.listdir(tmp_path) == []


def _instancenorm_onnx(path):
    import numpy as np
    import onnx
    from onnx import TensorProto as T, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("InstanceNormalization", ["input", "scale", "bias"], ["logits"], name="norm")], "norm",
        [helper.make_tensor_value_info("input", T.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", T.FLOAT, [1, 3, 4, 4])],
        [numpy_helper.from_array(np.ones(3, np.float32), "scale"), numpy_helper.from_array(np.zeros(3, np.float32), "bias")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("version", ["8.6", "10.3", "11.4"])
@pytest.mark.parametrize("compatible", [True, False])
def test_version_compatible_instancenorm_uses_the_native_layer(version, compatible, tmp_path):
    path = _instancenorm_onnx(str(tmp_path / "norm.onnx"))
    trt, facts = _build(version, path, tmp_path, version_compatible=compatible)
    assert _calls(trt, "OnnxParser.set_flag") == (["NATIVE_INSTANCENORM"] if compatible else [])
    assert facts["parser_flags"] == (["NATIVE_INSTANCENORM"] if compatible else [])


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
    "IBuilderConfig.get_timing_cache": 0, "ITimingCache.combine": 2, "INetworkDefinition.get_layer": 1,
    "ILayer.get_output": 1,
}
# Calls made on some versions only: NATIVE_INSTANCENORM (8.6+), per-layer output types (weakly typed builds).
OUR_CALLS_ON = {
    "OnnxParser.set_flag": (1, ("8.6", "10.3", "10.13", "11.4")),
    "ILayer.set_output_type": (2, ("8.5", "8.6", "10.3", "10.13")),
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
    ours = dict(OUR_CALLS, **{call: count for call, (count, versions) in OUR_CALLS_ON.items() if version in versions})
    for call, count in ours.items():
        overloads = signatures[call]
        assert overloads, call
        assert any(low <= count <= high for low, high in map(_arity, overloads)), (version, call, overloads)
