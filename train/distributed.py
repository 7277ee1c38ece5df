"""DDP set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK): gloo on CPU, NCCL on CUDA.

Without torchrun the run is a single process (rank 0 of 1) and every helper here is a no-op.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)
"""Ranks wait this long at a barrier (rank 0 validates full volumes while the others wait)."""


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def select_device(requested: str, info: DistInfo) -> torch.device:
    """``auto`` → this rank's CUDA device when CUDA is available, else CPU; ``cuda`` → cuda:<local_rank>."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"train.device is {requested!r} but CUDA is not available")
        device = torch.device(f"cuda:{info.local_rank}") if requested == "cuda" else torch.device(requested)
        torch.cuda.set_device(device)
        return device
    if requested != "cpu":
        raise RuntimeError(f"train.device {requested!r} is not one of auto, cpu, cuda, cuda:N")
    return torch.device("cpu")


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group torchrun describes (if any). ``device_kind`` "cuda" selects NCCL, else gloo."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))),
    )
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    return info


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def max_over_ranks(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Element-wise maximum of ``values`` over all ranks (float64), so that every rank takes the same decision."""
    if not info.enabled:
        return [float(v) for v in values]
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [float(v) for v in tensor.tolist()]


def any_rank(flags: list[bool], info: DistInfo, device: torch.device) -> list[bool]:
    """Element-wise OR of boolean flags over all ranks."""
    return [v > 0.5 for v in max_over_ranks([1.0 if f else 0.0 for f in flags], info, device)]


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
