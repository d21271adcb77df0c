"""``fgvc-edge bench``: params, MACs and per-image latency of models and artifacts, next to the papers.

A model name is measured at each configuration its paper reports (input size, classes, variant), or at its
defaults when no paper gives figures, or at ``--input-size`` when given. PyTorch eager and ONNX Runtime run in
the same process, with the same thread count, each at its best standard settings: eager under
``torch.inference_mode()``; ONNX Runtime with every graph optimisation. An ``.onnx`` path is measured with
ONNX Runtime alone and needs no torch (its params/MACs come from the sidecar written at export).
When a paper row names a baseline (CMAL-Net Table 9 → ResNet50), the baseline is measured in the same run so
the latency ratio ours/baseline can stand next to the paper's.

OpenVINO is measured as a peer (extra ``openvino``): the same FP32 ONNX on its CPU plugin, and NNCF's INT8 of
the same fixed-batch export on the same calibration images, with the same thread count and OpenVINO's latency
hint. Our rows get ``vs_openvino`` (our p50 / OpenVINO's, same precision and batch); every INT8 row gets
``int8_accuracy`` (top-1 agreement and relative L2 error against the FP32 logits of the same weights) on real
images: ``--data`` or scikit-image's bundled photographs, each also mirrored (images calibration never saw).
Without the extra the OpenVINO rows are kept as rows with a ``note`` and no figures.
"""
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from fgvc_edge.bench import papers
from fgvc_edge.bench.timing import PeakRSS, device_name, time_calls
from fgvc_edge.errors import UserInputError, require

RUNTIMES = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "int8")
# Synthetic calibration images for INT8 rows of a model name when there are no real ones (no --data, no
# scikit-image): enough for stable ranges of a random-init model; the sidecar marks such a deployable as
# "speed figures only".
SYNTHETIC_CALIBRATION_IMAGES = 16
# Calibration images taken from a --data folder (spread over it); both quantizers see the same ones.
DATA_CALIBRATION_IMAGES = 64
OPENVINO_MISSING = "OpenVINO rows skipped: install the extra with pip install 'fgvc-edge[openvino]'"
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
    # Images for INT8 calibration and the INT8-vs-FP32 check: a folder; None = scikit-image's photographs.
    data: Optional[str] = None
    # Our INT8 with latency-aware mixed precision (profiled at ``threads`` on this machine).
    latency_aware: bool = False

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
    add_openvino_ratios(rows)
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
    from fgvc_edge.models.complexity import count_macs, count_params
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
    openvino = "openvino" in settings.runtimes and _openvino_available()
    if "openvino" in settings.runtimes and not openvino:
        rows.extend(_note_row(base, "openvino", p, OPENVINO_MISSING) for p in settings.precisions)
    ort = "onnxruntime" in settings.runtimes
    if "fp32" in settings.precisions and (ort or openvino):
        for batch, path in _exported(model, settings, tmp, progress):
            if ort:
                rows.extend(_ort_rows(path, base, [batch], settings, progress))
            if openvino:
                rows.append(_openvino_row(path, base, batch, settings, progress))
    if "int8" in settings.precisions and (ort or openvino):
        images = calibration_images(settings.data, point)
        for batch in settings.batches:
            fp32, int8 = _int8_deployable(point, checkpoint, batch, images, tmp, progress, settings)
            check = _AccuracyCheck(fp32, images, batch, _images_source(settings.data, images))
            if ort:
                row = _ort_rows(int8, base, [batch], settings, progress, precision="int8")[0]
                rows.append(check.annotate(row, _runner(int8)))
            if openvino:
                ir = _nncf_int8(fp32, images, tmp, progress)
                row = _openvino_row(ir, base, batch, settings, progress, precision="int8")
                rows.append(check.annotate(row, _runner(ir, openvino=True, batch=batch)))
    return rows


def calibration_images(data: Optional[str], point: ModelPoint) -> Sequence[Any]:
    """The INT8 rows' calibration images: ``data`` (spread over the folder), else scikit-image's photographs,
    else synthetic images at the size the model's preprocessing resizes to (speed only)."""
    from fgvc_edge.models import get_model_config
    from fgvc_edge.precision.data import SyntheticImages, find_images, sample_photos, select_images

    if data:
        return select_images(data, min(DATA_CALIBRATION_IMAGES, len(find_images(data))))
    photos = sample_photos()
    if photos:
        return photos
    config = get_model_config(point.model)
    size = config.preprocess.resize_size * point.input_size // config.input_size
    return SyntheticImages(SYNTHETIC_CALIBRATION_IMAGES, size=size)


def _int8_deployable(point: ModelPoint, checkpoint: Optional[str], batch: int, images: Sequence[Any], folder: str,
                     progress: Progress, settings: BenchSettings) -> Tuple[str, str]:
    """(FP32 export at ``batch``, its ONNX Runtime INT8 with u8 activations) of the measured model."""
    from fgvc_edge.engine.pipeline import int8_deployable
    from fgvc_edge.export.cache import ModelOptions

    _say(progress, "calibrating INT8 {} b{} on {} images".format(_label(point), batch, len(images)))
    result = int8_deployable(
        point.model,
        images,
        model=ModelOptions(checkpoint, point.variant, None if checkpoint else point.num_classes, point.input_size),
        batch=batch,
        output=os.path.join(folder, "int8-b{}.onnx".format(batch)),
        latency_aware=settings.latency_aware,
        threads=settings.threads,
    )
    return result.intermediates["fp32"], result.path


def _images_source(data: Optional[str], images: Sequence[Any]) -> str:
    if hasattr(images, "describe"):
        return "synthetic images"
    return "images from {}".format(data) if data else "scikit-image photographs"


class _AccuracyCheck:
    """INT8 vs FP32 logits of the same weights, on the calibration images and their mirror images."""

    def __init__(self, fp32_path: str, images: Sequence[Any], batch: int, source: str) -> None:
        with _runner(fp32_path) as runner:
            inputs = runner.preprocess_images(list(images))
            inputs = np.concatenate([inputs, inputs[..., ::-1]])
            # Batch-dependent models (RBI) take whole batches only.
            self.inputs = np.ascontiguousarray(inputs[: len(inputs) // batch * batch])
            self.reference = runner.infer(self.inputs)
        self.source = source

    def annotate(self, row: Row, runner: Any) -> Row:
        from fgvc_edge.precision._artifact import compare_outputs

        with runner:
            figures = compare_outputs(self.reference, runner.infer(self.inputs))
        row["int8_accuracy"] = {"reference": "fp32 (onnxruntime)", "images": len(self.inputs),
                                "source": self.source, "top1_agreement": figures["top1_agreement"],
                                "rel_error": figures["rel_error"], "min_cosine": figures["min_cosine"]}
        return row


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


# -- OpenVINO -----------------------------------------------------------------------------------------------


def _openvino_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))


def _runner(path: str, openvino: bool = False, batch: Optional[int] = None, threads: Optional[int] = None) -> Any:
    if openvino:
        from fgvc_edge.runtime.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(path, threads=threads, batch=batch)
    from fgvc_edge.runtime.onnx_runner import OnnxRunner

    return OnnxRunner(path, providers=["CPUExecutionProvider"], threads=threads)


def _nncf_int8(fp32_path: str, images: Sequence[Any], folder: str, progress: Progress) -> str:
    from fgvc_edge.precision.openvino_ir import quantize_openvino

    _say(progress, "NNCF INT8 of {} on {} images".format(os.path.basename(fp32_path), len(images)))
    stem = os.path.splitext(os.path.basename(fp32_path))[0]
    return quantize_openvino(fp32_path, images, os.path.join(folder, stem + "-ov-int8.xml"),
                             num_images=len(images)).path


def _openvino_row(path: str, base: Row, batch: int, settings: BenchSettings, progress: Progress,
                  precision: str = "fp32") -> Row:
    from fgvc_edge.precision.openvino_ir import versions
    from fgvc_edge.runtime.openvino_runner import latency_config

    _say(progress, "openvino {} {} b{}".format(precision, _label_row(base), batch))
    size = base["input_size"]
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    with PeakRSS() as mem:
        with _runner(path, openvino=True, batch=batch, threads=settings.threads) as runner:
            stats = time_calls(lambda: runner.infer(x), batch=batch, iters=settings.iters, warmup=settings.warmup)
    files = [path] + ([os.path.splitext(path)[0] + ".bin"] if path.endswith(".xml") else [])
    used = dict(latency_config(settings.threads), device="CPU", **versions())
    return _row(base, "openvino", precision, batch, stats, mem.added_mb,
                sum(os.path.getsize(f) for f in files) / 2**20, used)


def _note_row(base: Row, runtime: str, precision: str, note: str) -> Row:
    row = dict(base)
    row.update({"runtime": runtime, "precision": precision, "batch": 1, "latency_ms": None, "throughput_ips": None,
                "iters": 0, "peak_mem_mb": None, "artifact_mb": None, "settings": {}, "note": note})
    return row


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


def add_openvino_ratios(rows: List[Row]) -> None:
    """Our p50 over OpenVINO's p50 for the same model point, precision and batch (same run): ``vs_openvino``."""
    def key(row: Row) -> Tuple[Any, ...]:
        return (row["model"], row.get("variant"), row["input_size"], row.get("checkpoint"), row.get("before_of"),
                row["precision"], row["batch"])

    openvino = {key(row): row for row in rows if row["runtime"] == "openvino" and row.get("latency_ms")}
    for row in rows:
        peer = openvino.get(key(row))
        if peer is not None and row["runtime"] == "onnxruntime" and row.get("latency_ms"):
            row["vs_openvino"] = row["latency_ms"]["p50"] / peer["latency_ms"]["p50"]


def _label(point: ModelPoint) -> str:
    return point.model + ("[{}]".format(point.variant) if point.variant else "") + " @{}".format(point.input_size)


def _label_row(row: Row) -> str:
    return row["model"] + ("[{}]".format(row["variant"]) if row.get("variant") else "") + " @{}".format(row["input_size"])


def _say(progress: Progress, text: str) -> None:
    if progress is not None:
        progress(text)
