"""The training loop end to end on tiny generated data: run folder contents, exact resume, unreadable images,
fine-tuning a model object, and the CLI's one-line errors."""
import csv
import json
import os

import pytest
import torch
from typer.testing import CliRunner

from fgvc_edge.checkpoint import TRAINING_STATE_FILE, read_checkpoint
from fgvc_edge.cli import app
from fgvc_edge.errors import UserInputError
from fgvc_edge.models import create_model
from fgvc_edge.train import TrainOptions, finetune, train

FAST = dict(model="resnet18", epochs=4, batch_size=8, input_size=32, lr=0.05)


def test_resume_continues_exactly(tiny_cub, tmp_path):
    straight = train(TrainOptions(data=str(tiny_cub), out=str(tmp_path / "straight"), **FAST))
    first = train(TrainOptions(data=str(tiny_cub), out=str(tmp_path / "split"), stop_after=2, **FAST))
    assert len(first.history) == 2
    resumed = train(TrainOptions(data=str(tiny_cub), out=str(tmp_path / "split"), resume=True, **FAST))
    _, a = read_checkpoint(straight.last)
    _, b = read_checkpoint(resumed.last)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # parameters, BN statistics and counters, bit for bit
    keys = ("epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1")
    assert [[r[k] for k in keys] for r in straight.history] == [[r[k] for k in keys] for r in resumed.history]
    # The optimizer state matches too (momentum buffers).
    sa = torch.load(os.path.join(straight.last, TRAINING_STATE_FILE), weights_only=True)
    sb = torch.load(os.path.join(resumed.last, TRAINING_STATE_FILE), weights_only=True)
    assert all(torch.equal(sa["optimizer"]["state"][i]["momentum_buffer"], sb["optimizer"]["state"][i]["momentum_buffer"])
               for i in sa["optimizer"]["state"])


def test_run_folder_holds_metrics_curves_and_checkpoints(tiny_cub, tmp_path):
    out = tmp_path / "run"
    result = train(TrainOptions(data=str(tiny_cub), out=str(out), **dict(FAST, epochs=2)))
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and float(rows[1]["lr"]) == pytest.approx(0.025)
    assert all(0.0 <= float(r["val_top1"]) <= 1.0 and int(r["train_images"]) == 24 for r in rows)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["recipe"]["name"] == "baseline" and run["data"]["layout"] == "cub"
    record, _ = read_checkpoint(result.best)
    assert record["class_names"] == ["Bird_0", "Bird_1", "Bird_2"] and record["input_size"] == 32
    assert not (out / "best" / TRAINING_STATE_FILE).exists()
    state = torch.load(out / "last" / TRAINING_STATE_FILE, weights_only=True)  # tensors and primitives only
    assert state["epoch"] == 2 and isinstance(state["rng"][0]["torch"], torch.Tensor)
    assert state["scheduler"]["last_epoch"] == 2
    model = create_model("resnet18", checkpoint=result.best)
    assert model.class_names == record["class_names"]


def test_unreadable_images_are_skipped_and_counted(tmp_path, tiny):
    root = tmp_path / "data"
    tiny.write_imagefolder(str(root), classes=2, train_per_class=6, test_per_class=3, size=32)
    (root / "train" / "class_a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "test" / "class_b" / "notes.jpg").write_text("not an image")
    result = train(TrainOptions(model="resnet18", data=str(root), out=str(tmp_path / "run"), epochs=1, batch_size=4,
                                input_size=32))
    row = result.history[0]
    assert row["skipped_train"] == 1 and row["skipped_val"] == 1
    assert row["train_images"] + 1 == 12  # 13 files, 12 in full batches of 4 minus the one skipped
    listed = (tmp_path / "run" / "skipped_images.txt").read_text().split()
    assert sorted(os.path.basename(p) for p in listed) == ["broken.png", "notes.jpg"]


def test_finetune_trains_a_model_object_in_place(tiny_cub, tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, input_size=32)
    before = model.fc.weight.detach().clone()
    result = finetune(model, str(tiny_cub), 1, out=str(tmp_path / "ft"), batch_size=8)
    assert not torch.equal(before, model.fc.weight.detach())
    _, saved = read_checkpoint(result.last)
    assert torch.equal(saved["fc.weight"], model.fc.weight.detach())
    with pytest.raises(UserInputError, match="5 classes"):
        finetune(create_model("resnet18", num_classes=5, input_size=32), str(tiny_cub), 1, out=str(tmp_path / "x"))


def _one_line_error(args, needle):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.output


def test_cli_errors_are_one_line(tiny_cub, tmp_path):
    _one_line_error(["train", "resnet18", "--data", tiny_cub, "--resume", "--out", tmp_path / "none"], "nothing to resume")
    _one_line_error(["train", "resnet18", "--data", tiny_cub, "--batch-size", 64, "--input-size", 32,
                     "--out", tmp_path / "big"], "larger than the 24 training images")
    _one_line_error(["train", "cmal_resnet18", "--data", tiny_cub, "--loss", "focal"], "own loss")
    _one_line_error(["train", "resnet18", "--data", tiny_cub, "--backbone-weights", tmp_path / "no.pth"], "no such weights")


@pytest.mark.parametrize("model,size", [("care_resnet18", 32), ("cmal_resnet18", 64), ("rbi_mobilenet_v3_large", 32)])
def test_paper_recipes_refuse_random_initialisation_in_one_line(tiny_cub, tmp_path, model, size):
    args = ["train", model, "--data", tiny_cub, "--input-size", size, "--epochs", 1, "--out", tmp_path / "run"]
    _one_line_error(args, "--backbone-weights FILE")
    assert not (tmp_path / "run").exists()
    _one_line_error(args + ["--from-scratch", "--backbone-weights", tmp_path / "w.pth"], "not both")


def test_from_scratch_opts_out_and_is_recorded(tiny_cub, tmp_path):
    out = tmp_path / "scratch"
    args = ["train", "care_resnet18", "--data", tiny_cub, "--input-size", 32, "--epochs", 1, "--batch-size", 8,
            "--from-scratch", "--out", out]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["options"]["from_scratch"] is True
    assert any(note.startswith("--from-scratch: the care paper recipe") for note in run["notes"])


def test_trained_starting_points_and_other_recipes_need_no_backbone_weights(tiny_cub):
    from fgvc_edge.train.trainer import _fresh_run

    assert _fresh_run(TrainOptions(model="acanet_resnet18", data=str(tiny_cub), input_size=64)).notes == []
    assert _fresh_run(TrainOptions(model="care_resnet18", data=str(tiny_cub), input_size=32, recipe="simple"))


def test_cli_train_runs_and_resume_refuses_other_options(tiny_cub, tmp_path):
    out = tmp_path / "cli"
    args = ["train", "resnet18", "--data", tiny_cub, "--epochs", 2, "--stop-after", 1, "--batch-size", 8,
            "--input-size", 32, "--out", out]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "done: 1 epochs" in result.output and (out / "last" / "fgvc.json").exists()
    _one_line_error(["train", "resnet18", "--data", tiny_cub, "--resume", "--out", out, "--batch-size", 4],
                    "--batch-size 4 disagrees")


@pytest.mark.slow
def test_cmal_mutual_learning_resumes_exactly(tiny_cub, tmp_path):
    # CMAL's five steps use torch.rand (mutual data augmentation) and zero gradients on untouched heads:
    # both must survive a resume for the run to continue bit for bit.
    options = dict(model="cmal_resnet18", data=str(tiny_cub), epochs=2, batch_size=8, input_size=64, lr=0.02,
                   from_scratch=True)
    straight = train(TrainOptions(out=str(tmp_path / "a"), **options))
    train(TrainOptions(out=str(tmp_path / "b"), stop_after=1, **options))
    resumed = train(TrainOptions(out=str(tmp_path / "b"), resume=True, **options))
    _, a = read_checkpoint(straight.last)
    _, b = read_checkpoint(resumed.last)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.history[-1]["train_loss"] == resumed.history[-1]["train_loss"]


def test_a_fresh_run_does_not_overwrite_an_existing_one(tiny_cub, tmp_path):
    out = tmp_path / "run"
    train(TrainOptions(data=str(tiny_cub), out=str(out), **dict(FAST, epochs=1)))
    with pytest.raises(UserInputError, match="already holds a run"):
        train(TrainOptions(data=str(tiny_cub), out=str(out), **dict(FAST, epochs=1)))
