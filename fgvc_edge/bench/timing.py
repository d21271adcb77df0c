"""Latency and memory measurement, torch-free so artifact benches run on a runtime-only install."""
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
    """Peak resident memory added while the block runs, sampled every ``interval`` s (Linux /proc)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.baseline: Optional[int] = None
        self.peak: Optional[int] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "PeakRSS":
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
        rss = current_rss()
        if rss is not None and self.peak is not None and rss > self.peak:
            self.peak = rss

    @property
    def added_mb(self) -> Optional[float]:
        if self.baseline is None or self.peak is None:
            return None
        return (self.peak - self.baseline) / 2**20


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
    return "cpu: {} ({} threads)".format(cpu_name(), threads)
