"""The preprocessing model `triton-repo` writes, run by a real Triton's Python backend (the tritonserver binary
PyTriton bundles; it has no onnxruntime/tensorrt backend, so the classifier and ensemble are checked by schema
in test_repository.py): its tensors equal the contract's, and a bad image fails only its own request."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fgvc_edge.contract.preprocess import Preprocess
from fgvc_edge.contract.sidecar import read_sidecar
from fgvc_edge.serve.repository import write_triton_repository
from fgvc_edge.serve.server import server_library_path

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PyTriton's tritonserver is Linux-only")]
pytest.importorskip("pytriton", reason="PyTriton (extra serve) bundles the tritonserver this test runs")
import tritonclient.http as httpclient  # noqa: E402
from pytriton.utils.distribution import get_libs_path, get_root_module_path, get_stub_path  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

STARTUP_S = 90


def server_copy(folder):
    """tritonserver with its Python backend and the stub built for this Python, as PyTriton lays it out."""
    root = shutil.copytree(str(get_root_module_path() / "tritonserver"), str(folder / "tritonserver"),
                           ignore=shutil.ignore_patterns("python_backend_stubs"))
    version = "{}.{}".format(*sys.version_info[:2])
    shutil.copy(str(get_stub_path(version)), os.path.join(root, "backends", "python", "triton_python_backend_stub"))
    return root


@pytest.fixture(scope="module")
def triton(artifacts, port_factory, tmp_path_factory):
    folder = tmp_path_factory.mktemp("triton")
    full = str(folder / "full")
    write_triton_repository([artifacts["resnet"]], full)
    models = folder / "models"
    models.mkdir()
    shutil.copytree(os.path.join(full, "birds_r18_preprocess"), str(models / "birds_r18_preprocess"))
    root = server_copy(folder)
    http, grpc, metrics = port_factory(3)
    env = dict(os.environ, PYTHONPATH="")  # the container has no fgvc-edge; neither has this server
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [server_library_path(env), str(get_libs_path())]))
    # The embedded stub takes its prefix (site-packages: numpy, Pillow) from the first python3 on PATH.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    command = [os.path.join(root, "bin", "tritonserver"), "--model-repository", str(models),
               "--backend-directory", os.path.join(root, "backends"), "--http-address", "127.0.0.1",
               "--grpc-address", "127.0.0.1", "--metrics-address", "127.0.0.1", "--http-port", str(http),
               "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--allow-gpu-metrics", "false",
               "--exit-timeout-secs", "10", "--backend-config", "python,shm-default-byte-size=4194304",
               "--backend-config", "python,shm-region-prefix-name=fgvc{}".format(os.getpid())]
    log_path = folder / "triton.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    client = httpclient.InferenceServerClient("127.0.0.1:{}".format(http), network_timeout=30.0)
    try:
        deadline = time.monotonic() + STARTUP_S
        while not _ready(client, "birds_r18_preprocess"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("tritonserver did not load the model:\n" + log_path.read_text()[-3000:])
            time.sleep(0.5)
        yield client
    finally:
        client.close()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _ready(client, model):
    try:
        return client.is_model_ready(model)
    except (InferenceServerException, OSError):
        return False


def preprocess(client, encoded):
    request = httpclient.InferInput("image", [len(encoded), 1], "BYTES")
    request.set_data_from_numpy(np.array(encoded, dtype=object).reshape(-1, 1))
    return client.infer("birds_r18_preprocess", [request]).as_numpy("input")


def test_python_backend_preprocessing_equals_the_contract(triton, artifacts, photos):
    expected = Preprocess.from_dict(read_sidecar(artifacts["resnet"])["preprocess"]).batch(photos)
    np.testing.assert_array_equal(preprocess(triton, photos), expected)


def test_a_bad_image_fails_its_request_only(triton, photos):
    with pytest.raises(InferenceServerException, match="image 1 of the request: 5 bytes are not an image"):
        preprocess(triton, [photos[0], b"junk!"])
    assert preprocess(triton, photos[:1]).shape == (1, 3, 32, 32)
