"""`bench` on a TensorRT engine: rows through the TensorRT runner (stand-in tensorrt/pycuda on CPU)."""
import json

from typer.testing import CliRunner

from fgvc_edge.bench import BenchSettings, run_bench
from fgvc_edge.cli import app
from fgvc_edge.contract.sidecar import write_sidecar
from fgvc_edge.engine.tensorrt_builder import BatchProfile, GpuInfo, TensorRTSettings, build_engine
from fgvc_edge.runtime import read_sidecar


def _engine(trt, onnx_path, path, profile):
    facts = build_engine(onnx_path, str(path), TensorRTSettings("fp16", profile), trt=trt, gpu=GpuInfo("Orin", "8.7"))
    write_sidecar(str(path), dict(read_sidecar(onnx_path), **facts))
    return str(path)


def test_bench_times_a_dynamic_engine_at_each_batch(fake_gpu_stack, tiny_onnx, tmp_path):
    trt, _ = fake_gpu_stack("10.13")
    path = _engine(trt, tiny_onnx["dynamic"], tmp_path / "m.engine", BatchProfile(1, 2, 4))
    rows = run_bench([path], BenchSettings(batches=(1, 2), iters=3, warmup=1))
    assert [(r["runtime"], r["precision"], r["batch"]) for r in rows] == [("tensorrt", "fp16", 1), ("tensorrt", "fp16", 2)]
    for row in rows:
        assert row["device"] == "Orin" and row["artifact"] == path and row["input_size"] == 32
        assert row["iters"] == 3 and 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p99"]
        assert row["settings"]["tensorrt"] == trt.__version__
    runs = [args for call, args in trt.calls if call == "IExecutionContext.set_input_shape"]
    assert (2, 3, 32, 32) in runs  # the batch-2 row really ran at batch 2


def test_bench_cli_takes_a_fixed_batch_engine(fake_gpu_stack, tiny_onnx, tmp_path):
    trt, _ = fake_gpu_stack("8.6")
    path = _engine(trt, tiny_onnx["fixed"], tmp_path / "m.engine", BatchProfile.fixed(1))
    refused = CliRunner().invoke(app, ["bench", path, "--batch", "1,8", "--iters", "2", "--warmup", "0",
                                       "--json", str(tmp_path / "b.json")])
    assert refused.exit_code == 2 and "has a fixed batch of 1" in refused.output  # not silently its own batch
    assert not (tmp_path / "b.json").exists()
    result = CliRunner().invoke(app, ["bench", path, "--iters", "2", "--warmup", "0",
                                      "--json", str(tmp_path / "b.json"), "--markdown", str(tmp_path / "b.md")])
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "b.json").read_text())  # the engine's own batch
    assert (row["runtime"], row["batch"]) == ("tensorrt", 1)
    assert "tensorrt" in (tmp_path / "b.md").read_text()
