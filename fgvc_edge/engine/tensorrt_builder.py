"""Typed ONNX → raw TensorRT engine, for TensorRT 8.5 through 11.x (see shared/TENSORRT.md).

One contract for every version: precision lives in the ONNX (FP16-typed graph, or INT8 Q/DQ), and the
builder only adds the version-specific switches where they still exist:

| TensorRT | network creation | builder flags for the typed ONNX |
|---|---|---|
| 8.5 / 8.6 (JetPack 5, 6.0) | ``EXPLICIT_BATCH`` (weakly typed) | ``FP16`` (+ ``OBEY_PRECISION_CONSTRAINTS``) for FP16, ``INT8`` for Q/DQ |
| 10.x (JetPack 6.1–7, desktop) | ``STRONGLY_TYPED`` — types come from the ONNX | none |
| 11.x | no flag: networks are always strongly typed | none (FP16/INT8/EXPLICIT_BATCH are gone) |

FP16 on a weakly typed network: the FP16 flag lets TensorRT run *any* layer in FP16, the FP32 islands our
converter kept included; those layers get ``precision``/``set_output_type`` FLOAT and the build gets
``OBEY_PRECISION_CONSTRAINTS`` (engine/layer_precision.py). INT8 needs no such constraint: with ``INT8``
alone TensorRT has no FP16 kernels to choose, so the layers outside Q/DQ pairs stay FP32.

INT8 on TensorRT ≥ 10: the layers outside Q/DQ pairs run in the ONNX's type, FP32. We do not convert them
to FP16 (ModelOpt's default) because (1) opset 17, which TensorRT 8.5/8.6 parse, allows only FP32 Q/DQ
scales, so an FP16 body would need Cast pairs around every Q/DQ or a second opset-19 ONNX; (2) in our
classifiers every Conv, Linear head and residual Add is quantized, and what stays unquantized is pooling
and the attention-crop glue (CAM products, thresholds, crop coordinates and resampling) — small in time
and the part FP16 hurts most. On 8.5/8.6 we set only ``INT8`` for the same numerics on every version.

DLA (Jetson Xavier/Orin): layers default to the DLA core with ``GPU_FALLBACK``; DLA runs only FP16/INT8 and
fixed shapes. Per version, as NVIDIA documents it:

- 8.5 / 8.6 / 10.0–10.7: DLA is driven by the precision flags, so a DLA build on 10.x stays weakly typed
  with the flags 10.x still has (and the FP32-island constraints above; those layers fall back to the GPU).
- 10.8 and later 10.x, 11.0–11.4.0: no DLA on Jetson ("TensorRT 10.7 was the last 10.x release that
  supported DLA"; "DLA was unavailable in TensorRT 11.0 through 11.3 … 11.4.0 supported DLA only on
  Windows on ARM" — TensorRT 11.4.1 docs, Working with DLA).
- 11.4.1+: Jetson AGX Orin with JetPack 7.2.2 or later; "DLA builds … use strongly typed networks.
  Precision is determined by network tensor types instead of the former per-precision builder flags",
  and "GPU fallback behaves as it did in TensorRT 10.x" (TensorRT 11.4.1 release notes; Strongly Typed
  Networks for DLA). So: no precision flags, ``GPU_FALLBACK``, the FP16/Q-DQ ONNX as it is.

Every TensorRT call that reports failure by its return value is checked, as Polygraphy's backend/trt does:
the parse (with the parser's errors), ``add_optimization_profile`` (−1), ``set_timing_cache`` (False: the
cache was made elsewhere; engine/timing_cache.py) and ``build_serialized_network`` (None).

Only attributes present in each version's real API are touched (tests/engine checks this against the
attribute sets of the real 8.6/10.3/10.13/11.4 modules and of the 8.5.2 binding sources).
"""
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from fgvc_edge._io import atomic_path, sha256_file
from fgvc_edge.contract.limits import MAX_BATCH
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
        if not 1 <= self.min <= self.opt <= self.max <= MAX_BATCH:
            raise UserInputError("batch profile needs 1 <= min <= opt <= max <= {}, got {}/{}/{}".format(
                MAX_BATCH, self.min, self.opt, self.max))

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


Version = Tuple[int, ...]
# The first TensorRT 11 with DLA on Jetson (AGX Orin, JetPack 7.2.2+), and the last 10.x with DLA.
DLA_11 = (11, 4, 1)
LAST_DLA_10 = (10, 7)


def trt_version(trt: Any) -> Version:
    """(major, minor, patch) of the installed TensorRT."""
    parts = [int(p) for p in str(trt.__version__).split(".")[:3] if p.isdigit()]
    return tuple(parts + [0] * (3 - len(parts)))


def strongly_typed(version: Version, settings: TensorRTSettings) -> bool:
    """Whether the network is strongly typed (precision from the ONNX) — see the module docstring."""
    if version[0] >= 11:
        return True
    return version[0] == 10 and settings.dla_core is None


def check_settings(version: Version, settings: TensorRTSettings) -> None:
    """Refuse (one line) what this TensorRT or the hardware path cannot do, before any work."""
    if settings.precision not in PRECISIONS:
        raise UserInputError("precision must be one of {}, not {!r}".format(PRECISIONS, settings.precision))
    if settings.version_compatible and version < (8, 6):
        raise UserInputError("--version-compatible needs TensorRT >= 8.6 (this is {}.{})".format(*version))
    if settings.dla_core is not None:
        _check_dla(version, settings)


def _check_dla(version: Version, settings: TensorRTSettings) -> None:
    if version[0] == 10 and version[:2] > LAST_DLA_10 or version[0] == 11 and version < DLA_11:
        raise UserInputError(
            "--dla-core: TensorRT {} has no DLA on Jetson (DLA: up to 10.7, then 11.4.1+ on AGX Orin with "
            "JetPack 7.2.2+)".format(".".join(map(str, version))))
    if settings.precision == "fp32":
        raise UserInputError("DLA runs FP16 or INT8 only: add --fp16 or --int8 to --dla-core")
    if not settings.profile.is_fixed:
        raise UserInputError("DLA needs a fixed batch: use --batch N with --dla-core")
    if settings.version_compatible:
        raise UserInputError("--version-compatible engines cannot run on a DLA")


def network_flags(trt: Any, version: Version, settings: TensorRTSettings) -> Tuple[int, List[str]]:
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


def builder_flag_names(version: Version, settings: TensorRTSettings, constrained: bool = False) -> List[str]:
    """Builder flags; ``constrained``: layers carry FP32 precision constraints that must be obeyed."""
    names = []
    if not strongly_typed(version, settings):
        names += {"fp32": [], "fp16": ["FP16"], "int8": ["INT8"]}[settings.precision]
        if constrained:
            names.append("OBEY_PRECISION_CONSTRAINTS")
    if settings.dla_core is not None:
        names.append("GPU_FALLBACK")
    if settings.version_compatible:
        names.append("VERSION_COMPATIBLE")
    return names


def parser_flag_names(settings: TensorRTSettings, op_types: List[str]) -> List[str]:
    """A version-compatible engine cannot carry the InstanceNormalization plugin: use the native layer."""
    if settings.version_compatible and "InstanceNormalization" in op_types:
        return ["NATIVE_INSTANCENORM"]
    return []


def graph_facts(onnx_path: str) -> Dict[str, Any]:
    """Input name/shape, op types, node names and FP32 islands of the ONNX graph."""
    import onnx

    from fgvc_edge.engine.layer_precision import fp32_nodes

    proto = onnx.load(onnx_path, load_external_data=False)
    initializers = {i.name for i in proto.graph.initializer}
    graph_input = [i for i in proto.graph.input if i.name not in initializers][0]
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
            for d in graph_input.type.tensor_type.shape.dim]
    return {"input_name": graph_input.name, "input_shape": dims,
            "op_types": sorted({n.op_type for n in proto.graph.node}),
            "node_names": [n.name for n in proto.graph.node], "fp32_nodes": fp32_nodes(proto)}


def build_engine(
    onnx_path: str,
    engine_path: str,
    settings: TensorRTSettings,
    *,
    trt: Any,
    gpu: GpuInfo,
) -> Dict[str, Any]:
    """Build ``engine_path`` (raw serialized engine, nothing prepended) from a typed ONNX; return the facts."""
    from fgvc_edge.engine.layer_precision import keep_fp32
    from fgvc_edge.engine.timing_cache import attach_timing_cache, save_timing_cache

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
    parser_flags = parser_flag_names(settings, facts["op_types"])
    # The parser owns the weights the network points to: it must live until the engine is built.
    parser = _parse(trt, network, logger, onnx_path, parser_flags)

    fp32_layers: List[str] = []
    if settings.precision == "fp16" and not strongly_typed(version, settings):
        fp32_layers = keep_fp32(trt, network, facts["fp32_nodes"], facts["node_names"])
    config = builder.create_builder_config()
    flag_names = builder_flag_names(version, settings, constrained=bool(fp32_layers))
    for name in flag_names:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if settings.workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gib * (1 << 30)))
    if settings.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(settings.dla_core)
    if facts["input_shape"][0] == -1:
        # A dynamic batch axis needs an optimization profile, even when one batch size is wanted.
        _add_profile(builder, config, network, settings.profile, trt.__version__)
    cache_accepted = attach_timing_cache(config, settings.timing_cache, trt.__version__)

    serialized = builder.build_serialized_network(network, config)
    del parser
    if serialized is None:
        raise FgvcError("TensorRT {} failed to build {} (see its log above)".format(trt.__version__, onnx_path))
    with atomic_path(engine_path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(memoryview(serialized))
    if settings.timing_cache:
        save_timing_cache(config, settings.timing_cache, merge=cache_accepted)
    return {
        "format": "tensorrt",
        "precision": settings.precision,
        "tensorrt_version": str(trt.__version__),
        "gpu": gpu.to_dict(),
        "batch_profile": settings.profile.to_dict(),
        "strongly_typed": strongly_typed(version, settings),
        "network_flags": net_flag_names,
        "builder_flags": flag_names,
        "parser_flags": parser_flags,
        "fp32_layers": fp32_layers,
        "plugins": uses_plugins,
        "dla_core": settings.dla_core,
        "version_compatible": settings.version_compatible,
        "workspace_gib": settings.workspace_gib,
        "source_onnx_sha256": sha256_file(onnx_path),
        "sha256": sha256_file(engine_path),
    }


def _parse(trt: Any, network: Any, logger: Any, onnx_path: str, flags: List[str]) -> Any:
    parser = trt.OnnxParser(network, logger)
    for name in flags:
        parser.set_flag(getattr(trt.OnnxParserFlag, name))
    if not parser.parse_from_file(os.path.abspath(onnx_path)):
        errors = [str(parser.get_error(i)).strip() for i in range(parser.num_errors)]
        first = errors[0].splitlines()[0] if errors and errors[0] else "no error recorded"
        raise FgvcError("TensorRT {} cannot parse {} ({} error(s), first: {})".format(
            trt.__version__, onnx_path, len(errors), first))
    return parser


def _check_profile(shape: List[int], profile: BatchProfile, onnx_path: str) -> None:
    batch = shape[0]
    if batch != -1 and not (profile.is_fixed and profile.min == batch):
        raise UserInputError(
            "{} has a fixed batch of {}; build with --batch {} or start from a dynamic-batch ONNX".format(
                onnx_path, batch, batch
            )
        )


def _add_profile(builder: Any, config: Any, network: Any, profile: BatchProfile, version: str) -> None:
    tensor = network.get_input(0)
    rest = tuple(tensor.shape)[1:]
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(tensor.name, (profile.min,) + rest, (profile.opt,) + rest, (profile.max,) + rest)
    if config.add_optimization_profile(opt_profile) < 0:
        raise FgvcError("TensorRT {} rejected the batch profile {}/{}/{} for input {} {}".format(
            version, profile.min, profile.opt, profile.max, tensor.name, tuple(tensor.shape)))
