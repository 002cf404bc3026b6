"""Data loaders for training (shuffled, sharded under DDP, reproducible per epoch) and evaluation (sharded, no
padding, so every sample is counted exactly once)."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from depthdistill.engine.distributed import get_rank, get_world_size

__all__ = ["train_loader", "eval_loader", "start_epoch"]

# Spreads (seed, epoch) pairs over generator seeds so that consecutive runs and epochs never share a stream.
_EPOCH_STRIDE = 1_000_003


def train_loader(
    data: Dataset | DataLoader, batch_size: int = 1, num_workers: int = 0, seed: int = 0, pin_memory: bool = False
) -> DataLoader:
    """A shuffling loader whose order depends only on ``(seed, epoch)`` (see :func:`start_epoch`).

    The sampler is a ``DistributedSampler`` in every case (with one replica when not distributed), so the same
    code shards the data under ``torchrun``. A ``DataLoader`` passed in is used as it is: its order then follows
    its own sampler (a ``RandomSampler`` without a generator draws from torch's global RNG, which checkpoints
    restore, so resuming stays exact).

    Args:
        data: A map-style dataset of sample dicts, or a ready ``DataLoader``.
        batch_size: Samples per step and process.
        num_workers: Loader worker processes.
        seed: Base seed of the shuffling and of the workers' seeds.
        pin_memory: Pin host memory (for CUDA).

    Examples:
        >>> loader = train_loader([{"x": torch.tensor(i)} for i in range(4)], batch_size=2)
        >>> start_epoch(loader, 0, seed=0)
        >>> sorted(int(v) for b in loader for v in b["x"])
        [0, 1, 2, 3]
    """
    if isinstance(data, DataLoader):
        return data
    sampler = DistributedSampler(data, num_replicas=get_world_size(), rank=get_rank(), shuffle=True, seed=seed)
    return DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      generator=torch.Generator(), pin_memory=pin_memory)


def start_epoch(loader: DataLoader, epoch: int, seed: int = 0) -> None:
    """Makes the loader's order and worker seeds for ``epoch`` a function of ``(seed, epoch)`` only.

    Examples:
        >>> loader = train_loader(list(range(6)), batch_size=6)
        >>> start_epoch(loader, 3); a = next(iter(loader))
        >>> start_epoch(loader, 3); torch.equal(a, next(iter(loader)))
        True
    """
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if loader.generator is not None:
        loader.generator.manual_seed(seed * _EPOCH_STRIDE + epoch)


class _ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, …``: a disjoint, unpadded share of the set for each process."""

    def __init__(self, data: Sized, rank: int, world_size: int) -> None:
        self.indices = range(rank, len(data), world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def eval_loader(data: Dataset | DataLoader, batch_size: int = 1, num_workers: int = 0) -> DataLoader:
    """A loader in dataset order; under DDP each process gets a disjoint share, none padded.

    Reduce the metrics over processes afterwards (``SegmentationMetrics.all_reduce``). A ``DataLoader`` passed in
    is used as it is (then every process evaluates all of it).

    Examples:
        >>> [int(b) for b in eval_loader(list(range(3)))]
        [0, 1, 2]
    """
    if isinstance(data, DataLoader):
        return data
    return DataLoader(data, batch_size=batch_size, sampler=_ShardSampler(data, get_rank(), get_world_size()),
                      num_workers=num_workers)
