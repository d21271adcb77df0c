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
NAMES = ["class_a", "class_b", "class_c"]  # tiny_data.write_imagefolder's, so eval accepts the checkpoint


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, needle):
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    # Progress of the work done before the refusal may precede it (plain lines without a terminal); the error
    # itself is one line, the last.
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert errors == [text.splitlines()[-1]], text
    assert needle in errors[0]


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
    save_checkpoint(create_model("resnet18", num_classes=3, input_size=32), str(folder), class_names=NAMES)
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
    assert [t["label"] for t in json.loads(predicted.output)[0]["top"]][0] in NAMES


def test_export_checkpoint_at_its_own_size_says_nothing(checkpoint_32, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="fgvc_edge.models"):
        result = invoke("export", "resnet18", "-c", checkpoint_32, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    assert not [r for r in caplog.records if "trained at" in r.getMessage()]
    assert sidecar(tmp_path / "m.onnx")["preprocess"]["crop_size"] == 32


# -- 8: eval's summary says which way top-1 moved ------------------------------------------------------------


def constant_checkpoint(folder, label, names):
    """A resnet18 that answers ``label`` for every image (zero head weights, one large bias)."""
    import torch

    model = create_model("resnet18", num_classes=len(names), input_size=32)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.bias[label] = 10.0
    return save_checkpoint(model, str(folder), class_names=list(names))


def test_eval_summary_shows_a_drop_as_a_drop(tmp_path, tiny):
    from fgvc_edge.evaluate import top1_change

    root = tmp_path / "data"
    names = tiny.write_imagefolder(str(root), classes=3, train_per_class=1, test_per_class=4, size=40)
    for name in names[1:]:  # test split: 4 images of class a, 1 of b, 1 of c
        for extra in sorted((root / "test" / name).iterdir())[1:]:
            extra.unlink()
    good = constant_checkpoint(tmp_path / "good", 0, names)  # 4/6 right
    bad = constant_checkpoint(tmp_path / "bad", 1, names)  # 1/6 right
    result = invoke("eval", good, bad, "--data", root, "--output", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "ev" / "summary.json").read_text())["artifacts"]
    assert rows[1]["top1"] == pytest.approx(1 / 6) and rows[1]["top1_drop_pp"] == pytest.approx(50.0)
    md = (tmp_path / "ev" / "summary.md").read_text()
    assert "top-1 vs first" in md and "| -50.00 pp drop |" in md and "+50" not in md
    assert "-50.00 pp drop" in result.output
    assert top1_change(-1.5) == "+1.50 pp gain" and top1_change(0.001) == "0.00 pp"


# -- 9: messages that say what is wrong ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported_32(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "r18.onnx"
    result = invoke("export", "resnet18", "--num-classes", 3, "--input-size", 32, "--batch", "dynamic", "-o", out)
    assert result.exit_code == 0, result.output
    return out


def test_calibrate_a_checkpoint_folder_says_to_export_it(checkpoint_32, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(8):
        write_image(images / "{}.png".format(i), seed=i)
    result = invoke("calibrate", checkpoint_32, "--data", images, "-o", tmp_path / "q.onnx")
    assert_one_line_error(result, "is a checkpoint folder, not an ONNX file; export it first: "
                                  "fgvc-edge export resnet18 -c {}".format(checkpoint_32))
    result = invoke("predict", write_image(tmp_path / "x.png"), "--model", checkpoint_32)
    assert_one_line_error(result, "is a checkpoint folder, not an .onnx or .engine file; export it first")


def test_output_under_a_file_names_the_file(tmp_path, checkpoint_32):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("user data")
    result = invoke("export", "resnet18", "--input-size", 32, "-o", blocker / "m.onnx")
    assert_one_line_error(result, "cannot write {}: {} is a file, not a folder".format(blocker / "m.onnx", blocker))
    result = invoke("prune", "resnet18", "-c", checkpoint_32, "--ratio", 0.2, "-o", blocker / "deep" / "ck")
    assert_one_line_error(result, "{} is a file, not a folder".format(blocker))
    assert blocker.read_text() == "user data"


def test_eval_output_under_a_file_is_refused_before_evaluating(tmp_path, tiny, checkpoint_32):
    root = tmp_path / "data"
    tiny.write_imagefolder(str(root), classes=3, train_per_class=1, test_per_class=1, size=40)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("user data")
    result = invoke("eval", checkpoint_32, "--data", root, "-o", blocker / "ev")
    assert_one_line_error(result, "{} is a file, not a folder".format(blocker))


def test_predict_takes_a_folder_and_a_glob(exported_32, tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.png", "a.jpg", "c.PNG"):
        write_image(folder / name, seed=len(name))
    (folder / "notes.txt").write_text("not an image")
    write_image(folder / "sub" / "deeper.png")
    result = invoke("predict", folder, "--model", exported_32, "--topk", 1, "--json")
    assert result.exit_code == 0, result.output
    images = [entry["image"] for entry in json.loads(result.output)]
    assert images == [str(folder / n) for n in ("a.jpg", "b.png", "c.PNG")]  # sorted, images only, not recursive
    result = invoke("predict", str(folder / "*.png"), "--model", exported_32, "--topk", 1, "--json")
    assert [e["image"] for e in json.loads(result.output)] == [str(folder / "b.png")]
    direct = invoke("predict", folder / "b.png", "--model", exported_32, "--topk", 1, "--json")
    assert json.loads(direct.output)[0]["top"] == json.loads(result.output)[0]["top"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(invoke("predict", empty, "--model", exported_32), "folder {} holds no image files".format(empty))
    assert_one_line_error(invoke("predict", str(folder / "*.gif"), "--model", exported_32), "holds no image files")


def test_eval_accepts_val_as_the_held_out_split(tmp_path, tiny, checkpoint_32):
    root = tmp_path / "data"
    tiny.write_imagefolder(str(root), classes=3, train_per_class=1, test_per_class=2, size=40)
    (root / "test").rename(root / "val")  # an ImageFolder tree with train/ + val/
    results = {}
    for split in ("val", "test"):
        result = invoke("eval", checkpoint_32, "--data", root, "--split", split, "-o", tmp_path / split)
        assert result.exit_code == 0, result.output
        results[split] = json.loads((tmp_path / split / "summary.json").read_text())["artifacts"][0]
    assert results["val"]["images"] == results["test"]["images"] == 6
    assert results["val"]["top1"] == results["test"]["top1"]
    assert_one_line_error(invoke("eval", checkpoint_32, "--data", root, "--split", "dev"), "split must be train or test")


def test_mode_errors_list_the_modes_as_words():
    result = invoke("bench", "cmal_resnet18", "--mode", "foo", "--runtimes", "none")
    assert_one_line_error(result, "(modes: raw, raw+aoval)")
    assert "('" not in result.output


def test_renamed_options_keep_their_old_names_hidden(tmp_path, exported_32):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(8):
        write_image(images / "{}.png".format(i), seed=i)
    for flag in ("--calib-images", "--num-images"):  # the old name still works, and the message uses the new one
        result = invoke("calibrate", exported_32, "--data", images, flag, 4, "-o", tmp_path / "q.onnx")
        assert_one_line_error(result, "--calib-images must be >= 8, got 4")
    result = invoke("calibrate", exported_32, "--data", images, "--calib-images", 8, "--num-images", 9)
    assert_one_line_error(result, "--calib-images and --num-images are the same option")
    calibrate_help = invoke("calibrate", "--help").output
    assert "--calib-images" in calibrate_help and "--num-images" not in calibrate_help
    for command in ("eval", "train"):
        text = invoke(command, "--help").output
        assert "--output" in text and "--out " not in text and "--out\n" not in text


# -- 10: no silent no-ops ------------------------------------------------------------------------------------


def test_bench_checkpoint_refuses_another_class_count(checkpoint_32, tmp_path):
    result = invoke("bench", "resnet18", "-c", checkpoint_32, "--num-classes", 200, "--runtimes", "none")
    assert_one_line_error(result, "has 3 classes; --num-classes 200 disagrees")
    result = invoke("bench", "resnet18", "-c", checkpoint_32, "--num-classes", 3, "--runtimes", "none",
                    "--json", tmp_path / "b.json", "--markdown", tmp_path / "b.md")
    assert result.exit_code == 0, result.output
    assert [r["num_classes"] for r in json.loads((tmp_path / "b.json").read_text())] == [3]


def test_reparam_with_nothing_to_do_writes_nothing(checkpoint_32, workdir):
    result = invoke("reparam", "resnet18", "-c", checkpoint_32, "-o", "deploy")
    assert_one_line_error(result, "nothing to reparameterize in {}: no multi-branch blocks (--fold-bn".format(
        checkpoint_32))
    assert not (workdir / "deploy").exists()
    folded = invoke("reparam", "resnet18", "-c", checkpoint_32, "--fold-bn", "-o", "deploy")
    assert folded.exit_code == 0, folded.output
    assert (workdir / "deploy" / "model.safetensors").exists()
    again = invoke("reparam", "resnet18", "-c", "deploy", "--fold-bn", "-o", "deploy2")  # already folded
    assert_one_line_error(again, "no multi-branch blocks, no Conv→BatchNorm pairs; nothing written")
    assert not (workdir / "deploy2").exists()


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_prints_the_parity_of_what_it_built(precision, workdir):
    import fgvc_edge.engine.pipeline as pipeline

    args = ["build", "resnet18", "--" + precision, "--target", "onnxruntime", "--input-size", 32, "--num-classes", 3,
            "-o", "m.onnx"]
    if precision == "int8":
        (workdir / "calib").mkdir()
        for i in range(8):
            write_image(workdir / "calib" / "{}.png".format(i), seed=i)
        args += ["--calib-data", "calib", "--calib-images", 8]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    record = sidecar(workdir / "m.onnx")
    figures = record["parity"] if precision == "fp32" else record[precision + "_check"]
    assert figures == {k: v for k, v in pipeline.quality_check(record, precision).items() if k != "against"}
    against = "PyTorch" if precision == "fp32" else "FP32 ONNX"
    assert "{} vs {}: rel err {:.2e}".format(precision.upper(), against, figures["rel_error"]) in result.output
    assert "over {} samples".format(figures["samples"]) in result.output


def test_bench_engine_without_tensorrt_is_one_line(exported_32, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, as on a machine without it
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    (tmp_path / "m.engine.json").write_text(json.dumps(dict(sidecar(exported_32), format="tensorrt")))
    result = invoke("bench", engine, "--iters", 1, "--warmup", 0)
    assert_one_line_error(result, "TensorRT is not usable here")


# -- 5: default names carry the source; another source is not replaced without --force ---------------------


@pytest.mark.parametrize("checkpoint,label", [
    (None, "random"),
    ("runs/cub/best", "cub_best"),
    ("runs/cub/last/model.safetensors", "cub_last"),
    ("runs/cub-p30", "cub-p30"),
    ("runs/my birds", "my_birds"),
])
def test_source_labels(checkpoint, label):
    from fgvc_edge.export.naming import artifact_path, source_label

    assert source_label(checkpoint) == label
    assert artifact_path("cmal_resnet50", "raw+aoval", checkpoint, "fp16", "b1", ".engine") == \
        "engines/cmal_resnet50-raw_aoval-{}-fp16-b1.engine".format(label)


def test_export_names_carry_the_source_and_never_replace_another(checkpoint_32, workdir):
    from fgvc_edge._io import sha256_file

    random_out = workdir / "engines" / "resnet18-random-fp32-b1.onnx"
    result = invoke("export", "resnet18", "--input-size", 32, "--num-classes", 3)
    assert result.exit_code == 0, result.output
    assert "wrote engines/resnet18-random-fp32-b1.onnx" in result.output and "random weights" in result.output
    random_sha = sha256_file(str(random_out))

    result = invoke("export", "resnet18", "-c", checkpoint_32, "--batch", "dynamic")
    assert result.exit_code == 0, result.output
    assert "wrote engines/resnet18-birds_best-fp32-bdyn.onnx" in result.output and "random weights" not in result.output
    assert sidecar(workdir / "engines" / "resnet18-birds_best-fp32-bdyn.onnx")["checkpoint_sha256"] == \
        sha256_file(str(checkpoint_32 / "model.safetensors"))
    assert sha256_file(str(random_out)) == random_sha  # the random-init export is still there

    refused = invoke("export", "resnet18", "-c", checkpoint_32, "-o", random_out)
    assert_one_line_error(refused, "{} holds resnet18 from random weights, not resnet18 from {}: give another -o, "
                                   "or --force to replace it".format(random_out, checkpoint_32))
    assert sha256_file(str(random_out)) == random_sha
    refused = invoke("build", "resnet18", "-c", checkpoint_32, "--fp32", "--target", "onnxruntime", "-o", random_out)
    assert_one_line_error(refused, "holds resnet18 from random weights")

    # The same source is replaced (another size); another source with --force.
    assert invoke("export", "resnet18", "--input-size", 48, "--num-classes", 3, "-o", random_out).exit_code == 0
    assert sidecar(random_out)["input_size"] == 48
    forced = invoke("export", "resnet18", "-c", checkpoint_32, "-o", random_out, "--force")
    assert forced.exit_code == 0, forced.output
    assert sidecar(random_out)["checkpoint"] == str(checkpoint_32)


def test_a_moved_checkpoint_is_the_same_source(checkpoint_32, workdir):
    import shutil

    out = workdir / "m.onnx"
    assert invoke("export", "resnet18", "-c", checkpoint_32, "-o", out).exit_code == 0
    moved = workdir / "moved"
    shutil.copytree(str(checkpoint_32), str(moved))
    assert invoke("export", "resnet18", "-c", moved, "-o", out).exit_code == 0  # same weights (sha256)


def test_build_default_names_carry_the_source(checkpoint_32, workdir):
    result = invoke("build", "resnet18", "-c", checkpoint_32, "--fp16", "--target", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert "wrote engines/resnet18-birds_best-fp16-b1.onnx" in result.output and "random weights" not in result.output
    result = invoke("build", "resnet18", "--fp16", "--target", "onnxruntime", "--input-size", 32, "--min-batch", 1,
                    "--max-batch", 4)
    assert result.exit_code == 0, result.output
    assert "wrote engines/resnet18-random-fp16-bdyn.onnx" in result.output and "random weights" in result.output
    assert sorted(p.name for p in (workdir / "engines").glob("*.onnx")) == [
        "resnet18-birds_best-fp16-b1.onnx", "resnet18-random-fp16-bdyn.onnx"]


# -- 4: pruning says its weights need fine-tuning, and fine-tunes on request ---------------------------------


def eval_top1(checkpoint, data, out):
    result = invoke("eval", checkpoint, "--data", data, "-o", out)
    assert result.exit_code == 0, result.output
    return json.loads((out / "summary.json").read_text())["artifacts"][0]["top1"]


def test_prune_without_data_says_to_fine_tune(checkpoint_32, workdir):
    result = invoke("prune", "resnet18", "-c", checkpoint_32, "--ratio", 0.3, "-o", "p30")
    assert result.exit_code == 0, result.output
    assert "pruned weights need fine-tuning" in result.output and "--finetune-data DIR --epochs N" in result.output
    assert_one_line_error(invoke("prune", "resnet18", "-c", checkpoint_32, "--ratio", 0.3, "--epochs", 2, "-o", "x"),
                          "add --finetune-data DIR")
    assert not (workdir / "x").exists()


def test_prune_with_data_fine_tunes_and_reports_before_and_after(checkpoint_32, workdir, tiny):
    import re

    data = workdir / "data"
    tiny.write_imagefolder(str(data), classes=3, train_per_class=8, test_per_class=4, size=40)
    assert invoke("prune", "resnet18", "-c", checkpoint_32, "--ratio", 0.3, "-o", "plain").exit_code == 0
    result = invoke("prune", "resnet18", "-c", checkpoint_32, "--ratio", 0.3, "--finetune-data", data, "--epochs", 2,
                    "--batch-size", 8, "-o", "tuned")
    assert result.exit_code == 0, result.output
    assert "need fine-tuning" not in result.output
    before, after = (float(v) / 100 for v in re.search(
        r"fine-tuned 2 epoch\(s\) on .*: top-1 ([\d.]+)% before → ([\d.]+)% after", result.output).groups())
    # "before" is the pruned model as written without fine-tuning; "after" is the checkpoint written.
    assert before == pytest.approx(eval_top1(workdir / "plain", data, workdir / "ev1"), abs=1e-4)
    assert after == pytest.approx(eval_top1(workdir / "tuned", data, workdir / "ev2"), abs=1e-4)
    rows = (workdir / "tuned-finetune" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 epochs
    record = json.loads((workdir / "tuned" / "fgvc.json").read_text())
    assert record["class_names"] == NAMES and record["structure"]["transforms"][-1]["name"] == "prune"
    plain, tuned = create_model("resnet18", checkpoint="plain"), create_model("resnet18", checkpoint="tuned")
    assert plain.fc.in_features == tuned.fc.in_features < 512
    assert not np.array_equal(plain.fc.weight.detach().numpy(), tuned.fc.weight.detach().numpy())
