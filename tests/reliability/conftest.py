"""Shared pieces of the reliability tests: a tiny exported model; child-process helpers on the path."""
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # reliability_helpers (the suite runs with --import-mode=importlib)


@pytest.fixture(scope="session")
def exported_r18(tmp_path_factory):
    """resnet18 @32 px, 3 classes named a/b/c, dynamic batch: (onnx path, checkpoint folder)."""
    import torch

    from fgvc_edge.checkpoint import save_checkpoint
    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model

    folder = tmp_path_factory.mktemp("r18")
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, input_size=32)
    checkpoint = save_checkpoint(model, str(folder / "ck"), class_names=["a", "b", "c"])
    model = create_model("resnet18", checkpoint=checkpoint)
    path = export_onnx(model, str(folder / "r18.onnx"), batch="dynamic", checkpoint=checkpoint).path
    return path, checkpoint


@pytest.fixture
def r18_copy(exported_r18, tmp_path):
    """A private copy of the exported model and its sidecar."""
    source, _ = exported_r18
    target = tmp_path / "model.onnx"
    shutil.copyfile(source, target)
    shutil.copyfile(source + ".json", str(target) + ".json")
    return str(target)


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    yield


@pytest.fixture
def tiny_folder(tmp_path, tiny):
    """An ImageFolder data set: 3 classes, 8 train / 4 test images each, 40 px."""
    root = tmp_path / "data"
    tiny.write_imagefolder(str(root), classes=3, train_per_class=8, test_per_class=4)
    return root
