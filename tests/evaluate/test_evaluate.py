"""Evaluation: the metric arithmetic, and a checkpoint and its ONNX export giving the same predictions through
one code path (also for a batch-dependent model and a fixed-batch export), with the CLI's table and files."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fgvc_edge.checkpoint import save_checkpoint
from fgvc_edge.cli import app
from fgvc_edge.errors import UserInputError
from fgvc_edge.evaluate import ClassificationMetrics, artifact_label, evaluate_artifacts
from fgvc_edge.export import export_onnx
from fgvc_edge.models import create_model


def _dataset(tmp_path, tiny):
    root = tmp_path / "data"
    tiny.write_imagefolder(str(root), classes=3, train_per_class=1, test_per_class=4, size=40)
    return root


def _checkpoint_and_onnx(tmp_path, name, batch, size=32, names=("class_a", "class_b", "class_c")):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, input_size=size)
    folder = save_checkpoint(model, str(tmp_path / name / "best"), class_names=list(names))
    model = create_model(name, checkpoint=folder)
    onnx_path = export_onnx(model, str(tmp_path / "{}.onnx".format(name)), batch=batch, checkpoint=folder).path
    return folder, onnx_path


def test_metrics_from_logits():
    logits = np.array([[3, 2, 1, 0, 0, 0], [0, 1, 5, 0, 0, 0], [1, 2, 0, 0, 0, 0], [0, 0, 0, 0, 0, 9]], dtype=np.float32)
    labels = np.array([0, 2, 0, 4])
    m = ClassificationMetrics.from_logits(logits, labels, num_classes=6)
    assert m.top1 == 0.5  # rows 0 and 1 right
    assert m.top5 == 0.75  # row 3's class 4 is outside its top 5 (tie order is by class index)
    assert m.per_class.tolist() == [0.5, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert m.confusion[0].tolist() == [1, 1, 0, 0, 0, 0] and m.confusion.sum() == 4
    assert m.mean_class_accuracy == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # classes with test images only


def test_checkpoint_and_its_onnx_export_agree(tmp_path, tiny):
    root = _dataset(tmp_path, tiny)
    (root / "test" / "class_b" / "broken.jpg").write_text("not an image")
    folder, onnx_path = _checkpoint_and_onnx(tmp_path, "resnet18", "dynamic")
    sidecar = json.loads(open(onnx_path + ".json").read())
    assert sidecar["class_names"] == ["class_a", "class_b", "class_c"]  # checkpoint → export → sidecar
    report = evaluate_artifacts([folder, onnx_path], str(root), batch_size=5, out=str(tmp_path / "eval"))
    torch_result, onnx_result = report.results
    assert (torch_result.runtime, onnx_result.runtime) == ("pytorch", "onnxruntime")
    assert np.array_equal(torch_result.metrics.predictions, onnx_result.metrics.predictions)
    assert np.array_equal(torch_result.metrics.confusion, onnx_result.metrics.confusion)
    assert torch_result.metrics.images == onnx_result.metrics.images == 12
    assert torch_result.skipped == onnx_result.skipped == 1 and report.skipped_paths[0].endswith("broken.jpg")
    assert report.rows[1]["top1_drop_pp"] == 0.0 and report.rows[1]["agreement_with_first"] == 1.0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert [a["runtime"] for a in summary["artifacts"]] == ["pytorch", "onnxruntime"]
    per_artifact = tmp_path / "eval" / "2_resnet18"
    assert (per_artifact / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert (per_artifact / "per_class.csv").read_text().splitlines()[0] == "index,class,images,correct,accuracy"


def test_batch_dependent_model_checkpoint_and_fixed_batch_export_agree(tmp_path, tiny):
    # RBI mixes the images of a batch: 12 test images in batches of 5, the last filled by wrapping around.
    root = _dataset(tmp_path, tiny)
    folder, onnx_path = _checkpoint_and_onnx(tmp_path, "rbi_mobilenet_v3_large", 5)
    report = evaluate_artifacts([folder, onnx_path], str(root), batch_size=5, out=str(tmp_path / "eval"))
    assert report.results[1].metrics.images == 12
    assert np.array_equal(report.results[0].metrics.predictions, report.results[1].metrics.predictions)


def test_class_names_must_match_the_data_set(tmp_path, tiny):
    root = _dataset(tmp_path, tiny)
    torch.manual_seed(0)
    folder = save_checkpoint(create_model("resnet18", num_classes=3, input_size=32), str(tmp_path / "ck"),
                             class_names=["class_a", "zebra", "class_c"])
    with pytest.raises(UserInputError, match="class 1 is 'zebra'"):
        evaluate_artifacts([folder], str(root), out=str(tmp_path / "eval"))


def test_artifact_labels():
    assert artifact_label("runs/cub/best") == "cub-best"
    assert artifact_label("runs/cub/best/model.safetensors") == "cub-best"
    assert artifact_label("engines/r18-int8.onnx") == "r18-int8"


def test_cli_eval_prints_the_comparison_table(tmp_path, tiny):
    root = _dataset(tmp_path, tiny)
    folder, onnx_path = _checkpoint_and_onnx(tmp_path, "resnet18", "dynamic")
    result = CliRunner().invoke(app, ["eval", folder, onnx_path, "--data", str(root), "--out", str(tmp_path / "ev"),
                                      "--limit", "6"])
    assert result.exit_code == 0, result.output
    assert "imagefolder test split: 6 images, 3 classes" in result.output
    assert "onnxruntime" in result.output and "0.00 pp" in result.output
    assert (tmp_path / "ev" / "summary.md").read_text().count("\n") == 4
    missing = CliRunner().invoke(app, ["eval", str(tmp_path / "nope.onnx"), "--data", str(root)])
    assert missing.exit_code == 2 and missing.output.strip() == "error: no such artifact: {}".format(tmp_path / "nope.onnx")


def test_onnx_artifacts_evaluate_without_torch(tmp_path, tiny):
    import subprocess
    import sys

    root = _dataset(tmp_path, tiny)
    _, onnx_path = _checkpoint_and_onnx(tmp_path, "resnet18", "dynamic")
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "from fgvc_edge.evaluate import evaluate_artifacts\n"
        "r = evaluate_artifacts([{!r}], {!r}, out={!r})\n"
        "print(r.results[0].metrics.images, 'torch' in sys.modules and sys.modules['torch'] is not None)\n"
    ).format(onnx_path, str(root), str(tmp_path / "ev"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["12", "False"]
