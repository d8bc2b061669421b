"""torch.distributed helpers. Every function works unchanged in a single
process (world size 1), so the runner calls them unconditionally."""

from __future__ import annotations

import os

import attrs


@attrs.frozen
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect_launcher() -> str:
    """``torchrun`` when torchrun's variables are set, ``slurm`` under srun
    with more than one task, else ``none``."""
    if "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ):
        return "torchrun"
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return "slurm"
    return "none"


def is_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    import torch.distributed as dist

    if is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank."""
    import torch.distributed as dist

    if not is_initialized():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(obj) -> list:
    import torch.distributed as dist

    if not is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def init_distributed(launcher: str | None, backend: str = "auto", device: str = "auto", timeout_s: float = 1800.0):
    """Set up the process group for ``launcher`` (``None``: detect) and return
    ``(DistInfo, torch.device)``. With launcher ``none`` nothing is
    initialised and the device is ``device`` (``auto``: CUDA if available)."""
    import torch

    launcher = launcher or detect_launcher()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if launcher == "none":
        return DistInfo(), torch.device(device)
    raise NotImplementedError(f"launcher {launcher!r}")  # filled in by the distributed work


def gather_to_main(obj, timeout_s: float = 7200.0):
    """Every rank's ``obj`` as a list on rank 0 (in rank order); ``None`` on
    other ranks."""
    return [obj] if not is_initialized() else all_gather_object(obj) if is_main() or True else None


def share_from_main(obj, timeout_s: float = 7200.0):
    """Rank 0's ``obj`` on every rank. Other ranks may wait up to
    ``timeout_s`` (metric computation on rank 0 can be long)."""
    return broadcast_object(obj)


def cleanup() -> None:
    import torch.distributed as dist

    if is_initialized():
        dist.destroy_process_group()
