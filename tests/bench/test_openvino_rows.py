"""OpenVINO as a peer in bench: FP32 and NNCF INT8 rows, ratios, INT8 agreement on real images; notes without it."""
import importlib.util

import numpy as np
import pytest

from fgvc_edge.bench import suite
from fgvc_edge.bench.report import csv_text, markdown
from fgvc_edge.bench.suite import BenchSettings, run_bench

HAVE_OPENVINO = all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf"))
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="the openvino extra (openvino, nncf) is not installed")


def small(**kw):
    return BenchSettings(runtimes=("onnxruntime", "openvino"), precisions=("fp32", "int8"), input_size=32,
                         num_classes=4, iters=1, warmup=0, threads=1, **kw)


@needs_openvino
def test_openvino_rows_stand_next_to_ours(tmp_path, monkeypatch):
    from fgvc_edge.precision.data import sample_photos

    monkeypatch.chdir(tmp_path)  # INT8 deployables cache under ./calibration and ./engines
    photos = sample_photos()
    assert photos, "scikit-image's photographs are the default calibration images"
    rows = run_bench(["resnet18"], small())
    by = {(r["runtime"], r["precision"]): r for r in rows}
    assert set(by) == {(rt, p) for rt in ("onnxruntime", "openvino") for p in ("fp32", "int8")}
    assert all(r["latency_ms"]["p50"] > 0 and r["threads"] == 1 for r in rows)
    ov = by[("openvino", "int8")]
    assert ov["settings"]["PERFORMANCE_HINT"] == "LATENCY" and ov["settings"]["INFERENCE_NUM_THREADS"] == 1
    for precision in ("fp32", "int8"):
        ours = by[("onnxruntime", precision)]
        expected = ours["latency_ms"]["p50"] / by[("openvino", precision)]["latency_ms"]["p50"]
        assert ours["vs_openvino"] == pytest.approx(expected)
        assert "vs_openvino" not in by[("openvino", precision)]
    for runtime in ("onnxruntime", "openvino"):
        row = by[(runtime, "int8")]
        figures = row["int8_accuracy"]
        # The photographs and their mirror images; both quantizers calibrated on the same photographs.
        assert figures["images"] == 2 * len(photos) and figures["source"] == "scikit-image photographs"
        assert row["calibration"] == "photos"
        assert 0.0 <= figures["top1_agreement"] <= 1.0 and 0.0 < figures["rel_error"] < 0.5
    assert "fp32" not in {r["precision"] for r in rows if r.get("int8_accuracy")}
    table = markdown(rows)
    assert "×OV" in table and "INT8 agree" in table
    header = csv_text(rows).splitlines()[0]
    assert "ratio_to_openvino" in header and "int8_top1_agreement" in header


def test_openvino_rows_are_notes_without_the_extra(monkeypatch):
    monkeypatch.setattr(suite, "openvino_available", lambda: False)
    settings = BenchSettings(runtimes=("openvino",), precisions=("fp32", "int8"), input_size=32, num_classes=4,
                             iters=1, warmup=0, threads=1)
    rows = run_bench(["resnet18"], settings)
    assert [(r["runtime"], r["precision"]) for r in rows] == [("openvino", "fp32"), ("openvino", "int8")]
    assert all(r["latency_ms"] is None and "fgvc-edge[openvino]" in r["note"] for r in rows)
    assert "fgvc-edge[openvino]" in markdown(rows)


def test_unknown_runtime_is_refused():
    from fgvc_edge.errors import UserInputError

    with pytest.raises(UserInputError, match="unknown runtime"):
        BenchSettings(runtimes=("openvino2",))


@needs_openvino
def test_openvino_runner_matches_onnx_runtime_and_predicts(tmp_path):
    from PIL import Image

    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model
    from fgvc_edge.runtime import OnnxRunner
    from fgvc_edge.runtime.openvino_runner import OpenVinoRunner

    model = create_model("resnet18", num_classes=4, input_size=32)
    model.class_names = ["a", "b", "c", "d"]
    path = export_onnx(model, str(tmp_path / "r18.onnx"), batch="dynamic").path
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with OnnxRunner(path) as ort_runner, OpenVinoRunner(path, threads=1, batch=3) as ov_runner:
        reference, ours = ort_runner.infer(x), ov_runner.infer(x)
        assert ov_runner.fixed_batch == 3
        image = tmp_path / "x.png"
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(image)
        top = ov_runner.predict([str(image)], topk=2)[0]
    assert np.linalg.norm(ours - reference) / np.linalg.norm(reference) < 1e-5
    assert len(top) == 2 and top[0].label in "abcd"


@needs_openvino
@pytest.mark.parametrize("name,message", [("missing.xml", "no such model file"), ("model.txt", "OpenVINO runs")])
def test_openvino_runner_refuses_bad_paths(tmp_path, name, message):
    from fgvc_edge.errors import UserInputError
    from fgvc_edge.runtime.openvino_runner import OpenVinoRunner

    if name.endswith(".txt"):
        (tmp_path / name).write_text("x")
    with pytest.raises(UserInputError, match=message):
        OpenVinoRunner(str(tmp_path / name))


@needs_openvino
def test_nncf_ir_is_cached_and_carries_a_sidecar(tmp_path):
    from fgvc_edge.errors import UserInputError
    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model
    from fgvc_edge.precision.data import SyntheticImages
    from fgvc_edge.precision.openvino_ir import quantize_openvino

    path = export_onnx(create_model("resnet18", num_classes=4, input_size=32), str(tmp_path / "r18.onnx")).path
    images = SyntheticImages(8, size=36)
    cache = str(tmp_path / "cache")
    first = quantize_openvino(path, images, str(tmp_path / "out.xml"), num_images=8, cache_dir=cache)
    again = quantize_openvino(path, images, num_images=8, cache_dir=cache)
    assert not first.cache_hit and again.cache_hit
    assert (tmp_path / "out.xml").exists() and (tmp_path / "out.bin").exists() and (tmp_path / "out.xml.json").exists()
    record = first.record
    assert record["precision"] == "int8" and record["target"] == "openvino"
    assert record["int8_check"]["samples"] == 8 and record["int8_check"]["top1_agreement"] >= 0.5
    with pytest.raises(UserInputError, match=r"\.xml"):
        quantize_openvino(path, images, str(tmp_path / "out.onnx"), num_images=8, cache_dir=cache)


@needs_openvino
def test_openvino_ir_and_sidecar_are_one_triple(tmp_path):
    """The runner refuses an IR whose .xml or .bin is not the one its sidecar describes; a failed write leaves
    neither a half IR nor a temporary behind."""
    from fgvc_edge.errors import UserInputError
    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model
    from fgvc_edge.precision import openvino_ir
    from fgvc_edge.runtime.openvino_runner import OpenVinoRunner

    onnx_path = export_onnx(create_model("resnet18", num_classes=4, input_size=32), str(tmp_path / "r18.onnx")).path
    xml = tmp_path / "ir" / "model.xml"
    record = openvino_ir.write_fp32_ir(onnx_path, str(xml))
    assert record["sha256"] and record["bin_sha256"]
    with OpenVinoRunner(str(xml)) as runner:
        assert runner.record["bin_sha256"] == record["bin_sha256"]
    weights = xml.with_suffix(".bin")
    original = weights.read_bytes()
    weights.write_bytes(original[:-4] + b"\0\0\0\0")
    with pytest.raises(UserInputError, match="weights' sha256 differs"):
        OpenVinoRunner(str(xml))
    weights.write_bytes(original)
    xml.write_text(xml.read_text().replace("<net ", "<net  "))
    with pytest.raises(UserInputError, match="sha256 differs"):
        OpenVinoRunner(str(xml))

    def failing(path):
        open(path, "w").write("half")
        raise OSError(28, "No space left on device")

    target = tmp_path / "fresh" / "m.xml"
    with pytest.raises(OSError):
        openvino_ir.write_ir(str(target), failing, {})
    assert sorted(p.name for p in target.parent.iterdir()) == []
