"""Latency-aware mixed precision: keep a node in float where its INT8 form is not faster on this machine.

ONNX Runtime's and NNCF's recipes quantize by op type. On a CPU that is not always faster: a depthwise or
narrow grouped conv, a conv on a 1×1 map (MobileNetV3's squeeze-excite), a pre-activation BatchNorm that
cannot be folded (DenseNet), a LayerNorm — each becomes DequantizeLinear → float op → QuantizeLinear, or an
INT8 kernel slower than the float one it replaces. So we measure instead of guessing: ONNX Runtime's per-node
profiler (``SessionOptions.enable_profiling``) runs the FP32 graph and the fully quantized graph on the
target machine; each original node's time is the minimum over the runs of the kernels it became (fused
activations count towards their conv, ``_nchwc`` / ``_token_N`` names are traced back to the node), and an
INT8 node is charged for the QuantizeLinear/DequantizeLinear nodes left on its outputs. A node whose INT8 time
is not below its FP32 time is excluded from quantization (``nodes_to_exclude``). Decisions are taken per compute
group (a Conv/MatMul/Gemm with the activation and residual Add fused into it) and charge a float group the
Q/DQ it adds at its borders. Whether the mixed graph as a whole beats the full INT8 graph is then measured
too (see ``int8.calibrate_onnx``), because removing Q/DQ around one node moves work to its neighbours.
"""
import json
import os
import re
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fgvc_edge.errors import require

PROFILE_RUNS = 12
WARMUP_RUNS = 3
# Ops whose float kernels ONNX Runtime fuses into the preceding Conv/MatMul/Gemm (FusedConv, NCHWc conv):
# their FP32 time is inside that node's.
FUSED_INTO_PRODUCER = ("Relu", "Clip", "Add", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "BatchNormalization")
QDQ_SUFFIXES = ("_QuantizeLinear", "_DequantizeLinear", "_dq", "_q")
_TOKEN = re.compile(r"_token_\d+$")


def profile_kernels(path: str, threads: Optional[int], runs: int = PROFILE_RUNS) -> Dict[str, float]:
    """Per-kernel time in ms (minimum over ``runs``, after warm-up) of ``path`` in ONNX Runtime on this CPU."""
    ort = require("onnxruntime", "onnxruntime")
    from fgvc_edge.runtime.onnx_runner import session_options

    options = session_options(threads)
    with tempfile.TemporaryDirectory(prefix="fgvc-profile-") as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        feed = {i.name: _random_input(i.shape) for i in session.get_inputs()}
        for _ in range(WARMUP_RUNS + runs):
            session.run(None, feed)
        with open(session.end_profiling(), encoding="utf-8") as fh:
            events = json.load(fh)
    times: Dict[str, List[float]] = {}
    for event in events:  # in run order: every kernel once per run
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            times.setdefault(name[: -len("_kernel_time")], []).append(event["dur"] / 1000.0)
    return {name: min(values[WARMUP_RUNS:] or values) for name, values in times.items()}


def _random_input(shape: Sequence[Any]) -> np.ndarray:
    dims = [d if isinstance(d, int) and d > 0 else 1 for d in shape]
    return np.random.default_rng(0).standard_normal(dims).astype(np.float32)


def node_times(proto: Any, kernels: Dict[str, float]) -> Tuple[Dict[str, float], Dict[str, float]]:
    """(time per node of ``proto``, Q/DQ time per tensor of ``proto``) from a profile of it or of its Q/DQ form."""
    names = {node.name for node in proto.graph.node}
    producer = {out: node for node in proto.graph.node for out in node.output}
    per_node: Dict[str, float] = {}
    per_tensor: Dict[str, float] = {}
    for kernel, ms in kernels.items():
        qdq = next((kernel[: -len(s)] for s in QDQ_SUFFIXES if kernel.endswith(s) and kernel[: -len(s)] in producer),
                   None)
        node = _anchor(kernel, names, producer)
        if node is not None:
            per_node[node] = per_node.get(node, 0.0) + ms
        elif qdq is not None:
            per_tensor[qdq] = per_tensor.get(qdq, 0.0) + ms
    return per_node, per_tensor


def _anchor(kernel: str, names: Any, producer: Dict[str, Any]) -> Optional[str]:
    """The original node a profiled kernel runs: its own name, ``<name>_token_N`` (QDQ fusion), or
    ``<output>_nchwc`` (NCHWc conv, named after the last op fused into it — walked back to the conv)."""
    base = _TOKEN.sub("", kernel)
    if base in names:
        return base
    if kernel.endswith("_nchwc") and kernel[: -len("_nchwc")] in producer:
        node = producer[kernel[: -len("_nchwc")]]
        while node.op_type in FUSED_INTO_PRODUCER and node.input and node.input[0] in producer:
            node = producer[node.input[0]]
        return node.name
    return None


COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def compute_groups(proto: Any, fp32_ms: Dict[str, float]) -> Dict[str, List[str]]:
    """Conv/MatMul/Gemm node → itself and the ops ONNX Runtime fused into it in FP32 (no kernel of their own
    in the FP32 profile: the activation, the residual Add). A group is kept in INT8 or in float as a whole."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    groups = {node.name: [node.name] for node in proto.graph.node if node.op_type in COMPUTE_OPS}
    member_of = {name: name for name in groups}
    for node in proto.graph.node:  # topological order: producers first
        if node.name in member_of or node.name in fp32_ms or node.op_type not in FUSED_INTO_PRODUCER:
            continue
        anchors = [member_of.get(producer[i].name) for i in node.input if i in producer]
        anchor = next((a for a in anchors if a), None)
        if anchor:
            groups[anchor].append(node.name)
            member_of[node.name] = anchor
    return groups


def slower_in_int8(fp32_proto: Any, fp32_kernels: Dict[str, float], int8_proto: Any,
                   int8_kernels: Dict[str, float], candidates: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Nodes to keep in float: each compute group whose INT8 time (its kernels + the Q/DQ on its outputs) is not
    below its FP32 time plus the Q/DQ that keeping it float adds (its input dequantized, its output quantized,
    priced at this profile's Q/DQ cost per element). name → {"fp32_ms", "int8_ms"} of its group."""
    fp32, _ = node_times(fp32_proto, fp32_kernels)
    int8, qdq = node_times(int8_proto, int8_kernels)
    sizes = {name: int(np.prod(dims)) for name, dims in tensor_shapes(fp32_proto).items()}
    per_element = sum(qdq.values()) / max(sum(sizes.get(t, 0) for t in qdq), 1)
    nodes = {node.name: node for node in fp32_proto.graph.node}
    allowed = set(candidates)
    slower = {}
    for anchor, members in compute_groups(fp32_proto, fp32).items():
        if anchor not in int8 or anchor not in allowed:
            continue  # not quantized, or no INT8 kernel of its own to compare
        outputs = [out for m in members for out in nodes[m].output]
        int8_ms = sum(int8.get(m, 0.0) for m in members) + sum(qdq.get(out, 0.0) for out in outputs)
        boundary = per_element * (sizes.get(nodes[anchor].input[0], 0) + sizes.get(nodes[members[-1]].output[0], 0))
        if int8_ms >= fp32.get(anchor, 0.0) + boundary:
            figures = {"fp32_ms": round(fp32.get(anchor, 0.0), 4), "int8_ms": round(int8_ms, 4), "group": anchor}
            slower.update({m: figures for m in members if m in allowed})
    return slower


def tensor_shapes(proto: Any) -> Dict[str, List[int]]:
    """Inferred shape of every tensor and initializer (a dynamic dimension taken as 1)."""
    onnx = require("onnx", "toolkit")
    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {init.name: list(init.dims) for init in proto.graph.initializer}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shapes[info.name] = [d.dim_value if d.dim_value > 0 else 1 for d in info.type.tensor_type.shape.dim]
    return shapes


def group_kind(node: Any, shapes: Dict[str, List[int]]) -> str:
    """What a compute group's anchor is, for deciding groups of one kind together: depthwise / grouped conv,
    a conv on a 1×1 map (squeeze-excite), the stem (≤ 4 input channels), other convs by kernel size, MatMul/Gemm."""
    if node.op_type != "Conv":
        return node.op_type
    weight = shapes.get(node.input[1], [0, 0, 0, 0])
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    source = shapes.get(node.input[0], [1, 0, 0, 0])
    if group > 1:
        return "depthwise conv" if weight[1] == 1 else "grouped conv"
    if source[2:] == [1, 1]:
        return "conv on a 1×1 map"
    if weight[1] <= 4:
        return "stem conv"
    return "conv {}×{}".format(weight[2], weight[3])


def quantized_nodes(int8_proto: Any) -> List[str]:
    """Nodes of a Q/DQ graph that read a DequantizeLinear output (they run as INT8 kernels or are fed INT8)."""
    dequantized = {out for node in int8_proto.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [node.name for node in int8_proto.graph.node
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and dequantized & set(node.input)]


def median_ms(paths: Sequence[str], threads: Optional[int], runs: int = PROFILE_RUNS) -> List[float]:
    """Median wall time of one run of each ONNX file (ONNX Runtime, CPU, ``threads``), runs interleaved so
    that load on the machine hits them alike."""
    ort = require("onnxruntime", "onnxruntime")
    from fgvc_edge.runtime.onnx_runner import session_options

    sessions = [ort.InferenceSession(p, sess_options=session_options(threads), providers=["CPUExecutionProvider"])
                for p in paths]
    feeds = [{i.name: _random_input(i.shape) for i in s.get_inputs()} for s in sessions]
    samples: List[List[float]] = [[] for _ in paths]
    for index in range(WARMUP_RUNS + runs):
        for session, feed, taken in zip(sessions, feeds, samples):
            start = time.perf_counter()
            session.run(None, feed)
            if index >= WARMUP_RUNS:
                taken.append(time.perf_counter() - start)
    return [float(np.median(taken) * 1000.0) for taken in samples]
