"""Graph edits around the converters, on hand-made graphs: unshared initializers, dead nodes, float regions."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxconverter_common import float16

from fgvc_edge.precision.fp16 import FP16_SUM_MAX_TERMS, fp16_blocking, long_sums, op_block_list, unshared_for_fp16
from fgvc_edge.precision.graph import remove_dead_nodes, unshare_initializers
from fgvc_edge.precision.int8 import float_nodes, unshared_for_int8


def _model(nodes, initializers, out_shape=(1, 4)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _layer_norm_sharing_a_zero_bias_with_gemm():
    """Gemm → LayerNormalization → Add reading one zero bias ``b``: the norm and the Add directly (as onnxsim
    leaves a fresh ConvNeXt), the Gemm through an Identity (as the TorchScript exporter links equal tensors)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b"),
             numpy_helper.from_array(np.ones(4, np.float32), "g")]
    nodes = [helper.make_node("Identity", ["b"], ["b_linked"], name="link"),
             helper.make_node("Gemm", ["x", "w", "b_linked"], ["h"], name="fc", transB=1),
             helper.make_node("LayerNormalization", ["h", "g", "b"], ["n"], name="norm"),
             helper.make_node("Add", ["n", "b"], ["y"], name="shift")]
    return _model(nodes, inits)


def _convert(proto):
    return float16.convert_float_to_float16(proto, keep_io_types=True, op_block_list=op_block_list())


def _session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def test_fp16_of_initializers_shared_with_a_float_kept_op_is_invalid_unless_unshared():
    proto = _layer_norm_sharing_a_zero_bias_with_gemm()
    with pytest.raises(Exception, match="Type Error"):
        _session(_convert(proto))  # the converter's own result: FP32 tensors met by FP16 nodes
    x = np.random.default_rng(1).standard_normal((1, 4)).astype(np.float32)
    reference = _session(proto).run(None, {"x": x})[0]
    converted = _session(_convert(unshared_for_fp16(proto, op_block_list()))).run(None, {"x": x})[0]
    assert np.allclose(converted, reference, atol=1e-2)


def test_unsharing_copies_once_per_kind_of_reader_and_resolves_identities():
    proto = _layer_norm_sharing_a_zero_bias_with_gemm()
    copies = unshare_initializers(proto, lambda node: node.op_type == "LayerNormalization")
    nodes = {node.name: node for node in proto.graph.node}
    assert "link" not in nodes and nodes["fc"].input[2] == "b_linked"  # the Identity became an initializer
    assert nodes["norm"].input[2] == "b" and nodes["shift"].input[1] not in ("b", "b_linked")
    assert copies == 1
    values = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    assert len(values) == 5 and not any(values[name].any() for name in ("b", "b_linked", nodes["shift"].input[1]))
    onnx.checker.check_model(proto)


def test_dead_nodes_are_removed_and_the_rest_kept():
    inits = [numpy_helper.from_array(np.ones(4, np.float32), "one")]
    nodes = [helper.make_node("Constant", [], ["unused"], name="dead_constant",
                              value=numpy_helper.from_array(np.zeros(1, np.float32))),
             helper.make_node("Add", ["x", "one"], ["y"], name="live"),
             helper.make_node("Mul", ["x", "x"], ["sq"], name="dead_chain_start"),
             helper.make_node("Neg", ["sq"], ["nobody"], name="dead_chain_end")]
    proto = _model(nodes, inits)
    proto.metadata_props.add(key="fgvc_edge", value="{}")
    assert remove_dead_nodes(proto) == 3
    assert [node.name for node in proto.graph.node] == ["live"]
    assert [p.key for p in proto.metadata_props] == ["fgvc_edge"] and proto.graph.name == "g"
    assert remove_dead_nodes(proto) == 0
    onnx.checker.check_model(proto)


def _cam_graph():
    """A CMAL-like head: a quantizable Gemm reads ``w``; the CAM gathers a row of ``w`` and multiplies the
    reshaped feature map; the map's box (Greater/Where/Concat) builds a crop that enters a Conv."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 4], np.int64), "flat"),
             numpy_helper.from_array(np.array(0.5, np.float32), "t"),
             numpy_helper.from_array(rng.standard_normal((1, 1, 1, 1)).astype(np.float32), "k")]
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["v"], name="pool"),
             helper.make_node("Gemm", ["v", "w"], ["logits"], name="head", transB=1),
             helper.make_node("ArgMax", ["logits"], ["k_idx"], name="pick_class", axis=1, keepdims=0),
             helper.make_node("Gather", ["w", "k_idx"], ["row"], name="cam_row", axis=0),
             helper.make_node("Reshape", ["x", "flat"], ["feat"], name="cam_view"),
             helper.make_node("Transpose", ["feat"], ["feat_t"], name="cam_view_t", perm=[1, 0]),
             helper.make_node("MatMul", ["row", "feat_t"], ["cam"], name="cam"),
             helper.make_node("Greater", ["cam", "t"], ["mask"], name="box_threshold"),
             helper.make_node("Where", ["mask", "cam", "t"], ["box"], name="box_where"),
             helper.make_node("Unsqueeze", ["box", "axes"], ["box4"], name="box_view"),
             helper.make_node("Conv", ["box4", "k"], ["crop_features"], name="crop_conv"),
             helper.make_node("Relu", ["crop_features"], ["y"], name="after_crop")]
    inits.append(numpy_helper.from_array(np.array([0, 1], np.int64), "axes"))
    return _model(nodes, inits, out_shape=(1, 1, 1, 1))


def test_float_region_runs_from_the_cam_to_the_next_weighted_layer():
    chosen = float_nodes(_cam_graph())
    # The CAM reads a weight the head reads too; the box arithmetic computed from it stays float, and so
    # do the views feeding it; the crop's Conv and what follows are quantized like any image's.
    assert set(chosen) == {"cam_row", "cam", "cam_view", "cam_view_t", "box_threshold", "box_where", "box_view"}
    assert "head" not in chosen and "crop_conv" not in chosen and "after_crop" not in chosen and "pool" not in chosen


def test_float_nodes_get_their_own_weights_for_the_quantizer():
    proto = _cam_graph()
    excluded = float_nodes(proto)
    prepared = unshared_for_int8(proto, excluded, ["Gemm", "Conv", "Reshape", "MatMul", "Gather"])
    nodes = {node.name: node for node in prepared.graph.node}
    assert nodes["head"].input[1] == "w" and nodes["cam_row"].input[0] not in ("w", "")
    assert [node.name for node in proto.graph.node if "w" in node.input] == ["head", "cam_row"]  # input untouched


def _sums_graph(channels):
    """x (1×C×2×2) · x summed over C, as ACANet's per-head q·k; C decides whether the sum stays FP16."""
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"], name="product"),
             helper.make_node("ReduceSum", ["sq", "axis"], ["s"], name="sum", keepdims=1),
             helper.make_node("Add", ["s", "s"], ["y"], name="after")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [numpy_helper.from_array(np.array([1], np.int64), "axis")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_short_sums_stay_fp16_and_long_ones_fp32():

    assert long_sums(_sums_graph(16)) == [] and long_sums(_sums_graph(FP16_SUM_MAX_TERMS)) == []
    assert long_sums(_sums_graph(FP16_SUM_MAX_TERMS + 1)) == ["sum"]
    blocked, sums = fp16_blocking(_sums_graph(1024))
    assert "ReduceSum" not in blocked and sums == ["sum"] and "Softmax" in blocked
    for channels, casts in ((16, 2), (1024, 4)):  # the I/O casts, plus a pair around a long sum
        proto = _sums_graph(channels)
        blocked, sums = fp16_blocking(proto)
        converted = float16.convert_float_to_float16(unshared_for_fp16(proto, blocked, sums), keep_io_types=True,
                                                     op_block_list=blocked, node_block_list=sums)
        assert sum(node.op_type == "Cast" for node in converted.graph.node) == casts
        x = np.random.default_rng(0).standard_normal((1, channels, 2, 2)).astype(np.float32)
        assert np.allclose(_session(converted).run(None, {"x": x})[0], _session(proto).run(None, {"x": x})[0],
                           rtol=1e-2)
