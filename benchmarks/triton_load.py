"""Load on `fgvc-edge serve` (a real Triton Inference Server): throughput and latency under closed-loop
clients next to the in-process runner, the server's memory over many requests, dynamic batching on vs off.

    python benchmarks/triton_load.py                                   # the full run: 30 s a point, 10,000 requests
    python benchmarks/triton_load.py --duration 2 --memory-requests 200   # a smoke run

Models: resnet50 @224 INT8 (ONNX Runtime form, calibrated on synthetic images: speed figures only) and
cmal_resnet18 raw @448 FP32, both built with a dynamic batch (profile 1-8-16) so Triton's batcher can form
batches. Clients send one JPEG per request over gRPC and send the next when the answer arrives (closed loop);
the server decodes, preprocesses and runs the model, as `runner.predict` does in-process, which is measured in
the same run on the same threads. Memory is the RSS (/proc) of the serve process, tritonserver and its
backend stubs, after `--memory-warmup` requests and then every 1,000 of `--memory-requests` more. Batching off is `--max-batch 1`.
Clients share the machine with the server: on a 2-core box they take part of the CPU the server would use.

Writes benchmarks/results/triton_load.{json,md}.
"""
import argparse
import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

MODELS = {
    "resnet50-int8": {"model": "resnet50", "input_size": 224, "precision": "int8", "mode": None},
    "cmal_resnet18-raw": {"model": "cmal_resnet18", "input_size": 448, "precision": "fp32", "mode": "raw"},
}
RESULTS = os.path.join("benchmarks", "results")
ARTIFACTS = os.path.join("engines", "triton_load")
STARTUP_S = 300
REQUEST_S = 120.0
MEMORY_STEP = 1000  # requests between two readings of the server's memory
CLI = [sys.executable, "-c", "from fgvc_edge.cli import main; main()"]


# -- artifacts and images -------------------------------------------------------------------------------------
def build_artifact(name: str, spec: Dict[str, Any]) -> str:
    from fgvc_edge.engine import BatchProfile, BuildSettings, CalibrationSettings, ModelOptions, build
    from fgvc_edge.precision import SyntheticImages

    options = ModelOptions(mode=spec["mode"], input_size=spec["input_size"])
    profile = BatchProfile(1, 8, 16)
    calibration = CalibrationSettings()
    if spec["precision"] == "int8":
        # What synthetic_int8_deployable does, at a dynamic batch: smooth random images at the resize size.
        resize = int(round(spec["input_size"] * 256 / 224))
        calibration = CalibrationSettings(SyntheticImages(32, size=resize, seed=0), "minmax", 32)
    settings = BuildSettings(spec["precision"], "onnxruntime", profile, calibration)
    return build(spec["model"], settings, model=options, output=os.path.join(ARTIFACTS, name + ".onnx")).path


def jpeg_photos() -> List[bytes]:
    """Real photographs (scikit-image's samples) where installed, else smooth synthetic ones; as JPEG."""
    from PIL import Image

    try:
        from skimage import data

        arrays = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    except ImportError:
        from fgvc_edge.precision import SyntheticImages

        arrays = list(SyntheticImages(4, size=480, seed=1))
    encoded = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


# -- measurements ---------------------------------------------------------------------------------------------
def summary(latencies_s: Sequence[float], elapsed_s: float, errors: int) -> Dict[str, Any]:
    ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    return {
        "requests": int(ms.size), "errors": int(errors), "seconds": round(elapsed_s, 3),
        "throughput_ips": round(ms.size / elapsed_s, 2) if elapsed_s > 0 else 0.0,
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if ms.size else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if ms.size else None,
    }


def in_process(path: str, photos: List[bytes], seconds: float, threads: int) -> Dict[str, Any]:
    """The runner alone, one image after another: decode + preprocess + infer, as the server does per image."""
    from fgvc_edge.runtime import load

    with load(path, threads=threads) as runner:
        for photo in photos:
            runner.predict([photo], topk=5)
        latencies, start = [], time.perf_counter()
        for photo in itertools.cycle(photos):
            began = time.perf_counter()
            if began - start >= seconds:
                break
            runner.predict([photo], topk=5)
            latencies.append(time.perf_counter() - began)
        return summary(latencies, time.perf_counter() - start, 0)


def closed_loop(url: str, model: str, photos: List[bytes], clients: int, seconds: Optional[float],
                requests: Optional[int] = None) -> Dict[str, Any]:
    """``clients`` threads, each with its own gRPC client, for ``seconds`` or until ``requests`` are answered."""
    import tritonclient.grpc as grpcclient

    counter, barrier = itertools.count(), threading.Barrier(clients + 1, timeout=STARTUP_S)
    latencies = [[] for _ in range(clients)]  # type: List[List[float]]
    errors = [0] * clients
    deadline = [float("inf")]

    def client_loop(index: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        payloads = []
        for photo in photos:
            tensor = grpcclient.InferInput("image", [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[photo]], dtype=object))
            payloads.append(tensor)
        try:
            client.infer(model, [payloads[index % len(payloads)]], client_timeout=REQUEST_S)  # warm-up, untimed
        except Exception:
            barrier.abort()  # the measurement stops with BrokenBarrierError instead of waiting for this client
            raise
        barrier.wait()
        for tensor in itertools.cycle(payloads):
            if time.perf_counter() >= deadline[0] or (requests is not None and next(counter) >= requests):
                break
            began = time.perf_counter()
            try:
                client.infer(model, [tensor], client_timeout=REQUEST_S)
                latencies[index].append(time.perf_counter() - began)
            except Exception:  # an error answer is counted, the loop goes on
                errors[index] += 1
        client.close()

    workers = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    if seconds is not None:
        deadline[0] = start + seconds
    for worker in workers:
        worker.join()
    return summary([v for per in latencies for v in per], time.perf_counter() - start, sum(errors))


def server_memory(pid: int) -> Dict[str, int]:
    from fgvc_edge.serve.processes import process_tree

    totals = {}  # type: Dict[str, int]
    for info in process_tree(pid):
        # The serve process runs the models; tritonserver, its Python-backend stubs and their helpers serve them.
        role = "serve" if info.pid == pid else "stubs" if info.name.startswith("triton_python") else info.name
        totals[role] = totals.get(role, 0) + info.rss_bytes
    totals["total"] = sum(totals.values())
    return totals


# -- the server -----------------------------------------------------------------------------------------------
class Server:
    """`fgvc-edge serve` in a subprocess on free loopback ports; stopped with Ctrl-C (SIGINT)."""

    def __init__(self, artifact: str, max_batch: int, threads: int, log_path: str) -> None:
        self.http, self.grpc, metrics = free_ports(3)
        self.model = os.path.splitext(os.path.basename(artifact))[0]
        command = CLI + ["serve", artifact, "--http-port", str(self.http), "--grpc-port", str(self.grpc),
                         "--metrics-port", str(metrics), "--max-batch", str(max_batch), "--threads", str(threads)]
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.log_path = log_path

    def __enter__(self) -> "Server":
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient("127.0.0.1:{}".format(self.http))
        deadline = time.monotonic() + STARTUP_S
        try:
            while True:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("serve did not get ready; see " + self.log_path)
                try:
                    if client.is_model_ready(self.model):
                        return self
                except Exception:  # not listening yet
                    pass
                time.sleep(0.5)
        finally:
            client.close()

    def __exit__(self, *exc: Any) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)

    @property
    def url(self) -> str:
        return "127.0.0.1:{}".format(self.grpc)


def free_ports(count: int) -> List[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# -- one model ------------------------------------------------------------------------------------------------
def run_model(name: str, args: argparse.Namespace, photos: List[bytes]) -> Dict[str, Any]:
    path = build_artifact(name, MODELS[name])
    report = {"model": name, "artifact": path, "threads": args.threads, "points": []}  # type: Dict[str, Any]
    if not args.memory_only:
        report["in_process"] = in_process(path, photos, args.duration, args.threads)
        print(name, "in-process:", report["in_process"], flush=True)
    log = os.path.join(RESULTS, "triton_load-{}-{{}}.log".format(name))
    with Server(path, max_batch=16, threads=args.threads, log_path=log.format("batching")) as server:
        for clients in args.concurrency if not args.memory_only else []:
            point = closed_loop(server.url, server.model, photos, clients, args.duration)
            report["points"].append(dict(point, clients=clients, batching=True))
            print(name, "batching on", clients, "clients:", point, flush=True)
        report["memory"] = memory_run(server, photos, max(args.concurrency), args.memory_requests,
                                      args.memory_warmup, name)
    if args.memory_only:
        return report
    with Server(path, max_batch=1, threads=args.threads, log_path=log.format("no-batching")) as server:
        clients = max(args.concurrency)
        point = closed_loop(server.url, server.model, photos, clients, args.duration)
        report["points"].append(dict(point, clients=clients, batching=False))
        print(name, "batching off", clients, "clients:", point, flush=True)
    return report


def memory_run(server: Server, photos: List[bytes], clients: int, requests: int, warmup: int,
               name: str) -> Dict[str, Any]:
    """The server's memory after ``warmup`` requests, then every MEMORY_STEP requests: a leak climbs, a warm
    server is flat. The warm-up lets the allocators reach their working set: every batch size the batcher
    forms, and glibc's malloc, which raises its mmap threshold after the first large frees and from then on
    keeps such blocks in its heap for reuse."""
    started = server_memory(server.process.pid)
    warm = closed_loop(server.url, server.model, photos, clients, None, warmup) if warmup else None
    before = server_memory(server.process.pid)
    print(name, "memory:", started["total"] // 2**20, "MB before warm-up,", before["total"] // 2**20, "MB after",
          warmup, "warm-up requests", flush=True)
    samples, served, errors = [{"requests": 0, "bytes": before}], 0, 0
    while served < requests:
        step = closed_loop(server.url, server.model, photos, clients, None, min(MEMORY_STEP, requests - served))
        served, errors = served + step["requests"], errors + step["errors"]
        samples.append({"requests": served, "bytes": server_memory(server.process.pid)})
        print(name, "memory after", served, "requests:", samples[-1]["bytes"]["total"] // 2**20, "MB", flush=True)
    after = samples[-1]["bytes"]
    return {"warmup_requests": warmup, "warmup_errors": warm["errors"] if warm else 0, "started_bytes": started,
            "requests": served, "errors": errors, "before_bytes": before, "after_bytes": after,
            "growth_pct": round(100.0 * (after["total"] / before["total"] - 1.0), 2), "samples": samples}


def markdown(reports: List[Dict[str, Any]], args: argparse.Namespace) -> str:
    lines = ["# Triton load (`fgvc-edge serve`, gRPC, JPEG in)", "",
             "{} s a point, {} threads for ONNX Runtime, {} CPU cores shared by clients and server.".format(
                 args.duration, args.threads, os.cpu_count()), "",
             "| model | clients | batching | img/s | p50 ms | p99 ms | errors | in-process img/s |",
             "|---|---|---|---|---|---|---|---|"]
    for report in reports:
        for point in report["points"]:
            lines.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
                report["model"], point["clients"], "on" if point["batching"] else "off", point["throughput_ips"],
                point["p50_ms"], point["p99_ms"], point["errors"], report["in_process"]["throughput_ips"]))
    lines += ["", "| model | RSS at start MB | warm-up requests | requests | RSS before MB | RSS after MB | growth "
              "| < 5 % | RSS every {} requests MB |".format(MEMORY_STEP), "|---|---|---|---|---|---|---|---|---|"]
    for report in reports:
        memory = report["memory"]
        lines.append("| {} | {:.0f} | {} | {} | {:.0f} | {:.0f} | {:+.2f} % | {} | {} |".format(
            report["model"], memory["started_bytes"]["total"] / 2**20, memory["warmup_requests"],
            memory["requests"], memory["before_bytes"]["total"] / 2**20,
            memory["after_bytes"]["total"] / 2**20, memory["growth_pct"],
            "yes" if memory["growth_pct"] < 5.0 else "NO",
            " ".join("{:.0f}".format(s["bytes"]["total"] / 2**20) for s in memory.get("samples", []))))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per load point")
    parser.add_argument("--concurrency", default="1,4,16", help="closed-loop clients per point")
    parser.add_argument("--memory-requests", type=int, default=10000)
    parser.add_argument("--memory-warmup", type=int, default=1000,
                        help="requests served before the memory is first read (the allocators' warm-up)")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the memory run (its own --memory-warmup first): no load table, no batching off")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime threads")
    parser.add_argument("--output", default=os.path.join(RESULTS, "triton_load"), help="path stem for .json/.md")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    os.makedirs(RESULTS, exist_ok=True)
    photos = jpeg_photos()
    reports = [run_model(name.strip(), args, photos) for name in args.models.split(",") if name.strip()]
    with open(args.output + ".json", "w", encoding="utf-8") as fh:
        json.dump({"settings": {k: v for k, v in vars(args).items()}, "models": reports}, fh, indent=2)
    text = markdown(reports, args)
    with open(args.output + ".md", "w", encoding="utf-8") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
