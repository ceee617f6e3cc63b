"""Samplers for data-parallel training and exact distributed evaluation."""
from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch.utils.data import Sampler

from .distributed import get_rank, get_world_size

__all__ = ["ChunkedDistributedSampler", "EvalDistributedSampler"]


class ChunkedDistributedSampler(Sampler[int]):
    """Training sampler whose global batches do not depend on how they are split.

    One seeded permutation per epoch is cut into global batches of
    ``batch_size x num_replicas x accum_steps`` images; micro-step ``a`` of rank ``r`` gets
    the contiguous chunk ``a * num_replicas + r`` of it. So 2 processes x batch 4 see exactly
    the same images per optimiser step as 1 process x batch 4 x 2 accumulation steps, and a
    run resumed on another number of processes continues the same data order. The last,
    incomplete global batch of an epoch is dropped.

    Use with ``DataLoader(batch_size=batch_size, sampler=..., drop_last=False)``.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
        accum_steps: int = 1,
        shuffle: bool = True,
        seed: int = 0,
    ):
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.num_replicas = get_world_size() if num_replicas is None else num_replicas
        self.rank = get_rank() if rank is None else rank
        self.accum_steps = accum_steps
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.skip_steps = 0
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} outside 0..{self.num_replicas - 1}")

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas * self.accum_steps

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch."""
        return self.num_samples // self.global_batch_size

    def set_epoch(self, epoch: int, skip_steps: int = 0) -> None:
        """Select the epoch's permutation; ``skip_steps`` leaves out the first optimiser steps
        (continuing an epoch interrupted after a step checkpoint)."""
        self.epoch = epoch
        self.skip_steps = skip_steps

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        gb, b = self.global_batch_size, self.batch_size
        for step in range(self.skip_steps, self.steps_per_epoch):
            base = step * gb
            for micro in range(self.accum_steps):
                chunk = micro * self.num_replicas + self.rank
                yield from order[base + chunk * b : base + (chunk + 1) * b]

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.skip_steps) * self.accum_steps * self.batch_size


class EvalDistributedSampler(Sampler[int]):
    """Rank ``r`` takes images ``r, r + W, r + 2W, ...``: every image exactly once over all
    ranks (no padding duplicates, unlike ``DistributedSampler``), so summed metrics are exact."""

    def __init__(self, num_samples: int, num_replicas: Optional[int] = None, rank: Optional[int] = None):
        self.num_samples = num_samples
        self.num_replicas = get_world_size() if num_replicas is None else num_replicas
        self.rank = get_rank() if rank is None else rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.num_replicas))
