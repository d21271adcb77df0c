"""Class 5: untrusted fields and system errors are one line with exit code 2, never a traceback.

Every checkpoint record and sidecar is validated at load (types, ranges, lengths, the graph's own shapes);
sizes are checked before work starts; a full disk, an unwritable folder and exhausted memory are turned into
one line in one place (the CLI's error boundary), with temporary files removed.
"""
import errno
import json
import os
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fgvc_edge.cli import app
from fgvc_edge.errors import UserInputError


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line(result, needle="", *, after_progress=False):
    """Exit code 2 and one line (``after_progress``: one error line after what the command printed)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    text = result.output.strip()
    assert "Traceback" not in text, text
    lines = text.splitlines()
    if after_progress:
        assert [line.startswith("error: ") for line in lines].count(True) == 1 and lines[-1].startswith("error: ")
        text = lines[-1]
    else:
        assert len(lines) == 1, text
    assert needle in text, text
    return text


def temporaries(folder):
    return [name for _, dirs, files in os.walk(folder) for name in dirs + files if name.endswith(".tmp")]


# -- checkpoint records ---------------------------------------------------------------------------------------

def _drop_model(r):
    del r["model"]


RECORD_EDITS = {
    "missing model": (_drop_model, "'model' is missing"),
    "string num_classes": (lambda r: r.update(num_classes="3"), "'num_classes' must be an integer"),
    "string model_args": (lambda r: r.update(model_args="x"), "'model_args' must be a JSON object"),
    "string input_size": (lambda r: r.update(input_size="32"), "'input_size' must be an integer"),
    "absurd input_size": (lambda r: r.update(input_size=10**6), "'input_size' must be in 1..2048"),
    "string schema_version": (lambda r: r.update(schema_version="1"), "'schema_version' must be an integer"),
    "structure not a dict": (lambda r: r.update(structure=[]), "'structure' must be a JSON object"),
    "transforms not a list": (lambda r: r["structure"].update(transforms="prune"), "'transforms' must be a list"),
    "nameless transform": (lambda r: r["structure"].update(transforms=[{}]), "must be an object with a name"),
    "fewer class names": (lambda r: r.update(class_names=["a", "b"]), "2 class names for 3 classes"),
    "mean abc": (lambda r: r["preprocess"].update(mean="abc"), "mean must be three finite numbers"),
    "preprocess list": (lambda r: r.update(preprocess=[1, 2]), "must be a JSON object"),
    "crop contradicts size": (lambda r: r["preprocess"].update(crop_size=24), "crops 24 px for a 32 px input"),
    "prune names a missing module": (
        lambda r: r["structure"].update(transforms=[{"name": "prune", "modules": [
            {"module": "layer9.0.conv1", "type": "Conv2d", "attrs": {}, "tensors": {}}]}]),
        "names module 'layer9.0.conv1', which ResNetClassifier does not have"),
    "prune with an absurd shape": (
        lambda r: r["structure"].update(transforms=[{"name": "prune", "modules": [
            {"module": "conv1", "type": "Conv2d", "attrs": {"out_channels": 10**9},
             "tensors": {"weight": [10**9, 3, 7, 7]}}]}]),
        "pruning can only shrink [64, 3, 7, 7]"),
    "prune sets a method": (
        lambda r: r["structure"].update(transforms=[{"name": "prune", "modules": [
            {"module": "conv1", "type": "Conv2d", "attrs": {"forward": 1}, "tensors": {}}]}]),
        "not a shape attribute"),
    "reparam names a missing block": (
        lambda r: r["structure"].update(transforms=[{"name": "reparameterize", "blocks": ["layer1.7"]}]),
        "names module 'layer1.7'"),
    "fold_bn pairs a conv with a block": (
        lambda r: r["structure"].update(transforms=[{"name": "fold_bn", "pairs": [["conv1", "layer1"]]}]),
        "not a convolution and a BatchNorm"),
}


@pytest.mark.parametrize("case", sorted(RECORD_EDITS))
def test_a_malformed_checkpoint_record_is_one_line(case, exported_r18, tmp_path):
    _, checkpoint = exported_r18
    folder = tmp_path / "ck"
    shutil.copytree(checkpoint, folder)
    record = json.loads((folder / "fgvc.json").read_text())
    edit, needle = RECORD_EDITS[case]
    edit(record)
    (folder / "fgvc.json").write_text(json.dumps(record))
    assert_one_line(invoke("export", "resnet18", "-c", folder, "-o", tmp_path / "m.onnx"), needle)
    assert not (tmp_path / "m.onnx").exists()


def test_a_garbage_training_state_is_one_line_without_torchs_advice(exported_r18, tmp_path):
    _, checkpoint = exported_r18
    last = tmp_path / "run" / "last"
    shutil.copytree(checkpoint, last)
    for payload in (os.urandom(300), pickle.dumps({"epoch": 1, "evil": Image.Image})):
        (last / "training_state.pt").write_bytes(payload)
        result = invoke("train", "resnet18", "--data", tmp_path, "--out", tmp_path / "run", "--resume")
        text = assert_one_line(result, "is not a training state fgvc-edge wrote")
        assert "weights_only" not in text


# -- sidecars -------------------------------------------------------------------------------------------------

SIDECAR_EDITS = {
    "mean abc": (lambda r: r["preprocess"].update(mean="abc"), "mean must be three finite numbers"),
    "string resize_size": (lambda r: r["preprocess"].update(resize_size="256"), "resize_size must be an integer"),
    "preprocess as a list": (lambda r: r.update(preprocess=[1]), "must be a JSON object"),
    "input size contradicts the graph": (
        lambda r: (r.update(input_size=64), r["preprocess"].update(crop_size=64, resize_size=73)),
        "input size 64 px, the graph takes 32 px"),
    "more class names than outputs": (
        lambda r: r.update(class_names=["a", "b", "c", "d"], num_classes=4), "4 class names, the graph has 3 outputs"),
    "fewer class names than classes": (lambda r: r.update(class_names=["a"]), "1 class names for 3 classes"),
    "string batch": (lambda r: r.update(batch="8"), "'batch' must be an integer"),
    "bad sha256": (lambda r: r.update(sha256=5), "'sha256' must be a string"),
    "sidecar of another file": (lambda r: r.update(sha256="0" * 64), "does not belong to"),
}


@pytest.mark.parametrize("case", sorted(SIDECAR_EDITS))
def test_a_malformed_sidecar_is_one_line(case, r18_copy, tmp_path):
    path = r18_copy + ".json"
    record = json.loads(open(path).read())
    edit, needle = SIDECAR_EDITS[case]
    edit(record)
    with open(path, "w") as fh:
        json.dump(record, fh)
    image = tmp_path / "x.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(image)
    assert_one_line(invoke("predict", image, "--model", r18_copy), needle)


# -- data sets ---------------------------------------------------------------------------------------------------

def test_a_latin1_classes_txt_is_one_line(tmp_path, tiny):
    from fgvc_edge.datasets import load_dataset

    root = tmp_path / "CUB_200_2011"
    tiny.write_cub(str(root), classes=2, train_per_class=2, test_per_class=1)
    (root / "classes.txt").write_bytes("1 001.Grive_\xe0_gorge\n2 002.Pic\n".encode("latin-1"))
    with pytest.raises(UserInputError, match=r"classes.txt:1: not UTF-8 text \(byte 0xe0\)"):
        load_dataset(str(root))


def test_eval_with_fewer_class_names_than_classes_is_refused_not_stopiteration(tmp_path, tiny):
    from types import SimpleNamespace

    from fgvc_edge.datasets import load_dataset
    from fgvc_edge.evaluate.core import check_classes

    tiny.write_imagefolder(str(tmp_path / "d"), classes=3, train_per_class=1, test_per_class=1)
    splits = load_dataset(str(tmp_path / "d"))
    backend = SimpleNamespace(path="m.onnx", num_classes=None, class_names=splits.class_names[:2])
    with pytest.raises(UserInputError, match="names 2 classes; the data set .* has 3"):
        check_classes(backend, splits)


# -- outputs checked before the work --------------------------------------------------------------------------------

def test_eval_refuses_an_unwritable_output_before_evaluating(r18_copy, tiny_folder, tmp_path, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the evaluation ran before the output was checked")

    monkeypatch.setattr("fgvc_edge.evaluate.core.open_backend", must_not_run)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker / "eval", "/proc/fgvc-edge-eval"):
        assert_one_line(invoke("eval", r18_copy, "--data", tiny_folder, "-o", out), "cannot write")


def test_a_sidecar_path_taken_by_a_folder_is_refused_before_the_export(tmp_path, monkeypatch):
    (tmp_path / "out.onnx.json").mkdir()
    monkeypatch.setattr("fgvc_edge.models.create_model", lambda *a, **k: pytest.fail("exported anyway"))
    assert_one_line(invoke("export", "resnet18", "--input-size", 32, "-o", tmp_path / "out.onnx"), "is a folder")
    assert (tmp_path / "out.onnx.json").is_dir() and not (tmp_path / "out.onnx").exists()


# -- sizes and memory ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    (["export", "resnet18", "--batch", "100000"], "--batch must be in 1..1024"),
    (["export", "resnet18", "--input-size", "100000"], "valid: 16 to 2048"),
    (["bench", "resnet18", "--batch", "100000"], "--batch takes numbers in 1..1024"),
    (["build", "resnet18", "--fp32", "--batch", "100000"], "valid: 1 to 1024"),
])
def test_sizes_beyond_the_limits_are_refused_before_work(args, needle):
    assert_one_line(invoke(*args), needle)


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 120000000000000 bytes. Error code 12 (Cannot allocate memory)"),
    MemoryError(),
])
def test_an_allocation_failure_is_one_line(error, tmp_path, monkeypatch):
    def exhausted(*args, **kwargs):
        raise error

    monkeypatch.setattr("fgvc_edge.export.onnx_export._check_parity", exhausted)
    assert_one_line(invoke("export", "resnet18", "--input-size", 32, "-o", tmp_path / "m.onnx"), "out of memory")
    assert os.listdir(tmp_path) == []


def test_a_machine_failure_inside_a_library_stage_is_worded_as_the_machines():
    """library_stage names the stage of a library's own failure, but lets a full disk or exhausted memory through
    so that the CLI says what the user can do about it (system_error_message)."""
    from fgvc_edge.errors import StageError, library_stage, system_error_message

    def fail(exc):
        with library_stage("FP16 conversion (onnxconverter-common)"):
            raise exc

    for machine in (OSError(errno.ENOSPC, "No space left on device", "m.onnx"),
                    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GB")):
        with pytest.raises(type(machine)) as info:
            fail(machine)
        assert info.value is machine and system_error_message(machine)
    with pytest.raises(StageError, match=r"^FP16 conversion \(onnxconverter-common\) failed: bad graph$"):
        fail(ValueError("bad graph\nmore"))
    with pytest.raises(StageError, match="failed: .*No such file"):
        fail(FileNotFoundError(errno.ENOENT, "No such file or directory", "x.onnx"))


# -- a full disk ------------------------------------------------------------------------------------------------------

def _disk_fills_after(limit):
    """A stand-in write that stops with ENOSPC after ``limit`` bytes, as a full disk does."""
    def write(path, data):
        with open(path, "wb") as fh:
            fh.write(data[:limit])
        raise OSError(errno.ENOSPC, "No space left on device", path)
    return write


def _onnx_save_fills_disk(proto, path, *args, **kwargs):
    _disk_fills_after(1000)(path, proto.SerializeToString())


@pytest.mark.parametrize("command", ["prune", "reparam", "train", "import"])
def test_a_full_disk_while_writing_a_checkpoint_is_one_line(command, exported_r18, tiny_folder, tmp_path,
                                                            monkeypatch):
    from fgvc_edge.models import create_model

    _, checkpoint = exported_r18
    monkeypatch.setattr("fgvc_edge.checkpoint.write_bytes", _disk_fills_after(1000))
    # The importer itself is tested in tests/train; here only the write matters.
    monkeypatch.setattr("fgvc_edge.importers.import_official_checkpoint",
                        lambda name, path, num_classes=None, **kwargs: create_model("resnet18", checkpoint=checkpoint))
    out = tmp_path / "out"
    args = {
        "prune": ["prune", "resnet18", "-c", checkpoint, "--ratio", "0.5", "-o", out],
        "reparam": ["reparam", "resnet18", "-c", checkpoint, "--fold-bn", "-o", out],
        "train": ["train", "resnet18", "--data", tiny_folder, "--input-size", 32, "--epochs", 1, "-b", 4,
                  "--recipe", "simple", "--out", out],
        "import": ["import", "resnet18", tmp_path / "official.pth", "-o", out],
    }[command]
    assert_one_line(invoke(*args), "no space left on the device", after_progress=command == "train")
    assert temporaries(tmp_path) == []
    assert not os.path.exists(out / "last") and not os.path.exists(out / "fgvc.json")


@pytest.mark.parametrize("command", ["export", "build", "calibrate"])
def test_a_full_disk_while_writing_an_onnx_is_one_line(command, r18_copy, tmp_path, tiny, monkeypatch):
    import onnx

    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(8):
        tiny.tiny_image(i % 3, i).save(images / "{}.png".format(i))
    monkeypatch.setattr(onnx, "save", _onnx_save_fills_disk)
    args = {
        "export": ["export", "resnet18", "--input-size", 32, "-o", tmp_path / "out" / "m.onnx"],
        "build": ["build", r18_copy, "--fp16", "--target", "onnxruntime", "-o", tmp_path / "out" / "m.onnx"],
        "calibrate": ["calibrate", r18_copy, "--data", images, "--num-images", 8, "--target", "onnxruntime",
                      "-o", tmp_path / "out" / "m.onnx"],
    }[command]
    # build and calibrate show progress lines before the one error line.
    assert_one_line(invoke(*args), "no space left on the device", after_progress=command in ("build", "calibrate"))
    assert temporaries(tmp_path) == [] and not (tmp_path / "out" / "m.onnx").exists()


def test_a_real_full_disk_is_one_line(tmp_path):
    """A 1 MiB tmpfs where mounting is allowed (root in a container); the stand-ins above run everywhere."""
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        result = invoke("export", "resnet18", "--input-size", 32, "-o", mount / "m.onnx")
        assert_one_line(result, "no space left on the device")
        assert os.listdir(mount) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)
