"""`fgvc-edge export --mode`: CMAL-Net's inference variants, refused in one line for models without them."""
import json
import os

import pytest
from typer.testing import CliRunner

from fgvc_edge.cli import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


# raw is not the default variant (raw+aoval is), so the fast case shows the option taking effect.
@pytest.mark.parametrize("mode,stem", [
    ("raw", "cmal_resnet18-raw"),
    pytest.param("raw+aoval", "cmal_resnet18-raw_aoval", marks=pytest.mark.slow),
])
def test_export_writes_the_chosen_variant(mode, stem, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("export", "cmal_resnet18", "--mode", mode, "--num-classes", 4, "--input-size", 64)
    assert result.exit_code == 0, result.output
    path = os.path.join("engines", stem + "-random-fp32-b1.onnx")
    sidecar = json.loads(open(path + ".json").read())
    assert sidecar["variant"] == mode and sidecar["parity"]["rel_error"] <= 1e-4


@pytest.mark.parametrize("args,needle", [
    (["resnet18", "--mode", "raw"], "resnet18 has no modes; drop --mode"),
    (["cmal_resnet18", "--mode", "aoval"], "cmal_resnet18 has modes raw+aoval, raw, not 'aoval'"),
])
def test_export_mode_refusals_are_one_line(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("export", *args, "--input-size", 64)
    assert result.exit_code == 2 and result.output.strip().splitlines() == ["error: " + needle]
    assert not os.path.exists("engines")
