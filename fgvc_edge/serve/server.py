"""``serve``: artifacts behind a real NVIDIA Triton Inference Server, started through PyTriton.

PyTriton runs the ``tritonserver`` binary it bundles as a child process; each of our models is a Python-backend
proxy whose requests come back over shared memory to this process, where :class:`ServedModel` runs them on
the artifact's runner (ONNX Runtime or TensorRT). Triton brings the rest: HTTP/gRPC (KServe v2), dynamic
batching, health (``/v2/health/ready``) and Prometheus metrics (``:8002/metrics``).

Two facts of the machines decide details here. Triton's backend stub is linked against ``libpython3.X.so``
and the loader takes the first one it finds; under a pyenv or conda interpreter that is the system's own
(Debian's 3.11.2 for our 3.11.7), whose ``multiprocessing.resource_tracker`` then dies in the stub
(``_recursion_count``). The server process is therefore started with the running interpreter's library
folder first on ``LD_LIBRARY_PATH``. And a port already taken would make ``tritonserver`` exit while PyTriton
waits two minutes for it, so ports are checked first.
"""
import contextlib
import logging
import os
import signal
import socket
import sysconfig
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from fgvc_edge.errors import FgvcError, UserInputError, require
from fgvc_edge.serve.models import DEFAULT_TOPK, IMAGE_INPUT, TENSOR_INPUT, ServedModel, check_unique_names

log = logging.getLogger(__name__)

SERVE_EXTRA = "serve"
POLL_S = 0.5


class ServeError(FgvcError):
    """Triton did not start or stopped by itself (not the user's input)."""

    exit_code = 1


@dataclass(frozen=True)
class ServeSettings:
    """Where to listen and how Triton schedules the models."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 16
    max_queue_delay_us: int = 0
    instances: int = 1
    topk: int = DEFAULT_TOPK
    threads: Optional[int] = None  # ONNX Runtime threads per instance; default: the cores shared out

    def __post_init__(self) -> None:
        ports = self.ports()
        if any(not 1 <= port <= 65535 for port in ports.values()):
            raise UserInputError("ports must be between 1 and 65535, got {}".format(_describe(ports)))
        if len(set(ports.values())) != len(ports):
            raise UserInputError("the HTTP, gRPC and metrics ports must differ, got {}".format(_describe(ports)))
        if self.max_batch < 1 or self.instances < 1 or self.topk < 1 or self.max_queue_delay_us < 0:
            raise UserInputError("--max-batch, --instances and --topk must be >= 1, --max-queue-delay-us >= 0")

    def ports(self) -> Dict[str, int]:
        return {"HTTP": self.http_port, "gRPC": self.grpc_port, "metrics": self.metrics_port}


@dataclass(frozen=True)
class Endpoints:
    """What a client needs, handed to ``on_ready`` once every model answers."""

    http: str
    grpc: str
    metrics: str
    models: List[str]


def serve(
    artifacts: Sequence[str],
    settings: ServeSettings = ServeSettings(),
    on_ready: Optional[Callable[[Endpoints], None]] = None,
) -> None:
    """Serve ``artifacts`` until interrupted (Ctrl-C or SIGTERM); each is the model named after its file stem."""
    triton_module = require("pytriton.triton", SERVE_EXTRA)
    if not artifacts:
        raise UserInputError("serve needs at least one artifact (.onnx or .engine)")
    names = check_unique_names(artifacts)
    check_ports_free(settings)
    served = _load(artifacts, names, settings)
    try:
        with _sigterm_as_interrupt():
            _run(triton_module, served, settings, on_ready)
    finally:
        for instances in served:
            for model in instances:
                model.close()


def check_ports_free(settings: ServeSettings) -> None:
    """A one-line error for a port in use, instead of a server that exits while PyTriton waits for it."""
    for what, port in settings.ports().items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((settings.host, port))
            except OSError as exc:
                option = {"HTTP": "--http-port", "gRPC": "--grpc-port", "metrics": "--metrics-port"}[what]
                raise UserInputError(
                    "cannot listen on {}:{} for {} ({}); pick another {}".format(
                        settings.host, port, what, exc.strerror or exc, option
                    )
                ) from None


def server_library_path(environ: Dict[str, str]) -> Optional[str]:
    """``LD_LIBRARY_PATH`` for the server with this interpreter's libpython folder first; None if it has none."""
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    if not libdir or not soname or not os.path.isfile(os.path.join(libdir, soname)):
        return None  # a statically linked interpreter: the stub's own lookup is all there is
    rest = [part for part in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if part and part != libdir]
    return os.pathsep.join([libdir] + rest)


# -- internals ----------------------------------------------------------------------------------------------
def _load(artifacts: Sequence[str], names: Sequence[str], settings: ServeSettings) -> List[List[ServedModel]]:
    """One runner per Triton instance: instances run concurrently and a TensorRT context is not shareable."""
    from fgvc_edge.runtime import load

    threads = settings.threads or max(1, (os.cpu_count() or 1) // settings.instances)
    served = []  # type: List[List[ServedModel]]
    try:
        for artifact, name in zip(artifacts, names):
            # Triton's batcher hands ONNX Runtime a new batch size at every turn: without its CPU arena the
            # process stays flat over thousands of requests (see onnx_runner.session_options).
            onnx = str(artifact).lower().endswith(".onnx")
            kwargs = {"threads": threads, "memory_arena": False} if onnx else {}
            served.append([ServedModel(load(artifact, **kwargs), name, settings.topk) for _ in range(settings.instances)])
    except BaseException:
        for instances in served:
            for model in instances:
                model.close()
        raise
    return served


def _run(triton_module: Any, served: List[List[ServedModel]], settings: ServeSettings,
         on_ready: Optional[Callable[[Endpoints], None]]) -> None:
    config = triton_module.TritonConfig(
        http_address=settings.host, http_port=settings.http_port,
        grpc_address=settings.host, grpc_port=settings.grpc_port,
        metrics_address=settings.host, metrics_port=settings.metrics_port,
        allow_gpu_metrics=False, log_verbose=0,
        exit_timeout_secs=10,  # in-flight requests get this long to finish on Ctrl-C
    )
    triton = triton_module.Triton(config=config)
    try:
        for instances in served:
            _bind(triton, instances, settings)
        with _server_environment():
            try:
                triton.run()
            except Exception as exc:  # PyTriton, tritonclient and OS errors alike: the server log has the cause
                raise ServeError("Triton did not start: {}{}".format(_first_line(exc), _instances_hint(settings))) from None
        if on_ready is not None:
            on_ready(_endpoints(settings, [m[0].name for m in served]))
        while triton.is_alive():
            time.sleep(POLL_S)
        raise ServeError("Triton stopped by itself; its log above says why")
    except KeyboardInterrupt:
        log.info("stopping Triton")
    finally:
        triton.stop()


def _bind(triton: Any, instances: List[ServedModel], settings: ServeSettings) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    first = instances[0]
    size, classes, k = first.size, first.num_classes, first.k
    # Batch-dependent models are served unbatched: shapes carry the batch, which the runner checks and
    # refuses with the reason; Triton's batcher would otherwise merge requests into a batch that changes them.
    batched = not first.batch_dependent
    lead = () if batched else (-1,)
    inputs = [
        Tensor(name=IMAGE_INPUT, dtype=np.bytes_, shape=lead + (1,), optional=True),
        Tensor(name=TENSOR_INPUT, dtype=np.float32, shape=lead + (3, size, size), optional=True),
    ]
    outputs = [
        Tensor(name="logits", dtype=np.float32, shape=lead + (classes,)),
        Tensor(name="topk_index", dtype=np.int64, shape=lead + (k,)),
        Tensor(name="topk_label", dtype=np.bytes_, shape=lead + (k,)),
        Tensor(name="topk_prob", dtype=np.float32, shape=lead + (k,)),
    ]
    if batched:
        config = ModelConfig(batching=True, max_batch_size=settings.max_batch,
                             batcher=DynamicBatcher(max_queue_delay_microseconds=settings.max_queue_delay_us))
    else:
        config = ModelConfig(batching=False)
    triton.bind(model_name=first.name, infer_func=list(instances), inputs=inputs, outputs=outputs, config=config)


def _endpoints(settings: ServeSettings, models: List[str]) -> Endpoints:
    host = settings.host if settings.host not in ("0.0.0.0", "") else "127.0.0.1"
    return Endpoints(
        http="http://{}:{}".format(host, settings.http_port),
        grpc="{}:{}".format(host, settings.grpc_port),
        metrics="http://{}:{}/metrics".format(host, settings.metrics_port),
        models=models,
    )


@contextlib.contextmanager
def _server_environment() -> Iterator[None]:
    """PyTriton copies ``os.environ`` for the server it spawns; put our libpython first only meanwhile."""
    before = os.environ.get("LD_LIBRARY_PATH")
    path = server_library_path(dict(os.environ))
    if path is not None:
        os.environ["LD_LIBRARY_PATH"] = path
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = before


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """``kill``/``docker stop`` stop the server as Ctrl-C does, so the tritonserver child is shut down too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # A model that fails to load comes back as Triton's message with the stub's Python traceback inside.
    line = text.splitlines()[0].split(" Traceback (most recent call last)")[0] if text else ""
    return line.rstrip(" :") or type(exc).__name__


def _instances_hint(settings: ServeSettings) -> str:
    if settings.instances == 1:
        return "; the server log above says why"
    # Seen on a loaded 2-core box: a model's later instances (separate stub processes) wait 1 s for the first
    # one's handshake socket and give up ("waiting for config file").
    return ("; the server log above says why (with --instances {}: PyTriton gives later instances 1 s to reach "
            "the first, which a busy CPU can miss; --instances 1 avoids it)".format(settings.instances))


def _describe(ports: Dict[str, int]) -> str:
    return ", ".join("{} {}".format(what, port) for what, port in ports.items())
