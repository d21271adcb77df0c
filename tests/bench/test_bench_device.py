"""`bench --device`: PyTorch eager on the CPU or CUDA; refusals in one line where CUDA is absent."""
import json

import pytest
from typer.testing import CliRunner

from fgvc_edge.bench.suite import BenchSettings
from fgvc_edge.bench.timing import time_cuda_calls
from fgvc_edge.cli import app
from fgvc_edge.errors import UserInputError


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_cuda_refused_in_one_line_without_a_cuda_device(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on our CPU machines, wherever this runs
    monkeypatch.chdir(tmp_path)
    result = invoke("bench", "resnet18", "--device", "cuda", "--runtimes", "torch", "--input-size", 32)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device cuda: PyTorch") and "use --device cpu" in lines[0]
    assert not (tmp_path / "benchmarks").exists()


@pytest.mark.parametrize("settings,message", [
    (dict(device="gpu"), "--device takes cpu or cuda, not 'gpu'"),
    (dict(precisions=("fp32", "fp16")), "--precisions fp16 is PyTorch on CUDA: add --device cuda"),
])
def test_bad_device_settings(settings, message):
    with pytest.raises(UserInputError, match=message):
        BenchSettings(**settings)


def test_torch_precisions_per_device():
    assert BenchSettings(precisions=("fp32", "int8")).torch_precisions == ("fp32",)
    assert BenchSettings(device="cuda", precisions=("fp32", "fp16")).torch_precisions == ("fp32", "fp16")
    assert BenchSettings(device="cuda", precisions=("fp16",)).torch_precisions == ("fp16",)
    assert BenchSettings(device="cuda", precisions=("int8",)).torch_precisions == ("fp32",)


def test_cpu_path(tmp_path):
    out = tmp_path / "b.json"
    result = invoke("bench", "resnet18", "--device", "cpu", "--runtimes", "torch", "--input-size", 32, "--iters", 2,
                    "--warmup", 0, "--batch", "1,2", "--json", out, "--markdown", tmp_path / "b.md")
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [(r["runtime"], r["precision"], r["batch"]) for r in rows] == [("torch", "fp32", 1), ("torch", "fp32", 2)]
    assert all(r["settings"]["device"] == "cpu" and r["device"].startswith("cpu: ") for r in rows)
    assert all(0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] for r in rows)


class _FakeCuda:
    """torch.cuda's timing surface: each call of the timed function takes 4 ms of GPU time."""

    def __init__(self):
        self.clock, self.synced = 0.0, 0

    def synchronize(self):
        self.synced += 1

    def Event(self, enable_timing):  # noqa: N802 (torch.cuda.Event)
        cuda = self

        class Event:
            def record(self):
                self.at = cuda.clock

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return end.at - self.at

        assert enable_timing
        return Event()


def test_cuda_event_timing_per_image():
    cuda = _FakeCuda()

    def call():
        cuda.clock += 4.0

    stats = time_cuda_calls(call, batch=2, iters=5, warmup=3, cuda=cuda)
    assert cuda.synced == 1 and stats.iters == 5
    assert stats.p50 == stats.p99 == stats.mean == 2.0 and stats.throughput == 500.0
