from fgvc_edge.bench.suite import BenchSettings, ModelPoint, add_baseline_ratios, expand_points
from fgvc_edge.bench.timing import PeakRSS, time_calls


def test_paper_configurations_are_measured():
    points = expand_points(["resnet50"], BenchSettings())
    assert ModelPoint("resnet50", None, 448, 100, "cmal_table9/resnet50") in points
    assert ModelPoint("resnet50", None, 224, 1000, "care_table2/resnet50") in points


def test_explicit_size_overrides_paper_configs():
    points = expand_points(["resnet50"], BenchSettings(input_size=448, num_classes=100))
    assert points == [ModelPoint("resnet50", None, 448, 100, "cmal_table9/resnet50")]
    points = expand_points(["resnet18"], BenchSettings(input_size=64))
    assert points == [ModelPoint("resnet18", None, 64, 200, None)]


def _row(pid, p50, baseline=None, latency=None):
    return {"model": pid.split("/")[1], "runtime": "onnxruntime", "precision": "fp32", "batch": 1,
            "latency_ms": {"p50": p50}, "paper": {"id": pid, "baseline": baseline, "latency_ms": latency}}


def test_baseline_ratio_against_same_run():
    rows = [_row("cmal_table9/resnet50", 100.0, latency=4.174),
            _row("cmal_table9/cmal_resnet50_raw", 150.0, baseline="cmal_table9/resnet50", latency=6.527)]
    add_baseline_ratios(rows)
    assert rows[1]["relative"]["ours"] == 1.5
    assert abs(rows[1]["relative"]["paper"] - 6.527 / 4.174) < 1e-12
    assert "relative" not in rows[0]


def test_time_calls_and_memory():
    import numpy as np

    stats = time_calls(lambda: sum(range(1000)), batch=4, iters=5, warmup=1)
    assert stats.iters == 5 and 0 < stats.p50 <= stats.p99
    with PeakRSS() as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MB touched
        block.sum()
    assert mem.added_mb is None or mem.added_mb > 32


def test_terminal_table_keeps_variant_brackets():
    from rich.console import Console

    from fgvc_edge.bench.report import rich_table

    row = {"model": "cmal_resnet50", "variant": "raw", "input_size": 448, "num_classes": 100, "runtime": "torch",
           "precision": "fp32", "batch": 1, "params": 4.3e7, "macs": 3.7e10, "latency_ms": {"p50": 1.0, "p90": 1.0},
           "throughput_ips": 1.0, "peak_mem_mb": 1.0, "device": "cpu", "paper": None}
    console = Console(width=200, record=True)
    console.print(rich_table([row]))
    assert "cmal_resnet50[raw]" in console.export_text()


def test_care_rows_show_train_and_deploy_parameters_against_table2():
    # CARE-Net's reconstruction branch is learnable but training-only: Table 2 counts it (the paper sums every
    # learnable parameter), the deployed graph does not hold it. Both counts are in the row, labelled.
    from rich.console import Console

    from fgvc_edge.bench import papers
    from fgvc_edge.bench.report import csv_text, markdown, rich_table
    from fgvc_edge.bench.suite import bench_model_point

    point = ModelPoint("care_resnet18", None, 32, 200, "care_table2/care_resnet50")
    (row,) = bench_model_point(point, BenchSettings(runtimes=(), threads=1), None)
    width = 256
    assert row["params"] - row["params_deploy"] == 4 * (width * width + width)  # the four 1×1 convs of eq. (8)
    assert "train count" in row["paper"]["note"] and "24.87M" in row["paper"]["note"]
    console = Console(width=250, record=True)
    console.print(rich_table([row]))
    text = console.export_text()
    assert "{:.2f} train, {:.2f} deploy (25.0)".format(row["params"] / 1e6, row["params_deploy"] / 1e6) in text
    assert "care_table2/care_resnet50: Table 2 counts every learnable parameter" in text
    assert "| params M train | params M deploy |" in markdown([row])
    assert str(row["params_deploy"]) in csv_text([row])
    same = dict(row, params_deploy=row["params"], paper=papers.paper_summary("cmal_table9/resnet50"))
    console = Console(width=250, record=True)
    console.print(rich_table([same]))
    assert "{:.2f} (24.0)".format(row["params"] / 1e6) in console.export_text()  # one count when they agree
