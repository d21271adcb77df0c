"""`fgvc-edge serve` on a real Triton Inference Server, on loopback with free ports and bounded waits: HTTP and
gRPC answers equal the in-process runner's, malformed requests get an error and the server keeps answering,
Ctrl-C leaves no process behind."""
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from typer.testing import CliRunner

from fgvc_edge.cli import app
from fgvc_edge.runtime import load
from fgvc_edge.serve.processes import process_tree

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PyTriton's tritonserver is Linux-only")
pytest.importorskip("pytriton.triton", reason="PyTriton (extra serve) is not installed: no Triton to start")
import tritonclient.grpc as grpcclient  # noqa: E402  (PyTriton depends on tritonclient)
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

STARTUP_S = 120
STOP_S = 60
REQUEST_S = 30.0
RESNET, RBI = "birds_r18", "rbi"
# The dynamic loader's words when the bundled binary cannot run on this system (old glibc, missing library).
LOADER_ERROR = re.compile(r"error while loading shared libraries|GLIBC_[0-9.]+' not found|cannot execute binary")
CLI = [sys.executable, "-c", "from fgvc_edge.cli import main; main()"]


def tail(path, lines=30):
    with open(path, encoding="utf-8", errors="replace") as fh:
        return "".join(fh.readlines()[-lines:])


def wait_until_ready(process, http_url, models, log_path):
    deadline = time.monotonic() + STARTUP_S
    client = httpclient.InferenceServerClient(http_url, connection_timeout=2.0, network_timeout=2.0)
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                unusable = [line for line in tail(log_path, 200).splitlines() if LOADER_ERROR.search(line)]
                if unusable:
                    pytest.skip("PyTriton's tritonserver cannot start here: " + unusable[0].strip())
                pytest.fail("serve exited with {} before ready:\n{}".format(process.returncode, tail(log_path)))
            try:
                # Server readiness comes first; models load right after, so wait for each of them too.
                if client.is_server_ready() and all(client.is_model_ready(m) for m in models):
                    return
            except (InferenceServerException, OSError):
                pass
            time.sleep(0.5)
    finally:
        client.close()
    pytest.fail("serve not ready within {} s:\n{}".format(STARTUP_S, tail(log_path)))


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def server(artifacts, port_factory, tmp_path_factory):
    http, grpc, metrics = port_factory(3)
    log_path = str(tmp_path_factory.mktemp("serve") / "serve.log")
    command = CLI + ["serve", artifacts["resnet"], artifacts["rbi"], "--http-port", str(http), "--grpc-port", str(grpc),
                     "--metrics-port", str(metrics), "--topk", "3", "--max-queue-delay-us", "500", "--threads", "1"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(process, "127.0.0.1:{}".format(http), [RESNET, RBI], log_path)
        yield {"process": process, "http": "127.0.0.1:{}".format(http), "grpc": "127.0.0.1:{}".format(grpc),
               "metrics": "http://127.0.0.1:{}/metrics".format(metrics), "log": log_path}
    finally:
        stop(process)


@pytest.fixture(scope="module")
def reference(artifacts, photos):
    with load(artifacts["resnet"]) as runner:
        return {"logits": runner.infer(runner.preprocess.batch(photos)), "top": runner.predict(photos, topk=3),
                "tensors": runner.preprocess.batch(photos)}


def infer(module, url, model, name, array, datatype):
    client_class = module.InferenceServerClient
    client = client_class(url, network_timeout=REQUEST_S) if module is httpclient else client_class(url)
    try:
        request = module.InferInput(name, list(array.shape), datatype)
        request.set_data_from_numpy(array)
        kwargs = {} if module is httpclient else {"client_timeout": REQUEST_S}
        return client.infer(model, [request], **kwargs)
    finally:
        client.close()


def images(encoded):
    return np.array(encoded, dtype=object).reshape(-1, 1)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_answers_equal_the_in_process_runner(server, photos, reference, protocol):
    module = httpclient if protocol == "http" else grpcclient
    for name, array, datatype in (("image", images(photos), "BYTES"), ("input", reference["tensors"], "FP32")):
        answer = infer(module, server[protocol], RESNET, name, array, datatype)
        logits = answer.as_numpy("logits")
        np.testing.assert_allclose(logits, reference["logits"], rtol=0, atol=1e-5)
        assert logits.argmax(1).tolist() == reference["logits"].argmax(1).tolist()
        for row, preds in enumerate(reference["top"]):
            assert answer.as_numpy("topk_index")[row].tolist() == [p.index for p in preds]
            assert [b.decode() for b in answer.as_numpy("topk_label")[row]] == [p.label for p in preds]
            np.testing.assert_allclose(answer.as_numpy("topk_prob")[row], [p.prob for p in preds], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, name, array, datatype, reason",
    [
        (RESNET, "input", np.zeros((1, 3, 32, 32), np.float64), "FP64", "data-type is 'FP64', but model 'birds_r18' expects 'FP32'"),
        (RESNET, "input", np.zeros((1, 3, 16, 32), np.float32), "FP32", "unexpected shape for input 'input'"),
        (RESNET, "image", images([b"plain text, not a photo"]), "BYTES", "image 0 of the request: 23 bytes are not an image"),
        (RBI, "image", None, "BYTES", "depends on the batch (model rbi_mobilenet_v3_large); feed exactly 2 images"),
    ],
    ids=["wrong-dtype", "wrong-shape", "not-an-image", "rbi-wrong-batch"],
)
def test_a_malformed_request_gets_an_error_and_the_server_answers_the_next(
        server, photos, reference, model, name, array, datatype, reason):
    array = images(photos[:1]) if array is None else array
    for module in (httpclient, grpcclient):
        with pytest.raises(InferenceServerException, match=reason.replace("(", r"\(").replace(")", r"\)")):
            infer(module, server["http" if module is httpclient else "grpc"], model, name, array, datatype)
    answer = infer(httpclient, server["http"], RESNET, "image", images(photos[:1]), "BYTES")
    np.testing.assert_allclose(answer.as_numpy("logits"), reference["logits"][:1], rtol=0, atol=1e-5)
    pair = infer(grpcclient, server["grpc"], RBI, "image", images(photos[:2]), "BYTES")
    assert pair.as_numpy("logits").shape == (2, 3)


@pytest.mark.slow
def test_triton_has_our_batching_settings(server):
    client = httpclient.InferenceServerClient(server["http"], network_timeout=REQUEST_S)
    try:
        resnet, rbi = client.get_model_config(RESNET), client.get_model_config(RBI)
    finally:
        client.close()
    assert resnet["max_batch_size"] == 16 and resnet["dynamic_batching"]["max_queue_delay_microseconds"] == 500
    assert rbi["max_batch_size"] == 0 and "dynamic_batching" not in rbi  # batch-dependent: batching off
    assert [t["name"] for t in resnet["input"]] == ["image", "input"] and all(t["optional"] for t in resnet["input"])
    assert [t["dims"] for t in rbi["input"]] == [[-1, 1], [-1, 3, 32, 32]]
    assert [(g["kind"], g["count"]) for g in resnet["instance_group"]] == [("KIND_CPU", 1)]


@pytest.mark.slow
def test_health_and_metrics_are_tritons(server, photos):
    with urllib.request.urlopen("http://{}/v2/health/ready".format(server["http"]), timeout=REQUEST_S) as response:
        assert response.status == 200
    infer(httpclient, server["http"], RESNET, "image", images(photos[:1]), "BYTES")
    with urllib.request.urlopen(server["metrics"], timeout=REQUEST_S) as response:
        metrics = response.read().decode()
    assert 'nv_inference_request_success{model="birds_r18",version="1"}' in metrics


@pytest.mark.slow
def test_ctrl_c_stops_the_server_and_every_process_it_started(server):
    process = server["process"]
    started = process_tree(process.pid)
    names = {info.name for info in started}
    assert "tritonserver" in names, names
    stubs = [info for info in started if info.name == "triton_python_b"]  # /proc truncates names to 15 chars
    assert len(stubs) == 2, names  # one Python-backend stub per model instance
    process.send_signal(signal.SIGINT)
    assert process.wait(STOP_S) == 0, tail(server["log"])
    assert tail(server["log"], 3).strip().endswith("stopped")
    gone = time.monotonic() + 10
    while time.monotonic() < gone and any(os.path.exists("/proc/{}".format(info.pid)) for info in started):
        time.sleep(0.2)
    assert [info for info in started if os.path.exists("/proc/{}".format(info.pid))] == []


def test_a_port_in_use_is_a_one_line_error(artifacts, ports):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[0]))
        taken.listen(1)
        result = CliRunner().invoke(app, ["serve", artifacts["resnet"], "--http-port", str(ports[0]),
                                          "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: cannot listen on 127.0.0.1:{} for HTTP (Address already in use); pick another --http-port".format(ports[0])]


def test_without_pytriton_serve_names_the_extra(artifacts, ports):
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'pytriton':\n"
               "            raise ImportError('No module named ' + repr(name))\n"
               "sys.meta_path.insert(0, Block())\n"
               "from fgvc_edge.cli import main; main()\n")
    done = subprocess.run([sys.executable, "-c", blocker, "serve", artifacts["resnet"], "--http-port", str(ports[0])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "pip install 'fgvc-edge[serve]'" in done.stderr and "Traceback" not in done.stderr
