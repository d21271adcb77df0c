"""The export parity gate fed an ONNX that really disagrees with PyTorch: refused, nothing written."""

import numpy as np
import pytest
import torch
from onnx import numpy_helper

from fgvc_edge.export import onnx_export
from fgvc_edge.export.onnx_export import ParityError, export_onnx
from fgvc_edge.models import create_model


def _scale_head_weight(proto, factor):
    """Scale the classifier's weight matrix in the proto (the last Gemm's B input) in place."""
    gemm = [node for node in proto.graph.node if node.op_type == "Gemm"][-1]
    init = next(i for i in proto.graph.initializer if i.name == gemm.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))


@pytest.mark.parametrize("factor,passes", [(1.0, True), (1.01, False)])
def test_parity_gate_refuses_an_onnx_that_disagrees(factor, passes, tmp_path, monkeypatch):
    real_check = onnx_export._check_parity

    def check_a_tampered_graph(model, proto, **kwargs):
        _scale_head_weight(proto, factor)  # the graph now computes other logits than the model
        return real_check(model, proto, **kwargs)

    monkeypatch.setattr(onnx_export, "_check_parity", check_a_tampered_graph)
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=4, input_size=32)
    output = tmp_path / "out" / "r18.onnx"
    if passes:  # the same path with an untouched graph is accepted: the refusal below is the tampering's
        assert export_onnx(model, str(output)).parity.rel_error <= 1e-4
        return
    with pytest.raises(ParityError, match=r"relative error .* \(limit 1e-04\).*nothing written") as info:
        export_onnx(model, str(output))
    assert "\n" not in str(info.value)
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []  # no .onnx, no sidecar, no temporary file
