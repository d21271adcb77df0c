"""The bench's output: a 100-column table that keeps every figure, notes tied to rows, files per run, the plot."""
import csv
import datetime
import io
import json
import os

import pytest
from PIL import Image
from rich.console import Console

from fgvc_edge.bench import papers
from fgvc_edge.bench.report import (
    NARROW_WIDTH,
    markdown,
    new_run_folder,
    noise,
    plot_png,
    rich_table,
    run_label,
    short_source,
    write_reports,
)
from fgvc_edge.bench.suite import add_baseline_ratios

DEVICE = "cpu: AMD EPYC (2 threads)"


def _row(model, runtime, precision, p50, *, variant=None, paper=None, source="random init", calibration=None,
         size=448, classes=100, batch=1, accuracy=None):
    return {"model": model, "variant": variant, "source": source, "checkpoint": None, "input_size": size,
            "num_classes": classes, "params": 43.21e6, "macs": 37.44e9, "runtime": runtime, "precision": precision,
            "batch": batch, "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3, "mean": p50 * 1.02},
            "throughput_ips": 1000.0 / p50, "load_mb": 181.0, "rss_peak_mb": 2104.0, "artifact_mb": 165.2,
            "device": DEVICE, "paper": papers.paper_summary(paper) if paper else None, "calibration": calibration,
            "run_peak_rss_mb": 3512.0, "accuracy": accuracy, "transforms": []}


def paper_rows():
    """CMAL-Net Table 9 on three runtime/precision pairs: the widest default table `make bench-full` prints."""
    rows = []
    for runtime, precision, scale, calibration in (("torch", "fp32", 1.0, None), ("onnxruntime", "fp32", 0.6, None),
                                                    ("onnxruntime", "int8", 0.3, "synthetic")):
        rows.append(_row("resnet50", runtime, precision, 912.345 * scale, paper="cmal_table9/resnet50",
                         calibration=calibration))
        rows.append(_row("cmal_resnet50", runtime, precision, 1523.456 * scale, variant="raw",
                         paper="cmal_table9/cmal_resnet50_raw", calibration=calibration))
        rows.append(_row("cmal_resnet50", runtime, precision, 2987.654 * scale, variant="raw+aoval",
                         paper="cmal_table9/cmal_resnet50_raw_aoval", calibration=calibration))
    add_baseline_ratios(rows)
    return rows


def artifact_rows():
    """Four ONNX files of one checkpoint, scored on a data set: what each row measured must differ."""
    accuracy = {"top1": 0.9861, "top5": 1.0, "images": 360, "split": "test", "root": "data/digits",
                "agreement_fp32": 1.0}
    rows = []
    for name, precision, p50 in (("birds-fp32-b1", "fp32", 3.21), ("birds-fp16-b1", "fp16", 5.43),
                                 ("birds-int8-trt-b1", "int8", 2.87), ("birds-int8-ort-b1", "int8", 1.23)):
        path = os.path.join("engines", "birds", "{}.onnx".format(name))
        rows.append(_row("resnet18", "onnxruntime", precision, p50, source=path, size=224, classes=10,
                         calibration="data" if precision == "int8" else None, accuracy=dict(accuracy)))
        rows[-1].update(artifact=path, checkpoint="runs/digits/best")
    return rows


def mixed_rows():
    """Everything at once: paper rows, artifacts, a long model name, several batches."""
    rows = paper_rows() + artifact_rows()
    rows.append(_row("rbi_convnext_base", "onnxruntime", "int8", 812.0, source="random init", size=224, classes=120,
                     batch=8, calibration="synthetic"))
    return rows


def render(renderable, width=400):
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("rows", [paper_rows(), artifact_rows(), mixed_rows()], ids=["paper", "artifacts", "mixed"])
def test_default_table_fits_100_columns_and_keeps_the_figures(rows):
    table = rich_table(rows).renderables[0]
    lines = render(table).splitlines()
    assert max(len(line.rstrip()) for line in lines) <= NARROW_WIDTH
    text = "\n".join(lines)
    for row in rows:
        assert "{:.2f}".format(row["latency_ms"]["p50"]) in text  # p50 never elided
        assert "{:.2f}".format(noise(row)) in text  # run-to-run noise per row
    if any(r.get("relative") for r in rows):
        assert "1.67 (1.56)" in text  # ×base with the paper's own ratio
    if any(r.get("accuracy") for r in rows):
        assert "98.6%" in text and "100.0%" in text


def test_wide_table_has_every_column():
    text = render(rich_table(mixed_rows(), wide=True))
    for header in ("p99 ms", "mean ms", "paper M", "paper G", "paper ms", "RSS MB", "size MB", "top-5", "img/s"):
        assert header in text
    assert os.path.join("engines", "birds", "birds-int8-ort-b1.onnx") in text


def test_synthetic_int8_rows_are_marked_and_explained():
    rows = paper_rows()
    text = render(rich_table(rows))
    marked = [line for line in text.splitlines() if "int8†" in line]
    assert len(marked) == 3
    assert "† INT8 calibrated on synthetic images" in text
    assert "†" not in render(rich_table(artifact_rows()))  # calibrated on data: no mark


def test_paper_notes_are_tied_to_their_rows():
    rows = paper_rows()
    lines = render(rich_table(rows)).splitlines()
    table_rows = [line for line in lines if "cmal_resnet50[raw] " in line and not line.startswith("[")]
    assert len(table_rows) == 3 and all(line.split()[0] == "2" for line in table_rows)
    note = next(line for line in lines if line.startswith("[2]"))
    assert "cmal_resnet50[raw] @448" in note and "6.527 ms" in note and "CMAL-Net (Liu et al.), Table 9" in note
    assert "43.21 M params" in note  # ours, beside the paper's 43.0 M


def test_rows_say_what_was_measured():
    rows = artifact_rows()
    assert [short_source(r) for r in rows] == ["birds-fp32-b1.onnx", "birds-fp16-b1.onnx", "birds-int8-trt-b1.onnx",
                                               "birds-int8-ort-b1.onnx"]
    assert short_source({"source": os.path.join("runs", "cub", "p30", "best")}) == "p30/best"
    assert short_source({"source": "random init"}) == "random init"
    text = render(rich_table(rows))
    assert "model resnet18" in text  # the same model on every row: said once, under the table
    for row in rows:
        assert short_source(row) in text
    assert "(from runs/digits/best)" in text


def test_memory_is_labelled():
    text = render(rich_table(artifact_rows()))
    assert "load" in text and "181" in text
    assert "the run's peak RSS: 3512 MB" in text
    assert "2104" in render(rich_table(artifact_rows(), wide=True))


def test_markdown_and_csv_carry_source_noise_and_accuracy():
    rows = artifact_rows()
    md = markdown(rows)
    assert "| # | model | source |" in md and "| p90/p50 |" in md and "RSS MB = the process" in md
    assert "engines/birds/birds-int8-ort-b1.onnx" in md.replace(os.sep, "/")
    assert "- [1] resnet18 @224" in md
    from fgvc_edge.bench.report import csv_text

    parsed = list(csv.DictReader(io.StringIO(csv_text(rows))))
    assert [r["source"] for r in parsed] == [r["source"] for r in rows]
    assert float(parsed[0]["p90_over_p50"]) == pytest.approx(1.1)
    assert float(parsed[0]["top1"]) == pytest.approx(0.9861) and float(parsed[3]["agreement_fp32"]) == 1.0
    assert parsed[2]["calibration"] == "data"


def test_each_run_writes_its_own_folder(tmp_path):
    results = tmp_path / "results"
    first = write_reports(artifact_rows(), results_dir=str(results), label="birds")
    second = write_reports(paper_rows(), results_dir=str(results), label="paper-quick")
    assert first.folder != second.folder
    for written in (first, second):
        names = sorted(os.path.basename(f) for f in written.files)
        assert names == ["bench.csv", "bench.json", "bench.md", "bench.png"]
        assert all(os.path.isfile(f) for f in written.files)
    # The earlier run is intact; latest points at the later one, relatively (the folder can move).
    assert json.loads((results / os.path.basename(first.folder) / "bench.json").read_text())[0]["model"] == "resnet18"
    latest = results / "latest"
    assert second.latest == str(latest) and os.readlink(latest) == os.path.basename(second.folder)
    assert first.summary() == os.path.join(first.folder, "bench") + ".{json,csv,md,png}"
    assert json.loads((latest / "bench.json").read_text())[0]["model"] == "resnet50"
    assert os.path.basename(first.folder).endswith("Z-birds")


def test_runs_in_the_same_second_do_not_share_a_folder(tmp_path):
    now = datetime.datetime(2025, 7, 4, 9, 53, 1, tzinfo=datetime.timezone.utc)
    folders = [new_run_folder(str(tmp_path), "resnet18", now) for _ in range(3)]
    assert [os.path.basename(f) for f in folders] == ["20250704T095301Z-resnet18", "20250704T095301Z-resnet18-2",
                                                      "20250704T095301Z-resnet18-3"]


def test_explicit_paths_are_the_only_overwrite(tmp_path):
    out = tmp_path / "mine.json"
    out.write_text("[]")
    written = write_reports(artifact_rows(), json_path=str(out), results_dir=str(tmp_path / "results"))
    assert written.folder is None and not (tmp_path / "results").exists()
    assert sorted(os.path.basename(f) for f in written.files) == ["mine.csv", "mine.json", "mine.md", "mine.png"]
    assert len(json.loads(out.read_text())) == 4


def test_run_label():
    assert run_label([]) == "paper"
    assert run_label(["resnet18"]) == "resnet18"
    assert run_label([os.path.join("engines", "birds int8.onnx"), "resnet50"]) == "birds_int8+1"


def test_plot_is_a_png_with_a_row_per_measurement(tmp_path):
    path = tmp_path / "bench.png"
    plot_png(mixed_rows(), str(path))
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    # 14 timed rows: the figure grows with them so labels stay legible.
    assert width > 1000 and height > 0.3 * 110 * 14


def test_no_plot_without_latency(tmp_path):
    row = _row("resnet50", "none", "fp32", 1.0)
    row["latency_ms"] = None
    written = write_reports([row], results_dir=str(tmp_path))
    assert not any(f.endswith(".png") for f in written.files)
