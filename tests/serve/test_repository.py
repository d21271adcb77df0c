"""`triton-repo`: every config.pbtxt parses with Triton's own schema and says what the sidecar says; the
preprocessing model runs without fgvc-edge and reproduces the contract's numbers."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from fgvc_edge.cli import app
from fgvc_edge.contract import preprocess as contract_preprocess
from fgvc_edge.contract.preprocess import Preprocess
from fgvc_edge.contract.sidecar import read_sidecar, write_sidecar
from fgvc_edge.errors import UserInputError
from fgvc_edge.serve.repository import PYTHON_MODEL, RepositorySettings, write_triton_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient (extra serve)")
from google.protobuf import json_format, text_format  # noqa: E402  (tritonclient brings protobuf)

FP32, STRING = model_config_pb2.DataType.TYPE_FP32, model_config_pb2.DataType.TYPE_STRING
KIND_CPU, KIND_GPU = model_config_pb2.ModelInstanceGroup.KIND_CPU, model_config_pb2.ModelInstanceGroup.KIND_GPU


def parse(folder):
    with open(os.path.join(folder, "config.pbtxt"), encoding="utf-8") as fh:
        return text_format.Parse(fh.read(), model_config_pb2.ModelConfig())


def fake_engine(onnx_path, folder, name, profile):
    """An .engine file with the sidecar `build` writes for one (the repository copies it, never opens it)."""
    record = read_sidecar(onnx_path)
    for onnx_only in ("batch", "input_shape", "opset", "sha256"):
        record.pop(onnx_only, None)
    record.update({"format": "tensorrt", "target": "tensorrt", "batch_profile": profile, "tensorrt_version": "10.3.0"})
    path = os.path.join(str(folder), name)
    with open(path, "wb") as fh:
        fh.write(b"serialized engine bytes")
    write_sidecar(path, record)
    return path


@pytest.fixture(scope="module")
def repository(artifacts, tmp_path_factory):
    folder = tmp_path_factory.mktemp("repo-src")
    engines = {
        "dyn": fake_engine(artifacts["resnet"], folder, "r18-fp16.engine", {"min": 1, "opt": 4, "max": 8}),
        "fixed": fake_engine(artifacts["resnet"], folder, "r18-b1.engine", {"min": 1, "opt": 1, "max": 1}),
    }
    output = str(tmp_path_factory.mktemp("repo") / "models")
    settings = RepositorySettings(max_batch=16, max_queue_delay_us=250, instances=2)
    result = write_triton_repository([artifacts["resnet"], artifacts["rbi"], engines["dyn"], engines["fixed"]],
                                     output, settings)
    return output, result, engines


def test_every_config_parses_with_tritons_schema_and_names_its_folder(repository):
    output, result, _ = repository
    assert sorted(result.models) == sorted(os.listdir(output))
    for model in result.models:
        config = parse(os.path.join(output, model))
        assert config.name == model
        assert os.path.isdir(os.path.join(output, model, "1"))


def test_dynamic_onnx_classifier_batches_on_cpu(repository, artifacts):
    output, _, _ = repository
    record = read_sidecar(artifacts["resnet"])
    config = parse(os.path.join(output, "birds_r18"))
    assert config.backend == "onnxruntime" and config.max_batch_size == 16
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("input", FP32, [3, 32, 32])]
    assert [(t.name, list(t.dims), t.label_filename) for t in config.output] == [("logits", [4], "labels.txt")]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert [(g.kind, g.count) for g in config.instance_group] == [(KIND_CPU, 2)]
    # Batches of every size come in: ORT's CPU arena would grow with each new mix of them.
    assert config.parameters["enable_mem_arena"].string_value == "0"
    with open(os.path.join(output, "birds_r18", "1", "model.onnx"), "rb") as copy, open(artifacts["resnet"], "rb") as src:
        assert copy.read() == src.read()
    with open(os.path.join(output, "birds_r18", "labels.txt"), encoding="utf-8") as fh:
        assert fh.read().splitlines() == record["class_names"]


def test_batch_dependent_model_has_batching_off_and_its_batch_in_the_dims(repository, artifacts):
    output, result, _ = repository
    batch = read_sidecar(artifacts["rbi"])["batch"]
    for model, dims in (("rbi", [batch, 3, 32, 32]), ("rbi_preprocess", [batch, 1]), ("rbi_ensemble", [batch, 1])):
        config = parse(os.path.join(output, model))
        assert config.max_batch_size == 0 and not config.HasField("dynamic_batching"), model
        assert list(config.input[0].dims) == dims
    assert "enable_mem_arena" not in parse(os.path.join(output, "rbi")).parameters  # one shape: the arena reuses it
    with open(os.path.join(output, "rbi", "config.pbtxt"), encoding="utf-8") as fh:
        assert "depends on its batch" in fh.read()
    assert any("rbi: batching off" in note for note in result.notes)


def test_engines_are_plans_on_the_gpu_within_their_profile(repository):
    output, _, _ = repository
    dynamic = parse(os.path.join(output, "r18-fp16"))
    assert dynamic.backend == "tensorrt" and dynamic.max_batch_size == 8  # the profile's max, under --max-batch 16
    assert dynamic.HasField("dynamic_batching") and dynamic.instance_group[0].kind == KIND_GPU
    assert os.path.isfile(os.path.join(output, "r18-fp16", "1", "model.plan"))
    assert "enable_mem_arena" not in dynamic.parameters  # an onnxruntime_backend key: not the tensorrt backend's
    fixed = parse(os.path.join(output, "r18-b1"))
    assert fixed.max_batch_size == 0 and list(fixed.input[0].dims) == [1, 3, 32, 32]
    assert not fixed.HasField("dynamic_batching")


@pytest.mark.parametrize("name", ["birds_r18", "rbi", "r18-fp16"])
def test_ensemble_chains_preprocess_into_the_classifier(repository, name):
    output, _, _ = repository
    ensemble = parse(os.path.join(output, name + "_ensemble"))
    assert ensemble.platform == "ensemble" and ensemble.input[0].data_type == STRING
    models = {m: parse(os.path.join(output, m)) for m in (name + "_preprocess", name)}
    assert [step.model_name for step in ensemble.ensemble_scheduling.step] == list(models)
    produced = {t.name: (t.data_type, list(t.dims)) for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        config = models[step.model_name]
        assert config.max_batch_size == ensemble.max_batch_size
        inputs = {t.name: (t.data_type, list(t.dims)) for t in config.input}
        for model_input, tensor in step.input_map.items():
            assert produced[tensor] == inputs[model_input], (step.model_name, model_input)
        outputs = {t.name: (t.data_type, list(t.dims)) for t in config.output}
        produced.update({tensor: outputs[model_output] for model_output, tensor in step.output_map.items()})
    assert all(produced[t.name] == (t.data_type, list(t.dims)) for t in ensemble.output)
    with open(os.path.join(output, name + "_ensemble", ensemble.output[0].label_filename)) as fh:
        assert len(fh.read().splitlines()) == ensemble.output[0].dims[-1]


def test_preprocess_model_carries_the_contract_module_unchanged(repository, artifacts):
    output, _, _ = repository
    folder = os.path.join(output, "birds_r18_preprocess", "1")
    assert sorted(os.listdir(folder)) == ["fgvc_preprocess.py", "model.py"]
    for copy, source in (("fgvc_preprocess.py", contract_preprocess.__file__), ("model.py", PYTHON_MODEL)):
        with open(os.path.join(folder, copy), "rb") as a, open(source, "rb") as b:
            assert a.read() == b.read()
    config = parse(os.path.join(output, "birds_r18_preprocess"))
    assert config.backend == "python"
    assert json.loads(config.parameters["preprocess"].string_value) == read_sidecar(artifacts["resnet"])["preprocess"]


def test_preprocess_model_runs_without_fgvc_edge_and_matches_the_contract(repository, photos, tmp_path):
    pytest.importorskip("pytriton", reason="the Python backend's utils module ships with nvidia-pytriton")
    from pytriton.utils.distribution import get_root_module_path

    output, _, _ = repository
    model_dir = os.path.join(output, "birds_r18_preprocess")
    config = json_format.MessageToJson(parse(model_dir), preserving_proto_field_name=True)
    np.save(tmp_path / "images.npy", np.array(photos + [b"not an image"], dtype=object).reshape(-1, 1))
    script = textwrap.dedent(
        """
        import importlib.util, json, sys
        import numpy as np
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("fgvc_edge", "torch"):
                    raise ImportError("not in the Triton container: " + name)
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {backend!r})
        spec = importlib.util.spec_from_file_location("model", {model!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        triton_model = module.TritonPythonModel()
        triton_model.initialize({{"model_config": {config!r}}})
        images = np.load({images!r}, allow_pickle=True)
        np.save({out!r}, module.preprocess_encoded(triton_model.preprocess, images[:-1]))
        try:
            module.preprocess_encoded(triton_model.preprocess, images[-1:])
        except ValueError as exc:
            print("refused:", exc)
        """
    ).format(backend=str(get_root_module_path() / "tritonserver" / "backends" / "python"),
             model=os.path.join(model_dir, "1", "model.py"), config=config,
             images=str(tmp_path / "images.npy"), out=str(tmp_path / "out.npy"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=""))
    assert done.returncode == 0, done.stderr
    assert "refused: image 0 of the request: 12 bytes are not an image" in done.stdout
    expected = Preprocess.from_dict(json.loads(parse(model_dir).parameters["preprocess"].string_value)).batch(photos)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_rewriting_replaces_a_model_folder_whole(artifacts, tmp_path):
    output = str(tmp_path / "models")
    write_triton_repository([artifacts["resnet"]], output, RepositorySettings(max_batch=4))
    stray = os.path.join(output, "birds_r18", "1", "stray.txt")
    open(stray, "w").close()
    write_triton_repository([artifacts["resnet"]], output, RepositorySettings(max_batch=8))
    assert parse(os.path.join(output, "birds_r18")).max_batch_size == 8
    assert not os.path.exists(stray)
    assert sorted(os.listdir(output)) == ["birds_r18", "birds_r18_ensemble", "birds_r18_preprocess"]


def test_refusals(artifacts, tmp_path):
    lone = str(tmp_path / "lone.onnx")
    shutil.copyfile(artifacts["resnet"], lone)
    with pytest.raises(UserInputError, match="has no sidecar"):
        write_triton_repository([lone], str(tmp_path / "out"))
    with pytest.raises(UserInputError, match="expected an .onnx or .engine"):
        write_triton_repository([str(tmp_path / "model.pt")], str(tmp_path / "out"))
    late = fake_engine(artifacts["resnet"], tmp_path, "late.engine", {"min": 2, "opt": 4, "max": 8})
    with pytest.raises(UserInputError, match="profile takes batches 2-8"):
        write_triton_repository([late], str(tmp_path / "out"))
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UserInputError, match="is a file"):
        write_triton_repository([artifacts["resnet"]], str(afile))
    assert not os.path.exists(tmp_path / "out")


def test_cli_writes_the_repository_and_errors_in_one_line(artifacts, tmp_path):
    runner = CliRunner()
    out = tmp_path / "models"
    done = runner.invoke(app, ["triton-repo", artifacts["resnet"], artifacts["rbi"], "-o", str(out), "--onnx-on-gpu"])
    assert done.exit_code == 0, done.output
    assert "wrote" in done.output and "rbi_ensemble" in done.output and "note: rbi: batching off" in done.output
    assert parse(str(out / "birds_r18")).instance_group[0].kind == KIND_GPU
    done = runner.invoke(app, ["triton-repo", str(tmp_path / "missing.onnx"), "-o", str(out)])
    assert done.exit_code == 2 and done.output.strip().splitlines() == ["error: no such file: " + str(tmp_path / "missing.onnx")]
