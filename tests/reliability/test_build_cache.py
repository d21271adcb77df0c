"""Class 3: the export cache keys on everything that reaches the artifact or its sidecar."""
import json
import shutil

from fgvc_edge.engine import BuildSettings, ModelOptions, build
from fgvc_edge.runtime import OnnxRunner, read_sidecar


def test_edited_class_names_and_mean_in_the_record_ship_after_a_rebuild(exported_r18, tmp_path):
    _, checkpoint = exported_r18
    folder = tmp_path / "ck"
    shutil.copytree(checkpoint, folder)
    settings = BuildSettings("fp32", "onnxruntime", intermediate_dir=str(tmp_path / "cache"))
    first = build("resnet18", settings, model=ModelOptions(checkpoint=str(folder)), output=str(tmp_path / "a.onnx"))
    assert read_sidecar(first.path)["class_names"] == ["a", "b", "c"]

    record_path = folder / "fgvc.json"
    record = json.loads(record_path.read_text())
    record["class_names"] = ["wren", "finch", "robin"]
    record["preprocess"]["mean"] = [0.5, 0.5, 0.5]
    record_path.write_text(json.dumps(record))

    second = build("resnet18", settings, model=ModelOptions(checkpoint=str(folder)), output=str(tmp_path / "b.onnx"))
    assert "fp32" not in second.reused and second.intermediates["fp32"] != first.intermediates["fp32"]
    shipped = read_sidecar(second.path)
    assert shipped["class_names"] == ["wren", "finch", "robin"] and shipped["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    with OnnxRunner(second.path) as runner:
        assert runner.class_names == ["wren", "finch", "robin"] and runner.preprocess.mean == (0.5, 0.5, 0.5)
    third = build("resnet18", settings, model=ModelOptions(checkpoint=str(folder)), output=str(tmp_path / "c.onnx"))
    assert third.reused == ["fp32"]  # unchanged since: reused
