"""Graph edits the typed forms need before and after their converter: unshared initializers, dead nodes.

Both converters decide per *node* (FP16: blocked op or not; INT8: quantized or float) but store a weight
per *tensor name*. When two nodes of different kinds read one initializer the converter cannot type it
for both: onnxconverter-common leaves an FP32 bias on an FP16 Conv (an invalid graph), and ONNX Runtime's
quantizer gives a float MatMul the DequantizeLinear output of a quantized Gemm's weight. Initializers get
shared in two ways: onnxsim merges equal constants (a fresh model's zero biases and unit LayerNorm weights)
and the TorchScript exporter links equal parameters through ``Identity`` nodes; CMAL-Net's CAM reads its
heads' weights by design. Giving each kind of reader its own copy removes the ambiguity.
"""
from collections import defaultdict
from typing import Any, Callable, Dict, Hashable, List, Tuple

from fgvc_edge.errors import require


def resolve_initializer_identities(proto: Any) -> int:
    """Replace every ``Identity`` of an initializer by an initializer of its own (same values); returns how many.

    An Identity whose output is a graph output stays (the output needs a producing node)."""
    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    outputs = {out.name for out in graph.output}
    resolved = [node for node in graph.node
                if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs]
    for node in resolved:
        copy = graph.initializer.add()
        copy.CopyFrom(initializers[node.input[0]])
        copy.name = node.output[0]
        graph.node.remove(node)
    return len(resolved)


def unshare_initializers(proto: Any, kind: Callable[[Any], Hashable]) -> int:
    """Give each kind of reader (``kind(node)``) of a shared initializer its own copy; returns the copies made.

    Readers of one kind keep sharing (no weight is duplicated for nothing); the first kind met in graph
    order keeps the original name."""
    resolve_initializer_identities(proto)
    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    readers: Dict[str, Dict[Hashable, List[Tuple[Any, int]]]] = defaultdict(dict)
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in initializers:
                readers[name].setdefault(kind(node), []).append((node, index))
    taken = set(initializers) | {name for node in graph.node for name in node.output}
    copies = 0
    for name, by_kind in readers.items():
        for number, uses in enumerate(list(by_kind.values())[1:], 1):
            copy_name = _fresh_name("{}_copy{}".format(name, number), taken)
            copy = graph.initializer.add()
            copy.CopyFrom(initializers[name])
            copy.name = copy_name
            for node, index in uses:
                node.input[index] = copy_name
            copies += 1
    return copies


def _fresh_name(wanted: str, taken: set) -> str:
    name, suffix = wanted, 1
    while name in taken:
        name, suffix = "{}_{}".format(wanted, suffix), suffix + 1
    taken.add(name)
    return name


def remove_dead_nodes(proto: Any) -> int:
    """Drop the nodes and initializers no graph output depends on (onnx's own reachability, ``onnx.utils.
    Extractor``), keeping the model's metadata, names and value infos of what stays; returns nodes removed."""
    utils = require("onnx.utils", "toolkit")
    graph = proto.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    live = utils.Extractor(proto).extract_model(inputs, [o.name for o in graph.output]).graph
    removed = len(graph.node) - len(live.node)
    if removed:
        inner = {info.name for info in graph.value_info}  # the extractor also lists the graph's inputs/outputs
        kept = {"node": list(live.node), "initializer": list(live.initializer),
                "value_info": [info for info in live.value_info if info.name in inner]}
        for field, items in kept.items():
            del getattr(graph, field)[:]
            getattr(graph, field).extend(items)
    return removed
