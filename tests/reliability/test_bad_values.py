"""Class 7: values that would run but mean nothing are refused with one line, before or as they appear."""
import json

import pytest
from typer.testing import CliRunner

from fgvc_edge.cli import app
from fgvc_edge.errors import UserInputError


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line(result, needle):
    assert result.exit_code == 2, (result.output, result.exception)
    assert len(result.output.strip().splitlines()) == 1 and needle in result.output, result.output


@pytest.mark.parametrize("lr", ["nan", "inf", "-0.1"])
def test_a_non_finite_or_negative_lr_is_refused(lr, tiny_folder, tmp_path):
    assert_one_line(invoke("train", "resnet18", "--data", tiny_folder, "--lr", lr, "--out", tmp_path / "run"),
                    "--lr must be a finite number > 0")
    assert not (tmp_path / "run" / "last").exists()


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tiny_folder, tmp_path, monkeypatch):
    from fgvc_edge.train import TrainOptions, train
    from fgvc_edge.train.trainer import STEPS

    calls = {"n": 0}
    real = STEPS["standard"]

    def diverging(step_ctx, images, targets):
        result = real(step_ctx, images, targets)
        calls["n"] += 1
        if calls["n"] > 6:  # epoch 2 (6 steps per epoch: 24 images, batch 4)
            result.loss = float("nan")
        return result

    monkeypatch.setattr("fgvc_edge.train.trainer.STEPS", {key: diverging for key in STEPS})
    out = tmp_path / "run"
    options = TrainOptions(model="resnet18", data=str(tiny_folder), out=str(out), recipe="simple", epochs=3,
                           batch_size=4, input_size=32)
    with pytest.raises(UserInputError, match=r"the loss became nan in epoch 2 .*last good checkpoint \(epoch 1\)"):
        train(options)
    from fgvc_edge.checkpoint import load_training_state

    assert load_training_state(str(out / "last"))["epoch"] == 1
    assert json.loads((out / "run.json").read_text())["status"] == "diverged"


def test_a_sidecar_naming_more_classes_than_the_graph_has_is_refused(r18_copy):
    from fgvc_edge.runtime import OnnxRunner

    record = json.loads(open(r18_copy + ".json").read())
    record.update(class_names=["a", "b", "c", "d"], num_classes=4)
    with open(r18_copy + ".json", "w") as fh:
        json.dump(record, fh)
    with pytest.raises(UserInputError, match="4 class names, the graph has 3 outputs"):
        OnnxRunner(r18_copy)


def test_metadata_folders_are_skipped_and_empty_class_folders_refused(tiny_folder):
    from fgvc_edge.datasets import load_dataset

    macos = tiny_folder / "train" / "__MACOSX"
    macos.mkdir()
    (macos / "._000.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    data = load_dataset(str(tiny_folder))
    assert data.class_names == ["class_a", "class_b", "class_c"]
    assert any("__MACOSX" in note for note in data.notes)
    (tiny_folder / "train" / "class_empty").mkdir()
    with pytest.raises(UserInputError, match="class folder.*class_empty.*hold no image"):
        load_dataset(str(tiny_folder))


def test_a_one_class_data_set_is_refused(tmp_path, tiny):
    from fgvc_edge.datasets import load_dataset

    tiny.write_imagefolder(str(tmp_path / "one"), classes=1, train_per_class=2, test_per_class=1)
    with pytest.raises(UserInputError, match="1 class; a classifier needs at least 2"):
        load_dataset(str(tmp_path / "one"))


def test_prune_that_would_prune_nothing_is_refused(tmp_path):
    assert_one_line(invoke("prune", "resnet18", "--input-size", 32, "--ratio", 0.3, "--round-to", 100000,
                           "-o", tmp_path / "p"), "nothing would be pruned")
    assert not (tmp_path / "p").exists()


def test_bench_of_a_fixed_batch_artifact_at_another_batch_is_refused(exported_r18, tmp_path):
    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model

    _, checkpoint = exported_r18
    fixed = export_onnx(create_model("resnet18", checkpoint=checkpoint), str(tmp_path / "b1.onnx"), batch=1).path
    assert_one_line(invoke("bench", fixed, "--batch", 8), "has a fixed batch of 1: bench it with --batch 1")
    assert_one_line(invoke("bench", fixed, "--batch", 100000), "--batch takes numbers in 1..1024")
    out = tmp_path / "b.json"
    result = invoke("bench", fixed, "--iters", 1, "--warmup", 0, "--json", out, "--markdown", tmp_path / "b.md")
    assert result.exit_code == 0, result.output
    assert [row["batch"] for row in json.loads(out.read_text())] == [1]


def test_a_seed_beyond_the_range_is_one_line(tiny_folder):
    assert_one_line(invoke("train", "resnet18", "--data", tiny_folder, "--seed", 10**30), "valid: 0 to 2147483647")
