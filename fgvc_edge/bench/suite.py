"""``fgvc-edge bench``: params, MACs and per-image latency of models and artifacts, next to the papers.

A model name is measured at each configuration its paper reports (input size, classes, variant), or at its
defaults when no paper gives figures, or at ``--input-size`` when given. PyTorch eager and ONNX Runtime run in
the same process, with the same thread count, each at its best standard settings: eager under
``torch.inference_mode()``; ONNX Runtime with every graph optimisation. An ``.onnx`` path is measured with
ONNX Runtime alone and needs no torch (its params/MACs come from the sidecar written at export); an
``.engine``/``.plan`` with the TensorRT runner, where TensorRT and a GPU are present. ``--device cuda`` runs
PyTorch eager on the GPU (FP32, and FP16 under autocast), timed with CUDA events.
When a paper row names a baseline (CMAL-Net Table 9 → ResNet50), the baseline is measured in the same run so
the latency ratio ours/baseline can stand next to the paper's.

With a data set (``BenchSettings.data``) every timed row also gets its top-1 on the test split, through the
evaluator's code path (:mod:`fgvc_edge.evaluate`), and its agreement with the FP32 row of the same model;
INT8 rows are then calibrated on the training split; without one, on scikit-image's bundled photographs (real
images, not the task's), or on synthetic images (speed only) where scikit-image is missing.

OpenVINO is measured as a peer (extra ``openvino``): the same FP32 ONNX on its CPU plugin, and NNCF's INT8 of
the same fixed-batch export on the same calibration images, with the same thread count and OpenVINO's latency
hint. Our rows get ``vs_openvino`` (our p50 / OpenVINO's, same precision and batch); every INT8 row gets
``int8_accuracy`` (top-1 agreement and relative L2 error against the FP32 logits of the same weights) on real
images: the calibration images and their mirror images. Without the extra the OpenVINO rows are kept as rows
with a ``note`` and no figures.
"""
import contextlib
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from fgvc_edge._io import private_tempdir
from fgvc_edge.bench import papers
from fgvc_edge.bench.timing import PeakRSS, device_name, run_peak_rss_mb, time_calls, time_cuda_calls
from fgvc_edge.contract.limits import MAX_BATCH, MAX_BENCH_ITERS, MAX_BENCH_WARMUP
from fgvc_edge.datasets import DatasetSplits, Sample, load_dataset
from fgvc_edge.evaluate import ModuleBackend, RunnerBackend, score_backend, spread
from fgvc_edge.evaluate.core import DEFAULT_BATCH
from fgvc_edge.errors import UserInputError, require

RUNTIMES = ("torch", "onnxruntime", "openvino")
ARTIFACT_SUFFIXES = (".onnx", ".engine", ".plan")
# fp32 for every runtime; fp16: PyTorch on CUDA (autocast); int8: ONNX Runtime.
PRECISIONS = ("fp32", "fp16", "int8")
DEVICES = ("cpu", "cuda")
# Synthetic calibration images for INT8 speed rows of a model name (no data set given): enough for stable
# ranges of a random-init model; the sidecar marks such a deployable as "speed figures only".
SYNTHETIC_CALIBRATION_IMAGES = 16
# The quick pass (`make bench`): minutes on 2 cores; a full measurement (`make bench-full`, or named targets).
QUICK_ITERS, QUICK_WARMUP = 5, 1
FULL_ITERS, FULL_WARMUP = 20, 3
# With --data: INT8 rows are calibrated on this many training images, spread over the classes.
DATA_CALIBRATION_IMAGES = 64
OPENVINO_MISSING = "OpenVINO rows skipped: install the extra with pip install 'fgvc-edge[openvino]'"
Row = Dict[str, Any]


def _ignore(*_: Any) -> None:
    pass


@dataclass
class BenchProgress:
    """What a front end shows progress with: the number of rows to measure (known before the first), the step
    under way, and each finished row."""

    total: Callable[[int], None] = _ignore
    step: Callable[[str], None] = _ignore
    row_done: Callable[[], None] = _ignore


Progress = Optional[BenchProgress]


@dataclass
class BenchSettings:
    runtimes: Tuple[str, ...] = RUNTIMES
    # Precisions for model names: ONNX Runtime takes fp32/int8; PyTorch fp32, and fp16 on CUDA.
    precisions: Tuple[str, ...] = ("fp32",)
    # Where PyTorch eager runs; ONNX Runtime rows stay on the CPU provider.
    device: str = "cpu"
    # Batch sizes; None: 1 for model names, its own batch for a fixed-batch artifact.
    batches: Optional[Tuple[int, ...]] = None
    iters: int = FULL_ITERS
    warmup: int = FULL_WARMUP
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    input_size: Optional[int] = None
    num_classes: Optional[int] = None
    checkpoint: Optional[str] = None
    mode: Optional[str] = None
    # With a checkpoint whose structure was transformed (pruned, reparameterized): also measure the model
    # before those transforms, in the same run, so the table shows before vs after.
    before: bool = True
    # The quick pass: time only configurations whose paper gives a latency (and their baselines); the others
    # get their params/MACs row (all that their papers report).
    quick: bool = False
    # A data set (folder, read by fgvc_edge.datasets): top-1 per timed row on its test split, ``limit`` images.
    data: Optional[str] = None
    dataset: str = "auto"
    limit: Optional[int] = None
    # Our INT8 with latency-aware mixed precision (profiled at ``threads`` on this machine).
    latency_aware: bool = False

    def __post_init__(self) -> None:
        unknown = [r for r in self.runtimes if r not in RUNTIMES]
        if unknown:
            raise UserInputError("unknown runtime(s) {}; choose from {} or none".format(unknown, ", ".join(RUNTIMES)))
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise UserInputError("--precisions takes {}, got {}".format(",".join(PRECISIONS), list(self.precisions)))
        if self.batches is not None and (not self.batches or not all(1 <= b <= MAX_BATCH for b in self.batches)):
            raise UserInputError("--batch needs sizes in 1..{}, e.g. 1,8; got {}".format(MAX_BATCH, self.batches))
        if not (1 <= self.iters <= MAX_BENCH_ITERS and 0 <= self.warmup <= MAX_BENCH_WARMUP and self.threads >= 1):
            raise UserInputError("--iters must be in 1..{}, --warmup in 0..{}, --threads >= 1".format(
                MAX_BENCH_ITERS, MAX_BENCH_WARMUP))
        if self.limit is not None and self.limit < 1:
            raise UserInputError("--limit must be >= 1, got {}".format(self.limit))
        if self.device not in DEVICES:
            raise UserInputError("--device takes {}, not {!r}".format(" or ".join(DEVICES), self.device))
        if "fp16" in self.precisions and self.device != "cuda":
            raise UserInputError("--precisions fp16 is PyTorch on CUDA: add --device cuda")

    @property
    def torch_precisions(self) -> Tuple[str, ...]:
        """PyTorch eager rows: FP32, plus FP16 (autocast) on CUDA when asked for."""
        if self.device != "cuda":
            return ("fp32",)
        return tuple(p for p in ("fp32", "fp16") if p in self.precisions) or ("fp32",)

    @property
    def ort_precisions(self) -> Tuple[str, ...]:
        return tuple(p for p in self.precisions if p != "fp16")

    @property
    def batch_sizes(self) -> Tuple[int, ...]:
        return self.batches or (1,)


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


def sweep_defaults(quick: bool) -> Tuple[int, int, Tuple[str, ...]]:
    """(iterations, warm-up, ONNX Runtime precisions) of the quick pass or of a full measurement."""
    return (QUICK_ITERS, QUICK_WARMUP, ("fp32",)) if quick else (FULL_ITERS, FULL_WARMUP, ("fp32", "int8"))


def default_targets() -> List[str]:
    """What `make bench` measures: every registered model a paper gives efficiency figures for."""
    from fgvc_edge.models import get_model_config, list_models

    return [name for name in list_models() if get_model_config(name).paper_rows]


def is_artifact(target: str) -> bool:
    return target.lower().endswith(ARTIFACT_SUFFIXES) or os.path.sep in target


@dataclass
class EvalData:
    """The data set of ``--data``: the test images every timed row is scored on, training images to calibrate on."""

    splits: DatasetSplits
    samples: List[Sample]

    @classmethod
    def load(cls, settings: BenchSettings) -> "EvalData":
        splits = load_dataset(settings.data, settings.dataset)
        samples = splits.split("test")
        return cls(splits, spread(samples, settings.limit) if settings.limit else list(samples))

    def calibration_images(self) -> List[str]:
        return [path for path, _ in spread(self.splits.train, DATA_CALIBRATION_IMAGES)]

    def describe(self) -> Row:
        return {"root": self.splits.root, "layout": self.splits.layout, "split": "test", "images": len(self.samples)}


@dataclass
class _Run:
    """What every measuring function needs besides its target."""

    settings: BenchSettings
    progress: BenchProgress
    data: Optional[EvalData]
    # Predictions of each row with accuracy (by id), for the agreement with FP32; kept out of the rows.
    predictions: Dict[int, np.ndarray] = field(default_factory=dict)

    def say(self, text: str) -> None:
        self.progress.step(text)


def run_bench(targets: Sequence[str], settings: BenchSettings, progress: Progress = None) -> List[Row]:
    """Rows of every target (artifacts first, then the configurations of the model names); everything that can
    be refused (missing files, a class count the data set does not have) is refused before the first row."""
    if settings.device == "cuda" and "torch" in settings.runtimes:
        check_cuda()
    data = EvalData.load(settings) if settings.data else None
    names = [t for t in targets if not is_artifact(t)]
    artifacts = [_artifact_record(t, data, settings) for t in targets if is_artifact(t)]
    if data is not None and names:
        if settings.checkpoint:
            _check_data_classes(settings.checkpoint, _checkpoint_classes(settings.checkpoint), data)
        elif settings.num_classes is not None:
            _check_data_classes("--num-classes {}".format(settings.num_classes), settings.num_classes, data)
        else:
            # A model name measured on a data set gets its head: top-1 of random weights is chance, but comparable.
            settings = replace(settings, num_classes=data.splits.num_classes)
    points = expand_points(names, settings) if names else []
    run = _Run(settings, progress or BenchProgress(), data)
    run.progress.total(sum(len(_artifact_batches(p, r, settings)) for p, r in artifacts)
                       + sum(point_row_count(p, settings) for p in points))
    rows: List[Row] = []
    for path, record in artifacts:
        rows.extend(bench_artifact(path, record, run))
    for point in points:
        rows.extend(bench_model_point(point, run))
    add_baseline_ratios(rows)
    add_before_ratios(rows)
    add_agreement(rows, run.predictions)
    add_openvino_ratios(rows)
    peak = run_peak_rss_mb()
    for row in rows:
        row["run_peak_rss_mb"] = peak
    return rows


def check_cuda() -> None:
    """Refuse ``--device cuda`` in one line, before any work, where PyTorch sees no CUDA device."""
    torch = require("torch", "toolkit")
    if not torch.cuda.is_available():
        raise UserInputError("--device cuda: PyTorch {} sees no CUDA device here (built for CUDA {}); use --device "
                             "cpu".format(torch.__version__, torch.version.cuda or "none: a CPU-only build"))


def is_timed(point: ModelPoint, settings: BenchSettings) -> bool:
    """Whether a configuration gets latency rows (else its params/MACs row alone)."""
    if not settings.runtimes:
        return False
    if not settings.quick:
        return True
    return bool(point.paper_id and papers.paper_row(point.paper_id).get("latency_ms"))


def point_row_count(point: ModelPoint, settings: BenchSettings) -> int:
    """The rows a configuration yields: what the progress counts before the first is measured."""
    if not is_timed(point, settings):
        return 1
    # PyTorch eager: FP32 (and FP16 on CUDA); ONNX Runtime and OpenVINO: each of their precisions.
    per_batch = sum(len(settings.torch_precisions) if runtime == "torch" else len(settings.ort_precisions)
                    for runtime in settings.runtimes)
    return len(settings.batch_sizes) * per_batch


# -- model names ------------------------------------------------------------------------------------------


def expand_points(names: Sequence[str], settings: BenchSettings) -> List[ModelPoint]:
    """Configurations to measure, baselines of paper rows included, each once, in a stable order."""
    from fgvc_edge.models import get_model_config

    points: List[ModelPoint] = []
    for name in names:
        cfg = get_model_config(name)
        variants = [settings.mode] if settings.mode else list(cfg.variants or [None])
        if settings.mode and settings.mode not in (cfg.variants or ()):
            raise UserInputError("{} has no mode {!r} (modes: {})".format(
                name, settings.mode, ", ".join(sorted(cfg.variants or ())) or "none"))
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
    if settings.num_classes is not None and settings.num_classes != classes:
        # The head's width is in the weights: measuring another one would silently measure a different model.
        raise UserInputError("{} has {} classes; --num-classes {} disagrees (drop it)".format(
            settings.checkpoint, classes, settings.num_classes))
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


def bench_model_point(point: ModelPoint, run: _Run) -> List[Row]:
    with private_tempdir("fgvc-bench-") as tmp:
        return _bench_model_point(point, run, tmp)


def _bench_model_point(point: ModelPoint, run: _Run, tmp: str) -> List[Row]:
    torch = require("torch", "toolkit")
    from fgvc_edge.models.complexity import count_deploy_params, count_macs, count_params

    settings = run.settings
    checkpoint = point.checkpoint
    if point.before_of:
        run.say("building {} before its transforms".format(point.model))
        checkpoint = _reference_checkpoint(point.before_of, tmp)
    torch.set_num_threads(settings.threads)
    with PeakRSS(release_freed=True) as loading:
        model = _create(point, checkpoint)
    run.say("counting {} @{}".format(point.model, point.input_size))
    params = count_params(model)
    params_deploy = count_deploy_params(model)
    macs, _ = count_macs(model, point.input_size)
    base = {
        "model": point.model,
        "variant": point.variant,
        "checkpoint": point.checkpoint,
        "source": point.checkpoint if point.checkpoint and not point.before_of else "random init",
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
        "calibration": None,
    }
    if not is_timed(point, settings):
        # `--runtimes none`, or a configuration the quick pass only counts.
        row = dict(base)
        row.update({"runtime": "none", "precision": "fp32", "batch": 1, "latency_ms": None, "throughput_ips": None,
                    "iters": 0, "load_mb": None, "rss_peak_mb": None, "artifact_mb": None, "settings": {}})
        run.progress.row_done()
        return [row]
    rows: List[Row] = []
    if "torch" in settings.runtimes:
        for precision in settings.torch_precisions:
            rows.extend(_torch_rows(model, base, loading, precision, run))
    ort = "onnxruntime" in settings.runtimes
    openvino = "openvino" in settings.runtimes and openvino_available()
    if "openvino" in settings.runtimes and not openvino:
        for precision in settings.ort_precisions:
            rows.append(_note_row(base, "openvino", precision, OPENVINO_MISSING))
            run.progress.row_done()
    if "fp32" in settings.precisions and (ort or openvino):
        for batch, path in _exported(model, settings, tmp, run):
            if ort:
                rows.extend(_ort_rows(path, base, [batch], run))
            if openvino:
                rows.append(_openvino_row(path, base, batch, run))
    if "int8" in settings.precisions and (ort or openvino):
        images, calibration = _calibration_images(point, run)
        for batch in settings.batch_sizes:
            fp32, int8 = _int8_deployable(point, checkpoint, batch, images, calibration, tmp, run)
            int8_base = dict(base, calibration=calibration)
            check = _AccuracyCheck(fp32, images, batch, calibration, run.data)
            if ort:
                row = _ort_rows(int8, int8_base, [batch], run, precision="int8")[0]
                rows.append(check.annotate(row, _runner(int8, threads=settings.threads)))
            if openvino:
                ir = _nncf_int8(fp32, images, tmp, run)
                row = _openvino_row(ir, int8_base, batch, run, precision="int8")
                rows.append(check.annotate(row, _runner(ir, openvino=True, batch=batch, threads=settings.threads)))
    return rows


def _create(point: ModelPoint, checkpoint: Optional[str]) -> Any:
    """The model under the export cache's seed, so random-init torch, FP32 and INT8 rows share their weights
    (and their predictions can be compared)."""
    import torch

    from fgvc_edge.models import create_model

    kwargs = {"mode": point.variant} if point.variant else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_model(point.model, num_classes=None if checkpoint else point.num_classes,
                            input_size=point.input_size, checkpoint=checkpoint, **kwargs)


def _torch_rows(model: Any, base: Row, loading: PeakRSS, precision: str, run: _Run) -> List[Row]:
    """PyTorch eager under ``inference_mode``: on the CPU (FP32) timed by the wall clock; on CUDA (FP32, or FP16
    under autocast, which keeps reductions and softmax FP32 as our FP16 ONNX does) timed with CUDA events."""
    import torch

    settings = run.settings
    cuda = settings.device == "cuda"
    size_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
    used = {"mode": "eager, torch.inference_mode()", "torch": torch.__version__, "device": settings.device}
    amp = contextlib.nullcontext
    if cuda:
        torch.backends.cudnn.benchmark = True  # the best standard setting: cuDNN picks its fastest kernels
        used.update({"gpu": torch.cuda.get_device_name(), "timing": "torch.cuda.Event", "cudnn.benchmark": True,
                     "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                     "autocast": "float16" if precision == "fp16" else None})
        if precision == "fp16":
            amp = lambda: torch.autocast("cuda", dtype=torch.float16)  # noqa: E731
        model.to("cuda")
    rows = []
    try:
        for batch in settings.batch_sizes:
            run.say("torch eager {} {} b{}{}".format(_label_row(base), precision, batch, " (cuda)" if cuda else ""))
            x = torch.randn(batch, 3, base["input_size"], base["input_size"], device="cuda" if cuda else "cpu")

            def call(x: Any = x) -> Any:
                with torch.inference_mode(), amp():
                    return model(x)

            if cuda:
                torch.cuda.reset_peak_memory_stats()
                stats = time_cuda_calls(call, batch=batch, iters=settings.iters, warmup=settings.warmup, cuda=torch.cuda)
                row = _row(base, "torch", precision, batch, stats, loading.grown_mb,
                           torch.cuda.max_memory_allocated() / 2**20, size_mb, used)
                row["device"] = "cuda: {}".format(used["gpu"])
            else:
                with PeakRSS() as mem:
                    stats = time_calls(call, batch=batch, iters=settings.iters, warmup=settings.warmup)
                row = _row(base, "torch", precision, batch, stats, loading.grown_mb, mem.peak_mb, size_mb, used)
            if run.data is not None:
                _score(row, ModuleBackend(model, base["source"]), run.data, run)
            rows.append(row)
            run.progress.row_done()
    finally:
        if cuda:
            model.to("cpu")  # the ONNX Runtime rows export this same model on the CPU
    return rows


def _calibration_images(point: ModelPoint, run: _Run) -> Tuple[Sequence[Any], str]:
    """(images, how they are labelled) for the INT8 rows: the data set's training images ("data"), else
    scikit-image's bundled photographs ("photos": real, not the task's), else synthetic images at the size the
    model's preprocessing resizes to ("synthetic": speed only). Both quantizers get the same images."""
    from fgvc_edge.models.configs import get_model_config
    from fgvc_edge.precision.data import SyntheticImages, sample_photos

    if run.data is not None:
        return run.data.calibration_images(), "data"
    photos = sample_photos()
    if photos:
        return photos, "photos"
    config = get_model_config(point.model)
    size = config.preprocess.resize_size * point.input_size // config.input_size
    return SyntheticImages(SYNTHETIC_CALIBRATION_IMAGES, size=size), "synthetic"


def _int8_deployable(point: ModelPoint, checkpoint: Optional[str], batch: int, images: Sequence[Any],
                     calibration: str, folder: str, run: _Run) -> Tuple[str, str]:
    """(FP32 export at ``batch``, its ONNX Runtime INT8 with u8 activations) of the measured model."""
    from fgvc_edge.engine.pipeline import int8_deployable
    from fgvc_edge.export.cache import ModelOptions

    run.say("calibrating INT8 {} b{} on {} {} images".format(_label(point), batch, len(images), calibration))
    result = int8_deployable(
        point.model,
        images,
        model=ModelOptions(checkpoint, point.variant, None if checkpoint else point.num_classes, point.input_size),
        batch=batch,
        output=os.path.join(folder, "int8-b{}.onnx".format(batch)),
        latency_aware=run.settings.latency_aware,
        threads=run.settings.threads,
    )
    return result.intermediates["fp32"], result.path


class _AccuracyCheck:
    """INT8 vs FP32 logits of the same weights, on the calibration images and their mirror images."""

    SOURCES = {"data": "training images of --data", "photos": "scikit-image photographs",
               "synthetic": "synthetic images"}

    def __init__(self, fp32_path: str, images: Sequence[Any], batch: int, calibration: str,
                 data: Optional[EvalData]) -> None:
        with _runner(fp32_path) as runner:
            inputs = runner.preprocess_images(list(images))
            inputs = np.concatenate([inputs, inputs[..., ::-1]])
            # Batch-dependent models (RBI) take whole batches only.
            self.inputs = np.ascontiguousarray(inputs[: len(inputs) // batch * batch])
            self.reference = runner.infer(self.inputs)
        self.source = self.SOURCES[calibration]
        if data is not None:
            self.source += " ({})".format(data.splits.root)

    def annotate(self, row: Row, runner: Any) -> Row:
        from fgvc_edge.precision._artifact import compare_outputs

        with runner:
            figures = compare_outputs(self.reference, runner.infer(self.inputs))
        row["int8_accuracy"] = {"reference": "fp32 (onnxruntime)", "images": len(self.inputs),
                                "source": self.source, "top1_agreement": figures["top1_agreement"],
                                "rel_error": figures["rel_error"], "min_cosine": figures["min_cosine"]}
        return row


def _exported(model: Any, settings: BenchSettings, folder: str, run: _Run) -> Iterator[Tuple[int, str]]:
    """ONNX files to time: one dynamic-batch export, or one per batch for batch-dependent models."""
    from fgvc_edge.export import export_onnx

    name = model.config.name
    if model.config.batch_dependent:
        for batch in settings.batch_sizes:
            run.say("exporting {} (batch {})".format(name, batch))
            yield batch, export_onnx(model, os.path.join(folder, "b{}.onnx".format(batch)), batch=batch).path
        return
    run.say("exporting {}".format(name))
    path = export_onnx(model, os.path.join(folder, "dyn.onnx"), batch="dynamic").path
    for batch in settings.batch_sizes:
        yield batch, path


# -- ONNX Runtime -------------------------------------------------------------------------------------------


def _artifact_record(path: str, data: Optional[EvalData], settings: BenchSettings) -> Tuple[str, Row]:
    """(path, sidecar) of an artifact to measure, or the one-line refusal."""
    from fgvc_edge.runtime import read_sidecar

    if not os.path.isfile(path):
        raise UserInputError("no such artifact: {}".format(path))
    if not path.lower().endswith(ARTIFACT_SUFFIXES):
        raise UserInputError("cannot bench {}: expected an .onnx, .engine or .plan file".format(path))
    record = read_sidecar(path) or {}
    if not record.get("input_size"):
        raise UserInputError("{} has no sidecar ({}.json) saying its input size".format(path, path))
    size = record["input_size"]
    for option, what, given, fixed in (("--input-size", "input size", settings.input_size, size),
                                       ("--num-classes", "classes", settings.num_classes, record.get("num_classes"))):
        if given is not None and given != fixed:  # an artifact's graph is fixed: never measure something else
            raise UserInputError("{} is fixed at {} {}; {} {} applies to model names (export the model with it, "
                                 "then bench that file)".format(path, what, fixed, option, given))
    if data is not None:
        _check_data_classes(path, record.get("num_classes"), data)
    return path, record


def _artifact_batches(path: str, record: Row, settings: BenchSettings) -> List[int]:
    """The batches to time an artifact at: those asked for (default 1) when its batch is dynamic, else its own;
    another batch for a fixed-batch artifact is refused (its graph cannot run it)."""
    fixed = record.get("batch")
    if fixed in (None, "dynamic"):
        return list(settings.batch_sizes)
    if settings.batches not in (None, (int(fixed),)):
        raise UserInputError("{} has a fixed batch of {}: bench it with --batch {} (or export it with --batch "
                             "dynamic)".format(path, fixed, fixed))
    return [int(fixed)]


def bench_artifact(path: str, record: Row, run: _Run) -> List[Row]:
    size = record["input_size"]
    paper_id = papers.matching_row(record.get("model", ""), record.get("variant"), size, record.get("num_classes", -1))
    base = {
        "model": record.get("model", os.path.basename(path)),
        "variant": record.get("variant"),
        "checkpoint": record.get("checkpoint"),
        "artifact": path,
        "source": path,
        "input_size": size,
        "num_classes": record.get("num_classes"),
        "params": record.get("params"),
        "params_deploy": record.get("params_deploy"),
        "macs": record.get("macs"),
        "device": device_name(run.settings.threads),
        "threads": run.settings.threads,
        "paper": papers.paper_summary(paper_id) if paper_id else None,
        "calibration": _calibration_of(record),
    }
    if not path.lower().endswith(".onnx"):
        return _tensorrt_rows(path, base, run, precision=record.get("precision", "fp32"))
    return _ort_rows(path, base, _artifact_batches(path, record, run.settings), run, precision=record.get("precision", "fp32"))


def _tensorrt_rows(path: str, base: Row, run: _Run, precision: str) -> List[Row]:
    """A TensorRT engine through the deployable runner (host wall clock per call, copies in and out included);
    where TensorRT or a GPU is absent the runner refuses in one line."""
    from fgvc_edge.runtime import load

    settings = run.settings
    rows = []
    size = base["input_size"]
    with PeakRSS(release_freed=True) as loading:
        runner = load(path)
    with runner:
        fixed = runner.fixed_batch
        for batch in [fixed] if fixed else settings.batch_sizes:
            run.say("tensorrt {} b{}".format(_label_row(base), batch))
            x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
            with PeakRSS() as mem:
                stats = time_calls(lambda: runner.infer(x), batch=batch, iters=settings.iters, warmup=settings.warmup)
            used = {"tensorrt": runner.tensorrt_version, "timing": "host wall clock, copies included"}
            row = _row(base, "tensorrt", precision, batch, stats, loading.grown_mb, mem.peak_mb,
                       os.path.getsize(path) / 2**20, used)
            row["device"] = runner.gpu["name"]
            if run.data is not None:
                _score(row, RunnerBackend(path), run.data, run)
            rows.append(row)
            run.progress.row_done()
    return rows


def _calibration_of(record: Row) -> Optional[str]:
    """How an INT8 artifact was calibrated, from its sidecar: "synthetic" (speed only) or "data"."""
    if record.get("calibration_note"):
        return "synthetic"
    return "data" if record.get("quantization") else None


def _ort_rows(path: str, base: Row, batches: Sequence[int], run: _Run, precision: str = "fp32") -> List[Row]:
    ort = require("onnxruntime", "onnxruntime")
    from fgvc_edge.runtime.onnx_runner import OnnxRunner

    settings = run.settings
    rows = []
    size = base["input_size"]
    for batch in batches:
        run.say("onnxruntime {} {} b{}".format(precision, _label_row(base), batch))
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
        with PeakRSS(release_freed=True) as loading:
            runner = OnnxRunner(path, providers=["CPUExecutionProvider"], threads=settings.threads)
        with runner, PeakRSS() as mem:
            stats = time_calls(lambda: runner.infer(x), batch=batch, iters=settings.iters, warmup=settings.warmup)
        used = {"graph_optimization_level": "ORT_ENABLE_ALL", "providers": ["CPUExecutionProvider"],
                "onnxruntime": ort.__version__}
        row = _row(base, "onnxruntime", precision, batch, stats, loading.grown_mb, mem.peak_mb,
                   os.path.getsize(path) / 2**20, used)
        if run.data is not None:
            _score(row, RunnerBackend(path, threads=settings.threads), run.data, run)
        rows.append(row)
        run.progress.row_done()
    return rows


# -- accuracy -----------------------------------------------------------------------------------------------


def _score(row: Row, backend: Any, data: EvalData, run: _Run) -> None:
    """Top-1/top-5 of ``row``'s model on the test images; its predictions are kept for the agreement. A model
    whose output depends on its batch (RBI) is scored at the row's batch, any other at the evaluator's."""
    run.say("top-1 of {} {} {} on {} images".format(row["runtime"], row["precision"], _label_row(row),
                                                     len(data.samples)))
    with backend:
        batch = row["batch"] if backend.batch_dependent else DEFAULT_BATCH
        metrics, skipped, _ = score_backend(backend, data.samples, data.splits, batch_size=batch)
    row["accuracy"] = dict(data.describe(), top1=metrics.top1, top5=metrics.top5, images=metrics.images,
                           skipped=len(skipped))
    run.predictions[id(row)] = metrics.predictions


def _checkpoint_classes(checkpoint: str) -> Optional[int]:
    from fgvc_edge.checkpoint import read_checkpoint_record

    return read_checkpoint_record(checkpoint).get("num_classes")


def _check_data_classes(what: str, classes: Optional[int], data: EvalData) -> None:
    if classes is not None and classes != data.splits.num_classes:
        raise UserInputError("{} has {} classes; the data set at {} has {}".format(
            what, classes, data.splits.root, data.splits.num_classes))


def add_agreement(rows: List[Row], predictions: Dict[int, np.ndarray]) -> None:
    """Share of test images on which a row predicts what the FP32 row of the same model predicts (PyTorch's
    when measured, at the same batch when there is one)."""
    def subject(row: Row) -> Tuple[Any, ...]:
        return (row["model"], row.get("variant"), row["input_size"], row.get("num_classes"), row.get("checkpoint"),
                row.get("before_of"))

    scored = [row for row in rows if id(row) in predictions]
    for row in scored:
        references = [r for r in scored if subject(r) == subject(row) and r["precision"] == "fp32"]
        references.sort(key=lambda r: (r["batch"] != row["batch"], r["runtime"] != "torch"))
        if references:
            ref = references[0]
            row["accuracy"]["agreement_fp32"] = float((predictions[id(row)] == predictions[id(ref)]).mean())
            row["accuracy"]["agreement_with"] = "{} {} b{}".format(ref["runtime"], ref["precision"], ref["batch"])


# -- OpenVINO -----------------------------------------------------------------------------------------------


def openvino_available() -> bool:
    """Whether the extra ``openvino`` (openvino + nncf) is installed, found without importing it."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))


def _runner(path: str, openvino: bool = False, batch: Optional[int] = None, threads: Optional[int] = None) -> Any:
    if openvino:
        from fgvc_edge.runtime.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(path, threads=threads, batch=batch)
    from fgvc_edge.runtime.onnx_runner import OnnxRunner

    return OnnxRunner(path, providers=["CPUExecutionProvider"], threads=threads)


def _nncf_int8(fp32_path: str, images: Sequence[Any], folder: str, run: _Run) -> str:
    from fgvc_edge.precision.openvino_ir import quantize_openvino

    run.say("NNCF INT8 of {} on {} images".format(os.path.basename(fp32_path), len(images)))
    stem = os.path.splitext(os.path.basename(fp32_path))[0]
    return quantize_openvino(fp32_path, images, os.path.join(folder, stem + "-ov-int8.xml"),
                             num_images=len(images)).path


def _openvino_row(path: str, base: Row, batch: int, run: _Run, precision: str = "fp32") -> Row:
    from fgvc_edge.precision.openvino_ir import versions
    from fgvc_edge.runtime.openvino_runner import latency_config

    settings = run.settings
    run.say("openvino {} {} b{}".format(precision, _label_row(base), batch))
    size = base["input_size"]
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    with PeakRSS(release_freed=True) as loading:
        runner = _runner(path, openvino=True, batch=batch, threads=settings.threads)
    with runner, PeakRSS() as mem:
        stats = time_calls(lambda: runner.infer(x), batch=batch, iters=settings.iters, warmup=settings.warmup)
    files = [path] + ([os.path.splitext(path)[0] + ".bin"] if path.endswith(".xml") else [])
    used = dict(latency_config(settings.threads), device="CPU", **versions())
    row = _row(base, "openvino", precision, batch, stats, loading.grown_mb, mem.peak_mb,
               sum(os.path.getsize(f) for f in files) / 2**20, used)
    if run.data is not None:
        _score(row, RunnerBackend(path, threads=settings.threads), run.data, run)
    run.progress.row_done()
    return row


def _note_row(base: Row, runtime: str, precision: str, note: str) -> Row:
    row = dict(base)
    row.update({"runtime": runtime, "precision": precision, "batch": 1, "latency_ms": None, "throughput_ips": None,
                "iters": 0, "load_mb": None, "rss_peak_mb": None, "artifact_mb": None, "settings": {}, "note": note})
    return row


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


# -- rows ---------------------------------------------------------------------------------------------------


def _row(base: Row, runtime: str, precision: str, batch: int, stats: Any, load_mb: Optional[float],
         rss_peak_mb: Optional[float], size_mb: float, used: Row) -> Row:
    """A measured row. Memory, labelled: ``load_mb`` is what loading the model or runner added to the process,
    ``rss_peak_mb`` the process's resident peak while timing (the interpreter and libraries included),
    ``artifact_mb`` the weights (state-dict bytes, or the file)."""
    row = dict(base)
    row.update(
        {
            "runtime": runtime,
            "precision": precision,
            "batch": batch,
            "latency_ms": stats.as_dict(),
            "throughput_ips": stats.throughput,
            "iters": stats.iters,
            "load_mb": load_mb,
            "rss_peak_mb": rss_peak_mb,
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
