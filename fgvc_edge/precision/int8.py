"""INT8 post-training quantization: an FP32 ONNX + calibration images → a Q/DQ ONNX, cached by content hash.

Quantizer: ``onnxruntime.quantization.quantize_static`` (QDQ format). It is maintained with ONNX Runtime,
writes the standard QuantizeLinear/DequantizeLinear pairs that TensorRT's ONNX parser reads as explicit
quantization (the only INT8 path TensorRT 11 keeps), and its calibrators reduce activations to ranges or
histograms as they go. Two forms, because the fastest ONNX Runtime CPU kernels and TensorRT want different
types:

- ``tensorrt``: INT8 activations and per-channel INT8 weights, symmetric, zero points 0, biases left in
  float (TensorRT's Q/DQ rules: signed, symmetric; it fuses the float bias itself).
- ``onnxruntime``: UINT8 activations (asymmetric) and per-channel INT8 weights — the u8s8 kernels
  ONNX Runtime runs fastest on x86/ARM CPUs (s8s8 runs ~3× slower here, see shared/TENSORRT.md).

In both, attention arithmetic that reuses weights or multiplies two activations stays float
(``float_nodes``): it decides crop boxes, and ORT's per-channel quantizer mishandles it.

``latency_aware`` (ONNX Runtime form only) also keeps in float every node whose INT8 kernel is not faster on
this machine, decided from per-node profiles of the FP32 and the INT8 graph (:mod:`.latency`); the mixed
graph is kept only if it is faster as a whole, and the sidecar records what was measured and chosen. The
second quantization reuses the first one's activation ranges (ORT's calibration cache).

Memory is bounded whatever the image count: images are preprocessed one batch at a time (ImageStream), and
collection runs in strides (``CalibStridedMinMax``, which ``quantize_static`` honours for every method):
after each stride the calibrator folds the stride's activations into per-tensor min/max (MinMax) or
histograms (Entropy/Percentile, ``HistogramCollector.merge_histogram``) and drops them. Without strides
the histogram calibrators keep every image's activations until the end. The stride is sized so one
stride's activations stay under ``COLLECT_BUDGET_BYTES``.
"""
import contextlib
import io
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from fgvc_edge._io import check_output_file, private_tempdir, sha256_file
from fgvc_edge.caches import CALIBRATION_CACHE_DIR
from fgvc_edge.contract.sidecar import cached_record, digest, sidecar_path
from fgvc_edge.errors import UserInputError, library_stage, require
from fgvc_edge.precision._artifact import (
    TypedOnnx,
    compare_outputs,
    copy_artifact,
    graph_io,
    load_onnx,
    record_preprocess,
    save_typed_onnx,
    source_record,
)
from fgvc_edge.precision.data import ImageStream, SyntheticImages, select_images
from fgvc_edge.precision.graph import remove_dead_nodes, unshare_initializers
from fgvc_edge.contract.preprocess import ImageLike

TARGETS = ("tensorrt", "onnxruntime")
METHODS = ("minmax", "entropy", "percentile")
DEFAULT_NUM_IMAGES = 512
DEFAULT_CACHE_DIR = CALIBRATION_CACHE_DIR
# Activations of one collection stride (×3 for the copies ORT's histogram code makes) stay below this.
COLLECT_BUDGET_BYTES = 1 << 30
# Calibration images re-run through FP32 and INT8 to report agreement in the sidecar.
CHECK_IMAGES = 8
# --latency-aware keeps a kind of node in float only if the whole graph gets this much faster (noise margin).
LATENCY_MARGIN = 0.03

ImageSource = Union[str, Sequence[ImageLike]]


@dataclass
class CalibrationResult(TypedOnnx):
    cache_path: str = ""


# Bumped when float_nodes() or the graph rewrites before quantization change, so cached INT8 models quantized
# under older rules are not reused. 3: standalone BatchNorm → depthwise 1×1 conv (onnxruntime form).
FLOAT_RULES_REVISION = 3


def quantizer_settings(target: str, method: str) -> Dict[str, Any]:
    """Arguments of ``quantize_static`` for ``target`` (types, symmetry, per-channel, bias handling)."""
    quant = require("onnxruntime.quantization", "onnxruntime")
    if target not in TARGETS:
        raise UserInputError("--target must be one of {}, not {!r}".format(", ".join(TARGETS), target))
    if method not in METHODS:
        raise UserInputError("--method must be one of {}, not {!r}".format(", ".join(METHODS), method))
    symmetric = target == "tensorrt"
    extra = {
        "ActivationSymmetric": symmetric,
        "WeightSymmetric": True,
        # Histograms of |x| (percentile) / centred ranges: the symmetric quantizer wants max|x|, not min/max.
        "CalibTensorRangeSymmetric": symmetric,
        # TensorRT fuses float biases into its INT8 convolutions; an INT32 DequantizeLinear would not parse.
        "QuantizeBias": not symmetric,
    }
    return {
        "quant_format": quant.QuantFormat.QDQ,
        "activation_type": quant.QuantType.QInt8 if symmetric else quant.QuantType.QUInt8,
        "weight_type": quant.QuantType.QInt8,
        "per_channel": True,
        "reduce_range": False,
        "calibrate_method": {
            "minmax": quant.CalibrationMethod.MinMax,
            "entropy": quant.CalibrationMethod.Entropy,
            "percentile": quant.CalibrationMethod.Percentile,
        }[method],
        "extra_options": extra,
    }


def describe_images(images: Sequence[ImageLike]) -> Any:
    """What the cache key records of the images: path, size and mtime of each file, or the generator."""
    if isinstance(images, SyntheticImages):
        return images.describe()
    described = []
    for path in images:
        stat = os.stat(str(path))
        described.append([os.path.abspath(str(path)), stat.st_size, stat.st_mtime_ns])
    return described


def calibration_key(
    model_sha256: str, images: Sequence[ImageLike], preprocess: Dict[str, Any], method: str, count: int, target: str,
    latency: Optional[Dict[str, Any]] = None,
) -> str:
    ort = require("onnxruntime", "onnxruntime")
    parts = {
        "model": model_sha256,
        "images": describe_images(images),
        "preprocess": preprocess,
        "method": method,
        "count": count,
        "target": target,
        "onnxruntime": ort.__version__,
        "float_rules": FLOAT_RULES_REVISION,
    }
    if latency:  # a latency-aware choice holds for the machine and thread count it was measured on
        parts["latency_aware"] = latency
    return digest(parts)


def calibrate_onnx(
    onnx_path: str,
    data: ImageSource,
    output: Optional[str] = None,
    *,
    num_images: int = DEFAULT_NUM_IMAGES,
    method: str = "minmax",
    target: str = "tensorrt",
    force: bool = False,
    cache_dir: str = DEFAULT_CACHE_DIR,
    on_batch: Optional[Callable[[int], None]] = None,
    latency_aware: bool = False,
    threads: Optional[int] = None,
) -> CalibrationResult:
    """Quantize ``onnx_path`` to INT8 Q/DQ calibrated on ``data`` (a folder, or e.g. SyntheticImages).

    The result lives in ``cache_dir`` under its content key and is copied to ``output`` when given.
    An unchanged model, image set, preprocessing, method, count and target reuse it (unless ``force``).
    ``latency_aware`` (``target="onnxruntime"``): keep nodes float where INT8 is not faster here, measured
    with ``threads`` intra-op threads (see the module docstring).
    """
    settings = quantizer_settings(target, method)
    if output:
        check_output_file(output, sidecar_path(output))
    if latency_aware and target != "onnxruntime":
        raise UserInputError("--latency-aware profiles ONNX Runtime's CPU kernels: use it with --target onnxruntime")
    latency = {"threads": threads, "cpu": cpu_model()} if latency_aware else None
    proto = load_onnx(onnx_path)
    record = source_record(onnx_path, proto)
    if record.get("precision") not in (None, "fp32"):
        raise UserInputError("{} is already {}; calibrate the FP32 ONNX".format(onnx_path, record.get("precision")))
    images = select_images(data, num_images) if isinstance(data, str) else data
    preprocess = record_preprocess(record)
    model_sha = sha256_file(onnx_path)
    key = calibration_key(model_sha, images, preprocess.to_dict(), method, len(images), target, latency)
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    cache_path = os.path.join(cache_dir, "{}-int8-{}-{}.onnx".format(stem, target, key[:16]))

    # One calibration per cache entry at a time: a second process waits, then reuses the first one's result.
    with _entry_lock(cache_path):
        cached = None if force else cached_record(cache_path, key)
        hit = cached is not None
        if cached is None:
            quantization = dict(method=method, target=target, num_images=len(images), cache_key=key)
            quantized, cached = _quantize(onnx_path, proto, record, images, settings, quantization, on_batch,
                                           latency)
            cached.update({"cache_key": key, "source_onnx_sha256": model_sha})
            cached = save_typed_onnx(quantized, cache_path, cached)
        path = cache_path
        if output and os.path.abspath(output) != os.path.abspath(cache_path):
            copy_artifact(cache_path, output)
            path = output
    return CalibrationResult(path=path, record=cached, cache_hit=hit, cache_path=cache_path)


@contextlib.contextmanager
def _entry_lock(cache_path: str) -> Iterator[None]:
    filelock = require("filelock", "toolkit")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
    except OSError as exc:
        raise UserInputError("cannot write {}: {}".format(cache_path, exc.strerror or exc)) from None
    with filelock.FileLock(cache_path + ".lock"):
        yield


def _quantize(
    onnx_path: str,
    proto: Any,
    record: Dict[str, Any],
    images: Sequence[ImageLike],
    settings: Dict[str, Any],
    quantization: Dict[str, Any],
    on_batch: Optional[Callable[[int], None]],
    latency: Optional[Dict[str, Any]] = None,
) -> Tuple[Any, Dict[str, Any]]:
    quant = require("onnxruntime.quantization", "onnxruntime")
    input_name, _, fixed_batch, _ = graph_io(proto)
    batch = fixed_batch or 1
    if len(images) < batch:
        raise UserInputError("{} has a fixed batch of {}; give at least that many images".format(onnx_path, batch))
    stream = ImageStream(images, record_preprocess(record), input_name, batch=batch, on_batch=on_batch)
    stride = collection_stride(len(stream), activation_bytes(proto, batch))
    options = dict(settings)
    options["extra_options"] = dict(settings["extra_options"], CalibStridedMinMax=stride)
    options["nodes_to_exclude"] = float_nodes(proto, record.get("int8_float_scopes") or ())
    options["op_types_to_quantize"] = quantized_op_types(proto, options["nodes_to_exclude"])
    with private_tempdir("fgvc-calib-") as tmp:
        quantized = os.path.join(tmp, "int8.onnx")
        ranges = os.path.join(tmp, "ranges.json")
        # quantize_static is given the graph, not the file: with a path it writes (and deletes)
        # `<stem>-inferred.onnx` beside it, which concurrent calibrations or a read-only folder would trip on.
        prepared = unshared_for_int8(proto, options["nodes_to_exclude"], options["op_types_to_quantize"])
        if quantization["target"] == "onnxruntime":
            quantization = dict(quantization, batchnorm_as_depthwise_conv=batchnorm_as_depthwise_conv(prepared))
        # ORT's histogram collector prints to stdout and its quantizer logs a pre-processing hint on the root
        # logger (our graphs are already onnxsim-simplified with BatchNorm folded); the CLI draws its own bar.
        stage = library_stage("INT8 quantization (onnxruntime.quantization)")
        with contextlib.redirect_stdout(io.StringIO()), _root_warnings_muted(), stage:
            quant.quantize_static(_copy(prepared), quantized, stream, **_reusing_ranges(ranges), **options)
            if latency is not None:
                quantized, latency_record = _latency_aware(onnx_path, prepared, quantized, stream, ranges, options,
                                                           latency)
                quantization = dict(quantization, latency_aware=latency_record)
        result = load_onnx(quantized)
        # The quantizer folds some constants into its Q/DQ parameters and leaves their Constant nodes behind.
        with library_stage("dead-node cleanup (onnx.utils.Extractor)"):
            remove_dead_nodes(result)
        require("onnx", "toolkit").save(result, quantized)
        if quantization["target"] == "tensorrt":
            check_tensorrt_qdq(result, where="the quantized graph")
        check = check_against_fp32(onnx_path, quantized, stream, CHECK_IMAGES)
    new_record = dict(record)
    new_record.pop("parity", None)
    new_record.update(
        {
            "precision": "int8",
            "quantization": dict(
                quantization,
                quantizer="onnxruntime.quantization.quantize_static {}".format(_ort_version()),
                format="QDQ",
                activation_type=settings["activation_type"].name,
                weight_type=settings["weight_type"].name,
                per_channel=settings["per_channel"],
                activation_symmetric=settings["extra_options"]["ActivationSymmetric"],
                quantize_bias=settings["extra_options"]["QuantizeBias"],
                collection_stride=stride,
                float_nodes=options["nodes_to_exclude"],
                images=images.describe() if isinstance(images, SyntheticImages) else "folder",
            ),
        }
    )
    new_record["int8_check"] = check
    return result, new_record


def batchnorm_as_depthwise_conv(proto: Any) -> int:
    """Rewrite every BatchNormalization left in an (N, C, H, W) graph — one no conv precedes, such as
    DenseNet's pre-activation norm after a Concat — as the 1×1 depthwise conv it equals (weight γ/σ, bias
    β − μγ/σ, names kept). Quantized, a BatchNorm becomes DequantizeLinear → float BN → QuantizeLinear and
    splits ONNX Runtime's NHWC INT8 chain with transposes; the conv stays one INT8 kernel, and its one weight
    per channel quantizes exactly (per-channel scale). DenseNet-121 INT8, ORT CPU: 60.2 → 47.3 ms, the same
    logits after requantization. Returns how many were rewritten."""
    onnx = require("onnx", "toolkit")
    from onnx import helper, numpy_helper

    constants = {init.name: init for init in proto.graph.initializer}
    ranks = {info.name: len(info.type.tensor_type.shape.dim)
             for info in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    ranks.update({info.name: len(info.type.tensor_type.shape.dim) for info in proto.graph.input})
    nodes, converted = [], 0
    for node in proto.graph.node:
        if (node.op_type != "BatchNormalization" or ranks.get(node.input[0]) != 4 or len(node.output) != 1
                or not all(name in constants for name in node.input[1:5])):
            nodes.append(node)
            continue
        gamma, beta, mean, var = (numpy_helper.to_array(constants[name]).astype(np.float64) for name in node.input[1:5])
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + epsilon)
        weight = numpy_helper.from_array(scale.reshape(-1, 1, 1, 1).astype(np.float32), node.name + "/depthwise_weight")
        bias = numpy_helper.from_array((beta - mean * scale).astype(np.float32), node.name + "/depthwise_bias")
        proto.graph.initializer.extend([weight, bias])
        nodes.append(helper.make_node("Conv", [node.input[0], weight.name, bias.name], list(node.output),
                                      name=node.name, group=int(scale.size), kernel_shape=[1, 1]))
        converted += 1
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    unused = [init for init in proto.graph.initializer if init.name not in used]  # the BatchNorms' statistics
    for init in unused:
        proto.graph.initializer.remove(init)
    return converted


@contextlib.contextmanager
def _root_warnings_muted() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def unshared_for_int8(proto: Any, excluded: Sequence[str], op_types: Sequence[str]) -> Any:
    """A copy of ``proto`` where float nodes never read an initializer a quantized node reads.

    The quantizer replaces a quantized weight by its DequantizeLinear output for every reader, so CMAL-Net's
    CAM (float by ``float_nodes``) would multiply the dequantized INT8 head weights: give it its own float
    copy, and TensorRT sees one meaning per weight."""
    onnx = require("onnx", "toolkit")
    floating, quantized = set(excluded), set(op_types)
    prepared = onnx.ModelProto()
    prepared.CopyFrom(proto)
    unshare_initializers(prepared, lambda node: node.op_type in quantized and node.name not in floating)
    return prepared


def quantized_op_types(proto: Any, excluded: Sequence[str]) -> List[str]:
    """ORT's default op types, narrowed to those of nodes that are not excluded: the same quantization, but
    the calibrator no longer collects ranges of tensors only float nodes touch (ACANet: ~1,600 per model)."""
    registry = require("onnxruntime.quantization.registry", "onnxruntime")
    default = set(registry.QLinearOpsRegistry) | set(registry.QDQRegistry)
    skip = set(excluded)
    return sorted({node.op_type for node in proto.graph.node if node.name not in skip} & default)


def float_nodes(proto: Any, scopes: Sequence[str] = ()) -> List[str]:
    """Products that stay in float: the attention arithmetic, not the compute.

    - MatMul/Gemm whose second operand is computed (attention ``QKᵀ``, CMAL-Net's CAM ``W·F``);
    - MatMul/Gather reading a weight that another node also reads (CMAL-Net builds its CAM from its heads'
      Linear weights, ``W4[argmax]·W1``; the heads' own Gemms stay quantized);
    - every node but a Conv under one of ``scopes`` (the export record's ``int8_float_scopes``: modules such
      as ACANet's FCSA whose attention is hundreds of small elementwise ops, and CMAL-Net's crop, whose
      row/column indices and interpolation weights a quantization would move);
    - what is computed from those products up to the next weighted layer (CMAL-Net's map → threshold → box
      → crop grid: pixel coordinates, where INT8 steps of ~0.5 px move the crop), and the view ops
      (Reshape, Transpose, …) that feed only float nodes, which would otherwise hand them a DequantizeLinear.

    With ``per_channel`` ORT quantizes such operands per channel as if they were plain weights, which gives
    invalid graphs (per-axis scales on a gathered row); and these values decide crop boxes, where INT8
    error moves the crop rather than nudging a logit.
    """
    constants = {init.name for init in proto.graph.initializer}
    constants.update(node.output[0] for node in proto.graph.node if node.op_type == "Constant")
    readers: Dict[str, int] = {}
    for node in proto.graph.node:
        for name in set(node.input) & constants:
            readers[name] = readers.get(name, 0) + 1
    chosen = []
    for node in proto.graph.node:
        if node.name and node.op_type != "Conv" and any(node.name.startswith(scope) for scope in scopes):
            chosen.append(node.name)
            continue
        if not node.name or node.op_type not in ("MatMul", "Gemm", "Gather"):
            continue
        computed = node.op_type != "Gather" and node.input[1] not in constants
        shared = node.op_type != "Gemm" and any(readers.get(name, 0) > 1 for name in node.input if name in constants)
        if computed or shared:
            chosen.append(node.name)
    products = set(chosen) - {n.name for n in proto.graph.node if any(n.name.startswith(s) for s in scopes)}
    chosen += [name for name in _derived_from(proto, products, constants) if name not in chosen]
    return chosen + [name for name in _float_views(proto, set(chosen)) if name not in chosen]


# Ops that carry learned weights: a float region ends where its values enter one (CMAL-Net's crop enters the
# backbone's first Conv, which quantizes it as any image).
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


# Ops that only move or reshape data: a quantized one between a tensor and a float node would hand the float
# node a DequantizeLinear output (CMAL-Net's CAM reads its expert map through a Reshape).
VIEW_OPS = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze")


def _float_views(proto: Any, floating: set) -> List[str]:
    """View ops whose every reader is float (transitively), in graph order."""
    readers: Dict[str, List[str]] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.name)
    outputs = {out.name for out in proto.graph.output}
    views: set = set()
    for node in reversed(proto.graph.node):
        users = [user for out in node.output for user in readers.get(out, [])]
        if (node.name and node.op_type in VIEW_OPS and users and not outputs.intersection(node.output)
                and all(user in floating or user in views for user in users)):
            views.add(node.name)
    return [node.name for node in proto.graph.node if node.name in views]


def _derived_from(proto: Any, sources: set, constants: set) -> List[str]:
    """Nodes computed from the outputs of ``sources`` up to (not into) the next weighted layer, in graph order."""
    region: set = set()
    tainted = {out for node in proto.graph.node if node.name in sources for out in node.output}
    for node in proto.graph.node:
        if node.name in sources or not tainted.intersection(node.input):
            continue
        weighted = node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in constants
        if weighted or not node.name:
            continue
        region.add(node.name)
        tainted.update(node.output)
    return [node.name for node in proto.graph.node if node.name in region]


def _latency_aware(onnx_path: str, prepared: Any, quantized: str, stream: ImageStream, ranges: str,
                   options: Dict[str, Any], latency: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """Keep in float, kind by kind, the compute groups the per-node profile finds no faster in INT8, each kind
    only if the whole graph gets faster; ``options["nodes_to_exclude"]`` is updated to the graph returned.

    Kinds (depthwise convs, convs on 1×1 maps, …) are tried together because ONNX Runtime's layout passes
    (NCHWc) treat a lone float conv among INT8 ones differently from the FP32 graph it was profiled in: a float
    depthwise conv between INT8 convs ran ~9× slower than in the FP32 graph (MobileNetV3, measured).
    """
    quant = require("onnxruntime.quantization", "onnxruntime")
    from fgvc_edge.precision import latency as measure

    threads = latency["threads"]
    fp32_proto, int8_proto = load_onnx(onnx_path), load_onnx(quantized)
    excluded = set(options["nodes_to_exclude"])
    candidates = [name for name in measure.quantized_nodes(int8_proto) if name not in excluded]
    slower = measure.slower_in_int8(fp32_proto, measure.profile_kernels(onnx_path, threads), int8_proto,
                                    measure.profile_kernels(quantized, threads), candidates)
    shapes = measure.tensor_shapes(fp32_proto)
    nodes = {node.name: node for node in fp32_proto.graph.node}
    kinds: Dict[str, List[str]] = {}
    for name, figures in slower.items():
        kinds.setdefault(measure.group_kind(nodes[figures["group"]], shapes), []).append(name)
    record: Dict[str, Any] = dict(latency, tried=[], kept_float=[])
    best, kept = quantized, list(options["nodes_to_exclude"])
    for index, (kind, members) in enumerate(sorted(kinds.items(), key=lambda kv: -len(kv[1]))):
        trial = os.path.join(os.path.dirname(quantized), "mixed-{}.onnx".format(index))
        quant.quantize_static(_copy(prepared), trial, stream, **_reusing_ranges(ranges),
                              **dict(options, nodes_to_exclude=kept + sorted(members)))
        best_ms, trial_ms = measure.median_ms([best, trial], threads)
        faster = trial_ms < best_ms * (1 - LATENCY_MARGIN)
        record["tried"].append({"kind": kind, "nodes": len(members), "before_ms": round(best_ms, 3),
                                "float_ms": round(trial_ms, 3), "kept_float": faster})
        if faster:
            best, kept = trial, kept + sorted(members)
            record["kept_float"].extend(sorted(members))
    options["nodes_to_exclude"] = kept
    return best, record


def _copy(proto: Any) -> Any:
    """A copy for a call that may change the graph it is given (each quantization starts from the same one)."""
    copy = require("onnx", "toolkit").ModelProto()
    copy.CopyFrom(proto)
    return copy


def _reusing_ranges(path: str) -> Dict[str, Any]:
    """``quantize_static``'s activation-range cache (onnxruntime >= 1.2x); older versions calibrate again."""
    import inspect

    quant = require("onnxruntime.quantization", "onnxruntime")
    if "calibration_cache_path" in inspect.signature(quant.quantize_static).parameters:
        return {"calibration_cache_path": path}
    return {}


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else platform) and core count: what a latency profile holds for."""
    import platform

    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    return "{} ({} cores)".format(name, os.cpu_count())


def _ort_version() -> str:
    return require("onnxruntime", "onnxruntime").__version__


def activation_bytes(proto: Any, batch: int) -> int:
    """Bytes of every float tensor the graph computes for one batch (what calibration collects)."""
    onnx = require("onnx", "toolkit")
    inferred = onnx.shape_inference.infer_shapes(proto)
    total = 0
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor = info.type.tensor_type
        if tensor.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        numel = 1
        for dim in tensor.shape.dim:
            numel *= dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else batch
        total += numel * 4
    return total


def collection_stride(num_batches: int, bytes_per_batch: int, budget: int = COLLECT_BUDGET_BYTES) -> int:
    """Largest divisor of ``num_batches`` whose activations (×3 for ORT's copies) fit in ``budget``."""
    cap = max(1, budget // max(3 * bytes_per_batch, 1))
    return max(d for d in range(1, min(cap, num_batches) + 1) if num_batches % d == 0)


def check_against_fp32(fp32_path: str, int8_path: str, stream: ImageStream, count: int) -> Dict[str, float]:
    """FP32 vs INT8 logits on the first ``count`` calibration batches (ONNX Runtime, CPU)."""
    ort = require("onnxruntime", "onnxruntime")
    from fgvc_edge.runtime.onnx_runner import session_options

    with library_stage("ONNX Runtime on the INT8 graph"):
        sessions = [
            ort.InferenceSession(p, sess_options=session_options(), providers=["CPUExecutionProvider"])
            for p in (fp32_path, int8_path)
        ]
        stream.on_batch = None
        stream.set_range(0, min(count, len(stream)))
        references, candidates = [], []
        feed = stream.get_next()
        while feed is not None:
            references.append(sessions[0].run(None, feed)[0])
            candidates.append(sessions[1].run(None, feed)[0])
            feed = stream.get_next()
    return compare_outputs(np.concatenate(references), np.concatenate(candidates))


def qdq_violations(proto: Any) -> List[str]:
    """Every QuantizeLinear/DequantizeLinear that TensorRT would reject: not INT8, or a non-zero zero point."""
    onnx = require("onnx", "toolkit")
    from onnx import numpy_helper

    constants = {init.name: init for init in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = node.attribute[0].t
    problems = []
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or node.input[2] not in constants:
            problems.append("{} {} has no constant zero point".format(node.op_type, node.name))
            continue
        zero_point = constants[node.input[2]]
        if zero_point.data_type != onnx.TensorProto.INT8:
            problems.append("{} {} is {}, not INT8".format(
                node.op_type, node.name, onnx.TensorProto.DataType.Name(zero_point.data_type)))
        elif np.any(numpy_helper.to_array(zero_point) != 0):
            problems.append("{} {} has a non-zero zero point".format(node.op_type, node.name))
    return problems


def check_tensorrt_qdq(proto: Any, where: str = "the graph") -> None:
    problems = qdq_violations(proto)
    if problems:
        raise UserInputError(
            "{} is not TensorRT-form Q/DQ ({} problem(s), first: {}); calibrate with --target tensorrt".format(
                where, len(problems), problems[0]
            )
        )


def is_quantized(proto: Any) -> bool:
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in proto.graph.node)
