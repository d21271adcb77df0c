import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from fake_tensorrt import make_pycuda, make_tensorrt  # noqa: E402


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """resnet18 @32 px, 4 classes, exported with a dynamic batch and with batch 1 (shared by the engine tests)."""
    import torch

    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model

    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=4, input_size=32)
    dynamic = export_onnx(model, str(folder / "r18-dyn.onnx"), batch="dynamic").path
    fixed = export_onnx(model, str(folder / "r18-b1.onnx"), batch=1).path
    return {"dynamic": dynamic, "fixed": fixed}


@pytest.fixture
def fake_gpu_stack(monkeypatch):
    """Install stand-in tensorrt (version given by the caller) + pycuda.driver; returns a factory."""

    def install(version, gpu=("Orin", (8, 7))):
        memory = {}
        trt = make_tensorrt(version, memory)
        driver = make_pycuda(memory, gpu)
        pycuda = type(sys)("pycuda")
        pycuda.driver = driver
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setitem(sys.modules, "pycuda", pycuda)
        monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
        return trt, driver

    return install
