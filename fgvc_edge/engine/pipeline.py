"""``build``: a registry model or an ONNX file → typed ONNX → TensorRT engine or ONNX Runtime deployable.

Steps, each cached by content so a repeated build redoes nothing that has not changed:
export (registry name → FP32 ONNX, key: model, arguments, weights, batch) → typed ONNX (FP16 conversion
keyed by the FP32 file; INT8 calibration keyed by file + images + preprocessing + method + count + target,
under ``calibration/``) → the deliverable. A random-init model is built under a fixed seed, so its
weights — and cache key — are reproducible.
"""
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from fgvc_edge._io import atomic_path
from fgvc_edge.engine.tensorrt_builder import BatchProfile, GpuInfo, TensorRTSettings, build_engine, check_settings, trt_version
from fgvc_edge.errors import UserInputError
from fgvc_edge.precision import SyntheticImages, calibrate_onnx, check_tensorrt_qdq, convert_fp16, is_quantized
from fgvc_edge.precision._artifact import cached_record, digest, load_onnx, source_record
from fgvc_edge.runtime.preprocess import ImageLike
from fgvc_edge.runtime.sidecar import write_sidecar

PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = ("tensorrt", "onnxruntime")
INTERMEDIATE_DIR = os.path.join("engines", ".cache")
CALIBRATION_DIR = "calibration"
NO_TENSORRT_HINT = "use --target onnxruntime for the CPU deployable"
SYNTHETIC_NOTE = "calibrated on synthetic images: for speed figures only, not accuracy"


@dataclass
class BuildResult:
    path: str
    record: Dict[str, Any]
    # Intermediate files by stage ("fp32", "fp16", "int8") and the stages reused from the cache.
    intermediates: Dict[str, str] = field(default_factory=dict)
    reused: List[str] = field(default_factory=list)
    extra_files: List[str] = field(default_factory=list)


def default_output(record: Dict[str, Any], precision: str, profile: BatchProfile, target: str) -> str:
    stem = record.get("model") or "model"
    if record.get("variant"):
        stem += "-" + str(record["variant"]).replace("+", "_")
    suffix = ".engine" if target == "tensorrt" else ".onnx"
    return os.path.join("engines", "{}-{}-{}{}".format(stem, precision, profile.label, suffix))


def build(
    source: str,
    precision: str,
    *,
    target: str = "tensorrt",
    checkpoint: Optional[str] = None,
    mode: Optional[str] = None,
    num_classes: Optional[int] = None,
    input_size: Optional[int] = None,
    calib_data: Union[None, str, Sequence[ImageLike]] = None,
    calib_method: str = "minmax",
    calib_images: int = 512,
    profile: BatchProfile = BatchProfile(),
    workspace_gib: Optional[float] = None,
    timing_cache: Optional[str] = None,
    dla_core: Optional[int] = None,
    version_compatible: bool = False,
    output: Optional[str] = None,
    intermediate_dir: str = INTERMEDIATE_DIR,
    calibration_dir: str = CALIBRATION_DIR,
    on_calib_batch: Optional[Callable[[int], None]] = None,
) -> BuildResult:
    """Build ``source`` (registry name or .onnx path) at ``precision`` for ``target``; see the module doc."""
    if precision not in PRECISIONS:
        raise UserInputError("precision must be one of {}, not {!r}".format(", ".join(PRECISIONS), precision))
    if target not in TARGETS:
        raise UserInputError("--target must be one of {}, not {!r}".format(", ".join(TARGETS), target))
    settings = TensorRTSettings(precision, profile, workspace_gib, timing_cache, dla_core, version_compatible)
    trt = gpu = None
    if target == "tensorrt":
        # Fail in a second, before export/calibration, on a machine that cannot build engines.
        from fgvc_edge.runtime.tensorrt_runner import gpu_info, import_tensorrt

        trt, cuda = import_tensorrt(NO_TENSORRT_HINT)
        check_settings(trt_version(trt), settings)
        gpu = GpuInfo(**gpu_info(cuda))
    elif dla_core is not None or version_compatible or timing_cache or workspace_gib:
        raise UserInputError("--dla-core/--version-compatible/--timing-cache/--workspace apply to --target tensorrt")

    result = BuildResult(path="", record={})
    fp32_path = _fp32_onnx(source, result, checkpoint=checkpoint, mode=mode, num_classes=num_classes,
                           input_size=input_size, profile=profile, intermediate_dir=intermediate_dir)
    typed = _typed_onnx(fp32_path, precision, target, result, calib_data=calib_data, calib_method=calib_method,
                        calib_images=calib_images, intermediate_dir=intermediate_dir,
                        calibration_dir=calibration_dir, on_calib_batch=on_calib_batch)
    record = dict(source_record(typed))
    if isinstance(calib_data, SyntheticImages) and precision == "int8":
        record["calibration_note"] = SYNTHETIC_NOTE
    output = output or default_output(record, precision, profile, target)
    if target == "onnxruntime":
        _deliver_onnx(typed, output, record)
    else:
        _deliver_engine(typed, output, record, settings, trt, gpu, result)
    result.path, result.record = output, record
    return result


# -- stage 1: FP32 ONNX -----------------------------------------------------------------------------
def _fp32_onnx(source: str, result: BuildResult, *, profile: BatchProfile, intermediate_dir: str,
               **model_options: Any) -> str:
    if source.lower().endswith(".onnx") or os.path.isfile(source):
        given = [name for name, value in model_options.items() if value is not None]
        if given:
            raise UserInputError("--{} apply to a model name, not to an ONNX file".format(
                "/--".join(n.replace("_", "-") for n in given)))
        load_onnx(source)  # a clear error for a missing or corrupt file
        result.intermediates["source"] = source
        return source
    path, reused = export_cached(source, profile=profile, intermediate_dir=intermediate_dir, **model_options)
    result.intermediates["fp32"] = path
    if reused:
        result.reused.append("fp32")
    return path


def export_cached(name: str, *, checkpoint: Optional[str], mode: Optional[str], num_classes: Optional[int],
                  input_size: Optional[int], profile: BatchProfile, intermediate_dir: str) -> Tuple[str, bool]:
    """Export a registry model to FP32 ONNX unless the same model, arguments and weights were exported already."""
    import torch

    from fgvc_edge.export import export_onnx
    from fgvc_edge.export.onnx_export import DEFAULT_OPSET, EXPORT_REVISION
    from fgvc_edge.models import create_model, get_model_config

    config = get_model_config(name)
    kwargs = {}
    if config.variants:
        kwargs["mode"] = mode or config.default_variant
        if kwargs["mode"] not in config.variants:
            raise UserInputError("{} has modes {}, not {!r}".format(name, ", ".join(config.variants), mode))
    elif mode is not None:
        raise UserInputError("{} has no modes; drop --mode".format(name))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random-init builds are reproducible (and so cacheable)
        model = create_model(name, num_classes=num_classes, checkpoint=checkpoint, input_size=input_size, **kwargs)
    batch = profile.min if profile.is_fixed else "dynamic"
    key = digest({"model": name, "args": model.model_args, "num_classes": model.config.num_classes,
                  "input_size": model.config.input_size, "batch": batch, "opset": DEFAULT_OPSET,
                  "weights": _state_digest(model), "checkpoint": str(checkpoint) if checkpoint else None,
                  "torch": torch.__version__, "export_revision": EXPORT_REVISION})
    variant = getattr(model, "variant", None)
    stem = name + ("-" + variant.replace("+", "_") if variant else "")
    path = os.path.join(intermediate_dir, "{}-fp32-{}-{}.onnx".format(stem, profile.label, key[:16]))
    if cached_record(path, key) is not None:
        return path, True
    exported = export_onnx(model, path, batch=batch, checkpoint=checkpoint)
    write_sidecar(path, dict(exported.record, cache_key=key))
    return path, False


def _state_digest(model: Any) -> str:
    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        h.update(key.encode("utf-8"))
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# -- stage 2: typed ONNX ----------------------------------------------------------------------------
def _typed_onnx(fp32_path: str, precision: str, target: str, result: BuildResult, *, calib_data: Any,
                calib_method: str, calib_images: int, intermediate_dir: str, calibration_dir: str,
                on_calib_batch: Optional[Callable[[int], None]]) -> str:
    proto = load_onnx(fp32_path)
    have = source_record(fp32_path, proto).get("precision") or ("int8" if is_quantized(proto) else "fp32")
    if have == precision:
        if precision == "int8" and target == "tensorrt":
            check_tensorrt_qdq(proto, where=fp32_path)
        return fp32_path
    if have != "fp32":
        raise UserInputError("{} is {}; --{} needs the FP32 ONNX".format(fp32_path, have, precision))
    if precision == "fp16":
        typed = convert_fp16(fp32_path, cache_dir=intermediate_dir)
    else:
        if calib_data is None:
            raise UserInputError("--int8 needs --calib-data DIR: a folder of images like the ones it will see")
        typed = calibrate_onnx(fp32_path, calib_data, num_images=calib_images, method=calib_method, target=target,
                               cache_dir=calibration_dir, on_batch=on_calib_batch)
    result.intermediates[precision] = typed.path
    if typed.cache_hit:
        result.reused.append(precision)
    return typed.path


# -- stage 3: deliverable ---------------------------------------------------------------------------
def _deliver_onnx(typed: str, output: str, record: Dict[str, Any]) -> None:
    if os.path.abspath(typed) != os.path.abspath(output):
        with atomic_path(output) as tmp:
            shutil.copyfile(typed, tmp)
    record["target"] = "onnxruntime"
    write_sidecar(output, record)


def _deliver_engine(typed: str, output: str, record: Dict[str, Any], settings: TensorRTSettings, trt: Any,
                    gpu: GpuInfo, result: BuildResult) -> None:
    from fgvc_edge.engine.deepstream import write_deepstream_files

    facts = build_engine(typed, output, settings, trt=trt, gpu=gpu)
    for onnx_only in ("opset", "simplified", "exporter", "cache_key", "fp16_check", "int8_check", "batch",
                      "input_shape", "sha256", "source_onnx_sha256"):
        record.pop(onnx_only, None)
    record.update(facts)
    record["target"] = "tensorrt"
    write_sidecar(output, record)
    result.extra_files.extend(write_deepstream_files(output, record))


def synthetic_int8_deployable(
    model: str,
    *,
    num_images: int = 32,
    method: str = "minmax",
    batch: int = 1,
    input_size: Optional[int] = None,
    mode: Optional[str] = None,
    checkpoint: Optional[str] = None,
    output: Optional[str] = None,
    seed: int = 0,
    **build_options: Any,
) -> BuildResult:
    """ONNX Runtime INT8 deployable of a registry model without a data set, for speed figures only.

    Calibrates on ``num_images`` smooth random images drawn through the model's own preprocessing; the
    sidecar says so (``calibration_note``). Accuracy of such a model means nothing.
    """
    from fgvc_edge.models import get_model_config

    config = get_model_config(model).with_overrides(input_size=input_size)
    images = SyntheticImages(num_images, size=config.preprocess.resize_size, seed=seed)
    return build(model, "int8", target="onnxruntime", checkpoint=checkpoint, mode=mode, input_size=input_size,
                 calib_data=images, calib_method=method, calib_images=num_images, profile=BatchProfile.fixed(batch),
                 output=output, **build_options)
