"""`fgvc-edge serve` (a Triton Inference Server in front of artifacts) and `fgvc-edge triton-repo`."""
from pathlib import Path
from typing import List

import typer
from typing_extensions import Annotated

from fgvc_edge.cli._common import ThreadsOpt, console

ArtifactsArg = Annotated[List[Path], typer.Argument(help=".onnx or .engine artifacts (with their sidecars).", show_default=False)]
MaxBatchOpt = Annotated[int, typer.Option("--max-batch", min=1, help="Largest batch Triton's dynamic batcher forms.")]
QueueDelayOpt = Annotated[
    int, typer.Option("--max-queue-delay-us", min=0, help="How long the batcher may hold a request to fill a batch (µs).")
]
InstancesOpt = Annotated[int, typer.Option("--instances", min=1, help="Model instances running concurrently.")]


def serve_cmd(
    artifacts: ArtifactsArg,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option("--http-port", help="HTTP/REST (KServe v2) port.")] = 8000,
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="Prometheus metrics port.")] = 8002,
    max_batch: MaxBatchOpt = 16,
    max_queue_delay_us: QueueDelayOpt = 0,
    instances: InstancesOpt = 1,
    topk: Annotated[int, typer.Option("--topk", min=1, help="Classes in each answer's top-k.")] = 5,
    threads: ThreadsOpt = None,
) -> None:
    """Serve ARTIFACTS on NVIDIA Triton Inference Server (through PyTriton) until Ctrl-C."""
    from fgvc_edge.serve import Endpoints, ServeSettings, serve

    settings = ServeSettings(host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                             max_batch=max_batch, max_queue_delay_us=max_queue_delay_us, instances=instances,
                             topk=topk, threads=threads)

    def ready(endpoints: Endpoints) -> None:
        console.print(
            "serving {} — HTTP {}, gRPC {}, metrics {} (Ctrl-C stops)".format(
                ", ".join(endpoints.models), endpoints.http, endpoints.grpc, endpoints.metrics),
            highlight=False, soft_wrap=True,
        )

    serve([str(a) for a in artifacts], settings, on_ready=ready)
    console.print("stopped", highlight=False)


def triton_repo_cmd(
    artifacts: ArtifactsArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Model repository folder (created or added to).")],
    max_batch: MaxBatchOpt = 16,
    max_queue_delay_us: QueueDelayOpt = 0,
    instances: InstancesOpt = 1,
    onnx_on_gpu: Annotated[bool, typer.Option("--onnx-on-gpu", help="Run .onnx models as KIND_GPU instances (default KIND_CPU).")] = False,
) -> None:
    """Write a Triton model repository (classifier + preprocessing + ensemble per artifact) for the Triton container."""
    from fgvc_edge.serve import RepositorySettings, write_triton_repository

    settings = RepositorySettings(max_batch=max_batch, max_queue_delay_us=max_queue_delay_us, instances=instances,
                                  onnx_on_gpu=onnx_on_gpu)
    result = write_triton_repository([str(a) for a in artifacts], str(output), settings)
    for note in result.notes:
        console.print("note: " + note, highlight=False, soft_wrap=True)
    console.print("wrote {}: {}".format(result.path, ", ".join(result.models)), highlight=False, soft_wrap=True)
