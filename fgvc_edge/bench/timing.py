"""Latency and memory measurement, torch-free so artifact benches run on a runtime-only install."""
import ctypes
import ctypes.util
import gc
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class LatencyStats:
    """Per-image latency (ms) of a batch call divided by the batch; throughput in images/s."""

    p50: float
    p90: float
    p99: float
    mean: float
    throughput: float
    iters: int

    def as_dict(self) -> Dict[str, float]:
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99, "mean": self.mean}


def time_calls(fn: Callable[[], Any], *, batch: int, iters: int, warmup: int) -> LatencyStats:
    for _ in range(warmup):
        fn()
    samples: List[float] = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return latency_stats(np.asarray(samples) * 1000.0, batch)


def time_cuda_calls(fn: Callable[[], Any], *, batch: int, iters: int, warmup: int, cuda: Any) -> LatencyStats:
    """Per call, the GPU-timeline time between CUDA events recorded before and after ``fn`` on the current
    stream (gaps where the GPU waits for kernel launches included); ``cuda`` is ``torch.cuda``, passed in
    so this module stays torch-free."""
    for _ in range(warmup):
        fn()
    cuda.synchronize()
    samples: List[float] = []
    for _ in range(iters):
        start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return latency_stats(np.asarray(samples, dtype=np.float64), batch)


def latency_stats(per_call_ms: np.ndarray, batch: int) -> LatencyStats:
    iters = int(per_call_ms.size)
    per_image = per_call_ms / batch
    return LatencyStats(
        p50=float(np.percentile(per_image, 50)),
        p90=float(np.percentile(per_image, 90)),
        p99=float(np.percentile(per_image, 99)),
        mean=float(per_image.mean()),
        throughput=float(batch * 1000.0 / per_call_ms.mean()),
        iters=iters,
    )


def current_rss() -> Optional[int]:
    try:
        with open("/proc/self/statm", "r") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class PeakRSS:
    """Resident memory while the block runs, sampled every ``interval`` s (Linux /proc): the peak (absolute and
    added over the start) and what the block left resident (e.g. a model it loaded)."""

    def __init__(self, interval: float = 0.002, release_freed: bool = False) -> None:
        self.interval = interval
        # Measuring what a load adds: memory freed earlier (an export, a previous row) would otherwise be reused
        # by the allocator and hide the growth.
        self.release_freed = release_freed
        self.baseline: Optional[int] = None
        self.peak: Optional[int] = None
        self.final: Optional[int] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "PeakRSS":
        if self.release_freed:
            release_freed_memory()
        self.baseline = current_rss()
        self.peak = self.baseline
        if self.baseline is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = current_rss()
            if rss is not None and rss > (self.peak or 0):
                self.peak = rss

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.final = current_rss()
        if self.final is not None and self.peak is not None and self.final > self.peak:
            self.peak = self.final

    @property
    def added_mb(self) -> Optional[float]:
        if self.baseline is None or self.peak is None:
            return None
        return (self.peak - self.baseline) / 2**20

    @property
    def peak_mb(self) -> Optional[float]:
        """The process's resident memory at its highest during the block, everything loaded before included."""
        return None if self.peak is None else self.peak / 2**20

    @property
    def grown_mb(self) -> Optional[float]:
        """Resident memory the block left behind: the footprint of what it loaded."""
        if self.baseline is None or self.final is None:
            return None
        return (self.final - self.baseline) / 2**20


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc ``malloc_trim``; a no-op elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_peak_rss_mb() -> Optional[float]:
    """The highest resident memory of this process so far (``getrusage``; KiB on Linux)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", "r") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def device_name(threads: int) -> str:
    return "cpu: {} ({} thread{})".format(cpu_name(), threads, "" if threads == 1 else "s")
