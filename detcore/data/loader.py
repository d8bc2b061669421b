"""DataLoaders for training and evaluation."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.utils.data

from detcore.data.samplers import SeededIndex, TrainBatchSampler, shard_indices

__all__ = ["SeededDataset", "build_train_loader", "build_eval_loader", "collate", "worker_init"]


def collate(batch: Sequence) -> tuple[list, list]:
    """``[(image, target), ...]`` -> ``(images, targets)`` as lists (detection
    images differ in size; the model batches them itself)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    # The CPU generator only: torch.manual_seed also walks every accelerator
    # backend (about a millisecond), too slow to do per sample.
    torch.default_generator.manual_seed(seed)
    import numpy as np

    np.random.seed(seed % (2**32))


class SeededDataset(torch.utils.data.Dataset):
    """Reads ``dataset[i]`` for a :class:`SeededIndex` with the python, numpy
    and torch (CPU) RNGs seeded from the index's seed, so random transforms
    give the same result whichever worker (or the main process) loads the
    item. In the main process the torch RNG state is restored afterwards, so
    loading does not disturb the model's own random draws (python's and
    numpy's are left seeded: saving and restoring them costs more than a
    sample's transforms, and models draw from torch)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        if not isinstance(item, SeededIndex):
            return self.dataset[item]
        if torch.utils.data.get_worker_info() is not None:
            _seed_all(item.seed)
            return self.dataset[item.index]
        state = torch.get_rng_state()
        try:
            _seed_all(item.seed)
            return self.dataset[item.index]
        finally:
            torch.set_rng_state(state)


def worker_init(worker_id: int) -> None:
    # Items are seeded one by one (SeededDataset); this only keeps code that
    # draws outside __getitem__ from sharing one stream across workers.
    info = torch.utils.data.get_worker_info()
    if info is not None:
        _seed_all(info.seed % (2**31) + worker_id)


def _loader_kwargs(workers: int, pin_memory: bool, persistent_workers: bool) -> dict:
    kw = {"num_workers": workers, "pin_memory": pin_memory, "collate_fn": collate}
    if workers > 0:
        kw["persistent_workers"] = persistent_workers
        kw["worker_init_fn"] = worker_init
    return kw


def build_train_loader(
    dataset,
    *,
    batch_size: int,
    workers: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    aspect_ratio_grouping: bool = True,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> torch.utils.data.DataLoader:
    """The training loader; ``loader.batch_sampler`` is the
    :class:`TrainBatchSampler` whose ``set_epoch(epoch, start)`` picks the
    batches of the next pass."""
    ratios = getattr(dataset, "aspect_ratios", None) if aspect_ratio_grouping else None
    sampler = TrainBatchSampler(
        len(dataset), batch_size, seed=seed, rank=rank, world_size=world_size, aspect_ratios=ratios
    )
    # A generator of its own: DataLoader draws a base seed from it at every
    # iter(), which would otherwise consume the global RNG at a different
    # point in a resumed run than in an uninterrupted one.
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return torch.utils.data.DataLoader(
        SeededDataset(dataset),
        batch_sampler=sampler,
        generator=gen,
        **_loader_kwargs(workers, pin_memory, persistent_workers and workers > 0),
    )


def build_eval_loader(
    dataset,
    *,
    batch_size: int,
    workers: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A loader over this rank's shard (``rank::world_size``) in order; items
    come with their dataset index as ``target["_index"]`` (see
    :class:`_Indexed`)."""
    subset = _Indexed(dataset, shard_indices(len(dataset), rank, world_size))
    gen = torch.Generator()
    gen.manual_seed(0)
    return torch.utils.data.DataLoader(
        subset, batch_size=batch_size, shuffle=False, generator=gen, **_loader_kwargs(workers, pin_memory, False)
    )


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset, indices: list[int]):
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, target = self.dataset[self.indices[i]]
        target = dict(target)
        target["_index"] = self.indices[i]
        return image, target
