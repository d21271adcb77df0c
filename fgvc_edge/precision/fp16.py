"""FP16: an FP16-typed ONNX with FP32 inputs/outputs, numerically sensitive ops kept in FP32.

Converter: onnxconverter-common's ``convert_float_to_float16`` (maintained by the ONNX project; the light
equivalent of NVIDIA ModelOpt's AutoCast, which TensorRT 10/11 strongly typed builds are meant to consume).
``keep_io_types=True`` keeps the runner's FP32 contract. Blocked ops stay FP32 behind Cast pairs:
exponentials/logs/powers and reductions overflow or lose precision in FP16 (max 65504, 11-bit mantissa),
and the CAM/box/crop glue of attention models (ArgMax/TopK, thresholds, Floor/Round, Where, RoiAlign,
GridSample, Range, CumSum) computes pixel coordinates, where FP16's spacing of 0.25 px at 448 would move
crop borders. Short sums (≤ 256 terms, e.g. ACANet's per-head q·k) stay FP16: kept FP32 they cost two
Casts each, 800 in ACANet-18, for no measurable gain (FP16 parity 4.8e-4 either way). Initializers that an
FP32-kept node shares with an FP16 node are copied first (``unshared_for_fp16``).
Blocking op types leaves the Mul/Add/Sub between them in FP16, so a model also names whole
modules that stay FP32 (the export record's ``fp32_scopes``, e.g. CMAL-Net's crop): every node there is kept.

The result is checked on CPU with ONNX Runtime against the FP32 graph on the same inputs; relative error,
cosine and top-1 agreement go into the sidecar. ONNX Runtime's CPU provider has FP16 kernels for only some
ops and upcasts around the rest, so this measures FP16 storage/rounding of weights and activations, not
TensorRT's FP16 tactics (the `gpu` tests compare a real engine).
"""
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fgvc_edge._io import sha256_file
from fgvc_edge.contract.sidecar import cached_record, digest
from fgvc_edge.errors import FgvcError, UserInputError, library_stage, require
from fgvc_edge.precision.graph import unshare_initializers
from fgvc_edge.precision._artifact import (
    TypedOnnx,
    compare_outputs,
    graph_io,
    load_onnx,
    save_typed_onnx,
    source_record,
)

SENSITIVE_OPS = (
    "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Erf",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "ReduceMax", "ReduceMin",
    "LpNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
    "ArgMax", "ArgMin", "TopK", "RoiAlign", "GridSample", "Range", "CumSum", "NonZero",
    # Box/mask arithmetic: thresholds, rounding to pixels, selections.
    "Floor", "Ceil", "Round", "Where", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Equal",
)
# A conversion whose outputs drift further than this from FP32 on plain inputs is broken (overflow, NaN),
# not merely rounded; it is refused instead of written.
MAX_REL_ERROR = 5e-2
CHECK_SAMPLES = 4
# Sums of at most this many terms run in FP16 (see long_sums).
FP16_SUM_MAX_TERMS = 256
# Bumped when the conversion changes for the same input, so cached FP16 files made under older rules are redone.
# 3: FP32 scopes kept whole, no FP16 round trips between FP32-kept nodes (#15).
FP16_RULES_REVISION = 3


def op_block_list() -> List[str]:
    float16 = require("onnxconverter_common.float16", "toolkit")
    return sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(SENSITIVE_OPS))


def long_sums(proto: Any) -> List[str]:
    """ReduceSum nodes adding more than ``FP16_SUM_MAX_TERMS`` values, or an unknown number: they stay FP32.

    A short sum (ACANet's q·k over one head's 16–128 channels, 400 of them in ACANet-18) loses little in FP16,
    and kept FP32 it costs two Casts per node; a long one (a spatial or 1024-wide sum) stays FP32. An unnamed
    long sum cannot be blocked by name, so then every ReduceSum stays FP32 (``None``)."""
    onnx = require("onnx", "toolkit")
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {info.name: [d.dim_value if d.HasField("dim_value") else 0 for d in info.type.tensor_type.shape.dim]
              for info in list(inferred.graph.value_info) + list(inferred.graph.input)}
    constants = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    long = []
    for node in proto.graph.node:
        if node.op_type != "ReduceSum":
            continue
        shape = shapes.get(node.input[0]) or [0]
        axes = constants.get(node.input[1]) if len(node.input) > 1 and node.input[1] else range(len(shape))
        terms = int(np.prod([shape[int(a)] for a in np.ravel(axes)])) if axes is not None else 0
        if not 0 < terms <= FP16_SUM_MAX_TERMS:
            long.append(node.name)
    return long


def convert_fp16(onnx_path: str, output: Optional[str] = None, *, cache_dir: str = "calibration",
                 force: bool = False) -> TypedOnnx:
    """Write the FP16 form of ``onnx_path`` (cached by its content in ``cache_dir``, or at ``output``)."""
    float16 = require("onnxconverter_common.float16", "toolkit")
    proto = load_onnx(onnx_path)
    record = source_record(onnx_path, proto)
    if record.get("precision") not in (None, "fp32"):
        raise UserInputError("{} is already {}; convert the FP32 ONNX".format(onnx_path, record.get("precision")))
    with library_stage("FP16 shape inference (onnx)"):
        blocked, fp32_sums = fp16_blocking(proto)
    source_sha = sha256_file(onnx_path)
    key = digest({"model": source_sha, "fp16_block_list": blocked, "keep_io_types": True,
                  "fp16_rules": FP16_RULES_REVISION, "fp16_sum_max_terms": FP16_SUM_MAX_TERMS,
                  "fp32_scopes": record.get("fp32_scopes") or []})
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    path = output or os.path.join(cache_dir, "{}-fp16-{}.onnx".format(stem, key[:16]))
    cached = None if force else cached_record(path, key)
    if cached is not None:
        return TypedOnnx(path=path, record=cached, cache_hit=True)
    kept = fp32_sums + scope_nodes(proto, record.get("fp32_scopes") or ())
    with warnings.catch_warnings(), library_stage("FP16 conversion (onnxconverter-common)"):
        # It warns once per weight below FP16's range that it clamps to ±1e-7; the check below measures the effect.
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(
            unshared_for_fp16(proto, blocked, kept), keep_io_types=True, op_block_list=blocked,
            node_block_list=float_casts(proto) + kept,
        )
    drop_fp16_round_trips(converted)
    new_record = dict(record)
    new_record.pop("parity", None)
    new_record.update(
        {
            "precision": "fp16",
            "fp16": {"converter": "onnxconverter-common convert_float_to_float16", "keep_io_types": True,
                     "op_block_list": blocked, "sum_max_terms": FP16_SUM_MAX_TERMS,
                     "fp32_sums": len(fp32_sums)},
            "fp16_check": check_fp16(proto, converted, seed=0),
            "cache_key": key,
            "source_onnx_sha256": source_sha,
        }
    )
    if not new_record["fp16_check"]["rel_error"] <= MAX_REL_ERROR:
        raise FgvcError(
            "the FP16 graph of {} disagrees with FP32 (relative error {:.2e} > {:.0e}); keep FP32 or block more "
            "ops".format(onnx_path, new_record["fp16_check"]["rel_error"], MAX_REL_ERROR)
        )
    return TypedOnnx(path=path, record=save_typed_onnx(converted, path, new_record), cache_hit=False)


def fp16_blocking(proto: Any) -> Tuple[List[str], List[str]]:
    """(op types, ReduceSum node names) the conversion keeps FP32: the sensitive ops, and of the sums only the
    long ones (``long_sums``) unless one of those is unnamed."""
    blocked = op_block_list()
    sums = long_sums(proto)
    if "" in sums:
        return blocked, []
    return [op for op in blocked if op != "ReduceSum"], sums


def unshared_for_fp16(proto: Any, blocked: List[str], blocked_nodes: Sequence[str] = ()) -> Any:
    """A copy of ``proto`` where FP32-kept and FP16 nodes never read the same initializer: the converter
    types an initializer FP32 as soon as one blocked node reads it, which leaves an FP32 bias on an FP16
    Conv/Gemm (see :mod:`fgvc_edge.precision.graph`)."""
    onnx = require("onnx", "toolkit")
    kept_float = set(blocked)
    casts = set(float_casts(proto)) | set(blocked_nodes)
    prepared = onnx.ModelProto()
    prepared.CopyFrom(proto)
    unshare_initializers(prepared, lambda node: node.op_type in kept_float or node.name in casts)
    return prepared


def scope_nodes(proto: Any, scopes: Sequence[str]) -> List[str]:
    """Nodes under the export record's ``fp32_scopes`` (modules whose arithmetic is coordinates and weights,
    such as CMAL-Net's crop): every op there stays FP32, not only the op types of the block list."""
    return [node.name for node in proto.graph.node if node.name and any(node.name.startswith(s) for s in scopes)]


def drop_fp16_round_trips(proto: Any) -> None:
    """Let FP32 values reach FP32 nodes unrounded: the converter casts every output of a kept node to FP16 and
    casts it back before the next kept node (within CMAL-Net's crop: 0.25 px steps on positions at 448 px).
    Such a Cast(FP32→FP16) → Cast(→FP32) pair is bypassed and Casts left unread are removed."""
    onnx = require("onnx", "toolkit")
    typed = onnx.shape_inference.infer_shapes(proto)
    fp32 = {v.name for v in list(typed.graph.value_info) + list(typed.graph.input)
            if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    fp32.update(init.name for init in proto.graph.initializer if init.data_type == onnx.TensorProto.FLOAT)
    producers = {name: node for node in proto.graph.node for name in node.output}
    outputs = {o.name for o in proto.graph.output}
    bypass = {}
    for node in proto.graph.node:
        first = producers.get(node.input[0]) if _casts_to(node, onnx.TensorProto.FLOAT) else None
        if first is not None and _casts_to(first, onnx.TensorProto.FLOAT16) and first.input[0] in fp32:
            if node.output[0] not in outputs:
                bypass[node.output[0]] = first.input[0]
    for node in proto.graph.node:
        node.input[:] = [bypass.get(name, name) for name in node.input]
    while True:
        read = {name for node in proto.graph.node for name in node.input} | outputs
        unread = [node for node in proto.graph.node if node.op_type == "Cast" and node.output[0] not in read]
        if not unread:
            break
        for node in unread:
            proto.graph.node.remove(node)
    present = {name for node in proto.graph.node for name in list(node.input) + list(node.output)}
    stale = [info for info in proto.graph.value_info if info.name not in present]
    for info in stale:
        proto.graph.value_info.remove(info)


def _casts_to(node: Any, dtype: int) -> bool:
    return node.op_type == "Cast" and any(a.name == "to" and a.i == dtype for a in node.attribute)


def float_casts(proto: Any) -> List[str]:
    """Cast-to-FP32 nodes, kept as they are: the converter retargets them to FP16 even when their consumers
    stay FP32, leaving a mistyped graph (CMAL-Net's box mask). By name, since blocking the op type would
    also block the Casts the converter inserts, which it then processes again without end."""
    onnx = require("onnx", "toolkit")
    return [
        node.name
        for node in proto.graph.node
        if node.op_type == "Cast" and node.name and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in node.attribute)
    ]


def check_fp16(fp32: Any, fp16: Any, *, seed: int, samples: int = CHECK_SAMPLES) -> Dict[str, float]:
    """ORT CPU outputs of both graphs on the same standard-normal inputs (the export parity inputs)."""
    ort = require("onnxruntime", "onnxruntime")
    from fgvc_edge.runtime.onnx_runner import session_options

    input_name, _, batch, size = graph_io(fp32)
    batch = batch or samples
    rng = np.random.default_rng(seed)
    feeds = [rng.standard_normal((batch, 3, size, size)).astype(np.float32) for _ in range(max(1, samples // batch))]
    outputs = []
    for proto, stage in ((fp32, "ONNX Runtime on the FP32 graph"), (fp16, "ONNX Runtime on the FP16 graph")):
        with library_stage(stage):
            session = ort.InferenceSession(
                proto.SerializeToString(), sess_options=session_options(), providers=["CPUExecutionProvider"]
            )
            outputs.append(np.concatenate([session.run(None, {input_name: x})[0] for x in feeds]).astype(np.float32))
    if not np.all(np.isfinite(outputs[1])):
        return dict(compare_outputs(outputs[0], np.nan_to_num(outputs[1])), rel_error=float("inf"))
    return compare_outputs(outputs[0], outputs[1])
