"""Registry-driven: every model (each variant), with fresh and with trained-like weights, builds as FP32, FP16 and
both INT8 forms (TensorRT: symmetric s8 Q/DQ; ONNX Runtime: u8 activations), each close to its FP32 ONNX and runnable.

Fresh weights are full of equal tensors (zero biases, unit norm weights) that the exporter and onnxsim merge into
shared initializers — the case that broke FP16 for ConvNeXt and Swin; trained-like weights (every tensor moved
by seeded noise) share nothing by accident, and are the ones whose parity figures mean something.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto

from fgvc_edge.checkpoint import save_checkpoint
from fgvc_edge.engine import BuildSettings, CalibrationSettings, ModelOptions, build
from fgvc_edge.models import create_model, get_model_config, list_models
from fgvc_edge.precision import calibrate_onnx, qdq_violations
from fgvc_edge.runtime import load

# Exports of these cost tens of seconds each on 2 cores; they run with `make test-slow`, as do the trained-like
# cases but resnet18's (a plain CNN). The fast fresh cases skip the TensorRT-form calibration (as costly as the
# ONNX Runtime one) but for cmal_resnet18 raw+aoval (the CAM's float weights); each trained-like case builds it.
SLOW = {"rbi_swin_s", "rbi_convnext_base", "acanet_resnet50", "cncnn_resnet50", "cmal_resnet50", "rbi_swin_t",
        "rbi_convnext_tiny", "rbi_densenet121", "care_resnet50", "resnet50"}
# cmal_resnet18 raw is the raw+aoval graph without the crop branch: its check runs in the slow tier.
SLOW_VARIANTS = {("cmal_resnet18", "raw")}
FAST_TRAINED = {("resnet18", None)}
# Fresh cases that build the TensorRT-form INT8 in the fast tier too: the CAM's float weights (item 7 of #17).
FAST_TENSORRT_FORM = {("cmal_resnet18", "raw+aoval")}
CASES = [
    pytest.param(n, v, w, marks=pytest.mark.slow if n in SLOW or (n, v) in SLOW_VARIANTS
                 or (w == "trained" and (n, v) not in FAST_TRAINED) else ())
    for n in list_models()
    for v in (get_model_config(n).variants or (None,))
    for w in ("fresh", "trained")
]
NUM_CLASSES = 5
# FP16 moves logits by rounding only; more is overflow or a wrong type somewhere. A fresh model's logits are
# nearly equal, so the same rounding is a larger part of them: it gets the converter's own refusal limit.
FP16_MAX_REL_ERROR = {"fresh": 5e-2, "trained": 1e-2}
# INT8 on 8 calibration images of a model with trained-like weights: close, not exact.
INT8_MIN_COSINE = 0.9


def _model_options(name, variant, weights, size, folder, tiny):
    if weights == "fresh":
        return ModelOptions(mode=variant, num_classes=NUM_CLASSES, input_size=size)
    model = create_model(name, num_classes=NUM_CLASSES, input_size=size, **({"mode": variant} if variant else {}))
    checkpoint = save_checkpoint(tiny.perturb_like_trained(model, seed=1), str(folder / "trained"))
    return ModelOptions(checkpoint=checkpoint, mode=variant)


def _float_nodes_reading_weight_dq(path, float_nodes):
    """Float-kept nodes that read a dequantized weight (the DQ output of an INT8 initializer)."""
    proto = onnx.load(path)
    constants = {init.name for init in proto.graph.initializer}
    dq_of_weight = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in constants}
    return [n.name for n in proto.graph.node if n.name in set(float_nodes) and dq_of_weight.intersection(n.input)]


def _float_matmuls(path, float_nodes):
    return [n.name for n in onnx.load(path).graph.node if n.op_type == "MatMul" and n.name in set(float_nodes)]


def _float_matmuls_reading_dq(path, float_nodes):
    """Float-kept MatMuls (CMAL-Net's CAM, attention products) that read a DequantizeLinear output, other than
    the image's: CMAL-Net's float crop interpolates the input image as the backbone's first conv reads it."""
    proto = onnx.load(path)
    inputs = {i.name for i in proto.graph.input}
    quantized_input = {n.output[0] for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inputs}
    dq = {n.output[0] for n in proto.graph.node
          if n.op_type == "DequantizeLinear" and n.input[0] not in quantized_input}
    return [n.name for n in proto.graph.node
            if n.op_type == "MatMul" and n.name in set(float_nodes) and dq.intersection(n.input)]


def _dead_nodes(path):
    proto = onnx.load(path)
    read = {name for node in proto.graph.node for name in node.input} | {o.name for o in proto.graph.output}
    return [node.name for node in proto.graph.node if not read.intersection(node.output)]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("name,variant,weights", CASES)
def test_every_typed_form_builds_and_matches_fp32(name, variant, weights, tmp_path, tiny):
    import torch

    torch.manual_seed(0)
    size = get_model_config(name).min_input_size
    images = tmp_path / "calib"
    tiny.write_imagefolder(str(images), classes=2, train_per_class=4, test_per_class=0, size=size + 8)
    options = _model_options(name, variant, weights, size, tmp_path, tiny)
    dirs = dict(target="onnxruntime", intermediate_dir=str(tmp_path / "cache"), calibration_dir=str(tmp_path / "calibration"))
    calibration = CalibrationSettings(str(images), num_images=8)
    fp32 = build(name, BuildSettings("fp32", **dirs), model=options, output=str(tmp_path / "fp32.onnx"))
    fp16 = build(fp32.path, BuildSettings("fp16", **dirs), output=str(tmp_path / "fp16.onnx"))
    int8_ort = build(fp32.path, BuildSettings("int8", calibration=calibration, **dirs), output=str(tmp_path / "int8.onnx"))
    forms = [int8_ort]
    if weights == "trained" or name in SLOW or (name, variant) in FAST_TENSORRT_FORM:
        forms.append(calibrate_onnx(fp32.path, str(images), num_images=8, target="tensorrt",
                                    cache_dir=dirs["calibration_dir"]))
        assert qdq_violations(onnx.load(forms[-1].path)) == []

    check = fp16.record["fp16_check"]
    # Not top-1 agreement: random weights leave near-tied logits, which FP16 rounding may reorder.
    assert check["rel_error"] <= FP16_MAX_REL_ERROR[weights] and check["min_cosine"] > 0.999, check
    graph = onnx.load(fp16.path).graph
    assert graph.input[0].type.tensor_type.elem_type == graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert TensorProto.FLOAT16 in {init.data_type for init in graph.initializer}

    zero_points = {init.name: init.data_type for init in onnx.load(int8_ort.path).graph.initializer}
    activations = [n for n in onnx.load(int8_ort.path).graph.node if n.op_type == "QuantizeLinear"]
    assert activations and {zero_points[n.input[2]] for n in activations} == {TensorProto.UINT8}
    for typed in forms:
        assert _dead_nodes(typed.path) == []
        floating = typed.record["quantization"]["float_nodes"]
        assert len(floating) == len(set(floating))
        assert _float_nodes_reading_weight_dq(typed.path, floating) == []
        if variant == "raw+aoval":  # CMAL-Net's CAM multiplies float weights by the float expert map
            cam = _float_matmuls(typed.path, floating)
            assert len(cam) >= 6 and _float_matmuls_reading_dq(typed.path, floating) == []
        if weights == "trained":
            assert typed.record["int8_check"]["min_cosine"] > INT8_MIN_COSINE, typed.record["int8_check"]

    batch = int(fp32.record["batch"]) if fp32.record["batch"] != "dynamic" else 1
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    with load(fp32.path) as a, load(fp16.path) as b, load(int8_ort.path) as c:
        outputs = [runner.infer(x) for runner in (a, b, c)]
    assert all(out.shape == (batch, NUM_CLASSES) and np.isfinite(out).all() for out in outputs)
