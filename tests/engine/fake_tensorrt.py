"""Stand-in ``tensorrt`` and ``pycuda.driver`` modules for CPU tests of the builder and the runner.

Each stand-in exposes exactly the names the real module of its version has (tests/engine/trt_api/*.json,
recorded from the real compiled modules; 8.5 documented, see trt_api/README.md): touching any other name
raises AttributeError, as the real one would. The subset of behaviour our code uses is simulated: the
"engine" a fake Builder serializes is the parsed ONNX file itself, and a fake execution context runs it
with ONNX Runtime on the bytes that the fake pycuda "device memory" holds — so the runner's data flow
(pinned buffers, addresses, shapes, copies) is checked end to end against OnnxRunner.
"""
import json
import os
import types
from typing import Any, Dict, List, Tuple

import numpy as np

API_DIR = os.path.join(os.path.dirname(__file__), "trt_api")
VERSIONS = ("8.5", "8.6", "10.3", "10.13", "11.4")


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


def make_tensorrt(version: str, memory: Dict[int, np.ndarray]) -> types.ModuleType:
    """A stand-in ``tensorrt`` module of ``version``; ``calls`` on it lists (class.method, args) in order."""
    api = load_api(version)
    calls: List[Tuple[str, Any]] = []
    module = types.ModuleType("tensorrt")
    module.__version__ = api["version"]
    module.calls = calls
    enums = {name: _Enum(name, members) for name, members in api["enums"].items()}

    def cls(api_name: str, base: type) -> type:
        return type(api_name, (base,), {"_allowed": frozenset(api["classes"][api_name]), "_api_name": api_name})

    class Logger(_Restricted):
        def __init__(self, severity: Any = None) -> None:
            self._severity = severity

    class Tensor(_Restricted):
        def __init__(self, name: str, shape: Tuple[int, ...]) -> None:
            object.__setattr__(self, "name", name)
            object.__setattr__(self, "shape", shape)

    class Network(_Restricted):
        def __init__(self, flags: int) -> None:
            self._flags, self._inputs, self._onnx = flags, [], b""

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        def get_input(self, index: int) -> Any:
            return self._inputs[index]

    class Parser(_Restricted):
        def __init__(self, network: Any, logger: Any) -> None:
            self._network = network

        def parse_from_file(self, path: str) -> bool:
            import onnx

            calls.append(("OnnxParser.parse_from_file", os.path.basename(path)))
            proto = onnx.load(path)
            dims = [d.dim_value if d.dim_value > 0 else -1 for d in proto.graph.input[0].type.tensor_type.shape.dim]
            self._network._inputs.append(TensorCls(proto.graph.input[0].name, tuple(dims)))
            with open(path, "rb") as fh:
                self._network._onnx = fh.read()
            return True

        @property
        def num_errors(self) -> int:
            return 0

    class Profile(_Restricted):
        def __init__(self) -> None:
            self._shapes = {}

        def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
            calls.append(("IOptimizationProfile.set_shape", (name, tuple(low), tuple(opt), tuple(high))))
            self._shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class TimingCache(_Restricted):
        def __init__(self, data: bytes) -> None:
            self._data = bytes(data)

        def serialize(self) -> bytes:
            return self._data + b"+timings"

    class Config(_Restricted):
        def __init__(self) -> None:
            self._profiles = []

        def set_flag(self, flag: Any) -> None:
            calls.append(("IBuilderConfig.set_flag", flag.name))

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            calls.append(("IBuilderConfig.set_memory_pool_limit", (pool.name, size)))

        def add_optimization_profile(self, profile: Any) -> int:
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, data: bytes) -> Any:
            calls.append(("IBuilderConfig.create_timing_cache", bytes(data)))
            return TimingCacheCls(data)

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
            calls.append(("IBuilderConfig.set_timing_cache", ignore_mismatch))
            return True

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

        def build_serialized_network(self, network: Any, config: Any) -> bytes:
            calls.append(("Builder.build_serialized_network", None))
            shapes = config._profiles[0]._shapes if config._profiles else {}
            module._profiles[network._onnx] = shapes
            return network._onnx

    class Engine(_Restricted):
        def __init__(self, onnx_bytes: bytes) -> None:
            import onnx
            import onnxruntime as ort

            self._session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            proto = onnx.load_from_string(onnx_bytes)
            self._io = [(i.name, "INPUT", i) for i in proto.graph.input] + [(o.name, "OUTPUT", o) for o in proto.graph.output]
            self._profile = module._profiles.get(onnx_bytes, {})

        @property
        def num_io_tensors(self) -> int:
            return len(self._io)

        def get_tensor_name(self, index: int) -> str:
            return self._io[index][0]

        def get_tensor_mode(self, name: str) -> Any:
            return getattr(enums["TensorIOMode"], dict((n, m) for n, m, _ in self._io)[name])

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            info = dict((n, i) for n, _, i in self._io)[name]
            return tuple(d.dim_value if d.dim_value > 0 else -1 for d in info.type.tensor_type.shape.dim)

        def get_tensor_dtype(self, name: str) -> Any:
            return enums["DataType"].FLOAT

        def get_tensor_profile_shape(self, name: str, profile: int) -> Any:
            return self._profile[name]

        def create_execution_context(self) -> Any:
            return ContextCls(self)

    class Context(_Restricted):
        def __init__(self, engine: Any) -> None:
            self._engine, self._shapes, self._addresses = engine, {}, {}

        def set_input_shape(self, name: str, shape: Any) -> bool:
            calls.append(("IExecutionContext.set_input_shape", tuple(shape)))
            self._shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            if name in self._shapes:
                return self._shapes[name]
            batch = next(iter(self._shapes.values()))[0]
            return (batch,) + self._engine.get_tensor_shape(name)[1:]

        def set_tensor_address(self, name: str, address: int) -> bool:
            self._addresses[name] = int(address)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            calls.append(("IExecutionContext.execute_async_v3", stream_handle))
            (name_in, shape), = self._shapes.items()
            size = int(np.prod(shape))
            x = memory[self._addresses[name_in]].view(np.float32)[:size].reshape(shape)
            outputs = self._engine._session.run(None, {name_in: x})
            for (name, mode, _), value in zip([io for io in self._engine._io if io[1] == "OUTPUT"], outputs):
                flat = value.astype(np.float32).ravel()
                memory[self._addresses[name]].view(np.float32)[: flat.size] = flat
            return True

    class Runtime(_Restricted):
        def __init__(self, logger: Any) -> None:
            self._logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> Any:
            return EngineCls(bytes(data))

    TensorCls, NetworkCls = cls("ITensor", Tensor), cls("INetworkDefinition", Network)
    ProfileCls, TimingCacheCls = cls("IOptimizationProfile", Profile), cls("ITimingCache", TimingCache)
    ConfigCls, EngineCls, ContextCls = cls("IBuilderConfig", Config), cls("ICudaEngine", Engine), cls("IExecutionContext", Context)
    LoggerCls = cls("Logger", Logger)
    for severity in ("WARNING", "ERROR", "INFO", "VERBOSE", "INTERNAL_ERROR"):
        setattr(LoggerCls, severity, severity)

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        calls.append(("init_libnvinfer_plugins", namespace))
        return True

    def nptype(dtype: Any) -> type:
        return {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32}[dtype.name]

    provided = dict(
        enums, Logger=LoggerCls, Builder=cls("Builder", Builder), OnnxParser=cls("OnnxParser", Parser),
        Runtime=cls("Runtime", Runtime), init_libnvinfer_plugins=init_libnvinfer_plugins, nptype=nptype,
    )
    for name, value in provided.items():
        if name in api["module"]:
            setattr(module, name, value)
    module._profiles = {}
    return module


def make_pycuda(memory: Dict[int, np.ndarray], gpu: Tuple[str, Tuple[int, int]] = ("Orin", (8, 7))) -> types.ModuleType:
    """A stand-in ``pycuda.driver``: device memory is numpy byte arrays in ``memory``, keyed by address."""
    driver = types.ModuleType("pycuda.driver")
    driver.events = []

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
            memory[self.address] = np.zeros(nbytes, dtype=np.uint8)

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            memory.pop(self.address, None)

    class Stream:
        handle = 1234

        def synchronize(self) -> None:
            pass

    class Event:
        def record(self, stream: Any) -> None:
            pass

        def time_since(self, other: Any) -> float:
            return 0.25

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Any) -> None:
        raw = np.ascontiguousarray(src).view(np.uint8).ravel()
        memory[int(dest)][: raw.size] = raw

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Any) -> None:
        flat = dest.view(np.uint8).reshape(-1)
        flat[...] = memory[int(src)][: flat.size]

    driver.init = lambda: None
    driver.Device, driver.Stream, driver.Event = Device, Stream, Event
    driver.mem_alloc = Allocation
    driver.pagelocked_empty = lambda shape, dtype: np.empty(shape, dtype)
    driver.memcpy_htod_async, driver.memcpy_dtoh_async = memcpy_htod_async, memcpy_dtoh_async
    return driver
