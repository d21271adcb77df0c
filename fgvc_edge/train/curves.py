"""Per-epoch metrics as CSV and as a PNG curve (matplotlib's Agg backend: no display needed)."""
import csv
from typing import Any, Dict, Sequence

from fgvc_edge._io import atomic_path
from fgvc_edge.errors import require

METRIC_COLUMNS = (
    "epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
    "train_images", "steps", "steps_per_s", "seconds", "skipped_train", "skipped_val",
)


def write_metrics_csv(path: str, rows: Sequence[Dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _fmt(row.get(k)) for k in METRIC_COLUMNS})


def plot_curves(path: str, rows: Sequence[Dict[str, Any]], title: str) -> None:
    """Loss (train, val; log scale) and top-1 accuracy (train, val) against the epoch, side by side."""
    matplotlib = require("matplotlib", "toolkit")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        ax_loss.plot(epochs, [row["train_loss"] for row in rows], marker="o", label="train")
        ax_loss.plot(epochs, [row["val_loss"] for row in rows], marker="o", label="val")
        # Log scale: a first-epoch validation loss on untrained BatchNorm statistics can be 100× the rest.
        ax_loss.set_yscale("log")
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("loss")
        ax_loss.legend()
        ax_acc.plot(epochs, [100 * row["train_top1"] for row in rows], marker="o", label="train top-1")
        ax_acc.plot(epochs, [100 * row["val_top1"] for row in rows], marker="o", label="val top-1")
        ax_acc.set_xlabel("epoch")
        ax_acc.set_ylabel("accuracy (%)")
        ax_acc.legend()
        for ax in (ax_loss, ax_acc):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(title)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)


def _fmt(value: Any) -> Any:
    return "{:.6g}".format(value) if isinstance(value, float) else value
