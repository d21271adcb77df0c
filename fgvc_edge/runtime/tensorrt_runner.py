"""TensorRT runner: a raw ``.engine`` + its sidecar, run with pycuda on one CUDA stream.

Pinned host buffers and device buffers are allocated once for the largest batch of the engine's profile;
their addresses are bound with ``set_tensor_address`` and each call is ``set_input_shape`` → async copy in →
``execute_async_v3`` → async copy out → one synchronize — the API present from TensorRT 8.5 to 11.x
(``execute_async_v2`` and bindings are gone in 10). A dynamic-batch engine takes any batch within its
profile; larger batches are split, smaller ones padded (never for batch-dependent models).

Engines are tied to the TensorRT version and GPU architecture they were built with: the sidecar records
both and the runner refuses a mismatch with a one-line "rebuild" message, instead of TensorRT's
deserialization error. No torch; valid on Python 3.8 (JetPack 5).

As Polygraphy's backend/trt does: the plugin library is registered before every deserialization; every
call that reports failure by its return value is checked (deserialize → None; ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3`` → False); TensorRT data types map to NumPy through our own
table, not ``trt.nptype`` (8.5's uses ``np.bool``, gone in NumPy 1.24 — NVIDIA/TensorRT#2557). Teardown
frees the execution objects, device and pinned host buffers, events and stream while the CUDA context is
still current, and only then pops and detaches it (pycuda skips frees in a dead context silently).

A Jetson camera loop (OpenCV built with GStreamer, as JetPack ships it)::

    import cv2
    from fgvc_edge.runtime import load

    camera = cv2.VideoCapture(
        "nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720 ! nvvidconv ! "
        "video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1", cv2.CAP_GSTREAMER)
    with load("engines/cmal_resnet50-raw-air_best-fp16-b1.engine") as runner:
        while True:
            ok, frame = camera.read()
            if not ok:
                break
            best = runner.predict([frame[:, :, ::-1]], topk=1)[0][0]   # BGR → RGB
            print(best.label, round(best.prob, 3), runner.last_gpu_ms)
"""
import hashlib
import logging
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from fgvc_edge.errors import FgvcError, UserInputError
from fgvc_edge.runtime.base import Runner
from fgvc_edge.contract.sidecar import check_digest, check_graph, read_sidecar

log = logging.getLogger(__name__)


def import_tensorrt(hint: str) -> Tuple[Any, Any]:
    """``(tensorrt, pycuda.driver)`` with a CUDA device present, or a one-line UserInputError ending in ``hint``."""
    try:
        import tensorrt as trt

        trt.Builder  # a stub-only 'tensorrt' (tensorrt-stubs) imports as an empty namespace package
    except (ImportError, AttributeError) as exc:
        raise UserInputError("TensorRT is not usable here ({}); {}".format(_first_line(exc), hint)) from None
    try:
        import pycuda.driver as cuda

        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # ImportError, pycuda's LogicError/RuntimeError without a driver
        raise UserInputError("no CUDA GPU here ({}); {}".format(_first_line(exc), hint)) from None
    if count < 1:
        raise UserInputError("no CUDA GPU here (0 devices); {}".format(hint))
    return trt, cuda


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def gpu_info(cuda: Any, device: int = 0) -> Dict[str, str]:
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return {"name": str(dev.name()), "compute_capability": "{}.{}".format(major, minor)}


# TensorRT DataType member → NumPy type (Polygraphy's datatype/tensorrt.py habit). BF16, FP8, INT4, FP4
# and E8M0 have no NumPy type: an engine with such an I/O tensor is refused.
NUMPY_TYPES = (("FLOAT", "float32"), ("HALF", "float16"), ("INT8", "int8"), ("INT32", "int32"),
               ("INT64", "int64"), ("UINT8", "uint8"), ("BOOL", "bool"))


def numpy_dtype(trt: Any, dtype: Any, where: str) -> np.dtype:
    """The NumPy dtype of a TensorRT ``DataType`` (members missing in this version are skipped)."""
    for name, numpy_name in NUMPY_TYPES:
        if dtype == getattr(trt.DataType, name, None):
            return np.dtype(numpy_name)
    raise UserInputError("{} has a {} input/output, which NumPy has no type for; rebuild it with FP32 "
                         "inputs and outputs (fgvc-edge build keeps them FP32)".format(where, _dtype_name(dtype)))


def _dtype_name(dtype: Any) -> str:
    return str(getattr(dtype, "name", dtype)).split(".")[-1]


def _version_tuple(version: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in str(version).split(".") if p.isdigit())


def check_engine_compatible(record: Dict[str, Any], path: str, installed: str, gpu: Dict[str, str]) -> None:
    """Refuse an engine built with another TensorRT (unless version-compatible and older) or GPU architecture."""
    built = str(record.get("tensorrt_version", ""))
    built_gpu = record.get("gpu") or {}
    same_version = built == str(installed)
    if record.get("version_compatible"):
        same_version = _version_tuple(installed) >= _version_tuple(built)
    same_arch = built_gpu.get("compute_capability") == gpu["compute_capability"]
    if not (same_version and same_arch):
        raise UserInputError(
            "{} was built with TensorRT {} for {} (compute {}); this machine has TensorRT {} and {} (compute {}): "
            "rebuild it here with `fgvc-edge build`".format(
                path, built or "?", built_gpu.get("name", "?"), built_gpu.get("compute_capability", "?"),
                installed, gpu["name"], gpu["compute_capability"],
            )
        )
    if built_gpu.get("name") != gpu["name"]:
        log.warning("%s was built on %s, running on %s (same architecture)", path, built_gpu.get("name"), gpu["name"])


class TensorRTRunner(Runner):
    """Run a TensorRT engine; same ``infer``/``predict`` as OnnxRunner, and a context manager."""

    def __init__(self, path: str, device: int = 0) -> None:
        path = str(path)
        if not os.path.isfile(path):
            raise UserInputError("no such engine file: {}".format(path))
        trt, cuda = import_tensorrt("run the .onnx deployable with ONNX Runtime instead")
        record = read_sidecar(path)
        self.gpu = gpu_info(cuda, device)
        if record is None:
            log.warning("%s has no sidecar: its TensorRT version and GPU cannot be checked", path)
        else:
            check_engine_compatible(record, path, trt.__version__, self.gpu)
        super().__init__(path, record)
        self.tensorrt_version = str(trt.__version__)
        self.last_gpu_ms: Optional[float] = None
        self._cuda = cuda
        self._host: Dict[str, np.ndarray] = {}
        self._device: Dict[str, Any] = {}
        self._stream: Any = None
        self._events: Tuple[Any, ...] = ()
        self._cuda_context = cuda.Device(device).retain_primary_context()
        self._cuda_context.push()
        try:
            self._open(trt, path)
        except BaseException:
            self._teardown()
            raise
        self._cuda_context.pop()

    # -- setup ----------------------------------------------------------------------------------------
    def _open(self, trt: Any, path: str) -> None:
        logger = trt.Logger(trt.Logger.WARNING)
        if not trt.init_libnvinfer_plugins(logger, ""):
            log.warning("TensorRT could not register its plugin library; engines that use plugins will not load")
        self._runtime = trt.Runtime(logger)
        if self.record.get("version_compatible"):
            # Version-compatible plans embed the lean runtime (host code); only our own sidecar'd builds get here.
            self._runtime.engine_host_code_allowed = True
        with open(path, "rb") as fh:
            plan = fh.read()
        check_digest(path, self.record, hashlib.sha256(plan).hexdigest())  # hashed once, the bytes loaded
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise UserInputError("TensorRT {} cannot load {}: rebuild it here with `fgvc-edge build`".format(
                trt.__version__, path))
        self._bind(trt, path)

    def _bind(self, trt: Any, path: str) -> None:
        """Find the I/O tensors, allocate buffers for the largest batch and bind their addresses."""
        cuda, engine = self._cuda, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise UserInputError("{} has {} inputs and {} outputs; expected one image input".format(
                path, len(inputs), len(outputs)))
        self.input_name, self.output_name = inputs[0], outputs[0]
        shape = tuple(engine.get_tensor_shape(self.input_name))
        self._image_shape = shape[1:]
        if shape[0] == -1:
            low, _, high = engine.get_tensor_profile_shape(self.input_name, 0)
            self._min_batch, self._max_batch = int(low[0]), int(high[0])
            self._fixed: Optional[int] = None
        else:
            self._min_batch = self._max_batch = self._fixed = int(shape[0])
        classes = tuple(engine.get_tensor_shape(self.output_name))[-1]
        check_graph(path, self.record, image_size=int(shape[-1]) if shape[-1] > 0 else None,
                    outputs=int(classes) if classes > 0 else None, batch=self._fixed)
        self._exec = engine.create_execution_context()
        self._set_input_shape(self._max_batch)
        for name in [self.input_name] + outputs:
            full = tuple(self._exec.get_tensor_shape(name))
            host = cuda.pagelocked_empty(full, numpy_dtype(trt, engine.get_tensor_dtype(name), path))
            self._host[name] = host
            device_buffer = cuda.mem_alloc(max(host.nbytes, 1))
            self._device[name] = device_buffer
            if not self._exec.set_tensor_address(name, int(device_buffer)):
                raise FgvcError("TensorRT refused the address of {}'s tensor {}".format(path, name))
        self._stream = cuda.Stream()
        self._events = (cuda.Event(), cuda.Event())

    def _set_input_shape(self, batch: int) -> None:
        shape = (batch,) + tuple(self._image_shape)
        if not self._exec.set_input_shape(self.input_name, shape):
            raise FgvcError("TensorRT refused input shape {} for {} (profile: batch {}..{})".format(
                shape, self.path, self._min_batch, self._max_batch))

    # -- Runner hooks --------------------------------------------------------------------------------
    @property
    def fixed_batch(self) -> Optional[int]:
        return self._fixed

    @property
    def batch_range(self) -> Tuple[int, int]:
        return self._min_batch, self._max_batch

    def _run(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if self._min_batch <= n <= self._max_batch:
            return self._execute(batch)
        if self.batch_dependent:
            raise UserInputError("{} takes batches of {}..{} and its output depends on the batch; got {}".format(
                self.path, self._min_batch, self._max_batch, n))
        if n > self._max_batch:
            return np.concatenate([self._run(batch[i : i + self._max_batch]) for i in range(0, n, self._max_batch)])
        pad = np.zeros((self._min_batch - n,) + batch.shape[1:], dtype=batch.dtype)
        return self._execute(np.concatenate([batch, pad]))[:n]

    def _execute(self, batch: np.ndarray) -> np.ndarray:
        cuda, n = self._cuda, batch.shape[0]
        self._cuda_context.push()
        try:
            self._set_input_shape(n)
            host_in = self._host[self.input_name][:n]
            host_in[...] = batch
            cuda.memcpy_htod_async(self._device[self.input_name], host_in, self._stream)
            start, end = self._events
            start.record(self._stream)
            if not self._exec.execute_async_v3(self._stream.handle):
                raise FgvcError("TensorRT execution failed for {}".format(self.path))
            end.record(self._stream)
            host_out = self._host[self.output_name][:n]
            cuda.memcpy_dtoh_async(host_out, self._device[self.output_name], self._stream)
            self._stream.synchronize()
            self.last_gpu_ms = float(end.time_since(start))
            return np.array(host_out, dtype=np.float32)
        finally:
            self._cuda_context.pop()

    def close(self) -> None:
        if self._cuda_context is None:
            return
        self._cuda_context.push()
        self._teardown()

    def _teardown(self) -> None:
        """With the context pushed: free what lives in it, then pop and detach the context."""
        try:
            self._release()
        finally:
            self._cuda_context.pop()
            self._cuda_context.detach()
            self._cuda_context = None

    def _release(self) -> None:
        """Free everything that lives in the CUDA context; it must be current (pushed) here."""
        # TensorRT objects in dependency order (execution context, engine, runtime), then the memory they used.
        for attr in ("_exec", "_engine", "_runtime"):
            if hasattr(self, attr):
                setattr(self, attr, None)
        for buffer in self._device.values():
            buffer.free()
        for host in self._host.values():
            host.base.free()  # pycuda's pinned allocation behind the array
        self._device, self._host = {}, {}
        # Events and stream are destroyed when their last reference goes: here, inside the context.
        self._events, self._stream = (), None

    def describe(self) -> Dict[str, Any]:
        return {"runtime": "tensorrt", "tensorrt_version": self.tensorrt_version, "gpu": self.gpu, "path": self.path}
