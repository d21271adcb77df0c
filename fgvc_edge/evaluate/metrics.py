"""Classification metrics from logits and labels (numpy only): the one metric code path of every runtime."""
import csv
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from fgvc_edge._io import atomic_path
from fgvc_edge.errors import require


@dataclass
class ClassificationMetrics:
    """Top-1/top-5 over images, per-class accuracy (recall) and the confusion matrix (rows: true class)."""

    top1: float
    top5: float
    per_class: np.ndarray
    confusion: np.ndarray
    predictions: np.ndarray
    images: int

    @property
    def mean_class_accuracy(self) -> float:
        """Mean of the per-class accuracies over the classes that have test images."""
        present = self.confusion.sum(axis=1) > 0
        return float(self.per_class[present].mean()) if present.any() else 0.0

    @classmethod
    def from_logits(cls, logits: np.ndarray, labels: np.ndarray, num_classes: int) -> "ClassificationMetrics":
        logits = np.asarray(logits, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
            raise ValueError("logits {} do not match {} labels".format(logits.shape, labels.shape[0]))
        k = min(5, logits.shape[1])
        # Stable arg-sort: ties resolve to the lower class index on every runtime alike.
        ranked = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        predictions = ranked[:, 0]
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(confusion, (labels, predictions), 1)
        totals = confusion.sum(axis=1)
        per_class = np.divide(np.diag(confusion), totals, out=np.zeros(num_classes), where=totals > 0)
        n = max(labels.shape[0], 1)
        return cls(
            top1=float((predictions == labels).sum() / n),
            top5=float((ranked == labels[:, None]).any(axis=1).sum() / n),
            per_class=per_class,
            confusion=confusion,
            predictions=predictions,
            images=int(labels.shape[0]),
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "mean_class_accuracy": self.mean_class_accuracy,
            "images": self.images,
        }


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of images on which two artifacts predict the same class."""
    return float((np.asarray(a) == np.asarray(b)).mean()) if len(a) else 0.0


def write_per_class_csv(path: str, metrics: ClassificationMetrics, class_names: Sequence[str]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["index", "class", "images", "correct", "accuracy"])
            for i, name in enumerate(class_names):
                total = int(metrics.confusion[i].sum())
                writer.writerow([i, name, total, int(metrics.confusion[i, i]), "{:.6g}".format(metrics.per_class[i])])


def write_confusion_png(path: str, metrics: ClassificationMetrics, class_names: Sequence[str], title: str) -> None:
    """Row-normalised confusion matrix; class names on the axes up to 30 classes."""
    matplotlib = require("matplotlib", "toolkit")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals = metrics.confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(metrics.confusion, totals, out=np.zeros(metrics.confusion.shape), where=totals > 0)
    k = len(class_names)
    side = min(4 + 0.3 * k, 16)
    fig, ax = plt.subplots(figsize=(side, side))
    try:
        image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title)
        if k <= 30:
            ticks = list(range(k))
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
            ax.set_xticklabels(class_names, rotation=90, fontsize=7)
            ax.set_yticklabels(class_names, fontsize=7)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)


def top1_change(drop_pp: float) -> str:
    """A row's top-1 against the first artifact's, as read: ``-87.22 pp drop``, ``+0.50 pp gain``, ``0.00 pp``."""
    change = -drop_pp
    if round(change, 2) == 0:
        return "0.00 pp"
    return "{:+.2f} pp {}".format(change, "drop" if change < 0 else "gain")


def comparison_rows(results: Sequence[Any]) -> List[Dict[str, Any]]:
    """Accuracy of each artifact and its drop vs the first one (percentage points), with prediction agreement."""
    rows: List[Dict[str, Any]] = []
    reference: Optional[Any] = results[0] if results else None
    for result in results:
        m = result.metrics
        rows.append({
            "artifact": result.path,
            "runtime": result.runtime,
            "precision": result.precision,
            "top1": m.top1,
            "top5": m.top5,
            "mean_class_accuracy": m.mean_class_accuracy,
            "top1_drop_pp": 100.0 * (reference.metrics.top1 - m.top1),
            "top5_drop_pp": 100.0 * (reference.metrics.top5 - m.top5),
            "agreement_with_first": agreement(reference.metrics.predictions, m.predictions),
            "images": m.images,
            "skipped": result.skipped,
            "ms_per_image": result.ms_per_image,
        })
    return rows
