"""Tiny artifacts and real photos for the serving tests: a dynamic-batch ResNet18 at 32 px with 4 named
classes, and an RBI model (batch-dependent) exported at batch 2."""
import io
import socket

import numpy as np
import pytest
from PIL import Image

CLASS_NAMES = ["heron", "egret", "ibis", "stork"]
RBI_BATCH = 2


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    import torch

    from fgvc_edge.export import export_onnx
    from fgvc_edge.models import create_model

    folder = tmp_path_factory.mktemp("serve-artifacts")
    torch.manual_seed(0)
    resnet = create_model("resnet18", num_classes=4, input_size=32)
    resnet.class_names = list(CLASS_NAMES)
    rbi = create_model("rbi_mobilenet_v3_large", num_classes=3, input_size=32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        paths = {
            "resnet": export_onnx(resnet, str(folder / "birds r18.onnx"), batch="dynamic").path,
            "rbi": export_onnx(rbi, str(folder / "rbi.onnx"), batch=RBI_BATCH).path,
        }
    finally:
        torch.set_num_threads(threads)
    return paths


@pytest.fixture(scope="session")
def photos():
    """Encoded real photographs (scikit-image's samples when installed) in JPEG and PNG, plus a gray one."""
    try:
        from skimage import data

        arrays = [data.astronaut(), data.coffee(), data.chelsea(), data.camera()]
    except ImportError:
        rng = np.random.default_rng(0)
        grid = np.linspace(0, 255, 120)
        smooth = np.stack([np.add.outer(grid, grid[::-1]) / 2] * 3, axis=-1)
        arrays = [np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8) for _ in range(3)]
        arrays.append(arrays[0][:, :, 0])
    encoded = []
    for position, array in enumerate(arrays):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "JPEG" if position % 2 == 0 else "PNG")
        encoded.append(buffer.getvalue())
    return encoded


def free_ports(count):
    """Ports free on 127.0.0.1 now (the OS picks them; each socket is held until all are chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="session")
def port_factory():
    return free_ports


@pytest.fixture
def ports():
    return free_ports(3)
