"""Bench output: a terminal table that fits 100 columns (``wide`` for every column), numbered notes that say
what each row measured, and the files of a run — JSON, CSV, Markdown and a PNG plot — written atomically.

Columns are data (:class:`Column`): a row is a dict with a ``runtime`` and a ``precision`` field, so a new
runtime or precision is a new row, never a new renderer. Each distinct thing measured (a model configuration
or an artifact file) gets a note number; its note holds the long text — full path, params and MACs, and the
paper's figures with the paper's name — so the table keeps to the figures.

By default each run writes its own folder, ``benchmarks/results/<UTC time>-<label>/bench.{json,csv,md,png}``,
and points ``benchmarks/results/latest`` at it: no run replaces another. Explicit ``--json``/``--markdown``
paths are the only files a run overwrites.
"""
import csv
import datetime
import importlib.util
import io
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from fgvc_edge._io import atomic_path, write_json
from fgvc_edge.errors import UserInputError

Row = Dict[str, Any]
DEFAULT_DIR = os.path.join("benchmarks", "results")
LATEST = "latest"
NARROW_WIDTH = 100
MIN_ELIDED = 14
SYNTHETIC_MARK = "†"
# Short runtime names, used only when the default table would not fit otherwise.
COMPACT_RUNTIMES = {"onnxruntime": "ort", "openvino": "ov"}


@dataclass(frozen=True)
class Column:
    """A table column: its header, the text of a row's cell, and where it shows.

    ``narrow``: in the default terminal table (else only with ``--wide`` and in Markdown). ``shown``: whether
    the column has anything to say for these rows. ``fold``: when every row reads the same, the default table
    drops the column and says the value once under the table. When the default table would be wider than 100
    columns, in turn: cells longer than ``max_width`` are shortened with "…", columns with a ``drop`` rank leave
    (lowest rank first), columns with a ``compact`` form take it (``compact_note`` says so), and shortened cells
    get shorter still (down to ``MIN_ELIDED``); the Markdown and ``--wide`` keep everything whole. A header
    may take two lines in the terminal (``\n``); the Markdown joins them.
    """

    header: str
    cell: Callable[[Row], str]
    narrow: bool = True
    shown: Callable[[Sequence[Row]], bool] = lambda rows: True
    fold: bool = False
    max_width: Optional[int] = None
    left: bool = False
    drop: Optional[int] = None
    compact: Optional[Callable[[Row], str]] = None
    compact_note: str = ""
    # The cell in --wide and in the Markdown, where it says more than the default table's (a full path).
    whole: Optional[Callable[[Row], str]] = None

    def text(self, row: Row, wide: bool) -> str:
        return (self.whole or self.cell)(row) if wide else self.cell(row)

    @property
    def title(self) -> str:
        return self.header.replace("/\n", "/").replace("\n", " ")


# -- cell text ----------------------------------------------------------------------------------------------


def _num(value: Optional[float], scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else "{:.{}f}".format(value / scale, digits)


def _lat(row: Row, key: str) -> str:
    latency = row.get("latency_ms")
    return "-" if not latency else "{:.2f}".format(latency[key])


def noise(row: Row) -> Optional[float]:
    """Run-to-run spread of a row: p90 over p50 (1.00 = every call alike)."""
    latency = row.get("latency_ms")
    if not latency or not latency.get("p50"):
        return None
    return latency["p90"] / latency["p50"]


def _relative(row: Row, key: str) -> Optional[float]:
    return (row.get("relative") or {}).get(key)


def _ratio_pair(row: Row) -> str:
    """Ours, then the paper's in brackets, e.g. ``1.67 (1.56)`` (the header says ×base)."""
    if not row.get("relative"):
        return "-"
    ours, paper = _relative(row, "ours"), _relative(row, "paper")
    return "{} ({})".format(_num(ours, 1.0, 2), _num(paper, 1.0, 2))


def _vs_openvino(row: Row) -> str:
    return "-" if row.get("vs_openvino") is None else "{:.2f}".format(row["vs_openvino"])


def _int8_accuracy(row: Row, key: str, fmt: str) -> str:
    figures = row.get("int8_accuracy") or {}
    return "-" if figures.get(key) is None else fmt.format(figures[key])


def _paper(row: Row, key: str) -> Optional[float]:
    return (row.get("paper") or {}).get(key)


def _accuracy(row: Row, key: str) -> str:
    value = (row.get("accuracy") or {}).get(key)
    return "-" if value is None else "{:.1%}".format(value)


def model_label(row: Row) -> str:
    """``cmal_resnet50[raw]``; a transformed checkpoint reads ``resnet50 +prune``, its before-row ``(before)``."""
    text = row["model"] + ("[{}]".format(row["variant"]) if row.get("variant") else "")
    if row.get("transforms"):
        text += " +" + "+".join(row["transforms"])
    elif row.get("before_of"):
        text += " (before)"
    return text


def source_of(row: Row) -> str:
    """What was measured: the artifact file, the checkpoint folder, or "random init"."""
    return str(row.get("source") or row.get("artifact") or row.get("checkpoint") or "random init")


def short_source(row: Row) -> str:
    """An artifact's file name, a checkpoint's last two folders (``cub/best``), or "random init"."""
    source = source_of(row)
    if source == "random init" or os.sep not in source:
        return source
    path = os.path.normpath(source)
    if os.path.splitext(path)[1]:
        return os.path.basename(path)
    return "/".join(path.split(os.sep)[-2:])


def precision_label(row: Row) -> str:
    return row["precision"] + (SYNTHETIC_MARK if row.get("calibration") == "synthetic" else "")


def elide(text: str, width: Optional[int]) -> str:
    """``text`` cut to ``width`` characters, a quarter kept from its start and the rest from its end (file names
    differ at the end: precision, batch, suffix)."""
    if width is None or len(text) <= width:
        return text
    keep = width - 1
    head = keep // 4
    return text[:head] + "…" + text[len(text) - (keep - head):]


def _deploy_differs(rows: Sequence[Row]) -> bool:
    return any(r.get("params_deploy") not in (None, r.get("params")) for r in rows)


def _any(key: str) -> Callable[[Sequence[Row]], bool]:
    return lambda rows: any(row.get(key) for row in rows)


def _any_paper(key: str) -> Callable[[Sequence[Row]], bool]:
    return lambda rows: any(_paper(row, key) is not None for row in rows)


# The note number column is filled in per table (see ``_numbered``).
COLUMNS: List[Column] = [
    Column("#", lambda r: str(r["_note"])),
    Column("model", model_label, max_width=22, fold=True, left=True),
    Column("source", short_source, max_width=18, fold=True, left=True, whole=source_of),
    Column("in", lambda r: str(r["input_size"]), fold=True, drop=3),
    Column("classes", lambda r: str(r["num_classes"]), narrow=False),
    Column("runtime", lambda r: r["runtime"], fold=True, left=True,
           compact=lambda r: COMPACT_RUNTIMES.get(r["runtime"], r["runtime"]), compact_note="ort = onnxruntime, ov = openvino"),
    Column("prec", precision_label, fold=True, left=True),
    Column("b", lambda r: str(r["batch"]), fold=True),
    Column("params M", lambda r: _num(r.get("params"), 1e6, 2), narrow=False),
    # Parameters the exported graph holds, where training-only branches make it differ (CARE-Net).
    Column("deploy M", lambda r: _num(r.get("params_deploy"), 1e6, 2), narrow=False, shown=_deploy_differs),
    Column("paper M", lambda r: _num(_paper(r, "params"), 1e6, 1), narrow=False, shown=_any_paper("params")),
    Column("GMACs", lambda r: _num(r.get("macs"), 1e9, 2), narrow=False),
    Column("paper G", lambda r: _num(_paper(r, "macs"), 1e9, 1), narrow=False, shown=_any_paper("macs")),
    Column("p50 ms", lambda r: _lat(r, "p50"), shown=_any("latency_ms")),
    Column("p90 ms", lambda r: _lat(r, "p90"), narrow=False, shown=_any("latency_ms")),
    Column("p99 ms", lambda r: _lat(r, "p99"), narrow=False, shown=_any("latency_ms")),
    Column("mean ms", lambda r: _lat(r, "mean"), narrow=False, shown=_any("latency_ms")),
    Column("p90/\np50", lambda r: _num(noise(r), 1.0, 2), shown=_any("latency_ms")),
    Column("img/s", lambda r: _num(r.get("throughput_ips"), 1.0, 1), shown=_any("latency_ms"), drop=1),
    Column("paper ms", lambda r: _num(_paper(r, "latency_ms"), 1.0, 3), narrow=False, shown=_any_paper("latency_ms")),
    Column("×base\n(paper)", _ratio_pair, shown=_any("relative")),
    Column("×OV", _vs_openvino, shown=_any("vs_openvino"), drop=4),
    Column("INT8\nagree", lambda r: _int8_accuracy(r, "top1_agreement", "{:.2f}"), shown=_any("int8_accuracy"),
           drop=5),
    Column("INT8\nrel L2", lambda r: _int8_accuracy(r, "rel_error", "{:.3f}"), narrow=False,
           shown=_any("int8_accuracy")),
    Column("top-1", lambda r: _accuracy(r, "top1"), shown=_any("accuracy")),
    Column("top-5", lambda r: _accuracy(r, "top5"), narrow=False, shown=_any("accuracy")),
    Column("agree", lambda r: _accuracy(r, "agreement_fp32"), shown=_any("accuracy")),
    Column("load\nMB", lambda r: _num(r.get("load_mb"), 1.0, 0), shown=_any("latency_ms"), drop=2),
    Column("RSS MB", lambda r: _num(r.get("rss_peak_mb"), 1.0, 0), narrow=False, shown=_any("latency_ms")),
    Column("size MB", lambda r: _num(r.get("artifact_mb"), 1.0, 1), narrow=False, shown=_any("artifact_mb")),
]
# Spaces between two columns of the terminal table: the right padding of a cell and the (blank) rule.
GAP = 2

CSV_FIELDS = [
    "model", "variant", "source", "artifact", "checkpoint", "transforms", "before_of", "input_size", "num_classes",
    "params", "params_deploy", "macs", "runtime", "precision", "calibration", "batch", "device", "threads", "p50_ms", "p90_ms",
    "p99_ms", "mean_ms", "p90_over_p50", "throughput_ips", "load_mb", "rss_peak_mb", "run_peak_rss_mb",
    "artifact_mb", "top1", "top5", "agreement_fp32", "eval_images", "ratio_to_baseline", "paper_id", "paper_params",
    "paper_macs", "paper_latency_ms", "paper_ratio_to_baseline", "paper_device", "paper_source", "ratio_to_openvino",
    "int8_top1_agreement", "int8_rel_error", "note",
]


# -- notes: what each row measured --------------------------------------------------------------------------


def _subject(row: Row) -> Tuple[Any, ...]:
    return (model_label(row), row["input_size"], row.get("num_classes"), source_of(row), (row.get("paper") or {}).get("id"))


def _numbered(rows: Sequence[Row]) -> Tuple[List[Row], List[Row]]:
    """(rows with their note number in ``_note``, the first row of each note)."""
    numbers: Dict[Tuple[Any, ...], int] = {}
    firsts: List[Row] = []
    out = []
    for row in rows:
        key = _subject(row)
        if key not in numbers:
            numbers[key] = len(numbers) + 1
            firsts.append(row)
        out.append(dict(row, _note=numbers[key]))
    return out, firsts


def _note(number: int, row: Row) -> str:
    text = "[{}] {} @{}, {} classes, {}: {} M params, {} GMACs".format(
        number, model_label(row), row["input_size"], row.get("num_classes"), source_of(row),
        _num(row.get("params"), 1e6, 2), _num(row.get("macs"), 1e9, 2))
    if row.get("artifact") and row.get("checkpoint"):
        text += " (from {})".format(row["checkpoint"])
    paper = row.get("paper")
    if paper:
        figures = ["{} M params".format(_num(paper.get("params"), 1e6, 1))]
        if paper.get("macs") is not None:
            figures.append("{} GMACs".format(_num(paper["macs"], 1e9, 1)))
        if paper.get("latency_ms") is not None:
            figures.append("{:.3f} ms on {}".format(paper["latency_ms"], paper.get("device")))
        text += "; paper: {} — {}".format(", ".join(figures), paper["source"])
    return text


def notes(rows: Sequence[Row], wide: bool = True) -> List[str]:
    """The numbered notes, then what the table's marks, ratios and memory columns mean."""
    _, firsts = _numbered(rows)
    lines = [_note(number, row) for number, row in enumerate(firsts, 1)]
    # What a paper's figure counts, where it differs from ours (CARE-Net's Table 2 counts training-only params).
    lines += sorted({"{}: {}".format(r["paper"]["id"], r["paper"]["note"]) for r in rows
                     if (r.get("paper") or {}).get("note")})
    lines += ["ours: " + "; ".join(sorted({r["device"] for r in rows}))]
    peak = max((r.get("run_peak_rss_mb") or 0.0 for r in rows), default=0.0)
    if any(r.get("latency_ms") for r in rows):
        lines.append("latency per image; p90/p50 = run-to-run spread; load MB = resident memory the model or runner "
                     "added when loaded" + ("; RSS MB = the process's resident peak while timing" if wide else "")
                     + ("; the run's peak RSS: {:.0f} MB".format(peak) if peak else ""))
    if any(r.get("relative") for r in rows):
        lines.append("×base = p50 / the baseline's p50 in the same run (paper: its own ratio: latency ratios "
                     "compare across machines, milliseconds do not)")
    if any(r.get("transforms") for r in rows):
        lines.append("+prune/+reparameterize rows: a transformed checkpoint; ×base = p50 / its (before) row's p50")
    if any(r.get("calibration") == "synthetic" for r in rows):
        lines.append("{} INT8 calibrated on synthetic images: speed figures only, its accuracy means nothing"
                     .format(SYNTHETIC_MARK))
    if any(r.get("vs_openvino") for r in rows):
        lines.append("×OV = our p50 / OpenVINO's p50, same precision and batch, same run")
    int8 = next((r["int8_accuracy"] for r in rows if r.get("int8_accuracy")), None)
    if int8:
        lines.append("INT8 agree / rel L2 = agreement with the FP32 graph's top-1 and relative L2 error of the logits "
                     "on {} {} (the calibration images and their mirror images)".format(int8["images"], int8["source"]))
    lines += sorted({r["note"] for r in rows if r.get("note")})
    accuracy = next((r["accuracy"] for r in rows if r.get("accuracy")), None)
    if accuracy:
        lines.append("top-1 on {} {} images of {}; agree = same top-1 class as the FP32 row of the same model "
                     "(PyTorch's when measured)".format(accuracy["images"], accuracy["split"], accuracy["root"]))
    return lines


# -- the terminal table -------------------------------------------------------------------------------------


@dataclass
class _Shown:
    """A column as the table shows it: cells elided to ``limit``, in ``compact`` form when that was needed."""

    column: Column
    limit: Optional[int]
    wide: bool = False
    compact: bool = False

    def text(self, row: Row) -> str:
        if self.compact and self.column.compact:
            return elide(self.column.compact(row), self.limit)
        return elide(self.column.text(row, self.wide), self.limit)

    def width(self, rows: Sequence[Row]) -> int:
        return max([len(line) for line in self.column.header.split("\n")] + [len(self.text(row)) for row in rows])


def table_width(shown: Sequence[_Shown], rows: Sequence[Row]) -> int:
    """Characters per line of the terminal table (no border, ``GAP`` between columns)."""
    return sum(column.width(rows) for column in shown) + GAP * (len(shown) - 1)


def _columns(rows: Sequence[Row], wide: bool) -> Tuple[List[_Shown], List[str]]:
    """The columns to show and, in the default view, the lines that go under the table: the folded columns as
    "every row: header value · …", and what was left out or shortened to keep within 100 columns."""
    shown, folded = [], []
    for column in COLUMNS:
        if not column.shown(rows) or not (wide or column.narrow):
            continue
        values = {column.cell(row) for row in rows}
        if not wide and column.fold and len(values) == 1:
            folded.append("{} {}".format(column.title, values.pop()))
            continue
        shown.append(_Shown(column, None, wide))
    if wide:
        return shown, []
    under = ["every row: " + " · ".join(folded)] if folded else []
    fitted = _fit(shown, rows)
    return shown, under + (["; ".join(fitted)] if fitted else [])


def _fit(shown: List[_Shown], rows: Sequence[Row]) -> List[str]:
    """Bring the table within 100 columns, each step only while it is still wider: names shortened to their
    column's ``max_width``, ranked columns dropped, cells compacted, names shortened further."""
    def too_wide() -> bool:
        return table_width(shown, rows) > NARROW_WIDTH

    said = []
    elidable = [c for c in shown if c.column.max_width is not None]
    for item in elidable:
        if too_wide():
            item.limit = item.column.max_width
    dropped = []
    for item in sorted((c for c in shown if c.column.drop is not None), key=lambda c: c.column.drop or 0):
        if too_wide():
            shown.remove(item)
            dropped.append(item.column.title)
    if dropped:
        said.append("--wide adds " + ", ".join(dropped))
    for item in shown:
        if item.column.compact is not None and too_wide():
            item.compact = True
            said.append(item.column.compact_note)
    while elidable and too_wide():
        widest = max(elidable, key=lambda c: c.width(rows))
        if widest.width(rows) <= MIN_ELIDED:
            break
        widest.limit = widest.width(rows) - 1
    return said


def rich_table(rows: Sequence[Row], *, wide: bool = False, title: str = "fgvc-edge bench") -> Any:
    """The terminal view: the table (at most 100 columns unless ``wide``), then the notes."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    numbered, _ = _numbered(rows)
    columns, under = _columns(numbered, wide)
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, padding=(0, GAP - 1, 0, 0))
    for item in columns:
        table.add_column(item.column.header, justify="left" if item.column.left else "right", no_wrap=True)
    for row in numbered:
        # Text, not markup: "cmal_resnet50[raw]" must not be read as a rich style tag.
        table.add_row(*[Text(item.text(row)) for item in columns])
    return Group(table, *[Text(line) for line in under + notes(rows, wide)])


# -- files --------------------------------------------------------------------------------------------------


def markdown(rows: Sequence[Row]) -> str:
    numbered, _ = _numbered(rows)
    columns = [item.column for item in _columns(numbered, wide=True)[0]]
    out = io.StringIO()
    out.write("| " + " | ".join(c.title for c in columns) + " |\n")
    out.write("|" + "|".join(":---" if c.left else "---:" for c in columns) + "|\n")
    for row in numbered:
        out.write("| " + " | ".join(c.text(row, wide=True).replace("|", "\\|") for c in columns) + " |\n")
    out.write("\n" + "\n".join("- " + line for line in notes(rows)) + "\n")
    return out.getvalue()


def csv_text(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        paper = row.get("paper") or {}
        accuracy = row.get("accuracy") or {}
        flat = {k: row.get(k) for k in CSV_FIELDS if k in row}
        flat["source"] = source_of(row)
        flat["transforms"] = "+".join(row.get("transforms") or [])
        flat.update({"{}_ms".format(k): v for k, v in (row.get("latency_ms") or {}).items()})
        flat.update(
            {
                "p90_over_p50": noise(row),
                "top1": accuracy.get("top1"),
                "top5": accuracy.get("top5"),
                "agreement_fp32": accuracy.get("agreement_fp32"),
                "eval_images": accuracy.get("images"),
                "ratio_to_baseline": _relative(row, "ours"),
                "paper_ratio_to_baseline": _relative(row, "paper"),
                "paper_id": paper.get("id"),
                "paper_params": paper.get("params"),
                "paper_macs": paper.get("macs"),
                "paper_latency_ms": paper.get("latency_ms"),
                "paper_device": paper.get("device"),
                "paper_source": paper.get("source"),
                "ratio_to_openvino": row.get("vs_openvino"),
                "int8_top1_agreement": (row.get("int8_accuracy") or {}).get("top1_agreement"),
                "int8_rel_error": (row.get("int8_accuracy") or {}).get("rel_error"),
            }
        )
        writer.writerow(flat)
    return out.getvalue()


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)


@dataclass
class Written:
    """What a run wrote: the files, the run folder and its ``latest`` pointer (None with explicit paths), and why
    a plot is missing."""

    files: List[str]
    folder: Optional[str] = None
    latest: Optional[str] = None
    no_plot: Optional[str] = None

    def summary(self) -> str:
        """``folder/bench.{json,csv,md,png}`` when the files share a stem, else the paths."""
        stems = {os.path.splitext(path)[0] for path in self.files}
        if len(stems) != 1:
            return ", ".join(self.files)
        return "{}.{{{}}}".format(stems.pop(), ",".join(os.path.splitext(path)[1][1:] for path in self.files))


def write_reports(
    rows: Sequence[Row],
    *,
    json_path: Optional[str] = None,
    markdown_path: Optional[str] = None,
    results_dir: str = DEFAULT_DIR,
    label: str = "bench",
) -> Written:
    """Write JSON, CSV, Markdown and the PNG plot.

    With ``json_path`` and/or ``markdown_path`` the files go there (CSV and PNG beside the JSON, or beside the
    Markdown when only it is given); otherwise into a new run folder under ``results_dir`` (see the module
    docstring), and ``results_dir/latest`` then points at it.
    """
    folder = None
    if json_path or markdown_path:
        stem = os.path.splitext(json_path or markdown_path or "")[0]
    else:
        folder = new_run_folder(results_dir, label)
        stem = os.path.join(folder, "bench")
    json_path = json_path or stem + ".json"
    markdown_path = markdown_path or stem + ".md"
    write_json(json_path, list(rows))
    write_text(stem + ".csv", csv_text(rows))
    write_text(markdown_path, markdown(rows))
    written = Written([json_path, stem + ".csv", markdown_path], folder)
    if importlib.util.find_spec("matplotlib") is None:
        written.no_plot = "no plot: matplotlib is in the toolkit extra (pip install 'fgvc-edge[toolkit]')"
    elif any(row.get("latency_ms") for row in rows):
        plot_png(rows, stem + ".png")
        written.files.append(stem + ".png")
    if folder is not None:
        written.latest = point_latest(results_dir, folder)
    return written


# -- run folders --------------------------------------------------------------------------------------------


def run_label(targets: Sequence[str], default: str = "paper") -> str:
    """A short folder label: the first target's name (an artifact's file stem), "+N" for the others."""
    if not targets:
        return default
    first = os.path.splitext(os.path.basename(os.path.normpath(targets[0])))[0]
    label = re.sub(r"[^A-Za-z0-9_.+-]", "_", first)[:32] or "bench"
    return label + ("+{}".format(len(targets) - 1) if len(targets) > 1 else "")


def new_run_folder(results_dir: str, label: str, now: Optional[datetime.datetime] = None) -> str:
    """A folder of its own, ``<UTC time>-<label>`` (``-2``, ``-3`` … when two runs share the second)."""
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    base = os.path.join(results_dir, "{}-{}".format(stamp, label))
    for attempt in range(1, 1000):
        folder = base if attempt == 1 else "{}-{}".format(base, attempt)
        try:
            os.makedirs(folder)
            return folder
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserInputError("cannot create {}: {}".format(folder, exc.strerror or exc)) from None
    raise UserInputError("cannot create a run folder under {}: 999 runs named {}".format(results_dir, base))


def point_latest(results_dir: str, folder: str) -> str:
    """Point ``results_dir/latest`` at ``folder``: a relative symlink swapped in by one rename, so a reader
    sees the previous run or this one, never neither. Where symlinks cannot be made, ``latest.txt`` names it."""
    link = os.path.join(results_dir, LATEST)
    tmp = os.path.join(results_dir, ".{}.{}.tmp".format(LATEST, os.getpid()))
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.basename(folder), tmp)
        os.replace(tmp, link)
        return link
    except OSError:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    write_text(link + ".txt", os.path.basename(folder) + "\n")
    return link + ".txt"


# -- the plot -----------------------------------------------------------------------------------------------


def plot_png(rows: Sequence[Row], path: str) -> None:
    """p50 latency per image of every timed row (whisker to p90), grouped by what was measured (the table's note
    numbers) and coloured by runtime and precision; where a paper gives a latency ratio, a diamond marks our
    baseline's p50 times the paper's ratio (where the row would be if our ratio matched the paper's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbered, _ = _numbered(rows)
    timed = sorted((row for row in numbered if row.get("latency_ms")), key=lambda row: row["_note"])
    series = list(dict.fromkeys((row["runtime"], row["precision"]) for row in timed))
    colours = {key: plt.get_cmap("tab10")(i % 10) for i, key in enumerate(series)}
    positions, y, previous = [], 0.0, None
    for row in timed:
        y += 1.6 if previous not in (None, row["_note"]) else 1.0
        positions.append(y)
        previous = row["_note"]
    p50 = [row["latency_ms"]["p50"] for row in timed]
    spread = [row["latency_ms"]["p90"] - row["latency_ms"]["p50"] for row in timed]

    fig, ax = plt.subplots(figsize=(12, 1.8 + 0.32 * len(timed)))
    try:
        for key in series:
            picked = [i for i, row in enumerate(timed) if (row["runtime"], row["precision"]) == key]
            ax.barh([positions[i] for i in picked], [p50[i] for i in picked], height=0.8, color=colours[key],
                    xerr=[[0.0] * len(picked), [spread[i] for i in picked]], capsize=2, label=" ".join(key))
        marked = False
        for i, row in enumerate(timed):
            ours, paper = _relative(row, "ours"), _relative(row, "paper")
            if ours and paper:
                ax.plot([p50[i] / ours * paper], [positions[i]], marker="D", color="black", markersize=6,
                        linestyle="none", label=None if marked else "paper's ratio × our baseline p50")
                marked = True
            # The figures in a column right of the plot: never clipped by the bars' scale.
            ax.annotate(_bar_text(row), (1.01, positions[i]), xycoords=("axes fraction", "data"), va="center",
                        fontsize=8, annotation_clip=False)
        ax.set_yticks(positions)
        ax.set_yticklabels([_bar_label(row) for row in timed], fontsize=8)
        ax.invert_yaxis()
        if max(p50) / max(min(p50), 1e-9) > 30:
            ax.set_xscale("log")
        ax.set_xlabel("p50 latency per image, ms (whisker: p90; shorter is faster)")
        title = "fgvc-edge bench — {}".format("; ".join(sorted({r["device"] for r in timed})))
        if any(row.get("calibration") == "synthetic" for row in timed):
            title += "\n{} INT8 calibrated on synthetic images: speed only".format(SYNTHETIC_MARK)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.5 / fig.get_figheight() - 0.1),
                  ncol=min(4, len(series) + 1), frameon=False)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def _bar_label(row: Row) -> str:
    """``[4] resnet18 (cub/best) · onnxruntime int8 b8``: the note number and what the bar measured."""
    measured = elide(model_label(row), 28)
    if source_of(row) != "random init":
        measured += " ({})".format(elide(short_source(row), 28))
    batch = " b{}".format(row["batch"]) if row["batch"] != 1 else ""
    return "[{}] {} · {} {}{}".format(row["_note"], measured, row["runtime"], precision_label(row), batch)


def _bar_text(row: Row) -> str:
    parts = ["{:.2f} ms".format(row["latency_ms"]["p50"])]
    if row.get("relative"):
        parts.append("×{:.2f}".format(row["relative"]["ours"])
                     + (" (paper ×{:.2f})".format(row["relative"]["paper"]) if row["relative"].get("paper") else ""))
    if row.get("accuracy"):
        parts.append("top-1 {:.1%}".format(row["accuracy"]["top1"]))
    return "  ".join(parts)
