"""Process-group set-up for ``torchrun`` and collectives that also work in a single process.

Every helper here is a no-op (or the identity) when no process group is initialised, so
training code calls them unconditionally.
"""
from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any, List, Optional, Union

import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import LitvitError

__all__ = [
    "DistContext",
    "init_distributed",
    "barrier",
    "all_reduce_sum",
    "all_gather_object",
    "cleanup",
    "unwrap_model",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "resolve_device",
]


@dataclass
class DistContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    is_distributed: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise LitvitError(f"environment variable {name}={value!r} is not an integer") from None


def resolve_device(device: Optional[Union[str, torch.device]], local_rank: int = 0) -> torch.device:
    """``None``/``'auto'`` -> the local GPU if there is one, else the CPU; ``'cuda'`` -> this rank's GPU."""
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LitvitError("device 'cuda' requested but no CUDA GPU is available (use --device cpu)")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def init_distributed(device: Optional[Union[str, torch.device]] = None, timeout_minutes: float = 30.0) -> DistContext:
    """Join the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``), or describe a single process when those are absent.

    The backend is NCCL on CUDA and Gloo on the CPU.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistContext(0, 1, 0, device, False)
    if not dist.is_available():
        raise LitvitError("this PyTorch build has no torch.distributed support")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = dict(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, True)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if _active() else 0


def get_world_size() -> int:
    return dist.get_world_size() if _active() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if _active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; returns it (unchanged in a single process)."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any) -> List[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not _active():
        return [obj]
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup() -> None:
    """Leave the process group (a no-op in one process).

    When no exception is propagating, the processes first meet at a barrier, so that none tears
    the group down (rank 0 hosts its store) while another still needs it: once, on torch 2.4,
    a Gloo rank was seen to hang in ``destroy_process_group`` after its peer had left.
    """
    if _active():
        if sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / ``torch.compile`` wrappers (whose names must not reach checkpoints)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model
