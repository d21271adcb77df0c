"""Stand-in ``tensorrt`` and ``pycuda.driver`` modules for CPU tests of the builder and the runner.

Each stand-in exposes exactly the names the real module of its version has (tests/engine/trt_api/*.json,
recorded from the real compiled modules, and for 8.5 from its binding sources; see trt_api/README.md):
touching any other name raises AttributeError, as the real one would. The subset of behaviour our code uses
is simulated:

- the parser makes one layer per ONNX node, named as onnx-tensorrt names them (the node's name, ``_<n>``
  added for a second layer of the same node, which ops in ``TWO_LAYER_OPS`` get), with the ONNX types;
- the "engine" a Builder serializes is a JSON header (TensorRT version, version-compatible, profile) and
  the ONNX file; a Runtime refuses it (None) when built by another version unless it is version-compatible
  and ``engine_host_code_allowed`` is set, as TensorRT does;
- an execution context runs the ONNX with ONNX Runtime on the bytes the fake pycuda "device memory"
  holds, and copies, execution and events are queued on their stream until ``synchronize`` — so a missing
  synchronize leaves stale outputs, as on a GPU.

``trt.fail`` is a set of switches that make the matching call fail the way TensorRT reports it: "parse"
(False, with parser errors), "build" and "deserialize" (None), "execute", "set_input_shape" and
"set_tensor_address" (False), "add_optimization_profile" (−1), "set_timing_cache" (False for a non-empty
cache: one made by another GPU). ``trt.calls`` lists (call, args) in order; ``driver.events`` lists the
context pushes/pops and every free, in order.
"""
import hashlib
import itertools
import json
import os
import types
import weakref
from typing import Any, Dict, List, Tuple

import numpy as np

API_DIR = os.path.join(os.path.dirname(__file__), "trt_api")
VERSIONS = ("8.5", "8.6", "10.3", "10.13", "11.4")
FAILURE_SWITCHES = ("parse", "build", "deserialize", "execute", "set_input_shape", "set_tensor_address",
                    "add_optimization_profile", "set_timing_cache")
# ONNX ops for which the fake parser registers a second layer (as onnx-tensorrt does for some importers).
TWO_LAYER_OPS = ("ReduceMean", "Softmax")
_ENGINE_MAGIC = b"FAKE-TRT-PLAN\n"
# ONNX element type → TensorRT DataType member (INT64 → INT32 where the version has no INT64).
_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 6: "INT32", 7: "INT64", 9: "BOOL", 3: "INT8", 2: "UINT8", 16: "BF16"}
_ORT_TO_TRT = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(int32)": "INT32",
               "tensor(int64)": "INT64", "tensor(bool)": "BOOL", "tensor(int8)": "INT8", "tensor(uint8)": "UINT8"}
# Fake streams by handle, shared by the tensorrt and pycuda stand-ins of a process.
_STREAMS: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()


def load_api(version: str) -> Dict[str, Any]:
    with open(os.path.join(API_DIR, "trt-{}.json".format(version))) as fh:
        return json.load(fh)


class _Restricted:
    """Attribute access limited to the real class's public names (set per version as ``_allowed``)."""

    _allowed: frozenset = frozenset()
    _api_name = ""

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") and name not in type(self)._allowed:
            raise AttributeError("tensorrt stand-in: {} has no attribute {!r}".format(type(self)._api_name, name))
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in type(self)._allowed:
            raise AttributeError("tensorrt stand-in: {} has no attribute {!r}".format(type(self)._api_name, name))
        object.__setattr__(self, name, value)


class _EnumMember:
    def __init__(self, enum: str, name: str, value: int) -> None:
        self.enum, self.name, self.value = enum, name, value

    def __int__(self) -> int:
        return self.value

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _EnumMember) and (self.enum, self.value) == (other.enum, other.value)

    def __hash__(self) -> int:
        return hash((self.enum, self.value))

    def __repr__(self) -> str:
        return "{}.{}".format(self.enum, self.name)


class _Enum:
    def __init__(self, name: str, members: Dict[str, int]) -> None:
        self._name = name
        for member, value in members.items():
            setattr(self, member, _EnumMember(name, member, value))

    def __getattr__(self, name: str) -> Any:
        raise AttributeError("tensorrt stand-in: {} has no member {!r}".format(self._name, name))


def _unique_names() -> Any:
    """onnx-tensorrt's generateUniqueName: the base name, or base + "_<counter>" once it is taken."""
    taken, counter = set(), itertools.count()

    def name(base: str) -> str:
        candidate = base
        while candidate in taken:
            candidate = "{}_{}".format(base, next(counter))
        taken.add(candidate)
        return candidate

    return name


def make_tensorrt(version: str, memory: Dict[int, np.ndarray]) -> types.ModuleType:
    """A stand-in ``tensorrt`` module of ``version``; see the module docstring for ``calls`` and ``fail``."""
    api = load_api(version)
    calls: List[Tuple[str, Any]] = []
    module = types.ModuleType("tensorrt")
    module.__version__ = api["version"]
    module.calls = calls
    module.fail = set()
    enums = {name: _Enum(name, members) for name, members in api["enums"].items()}

    def cls(api_name: str, base: type) -> type:
        return type(api_name, (base,), {"_allowed": frozenset(api["classes"][api_name]), "_api_name": api_name})

    def data_type(name: str) -> Any:
        members = api["enums"]["DataType"]
        return getattr(enums["DataType"], name if name in members else "INT32")

    class Logger(_Restricted):
        def __init__(self, severity: Any = None) -> None:
            self._severity = severity

    class Tensor(_Restricted):
        def __init__(self, name: str, shape: Tuple[int, ...], dtype: Any) -> None:
            object.__setattr__(self, "name", name)
            object.__setattr__(self, "shape", shape)
            object.__setattr__(self, "dtype", dtype)

    class Layer(_Restricted):
        def __init__(self, name: str, outputs: List[Any]) -> None:
            object.__setattr__(self, "name", name)
            self._outputs, self._precision = outputs, None

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        def get_output(self, index: int) -> Any:
            return self._outputs[index]

        def _get_precision(self) -> Any:
            return self._precision

        def _set_precision(self, dtype: Any) -> None:
            calls.append(("ILayer.precision", (self.name, dtype.name)))
            self._precision = dtype

        precision = property(_get_precision, _set_precision)

        def set_output_type(self, index: int, dtype: Any) -> None:
            calls.append(("ILayer.set_output_type", (self.name, index, dtype.name)))

    class Network(_Restricted):
        def __init__(self, flags: int) -> None:
            self._flags, self._inputs, self._layers, self._onnx = flags, [], [], b""

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        def get_input(self, index: int) -> Any:
            return self._inputs[index]

        @property
        def num_layers(self) -> int:
            return len(self._layers)

        def get_layer(self, index: int) -> Any:
            return self._layers[index]

    class ParserError:
        def __init__(self, text: str) -> None:
            self._text = text

        def __str__(self) -> str:
            return self._text

    class Parser(_Restricted):
        def __init__(self, network: Any, logger: Any) -> None:
            self._network, self._errors = network, []

        def set_flag(self, flag: Any) -> None:
            calls.append(("OnnxParser.set_flag", flag.name))

        def parse_from_file(self, path: str) -> bool:
            import onnx

            calls.append(("OnnxParser.parse_from_file", os.path.basename(path)))
            if "parse" in module.fail:
                self._errors = [ParserError("In node 3 with name: /conv1/Conv and operator: Conv (importConv): "
                                            "UNSUPPORTED_NODE: Assertion failed: stand-in parse failure\nsecond line"),
                                ParserError("In node 4: UNSUPPORTED_NODE")]
                return False
            proto = onnx.load(path)
            light = onnx.ModelProto()
            light.CopyFrom(proto)
            for init in light.graph.initializer:  # weights are not needed for types: inference runs 10x faster
                if len(init.raw_data) > 1024:
                    init.ClearField("raw_data")
            types_ = onnx.shape_inference.infer_shapes(light).graph
            elem = {i.name: i.type.tensor_type.elem_type for i in list(types_.input) + list(types_.output) + list(types_.value_info)}
            graph_input = proto.graph.input[0]
            dims = [d.dim_value if d.dim_value > 0 else -1 for d in graph_input.type.tensor_type.shape.dim]
            self._network._inputs.append(TensorCls(graph_input.name, tuple(dims), data_type("FLOAT")))
            unique = _unique_names()
            for index, node in enumerate(n for n in proto.graph.node if n.op_type != "Constant"):
                outputs = [TensorCls(o, (), data_type(_ONNX_TO_TRT.get(elem.get(o, 1), "FLOAT"))) for o in node.output]
                base = node.name or "(Unnamed Layer* {}) [{}]".format(index, node.op_type)
                for _ in range(2 if node.op_type in TWO_LAYER_OPS else 1):
                    self._network._layers.append(LayerCls(unique(base), outputs))
            with open(path, "rb") as fh:
                self._network._onnx = fh.read()
            return True

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> Any:
            return self._errors[index]

    class Profile(_Restricted):
        def __init__(self) -> None:
            self._shapes = {}

        def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
            calls.append(("IOptimizationProfile.set_shape", (name, tuple(low), tuple(opt), tuple(high))))
            self._shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class TimingCache(_Restricted):
        """Entries separated by ';' (the real format is opaque; this one shows merges)."""

        def __init__(self, data: bytes) -> None:
            self._entries = {e for e in bytes(data).split(b";") if e}

        def serialize(self) -> bytes:
            return b";".join(sorted(self._entries))

        def combine(self, other: Any, ignore_mismatch: bool) -> bool:
            calls.append(("ITimingCache.combine", ignore_mismatch))
            self._entries |= other._entries
            return True

    class Config(_Restricted):
        def __init__(self) -> None:
            self._profiles, self._cache, self._flags = [], None, []

        def __setattr__(self, name: str, value: Any) -> None:
            super().__setattr__(name, value)
            if not name.startswith("_"):
                calls.append(("IBuilderConfig." + name, getattr(value, "name", value)))

        def set_flag(self, flag: Any) -> None:
            calls.append(("IBuilderConfig.set_flag", flag.name))
            self._flags.append(flag.name)

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            calls.append(("IBuilderConfig.set_memory_pool_limit", (pool.name, size)))

        def add_optimization_profile(self, profile: Any) -> int:
            if "add_optimization_profile" in module.fail:
                return -1
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, data: bytes) -> Any:
            calls.append(("IBuilderConfig.create_timing_cache", bytes(data)))
            return TimingCacheCls(data)

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
            calls.append(("IBuilderConfig.set_timing_cache", ignore_mismatch))
            if "set_timing_cache" in module.fail and cache._entries:
                return False
            self._cache = cache
            return True

        def get_timing_cache(self) -> Any:
            return self._cache

    class Builder(_Restricted):
        def __init__(self, logger: Any) -> None:
            self._logger = logger

        def create_network(self, flags: int = 0) -> Any:
            calls.append(("Builder.create_network", flags))
            return NetworkCls(flags)

        def create_builder_config(self) -> Any:
            return ConfigCls()

        def create_optimization_profile(self) -> Any:
            return ProfileCls()

        def build_serialized_network(self, network: Any, config: Any) -> Any:
            calls.append(("Builder.build_serialized_network", None))
            if "build" in module.fail:
                return None
            if config._cache is not None:
                config._cache._entries.add(b"tactics-" + hashlib.sha256(network._onnx).hexdigest()[:8].encode())
            header = {"tensorrt": module.__version__, "version_compatible": "VERSION_COMPATIBLE" in config._flags,
                      "profile": config._profiles[0]._shapes if config._profiles else {}}
            plan = _ENGINE_MAGIC + json.dumps(header).encode() + b"\n" + network._onnx
            calls.append(("serialized", plan))
            return plan

    class Engine(_Restricted):
        def __init__(self, onnx_bytes: bytes, header: Dict[str, Any]) -> None:
            import onnxruntime as ort

            self._session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            self._io = [(i.name, "INPUT", i) for i in self._session.get_inputs()]
            self._io += [(o.name, "OUTPUT", o) for o in self._session.get_outputs()]
            self._profile = {name: tuple(map(tuple, shapes)) for name, shapes in header["profile"].items()}

        @property
        def num_io_tensors(self) -> int:
            return len(self._io)

        def get_tensor_name(self, index: int) -> str:
            return self._io[index][0]

        def get_tensor_mode(self, name: str) -> Any:
            return getattr(enums["TensorIOMode"], dict((n, m) for n, m, _ in self._io)[name])

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            info = dict((n, i) for n, _, i in self._io)[name]
            return tuple(d if isinstance(d, int) and d > 0 else -1 for d in info.shape)

        def get_tensor_dtype(self, name: str) -> Any:
            return data_type(_ORT_TO_TRT[dict((n, i) for n, _, i in self._io)[name].type])

        def get_tensor_profile_shape(self, name: str, profile: int) -> Any:
            return self._profile[name]

        def create_execution_context(self) -> Any:
            return ContextCls(self)

    class Context(_Restricted):
        def __init__(self, engine: Any) -> None:
            self._engine, self._shapes, self._addresses = engine, {}, {}

        def set_input_shape(self, name: str, shape: Any) -> bool:
            calls.append(("IExecutionContext.set_input_shape", tuple(shape)))
            profile = self._engine._profile.get(name)
            outside = profile is not None and not profile[0][0] <= shape[0] <= profile[2][0]
            if "set_input_shape" in module.fail or outside:
                return False
            self._shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            if name in self._shapes:
                return self._shapes[name]
            batch = next(iter(self._shapes.values()))[0]
            return (batch,) + self._engine.get_tensor_shape(name)[1:]

        def set_tensor_address(self, name: str, address: int) -> bool:
            if "set_tensor_address" in module.fail:
                return False
            self._addresses[name] = int(address)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            calls.append(("IExecutionContext.execute_async_v3", stream_handle))
            if "execute" in module.fail:
                return False
            (name_in, shape), = self._shapes.items()
            addresses = dict(self._addresses)
            outputs = [io for io in self._engine._io if io[1] == "OUTPUT"]

            def run() -> None:
                size = int(np.prod(shape))
                x = memory[addresses[name_in]].view(np.float32)[:size].reshape(shape)
                for (name, _, _), value in zip(outputs, self._engine._session.run(None, {name_in: x})):
                    flat = value.astype(np.float32).ravel()
                    memory[addresses[name]].view(np.float32)[: flat.size] = flat

            _STREAMS[stream_handle].enqueue(run)
            return True

    class Runtime(_Restricted):
        def __init__(self, logger: Any) -> None:
            self._logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> Any:
            calls.append(("Runtime.deserialize_cuda_engine", None))
            data = bytes(data)
            if "deserialize" in module.fail or not data.startswith(_ENGINE_MAGIC):
                return None
            header_line, onnx_bytes = data[len(_ENGINE_MAGIC):].split(b"\n", 1)
            header = json.loads(header_line)
            host_code = getattr(self, "_host_code", False)
            if header["version_compatible"] and not host_code:
                return None  # a version-compatible plan embeds host code: refused unless allowed
            if header["tensorrt"] != module.__version__ and not header["version_compatible"]:
                return None
            return EngineCls(onnx_bytes, header)

        def _set_host_code(self, allowed: bool) -> None:
            calls.append(("Runtime.engine_host_code_allowed", allowed))
            object.__setattr__(self, "_host_code", bool(allowed))

        engine_host_code_allowed = property(lambda self: getattr(self, "_host_code", False), _set_host_code)

    TensorCls, NetworkCls, LayerCls = cls("ITensor", Tensor), cls("INetworkDefinition", Network), cls("ILayer", Layer)
    ProfileCls, TimingCacheCls = cls("IOptimizationProfile", Profile), cls("ITimingCache", TimingCache)
    ConfigCls, EngineCls, ContextCls = cls("IBuilderConfig", Config), cls("ICudaEngine", Engine), cls("IExecutionContext", Context)
    LoggerCls = cls("Logger", Logger)
    for severity in ("WARNING", "ERROR", "INFO", "VERBOSE", "INTERNAL_ERROR"):
        setattr(LoggerCls, severity, severity)

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        calls.append(("init_libnvinfer_plugins", namespace))
        return True

    def nptype(dtype: Any) -> type:
        if version == "8.5":  # the real 8.5.2 maps BOOL to np.bool, which NumPy >= 1.24 no longer has
            raise AttributeError("module 'numpy' has no attribute 'bool'")
        return {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32}[dtype.name]

    provided = dict(
        enums, Logger=LoggerCls, Builder=cls("Builder", Builder), OnnxParser=cls("OnnxParser", Parser),
        Runtime=cls("Runtime", Runtime), init_libnvinfer_plugins=init_libnvinfer_plugins, nptype=nptype,
    )
    for name, value in provided.items():
        if name in api["module"]:
            setattr(module, name, value)
    return module


def make_pycuda(memory: Dict[int, np.ndarray], gpu: Tuple[str, Tuple[int, int]] = ("Orin", (8, 7))) -> types.ModuleType:
    """A stand-in ``pycuda.driver``: device memory is numpy byte arrays in ``memory``, keyed by address."""
    driver = types.ModuleType("pycuda.driver")
    driver.events = []
    handles = itertools.count(1234)

    class Context:
        def push(self) -> None:
            driver.events.append("push")

        def pop(self) -> None:
            driver.events.append("pop")

        def detach(self) -> None:
            driver.events.append("detach")

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return gpu[0]

        def compute_capability(self) -> Tuple[int, int]:
            return gpu[1]

        def retain_primary_context(self) -> Context:
            return Context()

    class Allocation:
        def __init__(self, nbytes: int) -> None:
            self.address = 4096 * (len(memory) + 1)
            while self.address in memory:
                self.address += 4096
            memory[self.address] = np.zeros(nbytes, dtype=np.uint8)

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            driver.events.append("free device")
            memory.pop(self.address, None)

    class HostAllocation:
        """The pinned allocation behind a ``pagelocked_empty`` array (its ``.base``), as in pycuda."""

        def __init__(self, shape: Any, dtype: Any) -> None:
            self._array = np.zeros(shape, dtype)
            self.__array_interface__ = self._array.__array_interface__

        def free(self) -> None:
            driver.events.append("free host")

    class Stream:
        def __init__(self) -> None:
            self.handle = next(handles)
            self._queue: List[Any] = []
            _STREAMS[self.handle] = self

        def enqueue(self, work: Any) -> None:
            self._queue.append(work)

        def synchronize(self) -> None:
            while self._queue:
                self._queue.pop(0)()

        def __del__(self) -> None:
            driver.events.append("free stream")

    class Event:
        def record(self, stream: Any) -> None:
            stream.enqueue(lambda: None)

        def time_since(self, other: Any) -> float:
            return 0.25

        def __del__(self) -> None:
            driver.events.append("free event")

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Any) -> None:
        def copy() -> None:
            raw = np.ascontiguousarray(src).view(np.uint8).ravel()
            memory[int(dest)][: raw.size] = raw

        stream.enqueue(copy)

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Any) -> None:
        def copy() -> None:
            flat = dest.view(np.uint8).reshape(-1)
            flat[...] = memory[int(src)][: flat.size]

        stream.enqueue(copy)

    driver.init = lambda: None
    driver.Device, driver.Stream, driver.Event = Device, Stream, Event
    driver.mem_alloc = Allocation
    driver.pagelocked_empty = lambda shape, dtype: np.asarray(HostAllocation(shape, dtype))
    driver.memcpy_htod_async, driver.memcpy_dtoh_async = memcpy_htod_async, memcpy_dtoh_async
    return driver
