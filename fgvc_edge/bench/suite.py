"""``fgvc-edge bench``: params, MACs and per-image latency of models and artifacts, next to the papers.

A model name is measured at each configuration its paper reports (input size, classes, variant), or at its
defaults when no paper gives figures, or at ``--input-size`` when given. PyTorch eager and ONNX Runtime run in
the same process, with the same thread count, each at its best standard settings: eager under
``torch.inference_mode()``; ONNX Runtime with every graph optimisation. An ``.onnx`` path is measured with
ONNX Runtime alone and needs no torch (its params/MACs come from the sidecar written at export).
When a paper row names a baseline (CMAL-Net Table 9 → ResNet50), the baseline is measured in the same run so
the latency ratio ours/baseline can stand next to the paper's.
"""
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from fgvc_edge.bench import papers
from fgvc_edge.bench.timing import PeakRSS, device_name, time_calls
from fgvc_edge.errors import UserInputError, require

RUNTIMES = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "int8")
# Synthetic calibration images for INT8 speed rows of a model name (no data set given): enough for stable
# ranges of a random-init model; the sidecar marks such a deployable as "speed figures only".
SYNTHETIC_CALIBRATION_IMAGES = 16
Row = Dict[str, Any]
Progress = Optional[Callable[[str], None]]


@dataclass
class BenchSettings:
    runtimes: Tuple[str, ...] = RUNTIMES
    # ONNX Runtime precisions for model names (PyTorch eager is FP32 only).
    precisions: Tuple[str, ...] = ("fp32",)
    batches: Tuple[int, ...] = (1,)
    iters: int = 20
    warmup: int = 3
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    input_size: Optional[int] = None
    num_classes: Optional[int] = None
    checkpoint: Optional[str] = None
    mode: Optional[str] = None
    # With a checkpoint whose structure was transformed (pruned, reparameterized): also measure the model
    # before those transforms, in the same run, so the table shows before vs after.
    before: bool = True

    def __post_init__(self) -> None:
        unknown = [r for r in self.runtimes if r not in RUNTIMES]
        if unknown:
            raise UserInputError("unknown runtime(s) {}; choose from {} or none".format(unknown, ", ".join(RUNTIMES)))
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise UserInputError("--precisions takes {}, got {}".format(",".join(PRECISIONS), list(self.precisions)))
        if not self.batches or min(self.batches) < 1:
            raise UserInputError("--batch needs positive sizes, e.g. 1,8")
        if self.iters < 1 or self.warmup < 0 or self.threads < 1:
            raise UserInputError("--iters and --threads must be >= 1, --warmup >= 0")


@dataclass(frozen=True)
class ModelPoint:
    """One configuration of a registered model to measure."""

    model: str
    variant: Optional[str]
    input_size: int
    num_classes: int
    paper_id: Optional[str]
    checkpoint: Optional[str] = None
    # The architecture ``checkpoint`` had before its structure transforms (random weights: speed only).
    before_of: Optional[str] = None


def default_targets() -> List[str]:
    """What `make bench` measures: every registered model a paper gives efficiency figures for."""
    from fgvc_edge.models import get_model_config, list_models

    return [name for name in list_models() if get_model_config(name).paper_rows]


def is_artifact(target: str) -> bool:
    return target.lower().endswith((".onnx", ".engine", ".plan")) or os.path.sep in target


def run_bench(targets: Sequence[str], settings: BenchSettings, progress: Progress = None) -> List[Row]:
    rows: List[Row] = []
    names = [t for t in targets if not is_artifact(t)]
    for target in targets:
        if is_artifact(target):
            rows.extend(bench_artifact(target, settings, progress))
    if names:
        for point in expand_points(names, settings):
            rows.extend(bench_model_point(point, settings, progress))
    add_baseline_ratios(rows)
    add_before_ratios(rows)
    return rows


# -- model names ------------------------------------------------------------------------------------------


def expand_points(names: Sequence[str], settings: BenchSettings) -> List[ModelPoint]:
    """Configurations to measure, baselines of paper rows included, each once, in a stable order."""
    from fgvc_edge.models import get_model_config

    points: List[ModelPoint] = []
    for name in names:
        cfg = get_model_config(name)
        variants = [settings.mode] if settings.mode else list(cfg.variants or [None])
        if settings.mode and settings.mode not in (cfg.variants or ()):
            raise UserInputError("{} has no mode {!r} (modes: {})".format(name, settings.mode, cfg.variants or "none"))
        if settings.checkpoint:
            points.extend(_checkpoint_points(name, variants, settings))
            continue
        if settings.input_size or settings.num_classes or not cfg.paper_rows:
            size = settings.input_size or cfg.input_size
            classes = settings.num_classes or cfg.num_classes
            for variant in variants:
                points.append(ModelPoint(name, variant, size, classes, papers.matching_row(name, variant, size, classes)))
            continue
        for rid in cfg.paper_rows:
            row = papers.paper_row(rid)
            if row["variant"] in variants:
                points.append(ModelPoint(name, row["variant"], row["input_size"], row["num_classes"], rid))
    for point in list(points):
        baseline = point.paper_id and papers.paper_row(point.paper_id).get("baseline")
        if baseline:
            base = papers.paper_row(baseline)
            points.append(ModelPoint(base["model"], base["variant"], base["input_size"], base["num_classes"], baseline))
    unique: List[ModelPoint] = []
    for point in points:
        if point not in unique:
            unique.append(point)
    return unique


def _checkpoint_points(name: str, variants: Sequence[Optional[str]], settings: BenchSettings) -> List[ModelPoint]:
    """A checkpoint is measured at the size and classes it was saved with unless told otherwise; after the
    architecture it had before its structure transforms (if any, and ``settings.before``)."""
    from fgvc_edge.checkpoint import read_checkpoint_record
    from fgvc_edge.models import get_model_config

    record = read_checkpoint_record(settings.checkpoint)
    transformed = bool((record.get("structure") or {}).get("transforms"))
    size = settings.input_size or record.get("input_size") or get_model_config(name).input_size
    classes = record["num_classes"]
    points = []
    for variant in variants:
        paper_id = papers.matching_row(name, variant, size, classes)
        if transformed and settings.before:
            points.append(ModelPoint(name, variant, size, classes, paper_id, before_of=settings.checkpoint))
        # Paper figures describe the untransformed network: a pruned checkpoint is compared with its before-row.
        points.append(ModelPoint(name, variant, size, classes, None if transformed else paper_id, settings.checkpoint))
    return points


def _reference_checkpoint(checkpoint: str, folder: str) -> str:
    """A checkpoint of ``checkpoint``'s model as built before its structure transforms (random weights)."""
    from fgvc_edge.checkpoint import read_checkpoint_record, save_checkpoint
    from fgvc_edge.models import create_model

    record = read_checkpoint_record(checkpoint)
    model = create_model(record["model"], num_classes=record["num_classes"], input_size=record.get("input_size"),
                         **record.get("model_args", {}))
    return save_checkpoint(model, os.path.join(folder, "before"))


def bench_model_point(point: ModelPoint, settings: BenchSettings, progress: Progress) -> List[Row]:
    with tempfile.TemporaryDirectory(prefix="fgvc-bench-") as tmp:
        return _bench_model_point(point, settings, progress, tmp)


def _bench_model_point(point: ModelPoint, settings: BenchSettings, progress: Progress, tmp: str) -> List[Row]:
    torch = require("torch", "toolkit")
    from fgvc_edge.models.complexity import count_deploy_params, count_macs, count_params
    from fgvc_edge.models import create_model

    checkpoint = point.checkpoint
    if point.before_of:
        _say(progress, "building {} before its transforms".format(point.model))
        checkpoint = _reference_checkpoint(point.before_of, tmp)
    kwargs = {"mode": point.variant} if point.variant else {}
    model = create_model(
        point.model,
        num_classes=None if checkpoint else point.num_classes,
        input_size=point.input_size,
        checkpoint=checkpoint,
        **kwargs,
    )
    torch.set_num_threads(settings.threads)
    _say(progress, "counting {} @{}".format(point.model, point.input_size))
    params = count_params(model)
    params_deploy = count_deploy_params(model)
    macs, _ = count_macs(model, point.input_size)
    base = {
        "model": point.model,
        "variant": point.variant,
        "checkpoint": point.checkpoint,
        "transforms": [str(step.get("name")) for step in getattr(model, "structure_transforms", [])],
        "before_of": point.before_of,
        "input_size": point.input_size,
        "num_classes": model.config.num_classes,
        "params": params,
        "params_deploy": params_deploy,
        "macs": macs,
        "device": device_name(settings.threads),
        "threads": settings.threads,
        "paper": papers.paper_summary(point.paper_id) if point.paper_id else None,
    }
    rows: List[Row] = []
    if not settings.runtimes:
        # `--runtimes none`: the complexity row alone.
        row = dict(base)
        row.update({"runtime": "none", "precision": "fp32", "batch": 1, "latency_ms": None, "throughput_ips": None,
                    "iters": 0, "peak_mem_mb": None, "artifact_mb": None, "settings": {}})
        rows.append(row)
    if "torch" in settings.runtimes:
        size_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
        for batch in settings.batches:
            _say(progress, "torch eager {} b{}".format(_label(point), batch))
            x = torch.randn(batch, 3, point.input_size, point.input_size)

            def call(x: Any = x) -> Any:
                with torch.inference_mode():
                    return model(x)

            with PeakRSS() as mem:
                stats = time_calls(call, batch=batch, iters=settings.iters, warmup=settings.warmup)
            settings_used = {"mode": "eager, torch.inference_mode()", "torch": torch.__version__}
            rows.append(_row(base, "torch", "fp32", batch, stats, mem.added_mb, size_mb, settings_used))
    if "onnxruntime" in settings.runtimes:
        if "fp32" in settings.precisions:
            for batch, path in _exported(model, settings, tmp, progress):
                rows.extend(_ort_rows(path, base, [batch], settings, progress))
        if "int8" in settings.precisions:
            for batch in settings.batches:
                path = _int8_deployable(point, checkpoint, batch, tmp, progress)
                rows.extend(_ort_rows(path, base, [batch], settings, progress, precision="int8"))
    return rows


def _int8_deployable(point: ModelPoint, checkpoint: Optional[str], batch: int, folder: str, progress: Progress) -> str:
    """ONNX Runtime INT8 (u8 activations) of the measured model, calibrated on synthetic images (speed only)."""
    from fgvc_edge.engine.pipeline import synthetic_int8_deployable
    from fgvc_edge.export.cache import ModelOptions

    _say(progress, "calibrating INT8 {} b{}".format(_label(point), batch))
    result = synthetic_int8_deployable(
        point.model,
        model=ModelOptions(checkpoint, point.variant, None if checkpoint else point.num_classes, point.input_size),
        num_images=SYNTHETIC_CALIBRATION_IMAGES,
        batch=batch,
        output=os.path.join(folder, "int8-b{}.onnx".format(batch)),
    )
    return result.path


def _exported(model: Any, settings: BenchSettings, folder: str, progress: Progress) -> Iterator[Tuple[int, str]]:
    """ONNX files to time: one dynamic-batch export, or one per batch for batch-dependent models."""
    from fgvc_edge.export import export_onnx

    name = model.config.name
    if model.config.batch_dependent:
        for batch in settings.batches:
            _say(progress, "exporting {} (batch {})".format(name, batch))
            yield batch, export_onnx(model, os.path.join(folder, "b{}.onnx".format(batch)), batch=batch).path
        return
    _say(progress, "exporting {}".format(name))
    path = export_onnx(model, os.path.join(folder, "dyn.onnx"), batch="dynamic").path
    for batch in settings.batches:
        yield batch, path


# -- ONNX Runtime -------------------------------------------------------------------------------------------


def bench_artifact(path: str, settings: BenchSettings, progress: Progress) -> List[Row]:
    from fgvc_edge.runtime import read_sidecar

    if not os.path.isfile(path):
        raise UserInputError("no such artifact: {}".format(path))
    if not path.lower().endswith(".onnx"):
        raise UserInputError("cannot bench {}: expected an .onnx file".format(path))
    record = read_sidecar(path) or {}
    size = record.get("input_size")
    if not size:
        raise UserInputError("{} has no sidecar ({}.json) saying its input size".format(path, path))
    paper_id = papers.matching_row(record.get("model", ""), record.get("variant"), size, record.get("num_classes", -1))
    base = {
        "model": record.get("model", os.path.basename(path)),
        "variant": record.get("variant"),
        "checkpoint": record.get("checkpoint"),
        "artifact": path,
        "input_size": size,
        "num_classes": record.get("num_classes"),
        "params": record.get("params"),
        "params_deploy": record.get("params_deploy"),
        "macs": record.get("macs"),
        "device": device_name(settings.threads),
        "threads": settings.threads,
        "paper": papers.paper_summary(paper_id) if paper_id else None,
    }
    fixed = record.get("batch")
    batches = list(settings.batches) if fixed in (None, "dynamic") else [int(fixed)]
    return _ort_rows(path, base, batches, settings, progress, precision=record.get("precision", "fp32"))


def _ort_rows(
    path: str,
    base: Row,
    batches: Sequence[int],
    settings: BenchSettings,
    progress: Progress,
    precision: str = "fp32",
) -> List[Row]:
    ort = require("onnxruntime", "onnxruntime")
    from fgvc_edge.runtime.onnx_runner import OnnxRunner

    rows = []
    size = base["input_size"]
    for batch in batches:
        _say(progress, "onnxruntime {} b{}".format(_label_row(base), batch))
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
        with PeakRSS() as mem:
            runner = OnnxRunner(path, providers=["CPUExecutionProvider"], threads=settings.threads)
            with runner:
                stats = time_calls(lambda: runner.infer(x), batch=batch, iters=settings.iters, warmup=settings.warmup)
        used = {"graph_optimization_level": "ORT_ENABLE_ALL", "providers": ["CPUExecutionProvider"],
                "onnxruntime": ort.__version__}
        rows.append(_row(base, "onnxruntime", precision, batch, stats, mem.added_mb, os.path.getsize(path) / 2**20, used))
    return rows


# -- rows ---------------------------------------------------------------------------------------------------


def _row(base: Row, runtime: str, precision: str, batch: int, stats: Any, mem_mb: Any, size_mb: float, used: Row) -> Row:
    row = dict(base)
    row.update(
        {
            "runtime": runtime,
            "precision": precision,
            "batch": batch,
            "latency_ms": stats.as_dict(),
            "throughput_ips": stats.throughput,
            "iters": stats.iters,
            "peak_mem_mb": mem_mb,
            "artifact_mb": size_mb,
            "settings": used,
        }
    )
    return row


def add_baseline_ratios(rows: List[Row]) -> None:
    """Our p50 over the baseline's p50 (same runtime, precision, batch, run), next to the paper's ratio."""
    by_paper = {}
    rows_timed = [row for row in rows if row.get("latency_ms")]
    for row in rows_timed:
        if row.get("paper"):
            by_paper[(row["paper"]["id"], row["runtime"], row["precision"], row["batch"])] = row
    for row in rows_timed:
        paper = row.get("paper")
        if not paper or not paper.get("baseline"):
            continue
        base_row = by_paper.get((paper["baseline"], row["runtime"], row["precision"], row["batch"]))
        base_paper = papers.paper_row(paper["baseline"])
        if base_row is None:
            continue
        ours = row["latency_ms"]["p50"] / base_row["latency_ms"]["p50"]
        theirs = None
        if paper.get("latency_ms") and base_paper.get("latency_ms"):
            theirs = paper["latency_ms"] / base_paper["latency_ms"]
        row["relative"] = {"baseline": base_row["model"], "ours": ours, "paper": theirs}


def add_before_ratios(rows: List[Row]) -> None:
    """A transformed checkpoint's p50 over its before-row's p50 (same runtime, precision, batch, run)."""
    def key(row: Row, checkpoint: Any) -> Tuple[Any, ...]:
        return (checkpoint, row["model"], row.get("variant"), row["input_size"], row["runtime"], row["precision"],
                row["batch"])

    before = {key(row, row["before_of"]): row for row in rows if row.get("before_of") and row.get("latency_ms")}
    for row in rows:
        ref = before.get(key(row, row.get("checkpoint")))
        if ref is None or not row.get("latency_ms") or not row.get("transforms"):
            continue
        ours = row["latency_ms"]["p50"] / ref["latency_ms"]["p50"]
        row["relative"] = {"baseline": "{} before {}".format(row["model"], "+".join(row["transforms"])),
                           "ours": ours, "paper": None}


def _label(point: ModelPoint) -> str:
    return point.model + ("[{}]".format(point.variant) if point.variant else "") + " @{}".format(point.input_size)


def _label_row(row: Row) -> str:
    return row["model"] + ("[{}]".format(row["variant"]) if row.get("variant") else "") + " @{}".format(row["input_size"])


def _say(progress: Progress, text: str) -> None:
    if progress is not None:
        progress(text)
