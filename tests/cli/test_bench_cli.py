"""`bench` as a user meets it: accuracy next to speed, runs that never replace each other, progress in logs."""
import json
import os

import pytest
from typer.testing import CliRunner

from fgvc_edge.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, needle):
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert needle in text


@pytest.fixture
def data(tmp_path, tiny):
    root = tmp_path / "data"
    tiny.write_imagefolder(str(root), classes=3, train_per_class=4, test_per_class=4, size=40)
    return root


@pytest.mark.parametrize("precisions", ["fp32", pytest.param("fp32,int8", marks=pytest.mark.slow)])
def test_bench_with_data_puts_accuracy_next_to_speed(tmp_path, monkeypatch, data, precisions):
    monkeypatch.delenv("FGVC_EDGE_QUIET")  # this test reads the progress lines too
    monkeypatch.chdir(tmp_path)  # the INT8 and export caches and the run folder go under tmp_path
    result = invoke("bench", "resnet18", "--input-size", 32, "--iters", 2, "--warmup", 0, "--threads", 1,
                    "--data", data, "--precisions", precisions, "--limit", 9)
    assert result.exit_code == 0, result.output
    (folder,) = [p for p in (tmp_path / "benchmarks" / "results").iterdir() if p.name != "latest"]
    rows = json.loads((folder / "bench.json").read_text())
    expected = [("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")]
    expected += [("onnxruntime", "int8"), ("openvino", "int8")] * ("int8" in precisions)
    assert [(r["runtime"], r["precision"]) for r in rows] == expected
    for row in rows:
        accuracy = row["accuracy"]
        assert accuracy["images"] == 9 and 0.0 <= accuracy["top1"] <= 1.0  # --limit 9 of the 12 test images
        assert row["num_classes"] == 3  # the model gets the data set's head
    torch_row, ort_row, ov_row = rows[:3]
    # The same seeded weights in PyTorch, in the export and in OpenVINO: the same predictions.
    for row in (ort_row, ov_row):
        assert row["accuracy"]["agreement_fp32"] == 1.0 and row["accuracy"]["top1"] == torch_row["accuracy"]["top1"]
    for row in rows[3:]:
        assert 0.0 <= row["accuracy"]["agreement_fp32"] <= 1.0
        assert row["calibration"] == "data"  # calibrated on the training images: no synthetic mark
        assert row["int8_accuracy"]["source"].startswith("training images of --data")
    assert "†" not in result.output and "top-1" in result.output and "agree" in result.output
    table = result.output[result.output.index("fgvc-edge bench"):result.output.index("[1] resnet18")]
    assert max(len(line) for line in table.splitlines()) <= 100
    # Without a terminal, one plain line per step with the count of rows.
    assert "bench · 0/{}".format(len(rows)) in result.output and "bench · 1/{}".format(len(rows)) in result.output
    assert sorted(p.name for p in folder.iterdir()) == ["bench.csv", "bench.json", "bench.md", "bench.png"]


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--num-classes", 5], "--num-classes 5 has 5 classes; the data set"),
        (["--dataset", "cub"], "missing images.txt"),
    ],
)
def test_bench_data_refusals_come_before_any_measurement(data, extra, needle):
    assert_one_line_error(invoke("bench", "resnet18", "--input-size", 32, "--data", data, *extra), needle)


def test_bench_data_needs_targets(data):
    assert_one_line_error(invoke("bench", "--data", data), "--data needs model names or artifacts")


def test_bench_data_refuses_an_artifact_of_other_classes(tmp_path, tiny, fp32_onnx):
    five = tmp_path / "five"
    tiny.write_imagefolder(str(five), classes=5, train_per_class=1, test_per_class=1, size=40)
    assert_one_line_error(invoke("bench", fp32_onnx, "--data", five), "has 3 classes; the data set at")


def test_runs_never_overwrite_each_other(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for size in (32, 48):
        result = invoke("bench", "resnet18", "--input-size", size, "--runtimes", "none")
        assert result.exit_code == 0, result.output
        assert "latest run: benchmarks/results/latest" in result.output
    results = tmp_path / "benchmarks" / "results"
    folders = sorted(p for p in results.iterdir() if p.name != "latest")
    assert len(folders) == 2 and all(p.name.endswith("-resnet18") or p.name.endswith("-resnet18-2") for p in folders)
    sizes = [json.loads((p / "bench.json").read_text())[0]["input_size"] for p in folders]
    assert sorted(sizes) == [32, 48]
    assert json.loads((results / "latest" / "bench.json").read_text())[0]["input_size"] == 48


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "r18.onnx"
    assert invoke("export", "resnet18", "--num-classes", 3, "--input-size", 32, "-o", path).exit_code == 0
    return path


def test_calibrate_reports_progress_in_logs(tmp_path, monkeypatch, data, fp32_onnx):
    monkeypatch.delenv("FGVC_EDGE_QUIET")
    monkeypatch.chdir(tmp_path)
    result = invoke("calibrate", fp32_onnx, "--data", data, "--num-images", 10, "--target", "onnxruntime",
                    "-o", tmp_path / "r18-int8.onnx")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("calibrating")]
    # One line per tenth of the images (batch 1 here: ten), with the time left while there is some.
    assert [line.split(" · ")[1] for line in lines] == ["{}/10".format(n) for n in range(1, 11)]
    assert all("left" in line for line in lines[:-1]) and "left" not in lines[-1]


def test_build_reports_its_steps_in_logs(tmp_path, monkeypatch, fp32_onnx):
    monkeypatch.delenv("FGVC_EDGE_QUIET")  # this test reads the progress lines
    monkeypatch.chdir(tmp_path)
    result = invoke("build", fp32_onnx, "--fp16", "--target", "onnxruntime", "-o", tmp_path / "r18-fp16.onnx")
    assert result.exit_code == 0, result.output
    steps = [line for line in result.output.splitlines() if line.startswith("build ·")]
    assert len(steps) == 2 and "converting to FP16" in steps[0] and "writing" in steps[1]
