"""What every command shares: the model options, `-o` and `--json`, torch-free start-up for listings and name
errors, one-line failures of the libraries we call, and `--debug` / FGVC_EDGE_DEBUG for the traceback."""
import json
import logging
import subprocess
import sys
import textwrap

import pytest
import typer
from typer.testing import CliRunner

from fgvc_edge.cli import app

runner = CliRunner()
MODEL_OPTIONS = {"--mode", "--num-classes", "--input-size", "--checkpoint"}
CREATES_A_MODEL = ("export", "reparam", "prune", "build", "bench", "train")
WRITES = ("export", "reparam", "prune", "import", "calibrate", "build", "train", "eval")
# Imported by none of these commands: `models`, `--help` and a mistyped name or mode need only the configs.
HEAVY = ("torch", "torchvision", "onnx", "onnxsim", "onnxruntime", "fvcore", "onnxconverter_common")
BLOCKER = textwrap.dedent(
    """
    import json, sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {heavy!r}:
                raise ImportError("blocked for this test: " + name)
            return None
    sys.meta_path.insert(0, _Block())
    from fgvc_edge.cli import main
    sys.argv = ["fgvc-edge"] + {args!r}
    try:
        main()
    except SystemExit as exit:
        code = exit.code
    print(json.dumps({{"code": code, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})}}))
    """
)


def _options(command_name):
    group = typer.main.get_command(app)
    return {opt for param in group.commands[command_name].params for opt in param.opts}


@pytest.mark.parametrize("name", CREATES_A_MODEL)
def test_every_model_creating_command_takes_the_model_options(name):
    assert MODEL_OPTIONS <= _options(name)


def test_import_takes_the_model_options_but_its_official_checkpoint():
    assert MODEL_OPTIONS - {"--checkpoint"} <= _options("import")


@pytest.mark.parametrize("name", WRITES)
def test_every_writing_command_takes_output_and_json(name):
    assert {"-o", "--json"} <= _options(name)


@pytest.mark.parametrize("args,code,needle", [
    (["models"], 0, "rbi_convnext_base"),
    (["--help"], 0, "export"),
    (["export", "nosuchmodel"], 2, "unknown model 'nosuchmodel'"),
    (["build", "resnet5", "--fp16"], 2, "did you mean resnet50"),
    (["prune", "resnet18", "--mode", "raw", "-o", "x"], 2, "resnet18 has no modes"),
    (["reparam", "cmal_resnet18", "--mode", "fast", "-o", "x"], 2, "has modes raw+aoval, raw"),
    (["train", "nosuchmodel", "--data", "."], 2, "unknown model"),
])
def test_listing_help_and_name_errors_import_no_deep_learning_library(args, code, needle):
    script = BLOCKER.format(heavy=HEAVY, args=args)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"code": code, "heavy": []}, out.stderr
    assert needle in out.stdout + out.stderr
    if code:
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "r18.onnx"
    result = runner.invoke(app, ["export", "resnet18", "--num-classes", "3", "--input-size", "32", "-o", str(out),
                                 "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_export_json_describes_the_written_file(exported):
    from fgvc_edge._io import sha256_file

    path, payload = exported
    assert payload["path"] == str(path) and payload["sha256"] == sha256_file(str(path))
    assert (payload["model"], payload["input_size"], payload["num_classes"], payload["batch"]) == ("resnet18", 32, 3, 1)
    assert payload["parity"]["rel_error"] <= 1e-4


def test_build_json_describes_the_deployable(exported, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r18-fp16.onnx"
    result = runner.invoke(app, ["build", str(exported[0]), "--fp16", "--target", "onnxruntime", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["path"] == str(out) and out.exists() and payload["precision"] == "fp16"
    assert payload["fp16_check"]["top1_agreement"] == 1.0


def test_bench_refuses_an_input_size_the_artifact_does_not_have(exported):
    result = runner.invoke(app, ["bench", str(exported[0]), "--input-size", "128", "--iters", "1"])
    assert result.exit_code == 2 and "fixed at input size 32; --input-size 128" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_checkpoint_at_another_input_size_says_so(tmp_path, caplog):
    from fgvc_edge.checkpoint import save_checkpoint
    from fgvc_edge.models import create_model

    checkpoint = save_checkpoint(create_model("resnet18", num_classes=3, input_size=32), str(tmp_path / "ck"))
    with caplog.at_level(logging.WARNING):
        same = runner.invoke(app, ["export", "resnet18", "-c", checkpoint, "-o", str(tmp_path / "a.onnx")])
    assert same.exit_code == 0 and "trained at" not in caplog.text
    with caplog.at_level(logging.WARNING):
        other = runner.invoke(app, ["export", "resnet18", "-c", checkpoint, "--input-size", "48",
                                    "-o", str(tmp_path / "b.onnx")])
    assert other.exit_code == 0, other.output
    assert "trained at 32 px; at 48 px its accuracy may change" in caplog.text


def test_a_failing_library_is_one_line_naming_its_stage(exported, tmp_path, monkeypatch):
    from onnxconverter_common import float16

    def broken(*args, **kwargs):
        raise ValueError("converter exploded\nwith a long story after it")

    monkeypatch.setattr(float16, "convert_float_to_float16", broken)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["build", str(exported[0]), "--fp16", "--target", "onnxruntime", "-o", "x.onnx"])
    assert result.exit_code == 2, result.output
    # Progress lines of the stages before it may precede the error (plain lines without a terminal).
    lines = result.output.strip().splitlines()
    assert lines[-1] == "error: FP16 conversion (onnxconverter-common) failed: converter exploded"
    assert [line for line in lines if line.startswith("error:")] == lines[-1:] and "Traceback" not in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_an_unexpected_error_is_one_line_and_debug_shows_it(monkeypatch):
    import fgvc_edge.models

    def bug():
        raise RuntimeError("an internal bug\nsecond line")

    monkeypatch.setattr(fgvc_edge.models, "list_models", bug)
    monkeypatch.delenv("FGVC_EDGE_DEBUG", raising=False)
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        "error: unexpected RuntimeError: an internal bug (run with --debug or FGVC_EDGE_DEBUG=1 for the traceback)"]
    debug = runner.invoke(app, ["--debug", "models"])
    assert isinstance(debug.exception, RuntimeError) and str(debug.exception).startswith("an internal bug")
    assert runner.invoke(app, ["models"]).exit_code == 1  # --debug holds for its own invocation only
    monkeypatch.setenv("FGVC_EDGE_DEBUG", "1")
    assert isinstance(runner.invoke(app, ["models"]).exception, RuntimeError)


def test_debug_propagates_user_errors_too(monkeypatch):
    from fgvc_edge.errors import UserInputError

    monkeypatch.setenv("FGVC_EDGE_DEBUG", "1")
    result = runner.invoke(app, ["export", "nosuchmodel"])
    assert isinstance(result.exception, UserInputError) and "unknown model" in str(result.exception)
