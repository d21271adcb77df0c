"""FP32 islands of an FP16-typed ONNX, kept FP32 in weakly typed TensorRT builds.

Our FP16 converter (fgvc_edge.precision.fp16) keeps numerically sensitive ops in FP32 behind Cast pairs:
reductions, softmax, exponentials, and CMAL's box/crop arithmetic. A strongly typed network (TensorRT 10
without DLA, 11) runs each layer in its ONNX type. A weakly typed one (8.5/8.6, DLA on 10.x) with
``BuilderFlag.FP16`` set may run any layer in FP16 — those included — unless the layer carries a
precision constraint and ``OBEY_PRECISION_CONSTRAINTS`` is set. So we give every layer parsed from an FP32
island ``precision = FLOAT`` and ``set_output_type(i, FLOAT)`` on its FP32 outputs (Polygraphy's
``--layer-precisions`` / ``--tensor-datatypes`` do the same by hand).

Layers are matched by name: onnx-tensorrt names the layers it creates for a node after the node, adding
``_<n>`` when one node yields several layers (ImporterContext::registerLayer / generateUniqueName). Helper
layers it does not register keep TensorRT's ``(Unnamed Layer* n)`` names and are left to the builder.
"""
import re
from typing import Any, Dict, List, Sequence, Set

# ONNX TensorProto element types that are floating point: FLOAT, FLOAT16, DOUBLE, BFLOAT16.
_FLOAT_TYPES = {1, 10, 11, 16}
_FLOAT32 = 1
# Nodes whose types the parser fixes itself (Cast) or that carry no computation of their own.
_NOT_CONSTRAINED = {"Cast", "Constant", "QuantizeLinear", "DequantizeLinear"}


# Initializers above this size are weights, not shape constants: shape inference needs only their types.
_WEIGHT_BYTES = 1024


def tensor_types(proto: Any) -> Dict[str, int]:
    """Element type of every tensor in the graph (shape inference fills in the intermediates)."""
    import onnx

    light = onnx.ModelProto()
    light.CopyFrom(proto)
    for init in light.graph.initializer:
        if len(init.raw_data) > _WEIGHT_BYTES:
            init.ClearField("raw_data")  # ten times faster inference on a ResNet; types are unchanged
    graph = onnx.shape_inference.infer_shapes(light).graph
    types = {init.name: init.data_type for init in graph.initializer}
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    types[node.output[0]] = attribute.t.data_type
    return types


def fp32_nodes(proto: Any) -> List[str]:
    """Names of the nodes that compute in FP32 in an FP16-typed graph (empty for a graph with no FP16)."""
    types = tensor_types(proto)
    if 10 not in types.values():
        return []  # an FP32 (or Q/DQ) graph: nothing is an island, the builder's FP16 flag is not ours
    islands = []
    for node in proto.graph.node:
        if not node.name or node.op_type in _NOT_CONSTRAINED:
            continue
        floats = [types.get(name) for name in list(node.input) + list(node.output) if name]
        floats = [t for t in floats if t in _FLOAT_TYPES]
        if floats and all(t == _FLOAT32 for t in floats):
            islands.append(node.name)
    return islands


def island_layers(layer_names: Sequence[str], islands: Set[str], node_names: Set[str]) -> List[str]:
    """The layers parsed from island nodes: named like the node, or the node's name plus ``_<n>``."""
    chosen = []
    for name in layer_names:
        base = re.sub(r"_\d+$", "", name)
        if name in islands or (name not in node_names and base in islands):
            chosen.append(name)
    return chosen


def keep_fp32(trt: Any, network: Any, islands: Sequence[str], node_names: Sequence[str]) -> List[str]:
    """Constrain the island layers of ``network`` to FP32; return their names."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    chosen = set(island_layers([layer.name for layer in layers], set(islands), set(node_names)))
    float32 = trt.DataType.FLOAT
    for layer in layers:
        if layer.name not in chosen:
            continue
        layer.precision = float32
        for index in range(layer.num_outputs):
            if layer.get_output(index).dtype == float32:
                layer.set_output_type(index, float32)
    return [layer.name for layer in layers if layer.name in chosen]
