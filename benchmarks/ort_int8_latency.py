"""ONNX Runtime CPU latency, FP32 vs INT8 (onnxruntime form), batch 1, fixed threads: a quick check.

    python benchmarks/ort_int8_latency.py --model resnet50 --input-size 448 --threads 2

The INT8 model is calibrated on synthetic images (speed figures only). `fgvc-edge bench` is the real bench.
"""
import argparse
import json
import tempfile
import time

import numpy as np


def p50_ms(runner, x, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        runner.infer(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.infer(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--input-size", type=int, default=448)
    parser.add_argument("--mode", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    from fgvc_edge.engine import BuildSettings, ModelOptions, build, synthetic_int8_deployable
    from fgvc_edge.runtime import OnnxRunner

    with tempfile.TemporaryDirectory() as tmp:
        model = ModelOptions(mode=args.mode, input_size=args.input_size)
        dirs = dict(intermediate_dir=tmp + "/c", calibration_dir=tmp + "/k")
        fp32 = build(args.model, BuildSettings("fp32", "onnxruntime", **dirs), model=model, output=tmp + "/fp32.onnx")
        int8 = synthetic_int8_deployable(args.model, model=model, output=tmp + "/int8.onnx", **dirs)
        x = np.random.default_rng(0).standard_normal((1, 3, args.input_size, args.input_size)).astype(np.float32)
        figures = {}
        for label, result in (("fp32", fp32), ("int8", int8)):
            with OnnxRunner(result.path, threads=args.threads) as runner:
                figures[label + "_p50_ms"] = p50_ms(runner, x, warmup=3, runs=args.runs)
    figures["speedup"] = figures["fp32_p50_ms"] / figures["int8_p50_ms"]
    figures.update(vars(args))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
