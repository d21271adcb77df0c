"""``build``: a registry model or an ONNX file → typed ONNX → TensorRT engine, ONNX Runtime deployable or
OpenVINO IR (``target="openvino"``: the FP32 ONNX as an IR, or NNCF's INT8 of it; extra ``openvino``).

Steps, each cached by content so a repeated build redoes nothing that has not changed:
export (the export stage's cache, :mod:`fgvc_edge.export.cache`) → typed ONNX (FP16 conversion keyed by the
FP32 file; INT8 calibration keyed by file + images + preprocessing + method + count + target, under
``calibration/``) → the deliverable. What to build is one :class:`BuildSettings`, constructed alike by the
CLI and the Python API.
"""
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from fgvc_edge._io import check_output_file
from fgvc_edge.caches import CALIBRATION_CACHE_DIR, EXPORT_CACHE_DIR
from fgvc_edge.contract.preprocess import ImageLike
from fgvc_edge.contract.sidecar import read_sidecar, sidecar_path, write_artifact, write_sidecar
from fgvc_edge.engine.tensorrt_builder import BatchProfile, GpuInfo, TensorRTSettings, build_engine, check_settings, trt_version
from fgvc_edge.errors import UserInputError
from fgvc_edge.export.cache import ModelOptions, export_cached
from fgvc_edge.export.naming import artifact_path, refuse_other_source
from fgvc_edge.precision import SyntheticImages, calibrate_onnx, check_tensorrt_qdq, convert_fp16, is_quantized
from fgvc_edge.precision._artifact import copy_artifact, load_onnx, source_record

PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = ("tensorrt", "onnxruntime", "openvino")
INTERMEDIATE_DIR = EXPORT_CACHE_DIR
CALIBRATION_DIR = CALIBRATION_CACHE_DIR
NO_TENSORRT_HINT = "use --target onnxruntime for the CPU deployable"
SYNTHETIC_NOTE = "calibrated on synthetic images: for speed figures only, not accuracy"


@dataclass(frozen=True)
class CalibrationSettings:
    """INT8 calibration: the images (a folder, or a sequence such as SyntheticImages), method and count."""

    data: Union[None, str, Sequence[ImageLike]] = None
    method: str = "minmax"
    num_images: int = 512
    # ONNX Runtime form only: keep nodes float where INT8 is not faster here, profiled at ``threads``.
    latency_aware: bool = False
    threads: Optional[int] = None


@dataclass(frozen=True)
class TensorRTOptions:
    """Engine-only switches (``--target tensorrt``)."""

    workspace_gib: Optional[float] = None
    timing_cache: Optional[str] = None
    dla_core: Optional[int] = None
    version_compatible: bool = False

    def given(self) -> bool:
        return bool(self.dla_core is not None or self.version_compatible or self.timing_cache or self.workspace_gib)


@dataclass(frozen=True)
class BuildSettings:
    """Everything ``build`` needs besides the source and the model options."""

    precision: str = "fp32"
    target: str = "tensorrt"
    profile: BatchProfile = BatchProfile()
    calibration: CalibrationSettings = CalibrationSettings()
    tensorrt: TensorRTOptions = TensorRTOptions()
    intermediate_dir: str = INTERMEDIATE_DIR
    calibration_dir: str = CALIBRATION_DIR

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserInputError("precision must be one of {}, not {!r}".format(", ".join(PRECISIONS), self.precision))
        if self.target not in TARGETS:
            raise UserInputError("--target must be one of {}, not {!r}".format(", ".join(TARGETS), self.target))
        if self.target != "tensorrt" and self.tensorrt.given():
            raise UserInputError("--dla-core/--version-compatible/--timing-cache/--workspace apply to --target tensorrt")
        if self.target == "openvino" and self.precision == "fp16":
            raise UserInputError("--target openvino builds --fp32 or --int8 (NNCF); its CPU plugin does not run FP16")
        if self.target == "openvino" and not self.profile.is_fixed:
            raise UserInputError("--target openvino builds a fixed --batch (OpenVINO compiles static shapes on CPU)")
        if self.calibration.latency_aware and self.target != "onnxruntime":
            raise UserInputError("--latency-aware profiles ONNX Runtime's CPU kernels: use it with --target onnxruntime")

    def tensorrt_settings(self) -> TensorRTSettings:
        options = self.tensorrt
        return TensorRTSettings(self.precision, self.profile, options.workspace_gib, options.timing_cache,
                                options.dla_core, options.version_compatible)


@dataclass
class BuildResult:
    path: str
    record: Dict[str, Any]
    # Intermediate files by stage ("fp32", "fp16", "int8") and the stages reused from the cache.
    intermediates: Dict[str, str] = field(default_factory=dict)
    reused: List[str] = field(default_factory=list)
    extra_files: List[str] = field(default_factory=list)
    # How far the delivered graph is from its reference (rel_error, max_abs_error, top1_agreement, samples,
    # against): FP32 vs PyTorch (the export's parity), FP16/INT8 vs the FP32 ONNX.
    check: Dict[str, Any] = field(default_factory=dict)


def default_output(record: Dict[str, Any], precision: str, profile: BatchProfile, target: str) -> str:
    """``engines/<model>[-<variant>]-<checkpoint or random>-<precision>-<b1|bdyn>.<engine|onnx|xml>``."""
    suffix = {"tensorrt": ".engine", "openvino": ".xml"}.get(target, ".onnx")
    return artifact_path(record.get("model") or "model", record.get("variant"), record.get("checkpoint"), precision,
                         profile.label, suffix)


def build(
    source: str,
    settings: BuildSettings = BuildSettings(),
    *,
    model: ModelOptions = ModelOptions(),
    output: Optional[str] = None,
    on_calib_batch: Optional[Callable[[int], None]] = None,
    force: bool = False,
    on_step: Optional[Callable[[str], None]] = None,
) -> BuildResult:
    """Build ``source`` (registry name or .onnx path) as ``settings`` say; see the module docstring.

    An artifact of another source at ``output`` is replaced only with ``force`` (see export.naming).
    ``on_step`` hears each stage as it starts (export, FP16/INT8, the deliverable); ``on_calib_batch`` the
    number of images of each calibration batch."""
    step = on_step or (lambda text: None)
    trt = gpu = None
    if settings.target == "tensorrt":
        # Fail in a second, before export/calibration, on a machine that cannot build engines.
        from fgvc_edge.runtime.tensorrt_runner import gpu_info, import_tensorrt

        trt, cuda = import_tensorrt(NO_TENSORRT_HINT)
        check_settings(trt_version(trt), settings.tensorrt_settings())
        gpu = GpuInfo(**gpu_info(cuda))

    if output:
        check_output_file(output, sidecar_path(output))
    result = BuildResult(path="", record={})
    if not _is_onnx_file(source):
        step("exporting {} to FP32 ONNX".format(source))
    fp32_path = _fp32_onnx(source, model, settings, result)
    if settings.target == "openvino":
        step("converting to OpenVINO IR" if settings.precision == "fp32" else "quantizing INT8 with NNCF")
        return _build_openvino(fp32_path, settings, output, result, force)
    if settings.precision != "fp32":
        step("converting to FP16" if settings.precision == "fp16" else "calibrating INT8 ({}, {} form)".format(
            settings.calibration.method, settings.target))
    typed = _typed_onnx(fp32_path, settings, result, on_calib_batch)
    record = dict(source_record(typed))
    result.check = quality_check(record, settings.precision)
    if isinstance(settings.calibration.data, SyntheticImages) and settings.precision == "int8":
        record["calibration_note"] = SYNTHETIC_NOTE
    output = output or default_output(record, settings.precision, settings.profile, settings.target)
    refuse_other_source(output, record, force)
    step("writing {}".format(output) if settings.target == "onnxruntime" else "building the TensorRT engine")
    if settings.target == "onnxruntime":
        _deliver_onnx(typed, output, record)
    else:
        _deliver_engine(typed, output, record, settings.tensorrt_settings(), trt, gpu, result)
    result.path, result.record = output, record
    return result


def quality_check(record: Dict[str, Any], precision: str) -> Dict[str, Any]:
    """The typed graph's recorded agreement with its reference (empty when the record has none)."""
    if precision == "fp32":
        figures, against = record.get("parity"), "PyTorch"
    else:
        figures, against = record.get(precision + "_check"), "FP32 ONNX"
    return dict(figures, against=against) if figures else {}


# -- stage 1: FP32 ONNX -----------------------------------------------------------------------------
def _is_onnx_file(source: str) -> bool:
    return source.lower().endswith(".onnx") or os.path.isfile(source)


def _fp32_onnx(source: str, model: ModelOptions, settings: BuildSettings, result: BuildResult) -> str:
    if _is_onnx_file(source):
        if model.given():
            raise UserInputError("{} apply to a model name, not to an ONNX file".format("/".join(model.given())))
        load_onnx(source)  # a clear error for a missing or corrupt file
        result.intermediates["source"] = source
        return source
    profile = settings.profile
    path, reused = export_cached(source, model, batch=profile.min if profile.is_fixed else "dynamic",
                                 label=profile.label, intermediate_dir=settings.intermediate_dir)
    result.intermediates["fp32"] = path
    if reused:
        result.reused.append("fp32")
    return path


# -- stage 2: typed ONNX ----------------------------------------------------------------------------
def _typed_onnx(fp32_path: str, settings: BuildSettings, result: BuildResult,
                on_calib_batch: Optional[Callable[[int], None]]) -> str:
    precision, target, calibration = settings.precision, settings.target, settings.calibration
    proto = load_onnx(fp32_path)
    have = source_record(fp32_path, proto).get("precision") or ("int8" if is_quantized(proto) else "fp32")
    if have == precision:
        if precision == "int8" and target == "tensorrt":
            check_tensorrt_qdq(proto, where=fp32_path)
        return fp32_path
    if have != "fp32":
        raise UserInputError("{} is {}; --{} needs the FP32 ONNX".format(fp32_path, have, precision))
    if precision == "fp16":
        typed = convert_fp16(fp32_path, cache_dir=settings.intermediate_dir)
    else:
        if calibration.data is None:
            raise UserInputError("--int8 needs --calib-data DIR: a folder of images like the ones it will see")
        typed = calibrate_onnx(fp32_path, calibration.data, num_images=calibration.num_images,
                               method=calibration.method, target=target, cache_dir=settings.calibration_dir,
                               on_batch=on_calib_batch, latency_aware=calibration.latency_aware,
                               threads=calibration.threads)
    result.intermediates[precision] = typed.path
    if typed.cache_hit:
        result.reused.append(precision)
    return typed.path


# -- stage 2+3 for OpenVINO: an IR (FP32, or NNCF INT8) -----------------------------------------------
def _build_openvino(fp32_path: str, settings: BuildSettings, output: Optional[str], result: BuildResult,
                    force: bool = False) -> BuildResult:
    """FP32 ONNX → OpenVINO IR: as is, or quantized by NNCF on the calibration images (cached by content)."""
    from fgvc_edge.precision.openvino_ir import quantize_openvino, write_fp32_ir

    record = source_record(fp32_path)
    if record.get("precision") not in (None, "fp32"):
        raise UserInputError("{} is {}; --target openvino needs the FP32 ONNX".format(fp32_path, record["precision"]))
    output = output or default_output(record, settings.precision, settings.profile, "openvino")
    refuse_other_source(output, record, force)
    if settings.precision == "fp32":
        record = write_fp32_ir(fp32_path, output)
    else:
        calibration = settings.calibration
        if calibration.data is None:
            raise UserInputError("--int8 needs --calib-data DIR: a folder of images like the ones it will see")
        typed = quantize_openvino(fp32_path, calibration.data, output, num_images=calibration.num_images,
                                  cache_dir=settings.calibration_dir)
        result.intermediates["int8"] = typed.path
        if typed.cache_hit:
            result.reused.append("int8")
        record = typed.record
        if isinstance(calibration.data, SyntheticImages):
            record = dict(record, calibration_note=SYNTHETIC_NOTE)
            write_sidecar(output, record)  # the IR stays as it is: its sidecar alone gains the note
    result.path, result.record = output, record
    result.check = quality_check(record, settings.precision)
    return result


# -- stage 3: deliverable ---------------------------------------------------------------------------
def _deliver_onnx(typed: str, output: str, record: Dict[str, Any]) -> None:
    record["target"] = "onnxruntime"
    if os.path.abspath(typed) == os.path.abspath(output):
        write_sidecar(output, record)  # the file stays as it is: its sidecar alone gains the target
    else:
        record.update(copy_artifact(typed, output, record))


def _deliver_engine(typed: str, output: str, record: Dict[str, Any], settings: TensorRTSettings, trt: Any,
                    gpu: GpuInfo, result: BuildResult) -> None:
    from fgvc_edge.engine.deepstream import write_deepstream_files

    for onnx_only in ("opset", "simplified", "exporter", "cache_key", "fp16_check", "int8_check", "batch",
                      "input_shape", "sha256", "source_onnx_sha256"):
        record.pop(onnx_only, None)
    record["target"] = "tensorrt"
    # The engine is built into the pair's temporary file, so it and its sidecar appear together.
    record.update(write_artifact(output, lambda tmp: build_engine(typed, tmp, settings, trt=trt, gpu=gpu), record))
    result.extra_files.extend(write_deepstream_files(output, record))


def int8_deployable(
    source: str,
    images: Sequence[ImageLike],
    *,
    model: ModelOptions = ModelOptions(),
    method: str = "minmax",
    batch: int = 1,
    output: Optional[str] = None,
    intermediate_dir: str = INTERMEDIATE_DIR,
    calibration_dir: str = CALIBRATION_DIR,
    latency_aware: bool = False,
    threads: Optional[int] = None,
) -> BuildResult:
    """ONNX Runtime INT8 deployable of a registry model at a fixed ``batch``, calibrated on ``images`` (all of
    them); ``intermediates["fp32"]`` is the FP32 export it was quantized from (same weights)."""
    profile = BatchProfile.fixed(batch)
    fp32, _ = export_cached(source, model, batch=batch, label=profile.label, intermediate_dir=intermediate_dir)
    calibration = CalibrationSettings(images, method, len(images), latency_aware, threads)
    settings = BuildSettings("int8", "onnxruntime", profile, calibration, intermediate_dir=intermediate_dir,
                             calibration_dir=calibration_dir)
    result = build(fp32, settings, output=output)
    result.intermediates["fp32"] = fp32
    return result


def synthetic_int8_deployable(
    source: str,
    *,
    model: ModelOptions = ModelOptions(),
    num_images: int = 32,
    method: str = "minmax",
    batch: int = 1,
    output: Optional[str] = None,
    seed: int = 0,
    intermediate_dir: str = INTERMEDIATE_DIR,
    calibration_dir: str = CALIBRATION_DIR,
) -> BuildResult:
    """ONNX Runtime INT8 deployable of a registry model without a data set, for speed figures only.

    Calibrates on ``num_images`` smooth random images drawn at the size the model's own preprocessing
    resizes to; the sidecar says so (``calibration_note``). Accuracy of such a model means nothing.
    """
    profile = BatchProfile.fixed(batch)
    fp32, _ = export_cached(source, model, batch=batch, label=profile.label, intermediate_dir=intermediate_dir)
    size = int(read_sidecar(fp32)["preprocess"]["resize_size"])
    return int8_deployable(source, SyntheticImages(num_images, size=size, seed=seed), model=model, method=method,
                           batch=batch, output=output, intermediate_dir=intermediate_dir,
                           calibration_dir=calibration_dir)
