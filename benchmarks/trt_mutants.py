"""Plant the TensorRT-path bugs of issue #13, one at a time, and check that a test fails for each.

    python benchmarks/trt_mutants.py [--only NAME] [--json out.json]

Each mutant is one textual change to the package, made in a scratch copy of the repository (this checkout is
never touched); the tests that guard the TensorRT builder and runner, the torch-free runtime, the export parity
gate and the TensorRT-form Q/DQ checks then run against it with ``-x``. A mutant is *killed* when a test fails,
*survives* when all pass; a change that no longer applies (the code moved) is reported as *stale*, so the list
cannot silently go out of date. The unmutated copy is run first and must pass. Exit status 1 if any mutant
survives or is stale.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDER = "fgvc_edge/engine/tensorrt_builder.py"
CACHE = "fgvc_edge/engine/timing_cache.py"
RUNNER = "fgvc_edge/runtime/tensorrt_runner.py"
TESTS = [
    "tests/engine/test_tensorrt_builder.py", "tests/engine/test_tensorrt_runner.py", "tests/engine/test_build.py",
    "tests/runtime/test_runtime_isolation.py", "tests/export/test_parity_gate.py",
    "tests/precision/test_tensorrt_qdq.py",
]


class Mutant(NamedTuple):
    name: str
    path: str
    old: str
    new: str


def ignored(name: str, path: str, call: str) -> Mutant:
    """The check ``if not <call>:`` kept, its failure never taken: the call still runs, its False is dropped."""
    return Mutant(name, path, "if not {}:".format(call), "if not ({} or True):".format(call))


MUTANTS = [
    # -- the list ---------------------------------------------------------------------------------
    ignored("parse failure ignored", BUILDER, "parser.parse_from_file(os.path.abspath(onnx_path))"),
    Mutant("build failure ignored", BUILDER, "if serialized is None:", "if False:"),
    Mutant("deserialize failure ignored", RUNNER, "if self._engine is None:", "if False:"),
    ignored("execute failure ignored", RUNNER, "self._exec.execute_async_v3(self._stream.handle)"),
    Mutant("synchronize removed", RUNNER, "self._stream.synchronize()", "pass"),
    Mutant("DLA_core not set", BUILDER, "config.DLA_core = int(settings.dla_core)", "pass"),
    Mutant("default_device_type not set", BUILDER, "config.default_device_type = trt.DeviceType.DLA", "pass"),
    Mutant("engine_host_code_allowed not set", RUNNER, "self._runtime.engine_host_code_allowed = True", "pass"),
    Mutant("version-compatible engine refused on the same TensorRT", RUNNER,
           "same_version = _version_tuple(installed) >= _version_tuple(built)",
           "same_version = _version_tuple(installed) > _version_tuple(built)"),
    Mutant("import torch in the TensorRT runner", RUNNER, "import numpy as np\n", "import numpy as np\nimport torch  # noqa\n"),
    # -- the checks #13 added -----------------------------------------------------------------------------
    ignored("set_input_shape result ignored", RUNNER, "self._exec.set_input_shape(self.input_name, shape)"),
    ignored("set_tensor_address result ignored", RUNNER, "self._exec.set_tensor_address(name, int(device_buffer))"),
    Mutant("add_optimization_profile -1 ignored", BUILDER, "if config.add_optimization_profile(opt_profile) < 0:",
           "if config.add_optimization_profile(opt_profile) < -1:"),
    Mutant("rejected timing cache taken as attached", CACHE,
           "if config.set_timing_cache(config.create_timing_cache(data), False):",
           "if config.set_timing_cache(config.create_timing_cache(data), False) or True:"),
    Mutant("no plugin registration before deserialize", RUNNER, 'if not trt.init_libnvinfer_plugins(logger, ""):',
           "if False:"),
    Mutant("trt.nptype instead of our dtype table", RUNNER, "numpy_dtype(trt, engine.get_tensor_dtype(name), path)",
           "trt.nptype(engine.get_tensor_dtype(name))"),
    Mutant("context popped before its memory is freed", RUNNER,
           "        try:\n            self._release()\n        finally:\n            self._cuda_context.pop()",
           "        try:\n            self._cuda_context.pop()\n        finally:\n            self._release()"),
    Mutant("pinned host buffers not freed", RUNNER, "host.base.free()", "pass"),
    Mutant("OBEY_PRECISION_CONSTRAINTS not set", BUILDER, 'names.append("OBEY_PRECISION_CONSTRAINTS")', "pass"),
    Mutant("FP32 islands not constrained", BUILDER,
           'fp32_layers = keep_fp32(trt, network, facts["fp32_nodes"], facts["node_names"])', "fp32_layers = []"),
    Mutant("NATIVE_INSTANCENORM not set", BUILDER, 'return ["NATIVE_INSTANCENORM"]', "return []"),
    Mutant("DLA refused on TensorRT 11.4.1+", BUILDER, "version[0] == 11 and version < DLA_11",
           "version[0] == 11"),
    # -- gates fed what they must refuse (#13 item 9) -----------------------------------------------------
    Mutant("export parity gate forced to pass", "fgvc_edge/export/onnx_export.py", "if not parity.passed:", "if False:"),
    Mutant("parity compares PyTorch with itself", "fgvc_edge/export/onnx_export.py",
           'candidates.append(session.run(["logits"], {"input": x.numpy()})[0])',
           "candidates.append(references[-1].copy())"),
    Mutant("non-zero Q/DQ zero point accepted", "fgvc_edge/precision/int8.py",
           "elif np.any(numpy_helper.to_array(zero_point) != 0):", "elif False:"),
    Mutant("uint8 Q/DQ accepted", "fgvc_edge/precision/int8.py",
           "if zero_point.data_type != onnx.TensorProto.INT8:", "if False:"),
    Mutant("build --target tensorrt takes an ONNX Runtime-form INT8 ONNX", "fgvc_edge/engine/pipeline.py",
           "check_tensorrt_qdq(proto, where=fp32_path)", "pass"),
]


def scratch_copy() -> str:
    folder = tempfile.mkdtemp(prefix="fgvc-mutants-")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("fgvc_edge", "tests"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(folder, name), ignore=ignore)
    for name in ("pyproject.toml", "conftest.py"):
        if os.path.isfile(os.path.join(ROOT, name)):
            shutil.copy(os.path.join(ROOT, name), folder)
    return folder


def pytest(folder: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow"] + TESTS,
        cwd=folder, env=dict(os.environ, PYTHONPATH=folder), capture_output=True, text=True, timeout=900,
    )


def run(mutant: Mutant, folder: str) -> Dict[str, object]:
    path = os.path.join(folder, mutant.path)
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    if source.count(mutant.old) != 1:
        return {"mutant": mutant.name, "result": "stale", "seconds": 0.0, "failed": ""}
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(source.replace(mutant.old, mutant.new))
    began = time.perf_counter()
    try:
        done = pytest(folder)
    finally:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(source)
    failed = [line[len("FAILED "):].split(" - ")[0] for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    return {"mutant": mutant.name, "result": "killed" if done.returncode != 0 else "survived",
            "seconds": round(time.perf_counter() - began, 1), "failed": failed[0] if failed else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only the mutant whose name contains this")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    folder = scratch_copy()
    rows: List[Dict[str, object]] = []
    try:
        baseline = pytest(folder)  # unmutated: every test must pass, or "killed" would mean nothing
        if baseline.returncode != 0:
            print(baseline.stdout[-3000:], file=sys.stderr)
            print("the unmutated copy fails its tests: fix that first", file=sys.stderr)
            return 2
        for mutant in MUTANTS:
            if args.only and args.only not in mutant.name:
                continue
            rows.append(run(mutant, folder))
            print("| {mutant} | {result} | {failed} | {seconds} |".format(**rows[-1]), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
    return 1 if any(row["result"] != "killed" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
