"""Record the Python API of a real TensorRT bindings wheel as data for the stand-in ``tensorrt`` modules.

The compiled module cannot load without NVIDIA's libraries, which our machines cannot install; but it only
needs ten C entry points from them to *import* (they are called when a Builder/Runtime is created, never at
import time). So this script compiles empty shared libraries exporting those names, imports the real module
against them and lists what it defines. Nothing is executed but the module's own class registration.

    pip download --no-deps -d /tmp/w tensorrt-cu12-bindings==10.3.0      # or tensorrt-bindings==8.6.1
    python tests/engine/trt_api/dump_trt_api.py /tmp/w/*.whl tests/engine/trt_api/trt-10.3.json

TensorRT 8.5.2 has no wheel: trt_api_from_source.py reads its open-source binding sources instead.

Needs gcc. Run it by hand; the tests only read the JSON it writes.
"""
import json
import os
import subprocess
import sys
import tempfile
import zipfile

# The classes our builder and runner touch (and their enums); members are recorded in full.
CLASSES = (
    "Builder", "IBuilderConfig", "INetworkDefinition", "ITensor", "OnnxParser", "IOptimizationProfile",
    "ITimingCache", "IHostMemory", "Runtime", "ICudaEngine", "IExecutionContext", "Logger", "ILogger",
    "IPluginRegistry", "Dims", "ILayer",
)
ENUMS = (
    "BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType", "DeviceType", "TensorIOMode", "DataType",
    "ProfilingVerbosity", "EngineCapability", "HardwareCompatibilityLevel", "OnnxParserFlag", "PreviewFeature",
)
# Signatures (first docstring line, pybind11's) of what fgvc_edge calls, to check our call arities.
USED = {
    "Builder": ["__init__", "create_network", "create_builder_config", "create_optimization_profile",
                "build_serialized_network"],
    "IBuilderConfig": ["set_flag", "set_memory_pool_limit", "add_optimization_profile", "create_timing_cache",
                       "set_timing_cache", "get_timing_cache"],
    "INetworkDefinition": ["get_input", "get_layer"],
    "ILayer": ["get_output", "set_output_type"],
    "OnnxParser": ["__init__", "parse_from_file", "get_error", "set_flag"],
    "IOptimizationProfile": ["set_shape"],
    "ITimingCache": ["serialize", "combine"],
    "Runtime": ["__init__", "deserialize_cuda_engine"],
    "ICudaEngine": ["get_tensor_name", "get_tensor_mode", "get_tensor_shape", "get_tensor_dtype",
                    "get_tensor_profile_shape", "create_execution_context"],
    "IExecutionContext": ["set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3"],
    "Logger": ["__init__"],
}
MODULE_FUNCTIONS = ["init_libnvinfer_plugins"]
ENTRY_POINTS = {
    "nvinfer": (
        "createInferBuilder_INTERNAL", "createInferRefitter_INTERNAL", "createInferRuntime_INTERNAL",
        "getBuilderPluginRegistry", "getPluginRegistry",
    ),
    "nvinfer_plugin": ("initLibNvInferPlugins",),
    "nvonnxparser": ("createNvOnnxParser_INTERNAL", "createNvOnnxParserRefitter_INTERNAL", "getNvOnnxParserVersion"),
    # TensorRT 8.x also links the (since removed) UFF and Caffe parsers.
    "nvparsers": (
        "_ZN11nvuffparser15createUffParserEv", "_ZN11nvuffparser8FieldMapC1EPKcPKvNS_9FieldTypeEi",
        "_ZN14nvcaffeparser117createCaffeParserEv", "_ZN14nvcaffeparser123shutdownProtobufLibraryEv",
    ),
}


def _empty_libraries(folder: str, major: str) -> None:
    for lib, names in ENTRY_POINTS.items():
        source = os.path.join(folder, lib + ".c")
        with open(source, "w") as fh:
            fh.writelines("void *{}(void) {{ return 0; }}\n".format(name) for name in names)
        target = os.path.join(folder, "lib{}.so.{}".format(lib, major))
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", target, source], check=True)


_PROBE = r"""
import importlib, json, sys
trt = importlib.import_module("tensorrt_bindings")
classes, enums, used = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
public = lambda obj: sorted(n for n in dir(obj) if not n.startswith("_"))
out = {"version": trt.__version__, "module": public(trt), "classes": {}, "enums": {}}
for name in classes:
    if hasattr(trt, name):
        out["classes"][name] = public(getattr(trt, name))
for name in enums:
    if hasattr(trt, name):
        enum = getattr(trt, name)
        out["enums"][name] = {k: int(v) for k, v in enum.__members__.items()}
import re
def signature(obj, name):
    # pybind11 docstrings start with the signature; overloaded functions list "N. name(...)" lines.
    lines = (getattr(obj, "__doc__", None) or "").splitlines()
    pattern = re.compile(r"^(\d+\. )?" + re.escape(name) + r"\(")
    return [re.sub(r"^\d+\. ", "", l.strip()) for l in lines if pattern.match(l.strip()) and "*args" not in l]
out["signatures"] = {}
for cls_name, methods in used["classes"].items():
    for method in methods:
        owner = getattr(trt, cls_name, None)
        if owner is not None and hasattr(owner, method):
            out["signatures"][cls_name + "." + method] = signature(getattr(owner, method), method)
for name in used["functions"]:
    if hasattr(trt, name):
        out["signatures"][name] = signature(getattr(trt, name), name)
print(json.dumps(out))
"""


def dump(wheel: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        major = os.path.basename(wheel).split("-")[1].split(".")[0]
        libs = os.path.join(tmp, "_libs")
        os.makedirs(libs)
        _empty_libraries(libs, major)
        env = dict(os.environ, LD_LIBRARY_PATH=libs)
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, json.dumps(CLASSES), json.dumps(ENUMS),
             json.dumps({"classes": USED, "functions": MODULE_FUNCTIONS})],
            cwd=tmp, env=env, check=True, capture_output=True, text=True,
        )
    record = json.loads(result.stdout)
    record["source"] = "introspected from {} (real compiled module, imported against empty libraries)".format(
        os.path.basename(wheel)
    )
    return record


def _write(record: dict, output: str) -> None:
    with open(output, "w") as fh:
        json.dump(record, fh, indent=1, sort_keys=True)
        fh.write("\n")


if __name__ == "__main__":
    _write(dump(sys.argv[1]), sys.argv[2])
