"""Latency-aware mixed precision: profile names traced back to nodes, groups decided as a whole, the result
recorded in the sidecar and refused where ONNX Runtime's CPU profile means nothing (TensorRT)."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from fgvc_edge.errors import UserInputError
from fgvc_edge.precision import latency


def two_conv_graph():
    """x → conv1 → relu → conv2 (depthwise) → y."""
    w1 = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w1")
    w2 = numpy_helper.from_array(np.ones((8, 1, 3, 3), np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2", group=8, pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w1, w2])
    return helper.make_model(graph)


def test_profile_names_are_traced_back_to_nodes():
    proto = two_conv_graph()
    # FP32: the NCHWc conv is named after the Relu fused into it; layout reorders belong to no node.
    fp32, _ = latency.node_times(proto, {"r1_nchwc": 1.0, "conv2": 0.5, "ReorderInput_token_3": 0.2})
    assert fp32 == {"conv1": 1.0, "conv2": 0.5}
    # INT8: fused QDQ kernels carry _token_N; Q/DQ kernels are charged to the tensor they convert.
    int8, qdq = latency.node_times(proto, {"conv1_token_7": 2.0, "conv2_token_9": 0.3, "y_QuantizeLinear": 0.1})
    assert int8 == {"conv1": 2.0, "conv2": 0.3} and qdq == {"y": 0.1}


def test_slower_groups_are_kept_float_with_their_fused_activation():
    proto = two_conv_graph()
    groups = latency.compute_groups(proto, {"conv1": 1.0, "conv2": 0.5})
    assert groups == {"conv1": ["conv1", "relu1"], "conv2": ["conv2"]}
    slower = latency.slower_in_int8(proto, {"r1_nchwc": 1.0, "conv2": 0.5}, proto,
                                    {"conv1_token_7": 2.0, "conv2_token_9": 0.3}, ["conv1", "relu1", "conv2"])
    assert set(slower) == {"conv1", "relu1"}  # conv2 is faster in INT8 (0.3 < 0.5 ms)
    assert slower["conv1"]["fp32_ms"] == 1.0 and slower["conv1"]["int8_ms"] == 2.0
    shapes = latency.tensor_shapes(proto)
    nodes = {n.name: n for n in proto.graph.node}
    assert latency.group_kind(nodes["conv1"], shapes) == "stem conv"
    assert latency.group_kind(nodes["conv2"], shapes) == "depthwise conv"


def test_latency_aware_is_refused_for_tensorrt(tmp_path):
    from fgvc_edge.precision import calibrate_onnx
    from fgvc_edge.precision.data import SyntheticImages

    with pytest.raises(UserInputError, match="--target onnxruntime"):
        calibrate_onnx(str(tmp_path / "m.onnx"), SyntheticImages(8, size=36), target="tensorrt", latency_aware=True)


def test_latency_aware_calibration_records_what_it_measured(tmp_path):
    import onnx

    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model
    from fgvc_edge.precision import calibrate_onnx
    from fgvc_edge.precision.data import SyntheticImages

    path = export_onnx(create_model("resnet18", num_classes=4, input_size=32), str(tmp_path / "r18.onnx")).path
    kwargs = dict(num_images=8, target="onnxruntime", cache_dir=str(tmp_path / "cache"))
    plain = calibrate_onnx(path, SyntheticImages(8, size=36), **kwargs)
    aware = calibrate_onnx(path, SyntheticImages(8, size=36), latency_aware=True, threads=1, **kwargs)
    assert aware.path != plain.path  # its own cache entry: the choice holds for this machine and thread count
    record = aware.record["quantization"]["latency_aware"]
    assert record["threads"] == 1 and record["cpu"]
    assert all({"kind", "nodes", "before_ms", "float_ms", "kept_float"} <= set(t) for t in record["tried"])
    kept = set(record["kept_float"])
    assert kept <= set(aware.record["quantization"]["float_nodes"])
    graph = onnx.load(aware.path).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    # A node kept float reads no INT8 weights: no DequantizeLinear feeds its weight input.
    assert not any(n.name in kept and n.op_type == "Conv" and n.input[1] in dequantized for n in graph.node)
    assert aware.record["int8_check"]["top1_agreement"] >= 0.5
