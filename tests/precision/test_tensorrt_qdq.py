"""The TensorRT-form Q/DQ checker fed what TensorRT rejects: a non-zero zero point, a UINT8 Q/DQ."""
import numpy as np
import pytest
from onnx import TensorProto as T, helper, numpy_helper

from fgvc_edge.errors import UserInputError
from fgvc_edge.precision.int8 import check_tensorrt_qdq, qdq_violations


def _qdq_graph(zero_point):
    """input → QuantizeLinear → DequantizeLinear → Relu, with the given zero point (its type sets the Q/DQ's)."""
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "scale", "zero"], ["q"], name="quant"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"], name="dequant"),
        helper.make_node("Relu", ["dq"], ["logits"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("input", T.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", T.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array(0.05, np.float32), "scale"), numpy_helper.from_array(zero_point, "zero")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_symmetric_int8_is_accepted():
    proto = _qdq_graph(np.array(0, np.int8))
    assert qdq_violations(proto) == []
    check_tensorrt_qdq(proto)


@pytest.mark.parametrize("zero_point,problem", [
    (np.array(3, np.int8), "QuantizeLinear quant has a non-zero zero point"),
    (np.array(128, np.uint8), "QuantizeLinear quant is UINT8, not INT8"),
    (np.array(0, np.uint8), "QuantizeLinear quant is UINT8, not INT8"),  # UINT8 even when centred
])
def test_what_tensorrt_rejects_is_refused(zero_point, problem):
    proto = _qdq_graph(zero_point)
    assert qdq_violations(proto)[0] == problem and len(qdq_violations(proto)) == 2  # Q and DQ both
    with pytest.raises(UserInputError, match="m.onnx is not TensorRT-form Q/DQ .2 problem.s., first: {}.; "
                                             "calibrate with --target tensorrt".format(problem)) as info:
        check_tensorrt_qdq(proto, where="m.onnx")
    assert "\n" not in str(info.value)
