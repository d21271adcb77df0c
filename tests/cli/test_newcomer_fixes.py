"""What a newcomer hit (issue #18): artifacts that describe their graph, names that do not collide, messages
that say what is wrong, and no silent no-ops. Through the CLI with real files."""
import json
import logging

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fgvc_edge.checkpoint import save_checkpoint
from fgvc_edge.cli import app
from fgvc_edge.models import create_model

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, needle):
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert needle in text


def sidecar(path):
    return json.loads(open(str(path) + ".json").read())


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default outputs go to ./engines
    return tmp_path


@pytest.fixture(scope="module")
def checkpoint_32(tmp_path_factory):
    """A resnet18 checkpoint saved at 32 px, 3 classes."""
    folder = tmp_path_factory.mktemp("ck") / "birds" / "best"
    save_checkpoint(create_model("resnet18", num_classes=3, input_size=32), str(folder), class_names=["a", "b", "c"])
    return folder


def write_image(path, seed=0, shape=(50, 40, 3)):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)).save(path)
    return path


# -- 3: the sidecar describes the graph beside it ------------------------------------------------------------


def test_export_checkpoint_at_another_size_predicts(checkpoint_32, tmp_path, caplog):
    out = tmp_path / "m.onnx"
    with caplog.at_level(logging.WARNING, logger="fgvc_edge.models"):
        result = invoke("export", "resnet18", "-c", checkpoint_32, "--input-size", 48, "-o", out)
    assert result.exit_code == 0, result.output
    assert any("trained at 32 px" in r.getMessage() and "48 px" in r.getMessage() for r in caplog.records)
    record = sidecar(out)
    assert record["input_size"] == 48 and record["input_shape"][2:] == [48, 48]
    assert record["preprocess"]["crop_size"] == 48
    assert record["preprocess"]["resize_size"] / 48 == pytest.approx(256 / 224, abs=0.03)  # the recipe's ratio
    predicted = invoke("predict", write_image(tmp_path / "x.png"), "--model", out, "--topk", 2, "--json")
    assert predicted.exit_code == 0, predicted.output
    assert [t["label"] for t in json.loads(predicted.output)[0]["top"]][0] in ("a", "b", "c")


def test_export_checkpoint_at_its_own_size_says_nothing(checkpoint_32, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="fgvc_edge.models"):
        result = invoke("export", "resnet18", "-c", checkpoint_32, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    assert not [r for r in caplog.records if "trained at" in r.getMessage()]
    assert sidecar(tmp_path / "m.onnx")["preprocess"]["crop_size"] == 32
