"""Typed ONNX → raw TensorRT engine, for TensorRT 8.5 through 11.x (see shared/TENSORRT.md).

One contract for every version: precision lives in the ONNX (FP16-typed graph, or INT8 Q/DQ), and the
builder only adds the version-specific switches where they still exist:

| TensorRT | network creation | builder flags for the typed ONNX |
|---|---|---|
| 8.5 / 8.6 (JetPack 5, 6.0) | ``EXPLICIT_BATCH`` (weakly typed) | ``FP16`` for FP16, ``INT8`` for Q/DQ |
| 10.x (JetPack 6.1–7, desktop) | ``STRONGLY_TYPED`` — types come from the ONNX | none |
| 11.x | no flag: networks are always strongly typed | none (FP16/INT8/EXPLICIT_BATCH are gone) |

INT8 on TensorRT ≥ 10: the layers outside Q/DQ pairs run in the ONNX's type, FP32. We do not convert them
to FP16 (ModelOpt's default) because (1) opset 17, which TensorRT 8.5/8.6 parse, allows only FP32 Q/DQ
scales, so an FP16 body would need Cast pairs around every Q/DQ or a second opset-19 ONNX; (2) in our
classifiers every Conv, Linear head and residual Add is quantized, and what stays unquantized is pooling
and the attention-crop glue (CAM products, thresholds, crop coordinates and resampling) — small in time
and the part FP16 hurts most. On 8.5/8.6 we set only ``INT8`` for the same numerics on every version.

DLA (Xavier/Orin, JetPack 5/6): layers default to the DLA core with ``GPU_FALLBACK``. DLA runs only FP16/INT8
and fixed shapes, and is driven by the precision flags, so a DLA build on 10.x stays weakly typed with
the flags 10.x still has; TensorRT 11 has neither those flags nor a Jetson with a DLA (Thor has none).

Only attributes present in each version's real API are touched (tests/engine checks this against the
attribute sets of the real 8.6/10.3/10.13/11.4 modules and a documented 8.5 set).
"""
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from fgvc_edge._io import atomic_path, sha256_file
from fgvc_edge.errors import FgvcError, UserInputError

# ONNX ops whose TensorRT implementation lives in the plugin library (libnvinfer_plugin).
PLUGIN_OPS = frozenset(
    {"RoiAlign", "NonMaxSuppression", "InstanceNormalization", "GroupNormalization"}
)
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes an engine accepts (TensorRT optimization profile): ``min ≤ opt ≤ max``."""

    min: int = 1
    opt: int = 1
    max: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise UserInputError(
                "batch profile needs 1 <= min <= opt <= max, got {}/{}/{}".format(self.min, self.opt, self.max)
            )

    @classmethod
    def fixed(cls, batch: int) -> "BatchProfile":
        return cls(batch, batch, batch)

    @property
    def is_fixed(self) -> bool:
        return self.min == self.max

    @property
    def label(self) -> str:
        return "b{}".format(self.min) if self.is_fixed else "bdyn"

    def to_dict(self) -> Dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str

    def to_dict(self) -> Dict[str, str]:
        return {"name": self.name, "compute_capability": self.compute_capability}


@dataclass(frozen=True)
class TensorRTSettings:
    precision: str = "fp32"
    profile: BatchProfile = BatchProfile()
    workspace_gib: Optional[float] = None
    timing_cache: Optional[str] = None
    dla_core: Optional[int] = None
    version_compatible: bool = False


def trt_version(trt: Any) -> Tuple[int, int]:
    parts = str(trt.__version__).split(".")
    return int(parts[0]), int(parts[1])


def strongly_typed(version: Tuple[int, int], settings: TensorRTSettings) -> bool:
    """Whether the network is strongly typed (precision from the ONNX) — see the table above."""
    if version[0] >= 11:
        return True
    return version[0] == 10 and settings.dla_core is None


def check_settings(version: Tuple[int, int], settings: TensorRTSettings) -> None:
    """Refuse (one line) what this TensorRT or the hardware path cannot do, before any work."""
    if settings.precision not in PRECISIONS:
        raise UserInputError("precision must be one of {}, not {!r}".format(PRECISIONS, settings.precision))
    if settings.version_compatible and version < (8, 6):
        raise UserInputError("--version-compatible needs TensorRT >= 8.6 (this is {}.{})".format(*version))
    if settings.dla_core is not None:
        if settings.precision == "fp32":
            raise UserInputError("DLA runs FP16 or INT8 only: add --fp16 or --int8 to --dla-core")
        if not settings.profile.is_fixed:
            raise UserInputError("DLA needs a fixed batch: use --batch N with --dla-core")
        if version[0] >= 11:
            raise UserInputError("--dla-core: TensorRT 11 has no DLA path (no Jetson with a DLA ships it)")
        if settings.version_compatible:
            raise UserInputError("--version-compatible engines cannot run on a DLA")


def network_flags(trt: Any, version: Tuple[int, int], settings: TensorRTSettings) -> Tuple[int, List[str]]:
    """The ``create_network`` bit mask and the names of the flags in it."""
    if version[0] < 10:
        names = ["EXPLICIT_BATCH"]
    elif version[0] == 10 and strongly_typed(version, settings):
        names = ["STRONGLY_TYPED"]
    else:
        names = []  # 10.x weakly typed (DLA) needs none; 11.x networks are always strongly typed
    mask = 0
    for name in names:
        mask |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    return mask, names


def builder_flag_names(version: Tuple[int, int], settings: TensorRTSettings) -> List[str]:
    names = []
    if not strongly_typed(version, settings):
        names += {"fp32": [], "fp16": ["FP16"], "int8": ["INT8"]}[settings.precision]
    if settings.dla_core is not None:
        names.append("GPU_FALLBACK")
    if settings.version_compatible:
        names.append("VERSION_COMPATIBLE")
    return names


def graph_facts(onnx_path: str) -> Dict[str, Any]:
    """Input name/shape and op types of the ONNX graph (for profiles and plugin needs)."""
    import onnx

    proto = onnx.load(onnx_path, load_external_data=False)
    initializers = {i.name for i in proto.graph.initializer}
    graph_input = [i for i in proto.graph.input if i.name not in initializers][0]
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
            for d in graph_input.type.tensor_type.shape.dim]
    return {"input_name": graph_input.name, "input_shape": dims, "op_types": sorted({n.op_type for n in proto.graph.node})}


def build_engine(
    onnx_path: str,
    engine_path: str,
    settings: TensorRTSettings,
    *,
    trt: Any,
    gpu: GpuInfo,
) -> Dict[str, Any]:
    """Build ``engine_path`` (raw serialized engine, nothing prepended) from a typed ONNX; return the facts."""
    version = trt_version(trt)
    check_settings(version, settings)
    facts = graph_facts(onnx_path)
    _check_profile(facts["input_shape"], settings.profile, onnx_path)

    logger = trt.Logger(trt.Logger.WARNING)
    uses_plugins = bool(PLUGIN_OPS.intersection(facts["op_types"]))
    if uses_plugins:
        trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    mask, net_flag_names = network_flags(trt, version, settings)
    network = builder.create_network(mask)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.path.abspath(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise FgvcError("TensorRT {} cannot parse {}: {}".format(trt.__version__, onnx_path, errors[0] if errors else "?"))

    config = builder.create_builder_config()
    flag_names = builder_flag_names(version, settings)
    for name in flag_names:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if settings.workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gib * (1 << 30)))
    if settings.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(settings.dla_core)
    if facts["input_shape"][0] == -1:
        # A dynamic batch axis needs an optimization profile, even when one batch size is wanted.
        _add_profile(builder, config, network, settings.profile)
    cache = _load_timing_cache(config, settings.timing_cache)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise FgvcError("TensorRT {} failed to build {} (see its log above)".format(trt.__version__, onnx_path))
    with atomic_path(engine_path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(memoryview(serialized))
    if settings.timing_cache:
        _save_timing_cache(cache, settings.timing_cache)
    return {
        "format": "tensorrt",
        "precision": settings.precision,
        "tensorrt_version": str(trt.__version__),
        "gpu": gpu.to_dict(),
        "batch_profile": settings.profile.to_dict(),
        "strongly_typed": strongly_typed(version, settings),
        "network_flags": net_flag_names,
        "builder_flags": flag_names,
        "plugins": uses_plugins,
        "dla_core": settings.dla_core,
        "version_compatible": settings.version_compatible,
        "workspace_gib": settings.workspace_gib,
        "source_onnx_sha256": sha256_file(onnx_path),
        "sha256": sha256_file(engine_path),
    }


def _check_profile(shape: List[int], profile: BatchProfile, onnx_path: str) -> None:
    batch = shape[0]
    if batch != -1 and not (profile.is_fixed and profile.min == batch):
        raise UserInputError(
            "{} has a fixed batch of {}; build with --batch {} or start from a dynamic-batch ONNX".format(
                onnx_path, batch, batch
            )
        )


def _add_profile(builder: Any, config: Any, network: Any, profile: BatchProfile) -> None:
    tensor = network.get_input(0)
    rest = tuple(tensor.shape)[1:]
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(tensor.name, (profile.min,) + rest, (profile.opt,) + rest, (profile.max,) + rest)
    config.add_optimization_profile(opt_profile)


def _load_timing_cache(config: Any, path: Optional[str]) -> Any:
    """Attach a timing cache (empty, or read from ``path``); mismatching caches are rejected, not trusted."""
    data = b""
    if path and os.path.isfile(path):
        with open(path, "rb") as fh:
            data = fh.read()
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)
    return cache


def _save_timing_cache(cache: Any, path: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(memoryview(cache.serialize()))
