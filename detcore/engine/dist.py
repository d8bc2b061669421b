"""torch.distributed helpers: the process group and the collectives the
runner and evaluation use. Every function works unchanged in a single
process (world size 1), so the runner calls them unconditionally.

The environment (launcher detection, Slurm's variables, the device) is
:mod:`detcore.engine.dist_env`, the ``--nproc`` launcher
:mod:`detcore.engine.launch`; their names stay importable from here
(``detcore.engine.dist.launch_local``, ``detect_launcher``, ...).

Why evaluation does not trip the collective timeout: rank 0 evaluates the
gathered predictions alone, which can take much longer than the training
collectives' timeout (``dist.timeout_s``). The object exchanges around it
(:func:`gather_to_main`, :func:`share_from_main`) therefore run on a separate
*gloo* process group created with the evaluation timeout
(``dist.eval_timeout_s``). The other ranks wait in that group only, with no
NCCL work pending, so neither the gloo timeout of the default group nor the
NCCL watchdog fires while rank 0 computes metrics.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta

from detcore.engine.dist_env import (  # noqa: F401 - re-exported: documented under detcore.engine.dist
    LAUNCHERS,
    SLURM_PORT_BASE,
    SLURM_PORT_SPAN,
    TORCHRUN_VARS,
    DistInfo,
    detect_launcher,
    mpi_env,
    resolve_backend,
    resolve_device,
    slurm_env,
    slurm_first_host,
    slurm_master_port,
)
from detcore.engine.launch import (  # noqa: F401 - re-exported: documented under detcore.engine.dist
    PortInUseError,
    check_port_free,
    free_port,
    is_addr_in_use,
    launch_local,
    port_in_use_message,
    strip_launch_args,
)
from detcore.errors import DetcoreError

# --------------------------------------------------------------------------
# Process group
# --------------------------------------------------------------------------


def is_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if is_initialized() else 1


def init_distributed(
    launcher: str | None,
    backend: str = "auto",
    device: str = "auto",
    timeout_s: float = 1800.0,
    startup_timeout_s: float = 600.0,
):
    """Set up the process group for ``launcher`` (``None``: detect) and return
    ``(DistInfo, torch.device)``.

    ``none``: nothing is initialised and the device is ``device`` (``auto``:
    CUDA if available). ``torchrun``: the ``env://`` variables torchrun sets.
    ``slurm`` / ``mpi``: those variables are computed from Slurm's
    (:func:`slurm_env`) or MPI's (:func:`mpi_env`) and exported, then
    ``env://``. The backend ``auto`` is nccl on CUDA and
    gloo on CPU; on CUDA each process uses GPU ``LOCAL_RANK``. ``timeout_s``
    is the timeout of the training collectives; joining the group may take
    up to ``startup_timeout_s`` (ranks start at different times: imports,
    nodes of a Slurm job), so a short ``timeout_s`` does not make start-up
    fail.
    """
    import torch.distributed as dist

    launcher = launcher or detect_launcher()
    if launcher not in LAUNCHERS:
        raise DetcoreError(f"unknown launcher {launcher!r}: use one of {', '.join(LAUNCHERS)}")
    if launcher == "none":
        return DistInfo(), resolve_device(device, 0, distributed=False)

    if launcher == "slurm":
        os.environ.update(slurm_env())
    elif launcher == "mpi":
        os.environ.update(mpi_env())
    missing = [k for k in TORCHRUN_VARS if k not in os.environ]
    if missing:
        raise DetcoreError(
            f"--launcher {launcher}, but {', '.join(missing)} is not set: start the job with "
            "'torchrun --nproc-per-node N -m detcore train RUN.toml' or 'detcore train RUN.toml --nproc N'"
        )
    global _train_timeout_s
    _train_timeout_s = float(timeout_s)
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = resolve_device(device, local_rank, distributed=True)
    backend = resolve_backend(backend, dev)
    if not is_initialized():
        kwargs = {"device_id": dev} if backend == "nccl" else {}
        try:
            start = timedelta(seconds=max(timeout_s, startup_timeout_s))
            dist.init_process_group(backend, init_method="env://", timeout=start, **kwargs)
        except Exception as exc:
            # A taken MASTER_PORT surfaces here (Slurm, hand-set torchrun ports).
            if is_addr_in_use(exc):
                port = os.environ["MASTER_PORT"]
                raise DetcoreError(
                    f"port {port} on {os.environ['MASTER_ADDR']} is already in use (another job?); "
                    "choose another with 'export MASTER_PORT=<free port>' or torchrun --master-port"
                ) from None
            raise
        if startup_timeout_s > timeout_s:
            dist.set_timeout(timedelta(seconds=timeout_s))
        _report_uncaught_to_launcher()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, launcher=launcher), dev


def _report_uncaught_to_launcher() -> None:
    """Under torchrun's agent, write an uncaught exception to the worker's
    error file (what ``torch.distributed.elastic``'s ``@record`` does), so
    the launcher's failure report names the exception instead of "To enable
    traceback see ...". The worker then exits at once (:func:`exit_now`)."""
    import json
    import time
    import traceback

    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        try:
            data = {
                "message": {
                    "message": f"{exc_type.__name__}: {exc}",
                    "extraInfo": {
                        "py_callstack": "".join(traceback.format_exception(exc_type, exc, tb)),
                        "timestamp": str(int(time.time())),
                    },
                }
            }
            with open(path, "w") as fh:
                json.dump(data, fh)
        except OSError:
            pass
        previous(exc_type, exc, tb)
        exit_now(1)

    sys.excepthook = hook


def exit_now(status: int) -> None:
    """End a failed worker of a launched job now: flush output and
    ``os._exit``. Python's normal shutdown of a process whose peers are gone
    spends seconds in gloo's teardown, long enough for the launcher to take
    another rank's later error for the first one. Files are already closed
    (checkpoints are written atomically)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def launched_worker() -> bool:
    """Whether this process is a worker started by torch's elastic agent
    (``torchrun``, ``detcore ... --nproc N``)."""
    return bool(os.environ.get("TORCHELASTIC_ERROR_FILE")) and "RANK" in os.environ


_object_groups: dict = {}
_train_timeout_s = 1800.0  # init_distributed's timeout_s


def _object_group(timeout_s: float):
    """A gloo group over all ranks whose collectives wait up to
    ``timeout_s`` (one per distinct timeout, created on first use; every rank
    reaches it through the same calls, so creation stays in step)."""
    import torch.distributed as dist

    key = float(timeout_s)
    group = _object_groups.get(key)
    if group is None:
        group = dist.new_group(backend="gloo", timeout=timedelta(seconds=key))
        _object_groups[key] = group
    return group


def barrier(timeout_s: float | None = None) -> None:
    """Wait for every rank. ``timeout_s``: wait that long instead of the
    training collective timeout (runs on a gloo group of its own)."""
    import torch.distributed as dist

    if not is_initialized():
        return
    if timeout_s is None:
        dist.barrier()
    else:
        dist.barrier(group=_object_group(timeout_s))


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


def gather_to_main(obj, timeout_s: float = 7200.0):
    """Every rank's ``obj`` as a list on rank 0 (in rank order); ``None`` on
    other ranks. Runs on a gloo group with ``timeout_s`` (the run file's
    ``dist.eval_timeout_s``), never on NCCL, so large prediction lists stay
    in host memory."""
    import torch.distributed as dist

    if not is_initialized() or dist.get_world_size() == 1:
        return [obj]
    main = dist.get_rank() == 0
    out = [None] * dist.get_world_size() if main else None
    dist.gather_object(obj, out, dst=0, group=_object_group(timeout_s))
    return out


def share_from_main(obj, timeout_s: float = 7200.0):
    """Rank 0's ``obj`` on every rank (the others pass anything, e.g.
    ``None``). The other ranks wait up to ``timeout_s`` on a gloo group of
    that timeout, so rank 0 may spend longer than the training collective
    timeout computing ``obj`` (metrics) before calling this."""
    import torch.distributed as dist

    if not is_initialized() or dist.get_world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0, group=_object_group(timeout_s))
    return holder[0]


def max_over_ranks(values: list[int]) -> list[int]:
    """The element-wise maximum of ``values`` over all ranks (a collective:
    every rank must call it). For stop decisions that must be taken at the
    same iteration everywhere (a signal seen by one rank first, a non-finite
    loss on one rank's batch); runs on gloo, so it costs no GPU
    synchronisation."""
    import torch
    import torch.distributed as dist

    if not is_initialized() or dist.get_world_size() == 1:
        return [int(v) for v in values]
    t = torch.tensor([int(v) for v in values], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_object_group(_train_timeout_s))
    return t.tolist()


def any_rank(flag: bool) -> bool:
    """``True`` on every rank when ``flag`` is true on at least one."""
    return bool(max_over_ranks([int(bool(flag))])[0])


class RankFailure(DetcoreError):
    """Another rank failed, or stopped responding, in a step every rank takes
    together (see :func:`wait_for_ranks`)."""


_arrivals = 0  # wait_for_ranks calls so far: the same count on every rank


def wait_for_ranks(
    what: str,
    timeout_s: float,
    *,
    failed: str | None = None,
    check_stop: Callable[[], None] | None = None,
) -> None:
    """A barrier that says who is missing. Every rank marks in the
    rendezvous store that it reached the end of ``what`` (or, with
    ``failed`` = its error, that it failed there, and returns at once) and
    waits for the others up to ``timeout_s``, polling, so that a signal is
    handled while waiting (``check_stop()`` may raise to stop).

    Raises :class:`RankFailure` naming the first rank that failed (at once,
    instead of waiting for a collective's timeout) or that did not arrive in
    time (a hung rank, which a gloo/NCCL timeout would report as this rank's
    own error)."""
    global _arrivals
    if not is_initialized() or get_world_size() == 1:
        return
    from torch.distributed.distributed_c10d import _get_default_store

    _arrivals += 1
    store = _get_default_store()
    rank, world = get_rank(), get_world_size()
    keys = [f"detcore/arrived/{_arrivals}/{r}" for r in range(world)]
    store.set(keys[rank], failed or "")
    if failed is not None:
        return  # this rank reports its own error
    deadline = time.monotonic() + timeout_s
    while not store.check(keys):
        if check_stop is not None:
            check_stop()
        if time.monotonic() > deadline:
            missing = [r for r, k in enumerate(keys) if not store.check([k])]
            others = f" (and rank {', '.join(map(str, missing[1:]))})" if len(missing) > 1 else ""
            raise RankFailure(
                f"rank {missing[0]} of {world} hung{others}: it did not finish {what} within {timeout_s:g} s "
                f"(dist.eval_timeout_s), while rank {rank} did. Its worker log shows where it stopped; raise "
                f"dist.eval_timeout_s if that rank is only slower."
            )
        time.sleep(0.1)
    for r, key in enumerate(keys):
        error = store.get(key).decode()
        if error:
            raise RankFailure(f"stopped because rank {r} of {world} failed during {what}: {error}")


def cleanup() -> None:
    import torch.distributed as dist

    if is_initialized():
        dist.destroy_process_group()
    _object_groups.clear()
