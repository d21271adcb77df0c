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

ImageSource = Union[str, Sequence[ImageLike]]


@dataclass
class CalibrationResult(TypedOnnx):
    cache_path: str = ""


# Bumped when float_nodes() or the graph preparation changes, so cached INT8 models quantized under older
# rules are not reused.
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
    model_sha256: str, images: Sequence[ImageLike], preprocess: Dict[str, Any], method: str, count: int, target: str
) -> str:
    ort = require("onnxruntime", "onnxruntime")
    return digest(
        {
            "model": model_sha256,
            "images": describe_images(images),
            "preprocess": preprocess,
            "method": method,
            "count": count,
            "target": target,
            "onnxruntime": ort.__version__,
            "float_rules": FLOAT_RULES_REVISION,
        }
    )


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
) -> CalibrationResult:
    """Quantize ``onnx_path`` to INT8 Q/DQ calibrated on ``data`` (a folder, or e.g. SyntheticImages).

    The result lives in ``cache_dir`` under its content key and is copied to ``output`` when given.
    An unchanged model, image set, preprocessing, method, count and target reuse it (unless ``force``).
    """
    settings = quantizer_settings(target, method)
    if output:
        check_output_file(output, sidecar_path(output))
    proto = load_onnx(onnx_path)
    record = source_record(onnx_path, proto)
    if record.get("precision") not in (None, "fp32"):
        raise UserInputError("{} is already {}; calibrate the FP32 ONNX".format(onnx_path, record.get("precision")))
    images = select_images(data, num_images) if isinstance(data, str) else data
    preprocess = record_preprocess(record)
    model_sha = sha256_file(onnx_path)
    key = calibration_key(model_sha, images, preprocess.to_dict(), method, len(images), target)
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    cache_path = os.path.join(cache_dir, "{}-int8-{}-{}.onnx".format(stem, target, key[:16]))

    # One calibration per cache entry at a time: a second process waits, then reuses the first one's result.
    with _entry_lock(cache_path):
        cached = None if force else cached_record(cache_path, key)
        hit = cached is not None
        if cached is None:
            quantization = dict(method=method, target=target, num_images=len(images), cache_key=key)
            quantized, cached = _quantize(onnx_path, proto, record, images, settings, quantization, on_batch)
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
        # quantize_static is given the graph, not the file: with a path it writes (and deletes)
        # `<stem>-inferred.onnx` beside it, which concurrent calibrations or a read-only folder would trip on.
        prepared = unshared_for_int8(proto, options["nodes_to_exclude"], options["op_types_to_quantize"])
        # ORT's histogram collector prints to stdout and its quantizer logs a pre-processing hint on the root
        # logger (our graphs are already onnxsim-simplified with BatchNorm folded); the CLI draws its own bar.
        stage = library_stage("INT8 quantization (onnxruntime.quantization)")
        with contextlib.redirect_stdout(io.StringIO()), _root_warnings_muted(), stage:
            quant.quantize_static(prepared, quantized, stream, **options)
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
