"""DistributedDataParallel plumbing for ``torchrun --nproc_per_node N -m fgvc_edge.cli train``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them (or with WORLD_SIZE=1) training runs in one
process and every helper here is a no-op. NCCL on CUDA, gloo on CPU (what the tests use).
"""
import os
from dataclasses import dataclass
from typing import Any, List, Sequence

import torch
import torch.distributed as dist

from fgvc_edge.errors import UserInputError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    # True when init_distributed created the process group (and shutdown should destroy it).
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistContext:
    """Join the torchrun process group when there is one; pick the device (``auto``: CUDA when present)."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise UserInputError("--device cuda: no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(device=torch.device("cuda", 0) if use_cuda else torch.device("cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    target = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=target, owns_group=owns_group)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group if this run created it (a caller's own group stays up)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(ctx: DistContext, values: Sequence[float]) -> List[float]:
    """Element-wise sums over the processes (float64, so counts stay exact)."""
    if not ctx.enabled:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def all_min(ctx: DistContext, value: int) -> int:
    """The smallest ``value`` over the processes."""
    if not ctx.enabled:
        return int(value)
    tensor = torch.tensor([int(value)], dtype=torch.int64, device=_comm_device(ctx))
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def all_gather(ctx: DistContext, obj: Any) -> List[Any]:
    """``obj`` of every process, in rank order."""
    if not ctx.enabled:
        return [obj]
    gathered: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def _comm_device(ctx: DistContext) -> torch.device:
    return ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")
