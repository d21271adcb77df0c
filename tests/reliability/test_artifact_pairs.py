"""Class 1: an artifact and its sidecar become visible together, or the runner refuses the pair.

Every writer renames the sidecar first, then the artifact; a crash between the two leaves a sidecar whose
sha256 is not the file's, and the runners refuse it (exit 2, one line, saying to re-export or rebuild)
instead of running the old graph with the new record — or the new graph with the old one.
"""
import hashlib
import json
import os
import shutil
import signal

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fgvc_edge.cli import app
from fgvc_edge.errors import UserInputError
from fgvc_edge.runtime import OnnxRunner

from reliability_helpers import run_child


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs, no cleanup beyond `finally` blocks."""


def crash_at(monkeypatch, artifact):
    real = os.replace
    target = os.path.abspath(str(artifact))

    def replace(src, dst, *args, **kwargs):
        if os.path.abspath(str(dst)) == target:
            raise Crash()
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def assert_refused(path):
    with pytest.raises(UserInputError, match=r"does not belong to .*sha256 differs.*re-export") as info:
        OnnxRunner(str(path))
    assert "\n" not in str(info.value)


def test_kill_9_between_the_renames_of_an_export_then_predict_refuses(exported_r18, tmp_path):
    source, _ = exported_r18
    out = tmp_path / "m.onnx"
    shutil.copyfile(source, out)  # the earlier export: 3 classes a/b/c
    shutil.copyfile(source + ".json", str(out) + ".json")
    old_bytes = out.read_bytes()
    script = """
    import sys
    from fgvc_edge.cli import main
    sys.argv = ["fgvc-edge", "export", "resnet18", "--num-classes", "3", "--input-size", "32", "-o", sys.argv[1],
                "--force"]
    main()
    """
    child = run_child(script.replace("sys.argv[1]", repr(str(out))), kill_at=out)
    assert child.returncode == -signal.SIGKILL, child.stderr
    # The new record (a random-init export: no class names) is in place, over the old graph of the same shapes,
    # so only the sha256 tells them apart.
    assert json.loads((tmp_path / "m.onnx.json").read_text())["class_names"] is None
    assert out.read_bytes() == old_bytes  # over the old graph
    image = tmp_path / "x.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(image)
    result = CliRunner().invoke(app, ["predict", str(image), "--model", str(out)])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "does not belong" in result.output and "re-export" in result.output


def test_a_crash_between_the_renames_of_every_onnx_writer_is_refused(exported_r18, r18_copy, tmp_path, monkeypatch):
    import torch

    from fgvc_edge.engine import BuildSettings, build
    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model
    from fgvc_edge.precision import convert_fp16
    from fgvc_edge.precision._artifact import copy_artifact

    source, _ = exported_r18
    torch.manual_seed(1)
    other = create_model("resnet18", num_classes=4, input_size=32)
    writers = {
        "export": lambda out: export_onnx(other, str(out), batch="dynamic", force=True),
        "save_typed_onnx": lambda out: convert_fp16(source, str(out), force=True),
        "copy_artifact": lambda out: copy_artifact(str(tmp_path / "other.onnx"), str(out)),
        "deliver_onnx": lambda out: build(source, BuildSettings("fp16", "onnxruntime",
                                                                intermediate_dir=str(tmp_path / "cache")), output=str(out)),
    }
    export_onnx(other, str(tmp_path / "other.onnx"), batch="dynamic")
    for name, write in writers.items():
        out = tmp_path / "{}.onnx".format(name)
        shutil.copyfile(r18_copy, out)
        shutil.copyfile(r18_copy + ".json", str(out) + ".json")
        with OnnxRunner(str(out)):
            pass  # the earlier pair is intact
        with monkeypatch.context() as patch:
            crash_at(patch, out)
            with pytest.raises(Crash):
                write(out)
        assert out.read_bytes() == open(r18_copy, "rb").read(), name
        assert_refused(out)
    writers["copy_artifact"](tmp_path / "copy_artifact.onnx")  # written again without a crash: a consistent pair
    with OnnxRunner(str(tmp_path / "copy_artifact.onnx")) as runner:
        assert runner.record["num_classes"] == 4


def test_copy_refuses_a_source_whose_sidecar_is_not_its_own(r18_copy, tmp_path):
    from fgvc_edge.precision._artifact import copy_artifact

    record = json.loads(open(r18_copy + ".json").read())
    record["sha256"] = "0" * 64
    with open(r18_copy + ".json", "w") as fh:
        json.dump(record, fh)
    with pytest.raises(UserInputError, match="does not belong"):
        copy_artifact(r18_copy, str(tmp_path / "copy.onnx"))
    assert not os.path.exists(tmp_path / "copy.onnx") and not os.path.exists(tmp_path / "copy.onnx.json")


def test_a_sidecar_holds_the_digests_of_what_was_written_not_the_records(tmp_path):
    """A record copied from another artifact carries that one's sha256: the digest of the new file must win."""
    from fgvc_edge.contract.sidecar import SCHEMA_VERSION, full_record, read_sidecar, write_artifact

    stale = {"sha256": "0" * 64, "num_classes": 3, "bin_sha256": "1" * 64}
    full = full_record(stale, {"num_classes": 4}, sha256="a" * 64, bin_sha256="b" * 64)
    assert full == {"schema_version": SCHEMA_VERSION, "sha256": "a" * 64, "num_classes": 4, "bin_sha256": "b" * 64}

    path = str(tmp_path / "blob.onnx")

    def write(tmp: str) -> dict:
        with open(tmp, "wb") as fh:
            fh.write(b"new bytes")
        return {"format": "onnx"}

    written = write_artifact(path, write, stale)
    assert written["sha256"] == hashlib.sha256(b"new bytes").hexdigest()
    assert read_sidecar(path)["sha256"] == written["sha256"] and written["format"] == "onnx"
