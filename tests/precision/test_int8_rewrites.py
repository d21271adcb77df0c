"""Graph rewrites before ONNX Runtime INT8: a standalone BatchNorm becomes the depthwise 1×1 conv it equals."""
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from fgvc_edge.precision.int8 import batchnorm_as_depthwise_conv


def bn(name, source, out, channels, rng):
    stats = [rng.uniform(0.5, 1.5, channels), rng.uniform(-0.5, 0.5, channels), rng.uniform(-1, 1, channels),
             rng.uniform(0.3, 2.0, channels)]
    inits = [numpy_helper.from_array(v.astype(np.float32), "{}.{}".format(name, k))
             for k, v in zip(("weight", "bias", "mean", "var"), stats)]
    node = helper.make_node("BatchNormalization", [source] + [i.name for i in inits], [out], name=name, epsilon=1e-5)
    return node, inits


def densenet_like():
    """concat(x, x²) → BN → Relu (pre-activation, nothing to fold into) and a 2-D BN on the pooled features."""
    rng = np.random.default_rng(0)
    bn4, inits4 = bn("norm1", "cat", "n1", 6, rng)
    bn2, inits2 = bn("norm_vec", "flat", "y", 6, rng)
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["sq"], name="square"),
        helper.make_node("Concat", ["x", "sq"], ["cat"], name="concat", axis=1),
        bn4,
        helper.make_node("Relu", ["n1"], ["r1"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r1"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        bn2,
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])], inits4 + inits2)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(proto, x):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_standalone_batchnorm_becomes_an_equal_depthwise_conv():
    proto = densenet_like()
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 5)).astype(np.float32)
    reference = run(proto, x)
    assert batchnorm_as_depthwise_conv(proto) == 1  # the 2-D BatchNorm is not a conv's input; it stays
    ops = {node.name: node.op_type for node in proto.graph.node}
    assert ops["norm1"] == "Conv" and ops["norm_vec"] == "BatchNormalization"
    conv = next(node for node in proto.graph.node if node.name == "norm1")
    assert next(a.i for a in conv.attribute if a.name == "group") == 6
    assert not {"norm1.weight", "norm1.mean"} & {init.name for init in proto.graph.initializer}
    out = run(proto, x)
    assert np.linalg.norm(out - reference) / np.linalg.norm(reference) < 1e-6
