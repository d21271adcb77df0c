"""Request handling of a served model, without a server: the same numbers as the in-process runner, and
every malformed request refused with its reason."""
import os
import socket
import sysconfig

import numpy as np
import pytest

from fgvc_edge.errors import UserInputError
from fgvc_edge.runtime import load
from fgvc_edge.serve.models import ServedModel, check_unique_names, model_name, topk
from fgvc_edge.serve.server import ServeSettings, check_ports_free, server_library_path


def images_request(encoded):
    return {"image": np.array(encoded, dtype=object).reshape(-1, 1)}


@pytest.fixture(scope="module")
def resnet(artifacts):
    with load(artifacts["resnet"]) as runner:
        yield ServedModel(runner, model_name(artifacts["resnet"]), k=3)


@pytest.fixture(scope="module")
def rbi(artifacts):
    with load(artifacts["rbi"]) as runner:
        yield ServedModel(runner, "rbi")


def test_images_give_the_runners_logits_and_top_k(resnet, photos):
    answer = resnet([images_request(photos)])[0]
    expected = resnet.runner.infer(resnet.runner.preprocess.batch(photos))
    np.testing.assert_array_equal(answer["logits"], expected)
    for row, preds in enumerate(resnet.runner.predict(photos, topk=3)):
        assert answer["topk_index"][row].tolist() == [p.index for p in preds]
        assert [b.decode() for b in answer["topk_label"][row]] == [p.label for p in preds]
        np.testing.assert_allclose(answer["topk_prob"][row], [p.prob for p in preds], rtol=1e-6)
    assert answer["topk_index"].dtype == np.int64 and answer["topk_prob"].dtype == np.float32


def test_requests_batched_together_answer_each_its_own(resnet, photos):
    tensors = resnet.runner.preprocess.batch(photos[2:])
    answers = resnet([images_request(photos[:1]), {"input": tensors}, images_request(photos[1:2])])
    assert [a["logits"].shape for a in answers] == [(1, 4), (len(photos) - 2, 4), (1, 4)]
    alone = [resnet([images_request(photos[:1])])[0], resnet([{"input": tensors}])[0]]
    np.testing.assert_allclose(answers[0]["logits"], alone[0]["logits"], atol=1e-5)
    np.testing.assert_allclose(answers[1]["logits"], alone[1]["logits"], atol=1e-5)


@pytest.mark.parametrize(
    "request_, reason",
    [
        ({"image": np.array([[b"GIF89a but not really"]], dtype=object)}, "image 0 of the request: .*not an image"),
        ({"image": np.array([[b"\xff\xd8\xff\xe0" + b"\0" * 40]], dtype=object)}, "image 0 of the request"),
        ({"input": np.zeros((1, 3, 32, 32), np.float64)}, "must be N×3×32×32 float32, got 1×3×32×32 float64"),
        ({"input": np.zeros((1, 3, 16, 32), np.float32)}, "got 1×3×16×32 float32"),
        ({}, "exactly one input"),
        ({"image": np.array([[b"x"]], dtype=object), "input": np.zeros((1, 3, 32, 32), np.float32)}, "exactly one input"),
    ],
)
def test_malformed_requests_are_refused_with_the_reason(resnet, request_, reason):
    with pytest.raises(UserInputError, match=reason):
        resnet([request_])


def test_batch_dependent_model_takes_exactly_its_batch_and_runs_requests_alone(rbi, photos):
    pair, other = images_request(photos[:2]), images_request(photos[2:4])
    together = rbi([pair, other])
    np.testing.assert_array_equal(together[0]["logits"], rbi([pair])[0]["logits"])
    np.testing.assert_array_equal(together[1]["logits"], rbi([other])[0]["logits"])
    with pytest.raises(UserInputError, match="depends on the batch.*feed exactly 2 images"):
        rbi([images_request(photos[:1])])
    with pytest.raises(UserInputError, match="depends on the batch"):
        rbi([images_request(photos[:3])])


def test_topk_ranks_like_predict_and_labels_unnamed_classes_by_index():
    logits = np.array([[0.0, 2.0, 1.0, 2.0]], np.float32)
    answer = topk(logits, 3, np.array([b"a", b"b", b"2", b"3"], dtype=object))
    assert answer["topk_index"].tolist() == [[1, 3, 2]]  # ties keep index order (stable sort)
    assert answer["topk_label"].tolist() == [[b"b", b"3", b"2"]]
    assert answer["topk_prob"][0, 0] == pytest.approx(np.exp(2) / (1 + 2 * np.exp(2) + np.exp(1)), rel=1e-6)


def test_model_names_are_sanitised_stems_and_clashes_refused():
    assert model_name("engines/birds r18-int8.b1.onnx") == "birds_r18-int8.b1"
    assert model_name("/x/ünï.engine") == "_n_"
    with pytest.raises(UserInputError, match="both be served as model 'a_b'"):
        check_unique_names(["x/a b.onnx", "y/a_b.engine"])


def test_server_gets_this_interpreters_libpython_first():
    libdir = sysconfig.get_config_var("LIBDIR")
    path = server_library_path({"LD_LIBRARY_PATH": "/opt/a:" + libdir + ":/opt/b"})
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        assert path == os.pathsep.join([libdir, "/opt/a", "/opt/b"])
    else:
        assert path is None


def test_a_port_in_use_is_refused_before_starting(ports):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[1]))
        taken.listen(1)
        settings = ServeSettings(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2])
        with pytest.raises(UserInputError, match="cannot listen on 127.0.0.1:{} for gRPC.*--grpc-port".format(ports[1])):
            check_ports_free(settings)
    check_ports_free(settings)  # free again


@pytest.mark.parametrize(
    "kwargs, reason",
    [({"http_port": 8001}, "must differ"), ({"metrics_port": 70000}, "between 1 and 65535"),
     ({"max_batch": 0}, "--max-batch"), ({"max_queue_delay_us": -1}, "--max-queue-delay-us")],
)
def test_bad_settings_are_refused(kwargs, reason):
    with pytest.raises(UserInputError, match=reason):
        ServeSettings(**kwargs)


def test_sigterm_stops_serving_as_ctrl_c_does():
    import signal
    import time

    from fgvc_edge.serve.server import _sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with _sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this at once
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_model_that_fails_to_load_is_reported_in_one_line():
    from fgvc_edge.serve.server import _first_line, _instances_hint

    failure = RuntimeError("[400] load failed for model 'r18': version 1 is at UNAVAILABLE state: Internal: "
                           "TritonModelException: Model initialize error: Traceback (most recent call last):\n"
                           "  File \"/tmp/folder/1/communication.py\", line 546")
    assert _first_line(failure) == ("[400] load failed for model 'r18': version 1 is at UNAVAILABLE state: "
                                    "Internal: TritonModelException: Model initialize error")
    assert _first_line(TimeoutError()) == "TimeoutError"
    assert "--instances 1 avoids it" in _instances_hint(ServeSettings(instances=3))


def test_served_onnx_runners_run_without_the_memory_arena(artifacts):
    """Triton's batcher varies the batch; ORT's CPU arena grows with every new mix of sizes, so serve turns it off
    (and only there: a fixed-shape runner keeps it)."""
    from fgvc_edge.serve.server import _load

    served = _load([artifacts["resnet"]], ["r"], ServeSettings(instances=2))
    try:
        assert len(served[0]) == 2
        for model in served[0]:
            assert model.runner.session.get_session_options().enable_cpu_mem_arena is False
    finally:
        for model in served[0]:
            model.close()
    with load(artifacts["resnet"]) as runner:
        assert runner.session.get_session_options().enable_cpu_mem_arena is True
