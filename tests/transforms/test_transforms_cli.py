"""`fgvc-edge reparam` / `prune` end to end: checkpoint → create_model, bench --checkpoint (before vs after),
build --target onnxruntime FP32 and INT8, and the runner on the result."""
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fgvc_edge.cli import app
from fgvc_edge.models import create_model
from fgvc_edge.runtime import OnnxRunner

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # build caches under ./engines and ./calibration
    return tmp_path


def bench_rows(*args):
    result = invoke("bench", "resnet18", *args, "--runtimes", "onnxruntime", "--precisions", "fp32", "--iters", 2,
                    "--warmup", 0, "--threads", 1, "--json", "b.json", "--markdown", "b.md")
    assert result.exit_code == 0, result.output
    return json.loads(open("b.json").read()), result.output


def test_prune_then_bench_and_build(workdir):
    result = invoke("prune", "resnet18", "--ratio", 0.3, "--input-size", 32, "--num-classes", 5, "-o", "ck")
    assert result.exit_code == 0, result.output
    assert "fc" in result.output and "classifier head" in result.output and "wrote ck" in result.output
    record = json.loads((workdir / "ck" / "fgvc.json").read_text())
    assert record["structure"]["transforms"][-1]["name"] == "prune"
    assert create_model("resnet18", checkpoint="ck").fc.in_features < 512

    (plain,), _ = bench_rows("--input-size", 32, "--num-classes", 5)
    # One run measures the model before pruning and the pruned checkpoint, and relates them.
    (before, after), output = bench_rows("--checkpoint", "ck")
    assert after["checkpoint"] == "ck" and after["transforms"] == ["prune"]
    assert before["checkpoint"] is None and before["before_of"] == "ck" and before["transforms"] == []
    for row in (before, after):  # the checkpoint's own size and classes, not the registry's
        assert row["input_size"] == 32 and row["num_classes"] == 5
    assert (before["params"], before["macs"]) == (plain["params"], plain["macs"])
    assert after["params"] < 0.6 * before["params"] and after["macs"] < 0.8 * before["macs"]
    assert after["relative"]["ours"] == pytest.approx(after["latency_ms"]["p50"] / before["latency_ms"]["p50"])
    assert "resnet18 +prune" in output and "resnet18 (before)" in output
    assert "resnet18 +prune" in open("b.md").read()
    (only,), _ = bench_rows("--checkpoint", "ck", "--no-before")
    assert only["checkpoint"] == "ck" and only["params"] == after["params"]

    calib = workdir / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(calib / "{}.png".format(i))
    image = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    for flags in (["--fp32"], ["--int8", "--calib-data", calib, "--calib-images", 8]):
        out = "pruned-{}.onnx".format(flags[0][2:])
        result = invoke("build", "resnet18", "--checkpoint", "ck", "--target", "onnxruntime", *flags, "-o", out)
        assert result.exit_code == 0, result.output
        sidecar = json.loads((workdir / (out + ".json")).read_text())
        assert sidecar["params"] == after["params"] and sidecar["checkpoint"] == "ck"
        with OnnxRunner(out) as session:
            assert session.infer(image).shape == (1, 5)


def test_reparam_writes_a_deploy_checkpoint(workdir):
    result = invoke("reparam", "acanet_resnet18", "--fold-bn", "--input-size", 64, "--num-classes", 3, "-o", "deploy")
    assert result.exit_code == 0, result.output
    assert "8 block(s) reparameterized" in result.output
    steps = json.loads((workdir / "deploy" / "fgvc.json").read_text())["structure"]["transforms"]
    assert [s["name"] for s in steps] == ["reparameterize", "fold_bn"]
    result = invoke("export", "acanet_resnet18", "--checkpoint", "deploy", "-o", "deploy.onnx")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (["prune", "resnet18", "--ratio", 0.3], "-o"),
        (["prune", "resnet18", "--ratio", 0.3, "--target-macs", 1.0, "-o", "x"], "exactly one of"),
        (["prune", "resnet18", "--importance", "random", "--ratio", 0.3, "-o", "x"], "--importance"),
        (["reparam", "resnet18"], "-o"),
    ],
)
def test_user_errors_are_one_line_exit_2(args, needle, workdir):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert needle in result.output
