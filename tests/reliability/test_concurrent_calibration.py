"""Class 4: concurrent INT8 calibrations of one ONNX, and a source ONNX in a read-only folder.

ONNX Runtime's quantize_static writes and deletes `<stem>-inferred.onnx` beside the file it is given; it is
now given the graph in memory (it then works in its own temporary folder), and one calibration per cache entry
runs at a time (a file lock), the other reusing it.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from reliability_helpers import ROOT


@pytest.fixture
def calib_images(tmp_path, tiny):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(8):
        tiny.tiny_image(i % 3, i).save(folder / "{}.png".format(i))
    return folder


@pytest.fixture
def read_only_source(r18_copy, tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    for suffix in ("", ".json"):
        shutil.copyfile(r18_copy + suffix, str(folder / "m.onnx") + suffix)
    os.chmod(folder, 0o555)
    yield str(folder / "m.onnx")
    os.chmod(folder, 0o755)


def test_nothing_is_written_beside_a_read_only_source(read_only_source, calib_images, tmp_path, monkeypatch):
    import onnx

    from fgvc_edge.precision import calibrate_onnx

    # Root ignores the folder's mode, so also watch where shape inference writes.
    written = []
    infer = onnx.shape_inference.infer_shapes_path
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes_path",
                        lambda src, dst, *a, **k: (written.append(os.path.dirname(os.path.abspath(dst))),
                                                   infer(src, dst, *a, **k))[1])
    result = calibrate_onnx(read_only_source, str(calib_images), str(tmp_path / "int8.onnx"), num_images=8,
                            target="onnxruntime", cache_dir=str(tmp_path / "calibration"))
    assert result.record["precision"] == "int8" and os.path.isfile(tmp_path / "int8.onnx")
    source_folder = os.path.dirname(read_only_source)
    assert written and source_folder not in written
    assert sorted(os.listdir(source_folder)) == ["m.onnx", "m.onnx.json"]


CHILD = textwrap.dedent(
    """
    import json, sys
    from fgvc_edge.precision import calibrate_onnx
    source, images, output, cache = sys.argv[1:5]
    result = calibrate_onnx(source, images, output, num_images=8, target="onnxruntime", cache_dir=cache)
    print(json.dumps({"hit": result.cache_hit, "path": result.path}))
    """
)


def test_two_calibrations_of_one_onnx_at_once_both_succeed(read_only_source, calib_images, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    cache = str(tmp_path / "calibration")
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, read_only_source, str(calib_images),
                          str(tmp_path / "out{}.onnx".format(i)), cache],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outputs = [child.communicate(timeout=300) for child in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    # The lock lets one calibrate; the other waits and reuses its result.
    assert sorted(r["hit"] for r in results) == [False, True]
    from fgvc_edge.runtime import OnnxRunner

    for i in range(2):
        with OnnxRunner(str(tmp_path / "out{}.onnx".format(i))) as runner:
            assert runner.record["precision"] == "int8"
    assert sorted(os.listdir(os.path.dirname(read_only_source))) == ["m.onnx", "m.onnx.json"]
