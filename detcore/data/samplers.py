"""Samplers: the training batch order (sharded by rank, resumable by index)
and the validation shard of each rank.

The training order of an epoch is a pure function of ``(seed, epoch, rank,
world_size)``: a permutation of the dataset drawn from a generator seeded with
``seed + epoch``, padded to a multiple of the world size and split
``rank::world_size`` (as ``torch.utils.data.DistributedSampler``), then cut
into batches, grouping images of like aspect ratio when the dataset has
``aspect_ratios``. Because the whole epoch is known up front, resuming in
the middle of an epoch starts at batch ``start`` without touching the
samples before it (no replay, nothing loaded).

Each index is handed to the loader with a per-sample seed (see
:class:`SeededIndex`), so random augmentation depends on the sample's
position in the schedule only: not on the worker that loads it, the number
of workers, or whether the run was resumed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

__all__ = ["SeededIndex", "TrainBatchSampler", "shard_indices", "epoch_batches"]


class SeededIndex(NamedTuple):
    """A dataset index and the seed for the random transforms of that item."""

    index: int
    seed: int


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps), stable across runs and
    platforms, unlike ``hash()``."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
        x = x * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x & 0x7FFFFFFFFFFFFFFF


def epoch_batches(
    n: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    aspect_ratios: Sequence[float] | None = None,
) -> list[list[int]]:
    """The batches (lists of dataset indices) of ``rank`` in ``epoch``.

    Every rank gets ``ceil(ceil(n / world_size) / batch_size)`` batches, so
    ranks stay in step under DDP. With ``aspect_ratios`` a batch holds images
    of one orientation (w >= h or w < h) where possible; what is left of
    each orientation at the end of the epoch is batched together.
    """
    import torch

    if n == 0:
        return []
    if shuffle:
        g = torch.Generator()
        g.manual_seed(_mix(seed, epoch))
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    per_rank = math.ceil(n / world_size)
    total = per_rank * world_size
    # Pad by repeating the start of the order (DistributedSampler's rule).
    while len(order) < total:
        order += order[: total - len(order)]
    mine = order[rank:total:world_size]
    if aspect_ratios is None:
        return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    batches: list[list[int]] = []
    buckets: dict[bool, list[int]] = {True: [], False: []}
    for idx in mine:
        bucket = buckets[aspect_ratios[idx] >= 1.0]
        bucket.append(idx)
        if len(bucket) == batch_size:
            batches.append(list(bucket))
            bucket.clear()
    rest = buckets[True] + buckets[False]
    batches += [rest[i : i + batch_size] for i in range(0, len(rest), batch_size)]
    return batches


class TrainBatchSampler:
    """Batch sampler for the training DataLoader.

    ``set_epoch(epoch, start)`` selects the epoch and the first batch to
    yield (``start`` > 0 when resuming mid-epoch). Items are
    :class:`SeededIndex` values, so the dataset must be wrapped in
    :class:`detcore.data.loader.SeededDataset`.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        aspect_ratios: Sequence[float] | None = None,
    ):
        self.n = n
        self.batch_size = batch_size
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.aspect_ratios = list(aspect_ratios) if aspect_ratios is not None else None
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = int(epoch)
        self.start = int(start)

    def batches(self, epoch: int) -> list[list[int]]:
        return epoch_batches(
            self.n,
            self.batch_size,
            seed=self.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
            shuffle=self.shuffle,
            aspect_ratios=self.aspect_ratios,
        )

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        return math.ceil(math.ceil(self.n / self.world_size) / self.batch_size)

    def __iter__(self) -> Iterator[list[SeededIndex]]:
        epoch = self.epoch
        for b, batch in enumerate(self.batches(epoch)):
            if b < self.start:
                continue
            yield [
                SeededIndex(idx, _mix(self.seed, epoch, self.rank, b, j)) for j, idx in enumerate(batch)
            ]


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """The indices ``rank`` evaluates: ``rank, rank + world_size, ...``. Every
    index belongs to exactly one rank (no padding, so no duplicates)."""
    return list(range(rank, n, world_size))


def shard_batches(n: int, world_size: int, batch_size: int) -> int:
    """How many batches rank 0 (the largest shard of :func:`shard_indices`)
    evaluates: what a progress display counts to."""
    return math.ceil(math.ceil(n / max(world_size, 1)) / batch_size)
