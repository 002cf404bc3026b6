"""Multi-process training (DDP) as ``torchrun`` sets it up: process group, rank queries, model wrapping, reductions.

Every helper degrades to the single-process case when no process group is initialised, so the training loop has
one code path. The frozen teacher is never wrapped: it has no gradients to synchronise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "DistInfo",
    "init_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "shutdown_distributed",
    "wrap_ddp",
    "unwrap",
    "all_reduce_sum",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Initialises the default process group from the environment ``torchrun`` sets, if there is one.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR`` / ``MASTER_PORT`` through the ``env://``
    method). With ``WORLD_SIZE`` unset or 1 nothing is initialised. Calling it again once the group exists just
    reports it. On CUDA each process is pinned to the GPU ``LOCAL_RANK``.

    Args:
        backend: ``"nccl"``, ``"gloo"`` …; default ``"nccl"`` when CUDA is available, else ``"gloo"``.

    Returns:
        This process's :class:`DistInfo`.

    Examples:
        >>> info = init_distributed()   # plain `python train.py`: single process
        >>> info.world_size
        1
    """
    if is_distributed():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank)


def is_distributed() -> bool:
    """True when a default process group is initialised.

    Examples:
        >>> is_distributed()
        False
    """
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank (0 when not distributed).

    Examples:
        >>> get_rank()
        0
    """
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed).

    Examples:
        >>> get_world_size()
        1
    """
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0, the only process that writes files and prints.

    Examples:
        >>> is_main_process()
        True
    """
    return get_rank() == 0


def barrier() -> None:
    """Waits for every process (no-op when not distributed).

    Examples:
        >>> barrier()
    """
    if is_distributed():
        dist.barrier()


def shutdown_distributed() -> None:
    """Tears the default process group down once every process has got here (no-op when not distributed).

    Call it at the end of a distributed script, on every rank. The barrier comes first because a rank that
    destroys its group (rank 0 also hosts the rendezvous store) while another still talks to it can abort the
    other process instead of letting it finish.

    Examples:
        >>> shutdown_distributed()
    """
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """Wraps ``model`` in ``DistributedDataParallel`` when distributed, else returns it unchanged.

    Call it on the model being trained only; keep a frozen teacher unwrapped.

    Args:
        model: The model, already on ``device``.
        device: Its device; on CUDA, DDP is pinned to it.

    Examples:
        >>> m = nn.Linear(2, 2)
        >>> wrap_ddp(m, torch.device("cpu")) is m
        True
    """
    if not is_distributed():
        return model
    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model`` itself).

    Examples:
        >>> m = nn.Linear(2, 2)
        >>> unwrap(m) is m
        True
    """
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all processes (a copy; ``tensor`` itself when not distributed).

    Examples:
        >>> all_reduce_sum(torch.tensor([1.0, 2.0]))
        tensor([1., 2.])
    """
    if not is_distributed():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total
