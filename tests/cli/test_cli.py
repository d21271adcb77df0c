"""The CLI through Typer's CliRunner: real files, exit codes, one-line errors, nothing half-written."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fgvc_edge.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, needle):
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert needle in text


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    out = folder / "r18.onnx"
    result = invoke("export", "resnet18", "--num-classes", 5, "--input-size", 32, "--batch", "dynamic", "-o", out)
    assert result.exit_code == 0, result.output
    return out


def test_models_lists_registry():
    result = invoke("models")
    assert result.exit_code == 0
    assert "resnet18" in result.output and "resnet50" in result.output


def test_export_writes_onnx_sidecar_and_metadata(exported):
    import onnx

    sidecar = json.loads(exported.with_name(exported.name + ".json").read_text())
    assert sidecar["model"] == "resnet18" and sidecar["num_classes"] == 5
    assert sidecar["batch"] == "dynamic" and sidecar["input_shape"] == ["batch", 3, 32, 32]
    assert sidecar["opset"] == 17 and sidecar["parity"]["rel_error"] <= 1e-4
    assert sidecar["params"] > 11e6 and sidecar["macs"] > 0
    from fgvc_edge._io import sha256_file

    assert sidecar["sha256"] == sha256_file(str(exported))
    proto = onnx.load(str(exported))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.opset_import[0].version == 17
    meta = json.loads(dict((p.key, p.value) for p in proto.metadata_props)["fgvc_edge"])
    assert meta["model"] == "resnet18" and meta["preprocess"]["crop_size"] == 32


def test_predict_json(exported, tmp_path):
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(image)
    result = invoke("predict", image, "--model", exported, "--topk", 3, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    top = payload[0]["top"]
    assert len(top) == 3
    probs = [t["prob"] for t in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-9


def test_bench_artifact_without_model_name(exported, tmp_path):
    out = tmp_path / "b.json"
    result = invoke("bench", exported, "--iters", 2, "--warmup", 0, "--batch", "1,2", "--json", out,
                    "--markdown", tmp_path / "b.md")
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [r["batch"] for r in rows] == [1, 2]
    for row in rows:
        assert row["runtime"] == "onnxruntime" and row["model"] == "resnet18"
        assert row["params"] > 11e6
        assert set(row["latency_ms"]) == {"p50", "p90", "p99", "mean"}
        assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p99"]
    assert "| resnet18 |" in (tmp_path / "b.md").read_text()


def test_bench_model_both_runtimes(tmp_path):
    out = tmp_path / "b.json"
    result = invoke("bench", "resnet18", "--input-size", 32, "--iters", 2, "--warmup", 0, "--json", out,
                    "--markdown", tmp_path / "b.md", "--runtimes", "torch,onnxruntime")
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert {r["runtime"] for r in rows} == {"torch", "onnxruntime"}
    keys = {"model", "variant", "checkpoint", "input_size", "num_classes", "params", "macs", "runtime",
            "precision", "batch", "device", "latency_ms", "paper"}
    for row in rows:
        assert keys <= set(row)
        assert row["input_size"] == 32 and row["paper"] is None


@pytest.mark.parametrize(
    "args,needle",
    [
        (["export", "resnet5"], "unknown model 'resnet5'; did you mean resnet50"),
        (["export", "resnet18", "--batch", "x"], "--batch"),
        (["export", "resnet18", "--checkpoint", "/nonexistent/ck"], "no such checkpoint"),
        (["predict", "/nonexistent.png", "--model", "/nonexistent.onnx"], "no such ONNX file"),
        (["bench", "/nonexistent/x.onnx"], "no such artifact"),
        (["bench", "resnet18", "--batch", "0"], "--batch"),
        (["bench", "resnet18", "--runtimes", "tensorflow"], "unknown runtime"),
    ],
)
def test_user_errors_are_one_line_exit_2(args, needle):
    assert_one_line_error(invoke(*args), needle)


def test_corrupt_inputs(tmp_path, exported):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    assert_one_line_error(invoke("predict", exported, "--model", bad), "cannot load")
    image = tmp_path / "bad.png"
    image.write_bytes(b"garbage")
    assert_one_line_error(invoke("predict", image, "--model", exported), "cannot read image")
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "fgvc.json").write_text("{not json")
    assert_one_line_error(invoke("export", "resnet18", "--checkpoint", ck), "cannot read")


def test_unwritable_output_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("user data")
    result = invoke("export", "resnet18", "--input-size", 32, "-o", blocker / "sub" / "m.onnx")
    assert_one_line_error(result, "cannot write")
    assert blocker.read_text() == "user data"


def test_failed_export_keeps_existing_file(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous artifact")
    import fgvc_edge.export.onnx_export as ox

    def broken(*a, **k):
        raise ox.ParityError("ONNX Runtime disagrees with PyTorch (forced)")

    monkeypatch.setattr(ox, "_check_parity", broken)
    result = invoke("export", "resnet18", "--input-size", 32, "-o", target)
    assert result.exit_code == 1 and "disagrees" in result.output
    assert target.read_bytes() == b"previous artifact"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_bench_runtimes_none_counts_only(tmp_path):
    out = tmp_path / "b.json"
    result = invoke("bench", "resnet50", "--runtimes", "none", "--input-size", 448, "--num-classes", 100,
                    "--json", out, "--markdown", tmp_path / "b.md")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())
    assert row["runtime"] == "none" and row["latency_ms"] is None
    # CMAL-Net Table 9: ResNet50 @448 is 24M params / 16.5 GMACs; ours with a 100-class head.
    assert abs(row["params"] - 24e6) / 24e6 < 0.03 and abs(row["macs"] - 16.5e9) / 16.5e9 < 0.03
    assert row["paper"]["id"] == "cmal_table9/resnet50"
    assert (tmp_path / "b.csv").exists()


def test_bench_int8_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the INT8 cache goes to ./calibration, not the checkout's
    out = tmp_path / "b.json"
    result = invoke("bench", "resnet18", "--input-size", 32, "--runtimes", "onnxruntime", "--precisions", "fp32,int8",
                    "--iters", 2, "--warmup", 0, "--json", out, "--markdown", tmp_path / "b.md")
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [(r["runtime"], r["precision"]) for r in rows] == [("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    assert rows[1]["artifact_mb"] < rows[0]["artifact_mb"] / 2  # INT8 weights are a quarter of FP32's
