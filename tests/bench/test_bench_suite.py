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


def test_quick_pass_times_only_configurations_with_a_paper_latency():
    from fgvc_edge.bench.suite import is_timed, point_row_count

    quick = BenchSettings(quick=True, precisions=("fp32",))
    table9 = ModelPoint("cmal_resnet50", "raw", 448, 100, "cmal_table9/cmal_resnet50_raw")
    care = ModelPoint("care_resnet50", None, 224, 200, "care_table2/care_resnet50")
    assert is_timed(table9, quick) and not is_timed(care, quick)
    # torch + ORT FP32 + OpenVINO FP32; MACs only
    assert point_row_count(table9, quick) == 3 and point_row_count(care, quick) == 1
    full = BenchSettings(batches=(1, 8), precisions=("fp32", "int8"))
    # per batch: torch, ORT fp32 + int8, OpenVINO fp32 + int8
    assert is_timed(care, full) and point_row_count(care, full) == 2 * (1 + 2 + 2)
    ours = BenchSettings(batches=(1, 8), precisions=("fp32", "int8"), runtimes=("torch", "onnxruntime"))
    assert point_row_count(care, ours) == 2 * (1 + 2)
    assert point_row_count(care, BenchSettings(runtimes=())) == 1


def test_agreement_is_with_the_fp32_row_of_the_same_model():
    import numpy as np

    from fgvc_edge.bench.suite import add_agreement

    def scored(runtime, precision, checkpoint="ck"):
        return {"model": "resnet18", "variant": None, "input_size": 32, "num_classes": 3, "checkpoint": checkpoint,
                "before_of": None, "runtime": runtime, "precision": precision, "batch": 1, "accuracy": {"top1": 0.5}}

    rows = [scored("onnxruntime", "fp32"), scored("torch", "fp32"), scored("onnxruntime", "int8"),
            scored("onnxruntime", "int8", checkpoint="other")]
    predictions = {id(rows[0]): np.array([0, 1, 2, 2]), id(rows[1]): np.array([0, 1, 2, 1]),
                   id(rows[2]): np.array([0, 1, 0, 1]), id(rows[3]): np.array([0, 0, 0, 0])}
    add_agreement(rows, predictions)
    assert rows[2]["accuracy"]["agreement_fp32"] == 0.75  # against PyTorch's FP32, not ORT's
    assert rows[2]["accuracy"]["agreement_with"] == "torch fp32 b1"
    assert rows[0]["accuracy"]["agreement_fp32"] == 0.75 and rows[1]["accuracy"]["agreement_fp32"] == 1.0
    assert "agreement_fp32" not in rows[3]["accuracy"]  # another checkpoint: no FP32 row to agree with


def test_progress_counts_every_row_before_the_first(one_torch_thread):
    from fgvc_edge.bench.suite import BenchProgress, run_bench

    events = []
    progress = BenchProgress(total=lambda n: events.append(("total", n)), step=lambda text: events.append("step"),
                             row_done=lambda: events.append("row"))
    rows = run_bench(["resnet18"], BenchSettings(runtimes=("onnxruntime",), precisions=("fp32",), batches=(1, 2),
                                                 iters=1, warmup=0, threads=1, input_size=32), progress)
    assert events[0] == ("total", 2) and events.count("row") == len(rows) == 2
    assert "step" in events[1:events.index("row")]
    assert all(row["load_mb"] is not None and row["rss_peak_mb"] > row["load_mb"] for row in rows)
    assert rows[0]["run_peak_rss_mb"] >= max(row["rss_peak_mb"] for row in rows) * 0.99
    assert rows[0]["source"] == "random init" and rows[0]["calibration"] is None


def test_care_rows_show_train_and_deploy_parameters_against_table2():
    # CARE-Net's reconstruction branch is learnable but training-only: Table 2 counts it (the paper sums every
    # learnable parameter), the deployed graph does not hold it. Both counts are in the row, labelled.
    from rich.console import Console

    from fgvc_edge.bench import papers
    from fgvc_edge.bench.report import csv_text, markdown, rich_table
    from fgvc_edge.bench.suite import BenchProgress, _Run, bench_model_point

    # care_resnet18 at 32 px, compared with the Table 2 row (the paper row attached as for a paper configuration).
    point = ModelPoint("care_resnet18", None, 32, 200, "care_table2/care_resnet50")
    (row,) = bench_model_point(point, _Run(BenchSettings(runtimes=(), threads=1), BenchProgress(), None))
    width = 256
    assert row["params"] - row["params_deploy"] == 4 * (width * width + width)  # the four 1×1 convs of eq. (8)
    assert "train count" in row["paper"]["note"] and "24.87M" in row["paper"]["note"]
    console = Console(width=250, record=True)
    console.print(rich_table([row], wide=True))
    text = console.export_text()
    assert "{:.2f}".format(row["params"] / 1e6) in text and "{:.2f}".format(row["params_deploy"] / 1e6) in text
    assert "Table 2 counts every learnable parameter" in text
    assert "params M" in markdown([row]) and "deploy M" in markdown([row])
    assert str(row["params_deploy"]) in csv_text([row])
    same = dict(row, params_deploy=row["params"], paper=papers.paper_summary("cmal_table9/resnet50"))
    assert "deploy M" not in markdown([same])  # one count when they agree
