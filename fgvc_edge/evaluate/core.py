"""Evaluate artifacts on a data set split: the same images, batches and metric code for every runtime.

Images are decoded and preprocessed with each artifact's own :class:`Preprocess` (the one it deploys with)
in a small thread pool; unreadable images are skipped and counted, and skipped for every artifact alike.

Batches: a fixed-batch artifact is fed its batch (the runner pads the last chunk of an image-independent
model). A model whose output depends on its batch (RBI) is fed batches of exactly its batch size in one fixed
shuffled order (seed 0, the trainer's validation order too: sorted files would put one class in each batch,
and RBI's paper evaluates "on the shuffled validation set"); the last incomplete batch is filled by wrapping
around to the first images and only the real images' logits are kept — so its checkpoint and its ONNX export
at the same batch see the same batches.

Each artifact gets ``<out>/<n>_<name>/`` with metrics.json, per_class.csv and confusion.png; the run gets
summary.json, summary.csv and summary.md (accuracy and drop vs the first artifact).
"""
import csv
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from fgvc_edge._io import atomic_path, check_output_dir, write_json
from fgvc_edge.contract.limits import MAX_BATCH
from fgvc_edge.datasets import DatasetSplits, Sample, load_dataset, open_image
from fgvc_edge.errors import UserInputError
from fgvc_edge.evaluate.backends import CHECKPOINT_FILES, Backend, is_checkpoint, open_backend
from fgvc_edge.evaluate.metrics import (
    ClassificationMetrics,
    comparison_rows,
    top1_change,
    write_confusion_png,
    write_per_class_csv,
)
from fgvc_edge.contract.preprocess import Preprocess

DEFAULT_BATCH = 32
# Test order of batch-dependent models (see the module docstring); the trainer's validation uses it too.
EVAL_SHUFFLE_SEED = 0


@dataclass
class ArtifactResult:
    path: str
    runtime: str
    precision: str
    metrics: ClassificationMetrics
    skipped: int
    ms_per_image: float
    folder: str


@dataclass
class EvaluationReport:
    data: DatasetSplits
    split: str
    results: List[ArtifactResult]
    rows: List[Dict[str, Any]]
    out: str
    skipped_paths: List[str]


def evaluate_artifacts(
    artifacts: Sequence[str],
    data: str,
    *,
    dataset: str = "auto",
    split: str = "test",
    batch_size: int = DEFAULT_BATCH,
    out: str = os.path.join("runs", "eval"),
    limit: Optional[int] = None,
    threads: Optional[int] = None,
    workers: int = 4,
    on_start: Optional[Callable[[str, int], None]] = None,
    on_batch: Optional[Callable[[int], None]] = None,
) -> EvaluationReport:
    """Top-1/top-5/per-class accuracy of every artifact on ``split`` of the data set at ``data``."""
    if not artifacts:
        raise UserInputError("give at least one artifact (checkpoint folder, .onnx or .engine)")
    if not 1 <= batch_size <= MAX_BATCH:
        raise UserInputError("--batch-size must be in 1..{}, got {}".format(MAX_BATCH, batch_size))
    check_output_dir(out)  # before the evaluation, not after it
    splits = load_dataset(data, dataset)
    samples = splits.split(split)
    if limit is not None:
        samples = spread(samples, limit)
    results: List[ArtifactResult] = []
    skipped_paths: set = set()
    for number, artifact in enumerate(artifacts, 1):
        with open_backend(str(artifact), threads=threads) as backend:
            check_classes(backend, splits)
            if on_start is not None:
                on_start(str(artifact), len(samples))
            folder = os.path.join(out, "{}_{}".format(number, artifact_label(str(artifact))))
            result, bad = _evaluate_one(backend, samples, splits, batch_size, workers, folder, on_batch)
        skipped_paths |= set(bad)
        results.append(result)
    rows = comparison_rows(results)
    _write_summary(out, rows, splits, split)
    return EvaluationReport(splits, split, results, rows, out, sorted(skipped_paths))


def artifact_label(path: str) -> str:
    """A folder name for an artifact: ``runs/cub/best`` → ``cub-best``, ``engines/r18-int8.onnx`` → ``r18-int8``."""
    path = os.path.normpath(path)
    if is_checkpoint(path) or not os.path.splitext(path)[1]:
        folder = os.path.dirname(path) if os.path.basename(path) in CHECKPOINT_FILES else path
        name = "-".join(p for p in (os.path.basename(os.path.dirname(folder)), os.path.basename(folder)) if p)
    else:
        name = os.path.splitext(os.path.basename(path))[0]
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name) or "artifact"


def _evaluate_one(
    backend: Backend, samples: Sequence[Sample], splits: DatasetSplits, batch_size: int, workers: int, folder: str,
    on_batch: Optional[Callable[[int], None]],
) -> Tuple[ArtifactResult, List[str]]:
    metrics, bad, ms_per_image = score_backend(backend, samples, splits, batch_size, workers, on_batch)
    result = ArtifactResult(backend.path, backend.runtime, backend.precision, metrics, len(bad), ms_per_image, folder)
    _write_artifact_outputs(result, splits)
    return result, bad


def score_backend(
    backend: Backend, samples: Sequence[Sample], splits: DatasetSplits, batch_size: int = DEFAULT_BATCH,
    workers: int = 4, on_batch: Optional[Callable[[int], None]] = None,
) -> Tuple[ClassificationMetrics, List[str], float]:
    """(metrics, unreadable paths, ms per image) of one open backend on ``samples``; writes nothing."""
    check_classes(backend, splits)
    batch = backend.fixed_batch or batch_size
    if backend.batch_dependent:
        samples = [samples[i] for i in np.random.default_rng(EVAL_SHUFFLE_SEED).permutation(len(samples))]
    logits, labels, bad = [], [], []
    seconds = 0.0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for arrays, targets, failed in _batches(samples, backend.preprocess, batch, pool):
            bad += failed
            if targets:
                started = time.perf_counter()
                logits.append(_infer(backend, np.stack(arrays), batch))
                seconds += time.perf_counter() - started
                labels += targets
            if on_batch is not None:
                on_batch(len(targets) + len(failed))
    if not labels:
        raise UserInputError("none of the {} images of {} could be read".format(len(samples), splits.root))
    metrics = ClassificationMetrics.from_logits(np.concatenate(logits), np.asarray(labels), splits.num_classes)
    return metrics, bad, 1000.0 * seconds / len(labels)


def _infer(backend: Backend, array: np.ndarray, batch: int) -> np.ndarray:
    real = array.shape[0]
    if backend.batch_dependent and real < batch:
        # Wrap around (see the module docstring): the fillers' logits are dropped.
        filler = np.concatenate([array] * (batch // real + 1))[: batch - real]
        return backend.infer(np.concatenate([array, filler]))[:real]
    return backend.infer(array)


def _batches(
    samples: Sequence[Sample], preprocess: Preprocess, batch: int, pool: ThreadPoolExecutor
) -> Iterator[Tuple[List[np.ndarray], List[int], List[str]]]:
    """(arrays, labels, unreadable paths) per ``batch`` readable images, in file order."""

    def load(sample: Sample) -> Optional[np.ndarray]:
        image = open_image(sample[0], exif_transpose=preprocess.exif_transpose)
        return None if image is None else preprocess(image)

    arrays: List[np.ndarray] = []
    labels: List[int] = []
    failed: List[str] = []
    chunk = max(batch, 16)
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        for sample, array in zip(part, pool.map(load, part)):
            if array is None:
                failed.append(sample[0])
                continue
            arrays.append(array)
            labels.append(sample[1])
            if len(arrays) == batch:
                yield arrays, labels, failed
                arrays, labels, failed = [], [], []
    if arrays or failed:
        yield arrays, labels, failed


def check_classes(backend: Backend, splits: DatasetSplits) -> None:
    if backend.num_classes is not None and backend.num_classes != splits.num_classes:
        raise UserInputError("{} has {} classes; the data set at {} has {}".format(
            backend.path, backend.num_classes, splits.root, splits.num_classes))
    names = list(backend.class_names or [])
    if names and len(names) != splits.num_classes:
        raise UserInputError("{} names {} classes; the data set at {} has {}".format(
            backend.path, len(names), splits.root, splits.num_classes))
    if names and names != list(splits.class_names):
        first = next(i for i, (a, b) in enumerate(zip(names, splits.class_names)) if a != b)
        raise UserInputError("{}'s class {} is {!r}, the data set's is {!r}: not the data set it was trained on".format(
            backend.path, first, backend.class_names[first], splits.class_names[first]))


def spread(samples: Sequence[Sample], limit: int) -> List[Sample]:
    """``limit`` samples spread evenly over the split (every class contributes)."""
    if limit < 1:
        raise UserInputError("--limit must be >= 1, got {}".format(limit))
    if limit >= len(samples):
        return list(samples)
    picks = np.linspace(0, len(samples) - 1, limit).round().astype(int)
    return [samples[i] for i in picks]


def _write_artifact_outputs(result: ArtifactResult, splits: DatasetSplits) -> None:
    os.makedirs(result.folder, exist_ok=True)
    record = {"artifact": result.path, "runtime": result.runtime, "precision": result.precision,
              **result.metrics.to_dict(), "skipped": result.skipped, "ms_per_image": result.ms_per_image,
              "data": splits.describe()}
    write_json(os.path.join(result.folder, "metrics.json"), record)
    write_per_class_csv(os.path.join(result.folder, "per_class.csv"), result.metrics, splits.class_names)
    write_confusion_png(os.path.join(result.folder, "confusion.png"), result.metrics, splits.class_names,
                        "{} — top-1 {:.2%}".format(os.path.basename(result.folder), result.metrics.top1))


def _write_summary(out: str, rows: List[Dict[str, Any]], splits: DatasetSplits, split: str) -> None:
    write_json(os.path.join(out, "summary.json"), {"data": splits.describe(), "split": split, "artifacts": rows})
    with atomic_path(os.path.join(out, "summary.csv")) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    with atomic_path(os.path.join(out, "summary.md")) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("| artifact | runtime | precision | top-1 | top-5 | top-1 vs first | agreement | ms/img |\n")
            fh.write("|---|---|---|---:|---:|---:|---:|---:|\n")
            for r in rows:
                fh.write("| {artifact} | {runtime} | {precision} | {top1:.2%} | {top5:.2%} | {change} | "
                         "{agreement_with_first:.2%} | {ms_per_image:.2f} |\n".format(change=top1_change(r["top1_drop_pp"]), **r))
