"""Where this process stands, from its environment alone (no process group
needed): which launcher started it (torchrun, Slurm, none), the ``env://``
variables computed from Slurm's, and the device and backend to use.

How processes find each other:

* ``torchrun`` (or ``detcore train --nproc N``, which starts torchrun's own
  elastic agent in-process): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR`` and ``MASTER_PORT`` come from the launcher.
* Slurm (``srun detcore train ...``): ``SLURM_PROCID``, ``SLURM_NTASKS``,
  ``SLURM_LOCALID`` and the step's node list; the first node of the list is
  the master, the port is ``MASTER_PORT`` or derived from the job id.
* MPI (``mpirun -np N detcore train ...``): Open MPI's
  ``OMPI_COMM_WORLD_RANK``/``_SIZE``/``_LOCAL_RANK`` or MPICH's (Hydra,
  also Intel MPI) ``PMI_RANK``/``PMI_SIZE``/``MPI_LOCALRANKID``; MPI does not
  say which host rank 0 runs on, so ``MASTER_ADDR`` is 127.0.0.1 when every
  rank is on one node and must be exported otherwise; the port is
  ``MASTER_PORT`` or 29500.
"""

from __future__ import annotations

import os
import re

import attrs

from detcore.errors import DetcoreError

__all__ = [
    "DistInfo",
    "LAUNCHERS",
    "detect_launcher",
    "mpi_env",
    "resolve_backend",
    "resolve_device",
    "slurm_env",
    "slurm_first_host",
    "slurm_master_port",
]

LAUNCHERS = ("none", "torchrun", "slurm", "mpi")
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# Slurm job ids map into 10000..29999: below Linux's ephemeral range
# (32768+), so a derived port rarely collides with a client socket, and two
# jobs sharing a node get different ports.
SLURM_PORT_BASE = 10000
SLURM_PORT_SPAN = 20000


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


# --------------------------------------------------------------------------
# Launcher detection and environment
# --------------------------------------------------------------------------


def launcher_variable(name: str) -> bool:
    """Whether ``name`` is an environment variable by which a launcher
    (torchrun, Slurm, MPI) tells a process it is one rank of a job: what a
    tool starting an independent ``detcore`` must not pass on."""
    return name in (*TORCHRUN_VARS, "LOCAL_RANK", "LOCAL_WORLD_SIZE") or name.startswith(
        ("TORCHELASTIC_", "SLURM_", "OMPI_", "PMI_", "MPI_LOCAL")
    )


def detect_launcher(env: dict | None = None) -> str:
    """``torchrun`` when torchrun's variables are set, ``slurm`` inside an
    ``srun`` step with more than one task, else ``none``.

    An ``sbatch`` script itself (outside ``srun``) carries ``SLURM_NTASKS``
    of the whole allocation but no step id; it is ``none``, so running
    ``detcore train`` there without ``srun`` trains in one process instead
    of waiting for ranks that never start.
    """
    env = os.environ if env is None else env
    if "TORCHELASTIC_RUN_ID" in env or ("RANK" in env and "WORLD_SIZE" in env):
        return "torchrun"
    in_step = "SLURM_STEP_ID" in env or "SLURM_STEPID" in env
    if in_step and "SLURM_PROCID" in env and _slurm_ntasks(env) > 1:
        return "slurm"
    mpi = _mpi_vars(env)
    if mpi is not None and int(mpi[1]) > 1:
        return "mpi"
    return "none"


# (rank, world size, local rank, local world size) variables of each MPI
# implementation, Open MPI first (MPICH's PMI_* may also appear under it).
_MPI_VARS = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
)


def _mpi_vars(env) -> tuple[str, str, str | None, str | None] | None:
    for rank, size, local, local_size in _MPI_VARS:
        if rank in env and size in env:
            return env[rank], env[size], env.get(local), env.get(local_size)
    return None


def mpi_env(env: dict | None = None) -> dict[str, str]:
    """torch.distributed's ``env://`` variables computed from Open MPI's or
    MPICH's: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and
    ``LOCAL_WORLD_SIZE``); ``MASTER_ADDR`` (unless set) 127.0.0.1 when all
    ranks share one node, an error naming the fix otherwise;
    ``MASTER_PORT`` (unless set) 29500."""
    env = os.environ if env is None else env
    found = _mpi_vars(env)
    if found is None:
        raise DetcoreError(
            "--launcher mpi, but neither Open MPI's OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE nor MPICH's "
            "PMI_RANK/PMI_SIZE is set: start the job with mpirun (e.g. 'mpirun -np 4 detcore train "
            "RUN.toml'); see docs/distributed.md"
        )
    rank, size, local, local_size = found
    if local is None:
        raise DetcoreError(
            f"--launcher mpi: rank {rank} of {size} but no local rank (OMPI_COMM_WORLD_LOCAL_RANK or "
            "MPI_LOCALRANKID); use Open MPI's or MPICH's mpirun, or torchrun"
        )
    out = {"RANK": rank, "WORLD_SIZE": size, "LOCAL_RANK": local, "LOCAL_WORLD_SIZE": local_size or "1"}
    addr = env.get("MASTER_ADDR")
    if not addr:
        if local_size is None or local_size != size:
            raise DetcoreError(
                f"--launcher mpi: the {size} ranks span several nodes and MPI does not say which host "
                "rank 0 runs on; export MASTER_ADDR=<host of rank 0> to every rank (Open MPI: "
                "'mpirun -x MASTER_ADDR=host0 ...'; MPICH: 'mpiexec -genv MASTER_ADDR host0 ...')"
            )
        addr = "127.0.0.1"
    out["MASTER_ADDR"] = addr
    out["MASTER_PORT"] = env.get("MASTER_PORT") or "29500"
    return out


def _slurm_ntasks(env) -> int:
    return int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1")


def slurm_first_host(nodelist: str) -> str:
    """The first host of a Slurm node list (``gpu[003-004,9],cpu1`` ->
    ``gpu003``), without calling ``scontrol``."""
    depth, end = 0, len(nodelist)
    for i, c in enumerate(nodelist):
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == "," and depth == 0:
            end = i
            break
    entry = nodelist[:end].strip()
    # "1-4,9" -> "1": keep the text, so zero padding ("003") survives.
    return re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split(",")[0].split("-")[0], entry)


def _scontrol_first_host(nodelist: str) -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    hosts = out.split()
    return hosts[0] if hosts else None


def slurm_master_port(job_id: str | int | None) -> int:
    """The rendezvous port of a Slurm job when ``MASTER_PORT`` is unset:
    derived from the job id so that every task of the job agrees and two
    jobs on one node differ."""
    try:
        jid = int(str(job_id).split("_")[0])
    except (TypeError, ValueError):
        return 29500
    return SLURM_PORT_BASE + jid % SLURM_PORT_SPAN


def slurm_env(env: dict | None = None) -> dict[str, str]:
    """torch.distributed's ``env://`` variables computed from Slurm's:
    ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from ``SLURM_PROCID``,
    ``SLURM_NTASKS`` (the step's task count) and ``SLURM_LOCALID``;
    ``MASTER_ADDR`` (unless set) from the first host of the step's node list
    (``scontrol show hostnames``, else parsed); ``MASTER_PORT`` (unless set)
    from the job id."""
    env = os.environ if env is None else env
    missing = [k for k in ("SLURM_PROCID", "SLURM_LOCALID") if k not in env]
    if missing:
        raise DetcoreError(
            f"--launcher slurm, but {', '.join(missing)} is not set: start the job with srun "
            "(e.g. 'srun --ntasks-per-node 4 detcore train RUN.toml'); see docs/distributed.md"
        )
    out = {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": str(_slurm_ntasks(env)),
        "LOCAL_RANK": env["SLURM_LOCALID"],
        "LOCAL_WORLD_SIZE": env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0] or "1",
    }
    addr = env.get("MASTER_ADDR")
    if not addr:
        nodelist = (
            env.get("SLURM_STEP_NODELIST")
            or env.get("SLURM_JOB_NODELIST")
            or env.get("SLURM_NODELIST")
        )
        if not nodelist:
            raise DetcoreError(
                "--launcher slurm, but neither MASTER_ADDR nor SLURM_JOB_NODELIST is set: "
                "export MASTER_ADDR=<first node> before srun"
            )
        addr = _scontrol_first_host(nodelist) or slurm_first_host(nodelist)
    out["MASTER_ADDR"] = addr
    out["MASTER_PORT"] = env.get("MASTER_PORT") or str(slurm_master_port(env.get("SLURM_JOB_ID")))
    return out


# --------------------------------------------------------------------------
# Device and backend
# --------------------------------------------------------------------------


def resolve_device(device: str, local_rank: int = 0, distributed: bool = False, *, fix: str = 'use device = "cpu"'):
    """The ``torch.device`` for a run file's (or ``--device``'s) ``device``:
    ``auto`` is CUDA when available; in a distributed run each process takes
    GPU ``LOCAL_RANK``. Asking for CUDA without it is a :class:`DetcoreError`
    ending with ``fix``."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DetcoreError(
                f"device {device!r} was asked for, but CUDA is not available; {fix}"
            )
        if distributed:
            # One GPU per process, chosen by LOCAL_RANK (an explicit index
            # would put every rank of the node on the same GPU). A process
            # that sees a single GPU (Slurm --gpus-per-task=1, or
            # CUDA_VISIBLE_DEVICES set per rank) uses that one.
            n = torch.cuda.device_count()
            if n != 1 and local_rank >= n:
                raise DetcoreError(
                    f"LOCAL_RANK {local_rank} needs GPU {local_rank}, but only {n} GPU(s) are visible: "
                    f"start at most {n} processes per node"
                )
            dev = torch.device("cuda", 0 if n == 1 else local_rank)
        if dev.index is not None:
            torch.cuda.set_device(dev)
    return dev


def resolve_backend(backend: str, dev) -> str:
    """``auto``: nccl on CUDA, else gloo; nccl without CUDA is an error."""
    import torch.distributed as dist

    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" and dist.is_nccl_available() else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise DetcoreError(
            f'dist.backend = "nccl" needs CUDA devices, but the device is {dev}; use backend "gloo" (or "auto")'
        )
    return backend
