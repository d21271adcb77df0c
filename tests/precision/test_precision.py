"""INT8 Q/DQ forms, the calibration cache, refusals and FP16 parity, on a tiny resnet18 (32 px)."""
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper
from onnxconverter_common.float16 import convert_float_to_float16
from PIL import Image
from typer.testing import CliRunner

from fgvc_edge.cli import app
from fgvc_edge.errors import UserInputError
from fgvc_edge.precision import ImageStream, calibrate_onnx, convert_fp16
from fgvc_edge.precision.int8 import collection_stride
from fgvc_edge.runtime import OnnxRunner, Preprocess, read_sidecar


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    import torch

    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=4, input_size=32)
    return export_onnx(model, str(tmp_path_factory.mktemp("m") / "r18.onnx")).path


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(12):
        folder = tmp_path / "data" / "class{}".format(i % 3)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40 + i, 48, 3), dtype=np.uint8)).save(folder / "{:02d}.png".format(i))
    return tmp_path / "data"


def _constants(proto):
    return {init.name: init for init in proto.graph.initializer}


def test_tensorrt_form_is_symmetric_int8_with_zero_points_0(fp32_onnx, images, tmp_path):
    result = calibrate_onnx(fp32_onnx, str(images), num_images=12, target="tensorrt", cache_dir=str(tmp_path / "c"))
    proto = onnx.load(result.path)
    consts = _constants(proto)
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 40
    for node in qdq:
        zero_point = consts[node.input[2]]
        assert zero_point.data_type == TensorProto.INT8, node.name
        assert not numpy_helper.to_array(zero_point).any(), node.name
    # Weights are per channel (one scale per output channel) and stored as INT8; biases stay float.
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    producers = {out: n for n in proto.graph.node for out in n.output}
    weight_dq = producers[convs[0].input[1]]
    assert weight_dq.op_type == "DequantizeLinear" and consts[weight_dq.input[0]].data_type == TensorProto.INT8
    assert numpy_helper.to_array(consts[weight_dq.input[1]]).shape == (64,)
    assert all(init.data_type != TensorProto.INT32 for init in proto.graph.initializer)
    record = read_sidecar(result.path)
    assert record["precision"] == "int8" and record["quantization"]["activation_type"] == "QInt8"
    assert record["int8_check"]["samples"] == 8 and record["int8_check"]["min_cosine"] > 0.95


def test_onnxruntime_form_has_uint8_activations(fp32_onnx, images, tmp_path):
    result = calibrate_onnx(fp32_onnx, str(images), num_images=12, target="onnxruntime", cache_dir=str(tmp_path / "c"))
    proto = onnx.load(result.path)
    consts = _constants(proto)
    activation_zero_points = {consts[n.input[2]].data_type for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    assert activation_zero_points == {TensorProto.UINT8}
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with OnnxRunner(result.path) as runner:
        assert runner.infer(x).shape == (1, 4)


def test_cache_reused_when_unchanged_and_invalidated_by_each_input(fp32_onnx, images, tmp_path):
    cache = str(tmp_path / "c")

    def run(**kw):
        options = dict(num_images=12, method="minmax", target="tensorrt", cache_dir=cache)
        options.update(kw)
        return calibrate_onnx(fp32_onnx, str(images), **options)

    first = run()
    assert not first.cache_hit
    mtime = os.stat(first.cache_path).st_mtime_ns
    again = run(output=str(tmp_path / "out.onnx"))
    assert again.cache_hit and os.stat(first.cache_path).st_mtime_ns == mtime
    assert again.path == str(tmp_path / "out.onnx") and read_sidecar(again.path)["cache_key"] == first.record["cache_key"]
    assert not run(force=True).cache_hit
    assert not run(method="percentile").cache_hit
    assert not run(num_images=10).cache_hit
    assert not run(target="onnxruntime").cache_hit
    picture = sorted(images.rglob("*.png"))[0]
    os.utime(picture, ns=(mtime + 10**9, mtime + 10**9))
    assert not run().cache_hit
    assert run().cache_hit


def test_cache_invalidated_by_preprocessing(fp32_onnx, images, tmp_path):
    import json
    import shutil

    model = tmp_path / "m.onnx"
    shutil.copy(fp32_onnx, model)
    shutil.copy(fp32_onnx + ".json", str(model) + ".json")
    first = calibrate_onnx(str(model), str(images), num_images=12, cache_dir=str(tmp_path / "c"))
    record = json.loads((tmp_path / "m.onnx.json").read_text())
    record["preprocess"]["resize_size"] = 40
    (tmp_path / "m.onnx.json").write_text(json.dumps(record))
    second = calibrate_onnx(str(model), str(images), num_images=12, cache_dir=str(tmp_path / "c"))
    assert not second.cache_hit and second.cache_path != first.cache_path


def test_refusals(fp32_onnx, images, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(images.rglob("*.png"))[:5]:
        (few / path.name).write_bytes(path.read_bytes())
    with pytest.raises(UserInputError, match="holds 5 image.*at least 8"):
        calibrate_onnx(fp32_onnx, str(few), num_images=12)
    (images / "class0" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UserInputError, match="cannot be read"):
        calibrate_onnx(fp32_onnx, str(images), num_images=13)
    result = CliRunner().invoke(app, ["calibrate", fp32_onnx, "--data", str(few), "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_cli_calibrate_writes_the_output(fp32_onnx, images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(app, ["calibrate", fp32_onnx, "--data", str(images), "--num-images", "12",
                                      "--target", "onnxruntime", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and out.exists() and read_sidecar(str(out))["quantization"]["num_images"] == 12
    assert os.listdir(tmp_path / "calibration")  # the cache lives under ./calibration


def test_stream_is_lazy_and_strided(images):
    paths = sorted(str(p) for p in images.rglob("*.png"))
    seen = []
    stream = ImageStream(paths, Preprocess(36, 32), "input", batch=1, on_batch=seen.append)
    assert len(stream) == 12 and seen == []
    stream.set_range(4, 8)
    batches = iter(stream.get_next, None)
    assert [b["input"].shape for b in batches] == [(1, 3, 32, 32)] * 4 and seen == [1] * 4
    # One stride's activations stay under the budget, and strides tile the images exactly.
    assert collection_stride(512, 400 << 20, budget=1 << 30) == 1
    assert collection_stride(512, 10 << 20, budget=1 << 30) == 32
    assert collection_stride(12, 1, budget=1 << 30) == 12


def test_fp16_keeps_fp32_io_and_matches_fp32(fp32_onnx, tmp_path):
    result = convert_fp16(fp32_onnx, cache_dir=str(tmp_path))
    proto = onnx.load(result.path)
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert {i.data_type for i in proto.graph.initializer if i.dims and len(i.dims) == 4} == {TensorProto.FLOAT16}
    check = result.record["fp16_check"]
    assert check["rel_error"] < 5e-3 and check["top1_agreement"] == 1.0 and check["min_cosine"] > 0.9999
    assert convert_fp16(fp32_onnx, cache_dir=str(tmp_path)).cache_hit


def test_attention_products_stay_float_and_float_casts_are_kept():
    from onnx import helper

    from fgvc_edge.precision.fp16 import float_casts
    from fgvc_edge.precision.int8 import float_nodes

    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name="weight_product"),
        helper.make_node("Gather", ["w", "idx"], ["row"], name="pick", axis=0),
        helper.make_node("MatMul", ["y", "row_t"], ["cam"], name="cam_product"),
        helper.make_node("Cast", ["mask"], ["mask_f"], name="to_float", to=TensorProto.FLOAT),
        helper.make_node("Cast", ["y"], ["y_i"], name="to_int", to=TensorProto.INT32),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("cam", TensorProto.FLOAT, [1, 1])], [w])
    proto = helper.make_model(graph)
    # w is read twice; what is computed from a float product stays float up to the next weighted layer
    assert float_nodes(proto) == ["weight_product", "pick", "cam_product", "to_int"]
    assert float_casts(proto) == ["to_float"]


def test_float_scopes_keep_all_but_their_convs_float():
    from onnx import helper

    from fgvc_edge.precision.int8 import float_nodes

    w = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["q"], name="/layer1/layer1.0/conv2/conv2.0/q/Conv"),
        helper.make_node("Mul", ["q", "q"], ["p"], name="/layer1/layer1.0/conv2/conv2.0/Mul_3"),
        helper.make_node("ReduceSum", ["p"], ["s"], name="/layer1/layer1.0/conv2/conv2.0/ReduceSum"),
        helper.make_node("Add", ["s", "x"], ["y"], name="/layer1/layer1.0/Add"),  # the residual: quantized
        helper.make_node("Mul", ["y", "y"], ["z"], name="/layer1/layer1.0/conv2/conv2.00/Mul"),  # another scope
        helper.make_node("Reshape", ["z", "shape"], ["zr"], name="/layer1/layer1.0/conv2/conv2.0/Reshape"),
        helper.make_node("Neg", ["zr"], ["out"], name="/layer1/layer1.0/conv2/conv2.0/Neg"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              [w, numpy_helper.from_array(np.array([-1], np.int64), "shape")])
    proto = helper.make_model(graph)
    assert float_nodes(proto) == []
    assert float_nodes(proto, ["/layer1/layer1.0/conv2/conv2.0/"]) == [  # each once, the view inside too
        "/layer1/layer1.0/conv2/conv2.0/Mul_3", "/layer1/layer1.0/conv2/conv2.0/ReduceSum",
        "/layer1/layer1.0/conv2/conv2.0/Reshape", "/layer1/layer1.0/conv2/conv2.0/Neg"]


def test_fp32_scopes_stay_fp32_and_read_their_own_copy_of_shared_weights(tmp_path):
    # A weight read inside an FP32 scope (CMAL-Net's CAM reads the heads' Linear weights) and by a converted
    # node: the converter alone types it for one side and ORT refuses the graph; the scope gets its own copy.
    from onnx import helper

    from fgvc_edge.precision.fp16 import drop_fp16_round_trips, scope_nodes, unshared_for_fp16

    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2) / 7, "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["head"], name="/head/MatMul"),
        helper.make_node("MatMul", ["x", "w"], ["cam"], name="/aoval_crop/MatMul"),
        helper.make_node("Mul", ["cam", "cam"], ["pos"], name="/aoval_crop/Mul"),
        helper.make_node("Add", ["head", "pos"], ["y"], name="/Add"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    kept = scope_nodes(proto, ["/aoval_crop/"])
    assert kept == ["/aoval_crop/MatMul", "/aoval_crop/Mul"]
    split = unshared_for_fp16(proto, [], kept)
    assert [list(n.input) for n in split.graph.node][:2] == [["x", "w"], ["x", "w_copy1"]]
    assert [list(n.input) for n in proto.graph.node][1] == ["x", "w"]  # the source is left as it was
    def session(model):
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=kept)
        return half, ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])

    with pytest.raises(Exception, match="bound to different types"):
        session(proto)
    half, runner = session(split)
    # The converter hands the kept MatMul's output to the kept Mul through FP16 (Cast → Cast); that pair goes.
    producers = {name: node for node in half.graph.node for name in node.output}
    assert producers[[n for n in half.graph.node if n.name == "/aoval_crop/Mul"][0].input[0]].op_type == "Cast"
    drop_fp16_round_trips(half)
    mul = [n for n in half.graph.node if n.name == "/aoval_crop/Mul"][0]
    assert [n.op_type for n in half.graph.node if mul.input[0] in n.output] == ["MatMul"]
    runner = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    assert {i.name: i.data_type for i in half.graph.initializer} == {"w": TensorProto.FLOAT16, "w_copy1": TensorProto.FLOAT}
    x = np.array([[0.5, -1.0, 2.0]], np.float32)
    expected = x @ numpy_helper.to_array(w) + (x @ numpy_helper.to_array(w)) ** 2
    assert np.allclose(runner.run(None, {"x": x})[0], expected, rtol=2e-3)
