"""Bench output: a rich table for the terminal; JSON, CSV and Markdown files (written atomically)."""
import csv
import io
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fgvc_edge._io import atomic_path, write_json

Row = Dict[str, Any]
DEFAULT_DIR = os.path.join("benchmarks", "results")

# (header, function of a row → text); shared by the terminal table and the Markdown file.
Column = Tuple[str, Any]


def _m(value: Optional[float], scale: float, digits: int = 1) -> str:
    return "-" if value is None else "{:.{}f}".format(value / scale, digits)


def _lat(row: Row, key: str) -> str:
    latency = row.get("latency_ms")
    return "-" if not latency else "{:.2f}".format(latency[key])


def _ips(row: Row) -> str:
    return "-" if row.get("throughput_ips") is None else "{:.1f}".format(row["throughput_ips"])


def _ratio(row: Row, key: str) -> str:
    rel = row.get("relative") or {}
    value = rel.get(key)
    return "-" if value is None else "{:.2f}×".format(value)


def _vs_openvino(row: Row) -> str:
    return "-" if row.get("vs_openvino") is None else "{:.2f}×".format(row["vs_openvino"])


def _int8_accuracy(row: Row, key: str, fmt: str) -> str:
    figures = row.get("int8_accuracy") or {}
    return "-" if figures.get(key) is None else fmt.format(figures[key])


def _paper(row: Row, key: str) -> Optional[float]:
    paper = row.get("paper") or {}
    return paper.get(key)


def _model(row: Row) -> str:
    """``cmal_resnet50[raw]``; a transformed checkpoint reads ``resnet50 +prune``, its before-row ``(before)``."""
    text = row["model"] + ("[{}]".format(row["variant"]) if row.get("variant") else "")
    if row.get("transforms"):
        text += " +" + "+".join(row["transforms"])
    elif row.get("before_of"):
        text += " (before)"
    elif row.get("checkpoint"):
        text += " (ckpt)"
    return text


COLUMNS: List[Column] = [
    ("model", _model),
    ("input", lambda r: str(r["input_size"])),
    ("classes", lambda r: str(r["num_classes"])),
    ("runtime", lambda r: r["runtime"]),
    ("prec", lambda r: r["precision"]),
    ("batch", lambda r: str(r["batch"])),
    ("params M", lambda r: _m(r.get("params"), 1e6, 2)),
    ("paper M", lambda r: _m(_paper(r, "params"), 1e6, 1)),
    ("GMACs", lambda r: _m(r.get("macs"), 1e9, 2)),
    ("paper G", lambda r: _m(_paper(r, "macs"), 1e9, 1)),
    ("p50 ms", lambda r: _lat(r, "p50")),
    ("p90 ms", lambda r: _lat(r, "p90")),
    ("p99 ms", lambda r: _lat(r, "p99")),
    ("mean ms", lambda r: _lat(r, "mean")),
    ("img/s", _ips),
    ("peak MB", lambda r: _m(r.get("peak_mem_mb"), 1.0, 0)),
    ("size MB", lambda r: _m(r.get("artifact_mb"), 1.0, 1)),
    ("paper ms", lambda r: _m(_paper(r, "latency_ms"), 1.0, 3)),
    ("×base", lambda r: _ratio(r, "ours")),
    ("paper ×base", lambda r: _ratio(r, "paper")),
    ("×OV", _vs_openvino),
    ("INT8 top-1", lambda r: _int8_accuracy(r, "top1_agreement", "{:.3f}")),
    ("INT8 rel L2", lambda r: _int8_accuracy(r, "rel_error", "{:.3f}")),
]

def _with_paper(row: Row, key: str, scale: float, digits: int) -> str:
    ours = _m(row.get(key), scale, digits)
    paper = _paper(row, key)
    return ours if paper is None else "{} ({})".format(ours, _m(paper, scale, 1))


def _ratio_pair(row: Row) -> str:
    if not row.get("relative"):
        return "-"
    return "{} ({})".format(_ratio(row, "ours"), _ratio(row, "paper"))


# The terminal gets the compact view: ours with the paper's figure in brackets.
TERMINAL_COLUMNS: List[Column] = [
    COLUMNS[0],
    ("input", lambda r: str(r["input_size"])),
    ("runtime", lambda r: r["runtime"]),
    ("prec", lambda r: r["precision"]),
    ("b", lambda r: str(r["batch"])),
    ("params M (paper)", lambda r: _with_paper(r, "params", 1e6, 2)),
    ("GMACs (paper)", lambda r: _with_paper(r, "macs", 1e9, 2)),
    ("p50 ms", lambda r: _lat(r, "p50")),
    ("p90 ms", lambda r: _lat(r, "p90")),
    ("img/s", _ips),
    ("mem MB", lambda r: _m(r.get("peak_mem_mb"), 1.0, 0)),
    ("×base (paper)", _ratio_pair),
    ("×OV", _vs_openvino),
    ("INT8 top-1 / rel", lambda r: "-" if not r.get("int8_accuracy") else "{} / {}".format(
        _int8_accuracy(r, "top1_agreement", "{:.2f}"), _int8_accuracy(r, "rel_error", "{:.3f}"))),
]

CSV_FIELDS = [
    "model", "variant", "checkpoint", "transforms", "before_of", "input_size", "num_classes", "params", "macs", "runtime", "precision",
    "batch", "device", "threads", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_ips", "peak_mem_mb",
    "artifact_mb", "ratio_to_baseline", "paper_id", "paper_params", "paper_macs", "paper_latency_ms",
    "paper_ratio_to_baseline", "paper_device", "ratio_to_openvino", "int8_top1_agreement", "int8_rel_error", "note",
]


def rich_table(rows: Sequence[Row], title: str = "fgvc-edge bench") -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, caption=_caption(rows))
    for header, _ in TERMINAL_COLUMNS:
        table.add_column(header, justify="left" if header in ("model", "runtime", "prec") else "right")
    for row in rows:
        # Text, not markup: "cmal_resnet50[raw]" must not be read as a rich style tag.
        table.add_row(*[Text(fn(row)) for _, fn in TERMINAL_COLUMNS])
    return table


def _caption(rows: Sequence[Row]) -> str:
    devices = sorted({r["device"] for r in rows})
    sources = sorted({"{} ({})".format(r["paper"]["source"], r["paper"]["device"] or "params only")
                      for r in rows if r.get("paper")})
    lines = ["ours: " + "; ".join(devices)] if devices else []
    lines += ["paper: " + s for s in sources]
    lines.append("latency per image; ×base = p50 / baseline p50 in the same run (paper: its own ratio)")
    if any(r.get("transforms") for r in rows):
        lines.append("+prune/+reparameterize rows: a transformed checkpoint; ×base = p50 / its (before) row's p50")
    if any(r.get("vs_openvino") for r in rows):
        lines.append("×OV = our p50 / OpenVINO's p50, same precision and batch, same run")
    accuracy = [r["int8_accuracy"] for r in rows if r.get("int8_accuracy")]
    if accuracy:
        lines.append("INT8 top-1 / rel = agreement with FP32 top-1 and relative L2 error of the logits on {} {} "
                     "(calibration images and their mirror images)".format(accuracy[0]["images"], accuracy[0]["source"]))
    lines += sorted({r["note"] for r in rows if r.get("note")})
    return "\n".join(lines)


def markdown(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    out.write("| " + " | ".join(h for h, _ in COLUMNS) + " |\n")
    out.write("|" + "|".join("---" for _ in COLUMNS) + "|\n")
    for row in rows:
        out.write("| " + " | ".join(fn(row) for _, fn in COLUMNS) + " |\n")
    out.write("\n" + "\n\n".join(_caption(rows).splitlines()) + "\n")
    return out.getvalue()


def csv_text(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in rows:
        paper = row.get("paper") or {}
        rel = row.get("relative") or {}
        flat = {k: row.get(k) for k in CSV_FIELDS if k in row}
        flat["transforms"] = "+".join(row.get("transforms") or [])
        flat.update({"{}_ms".format(k): v for k, v in (row.get("latency_ms") or {}).items()})
        flat.update(
            {
                "ratio_to_baseline": rel.get("ours"),
                "paper_ratio_to_baseline": rel.get("paper"),
                "paper_id": paper.get("id"),
                "paper_params": paper.get("params"),
                "paper_macs": paper.get("macs"),
                "paper_latency_ms": paper.get("latency_ms"),
                "paper_device": paper.get("device"),
                "ratio_to_openvino": row.get("vs_openvino"),
                "int8_top1_agreement": (row.get("int8_accuracy") or {}).get("top1_agreement"),
                "int8_rel_error": (row.get("int8_accuracy") or {}).get("rel_error"),
            }
        )
        writer.writerow(flat)
    return out.getvalue()


def write_reports(
    rows: Sequence[Row],
    *,
    json_path: Optional[str] = None,
    markdown_path: Optional[str] = None,
    csv_path: Optional[str] = None,
    folder: str = DEFAULT_DIR,
) -> List[str]:
    """Write JSON, CSV and Markdown; the CSV sits beside the JSON; paths not given go to ``folder``."""
    json_path = json_path or os.path.join(folder, "bench.json")
    csv_path = csv_path or os.path.splitext(json_path)[0] + ".csv"
    markdown_path = markdown_path or os.path.join(folder, "bench.md")
    write_json(json_path, list(rows))
    for path, text in ((csv_path, csv_text(rows)), (markdown_path, markdown(rows))):
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
    return [json_path, csv_path, markdown_path]
