"""torch.distributed helpers. Every function works unchanged in a single
process (world size 1), so the runner calls them unconditionally.

How processes find each other:

* ``torchrun`` (or ``detcore train --nproc N``, which starts torchrun's own
  elastic agent in-process): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR`` and ``MASTER_PORT`` come from the launcher.
* Slurm (``srun detcore train ...``): ``SLURM_PROCID``, ``SLURM_NTASKS``,
  ``SLURM_LOCALID`` and the step's node list; the first node of the list is
  the master, the port is ``MASTER_PORT`` or derived from the job id.

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
import re
import socket
import sys
from datetime import timedelta

import attrs

from detcore.errors import DetcoreError

LAUNCHERS = ("none", "torchrun", "slurm")
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
    return "none"


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


def _resolve_device(device: str, local_rank: int, distributed: bool):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DetcoreError(
                f'device {device!r} was asked for, but CUDA is not available; use device = "cpu"'
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


def _resolve_backend(backend: str, dev) -> str:
    import torch.distributed as dist

    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" and dist.is_nccl_available() else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise DetcoreError(
            f'dist.backend = "nccl" needs CUDA devices, but the device is {dev}; use backend "gloo" (or "auto")'
        )
    return backend


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
    ``slurm``: those variables are computed from Slurm's (:func:`slurm_env`)
    and exported, then ``env://``. The backend ``auto`` is nccl on CUDA and
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
        return DistInfo(), _resolve_device(device, 0, distributed=False)

    if launcher == "slurm":
        os.environ.update(slurm_env())
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
    dev = _resolve_device(device, local_rank, distributed=True)
    backend = _resolve_backend(backend, dev)
    if not is_initialized():
        kwargs = {"device_id": dev} if backend == "nccl" else {}
        try:
            start = timedelta(seconds=max(timeout_s, startup_timeout_s))
            dist.init_process_group(backend, init_method="env://", timeout=start, **kwargs)
        except Exception as exc:
            # A taken MASTER_PORT surfaces here (Slurm, hand-set torchrun ports).
            if _is_addr_in_use(exc):
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
    traceback see ..."."""
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

    sys.excepthook = hook


def _is_addr_in_use(exc: BaseException) -> bool:
    text = f"{exc} {exc.__cause__ or ''}".lower()
    return "address already in use" in text or "eaddrinuse" in text


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


def cleanup() -> None:
    import torch.distributed as dist

    if is_initialized():
        dist.destroy_process_group()
    _object_groups.clear()


# --------------------------------------------------------------------------
# detcore train --nproc N
# --------------------------------------------------------------------------


class PortInUseError(DetcoreError):
    """An explicitly configured rendezvous port is taken."""


def port_in_use_message(port: int) -> str:
    return (
        f"port {port} (dist.port) is already in use on this machine, probably by another job; "
        f"choose another with --set dist.port=<free port>, or remove dist.port to let detcore pick a free one"
    )


def check_port_free(port: int, host: str = "") -> None:
    """Raise :class:`PortInUseError` (a one-line message naming the port and
    the fix) when nothing can listen on ``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # No SO_REUSEADDR: an active listener on the port must make this fail.
        try:
            s.bind((host, port))
        except OSError:
            raise PortInUseError(port_in_use_message(port)) from None


def free_port() -> int:
    """A port free at the time of the call (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def strip_launch_args(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` and ``--launcher X`` (the workers are
    started by the launcher and detect it themselves)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--nproc", "--launcher"):
            skip = True
            continue
        if a.startswith(("--nproc=", "--launcher=")):
            continue
        out.append(a)
    return out


# Messages of the ranks that fail only because a peer went away first.
_SECONDARY = (
    "connection closed by peer",
    # gloo's pair errors end with this advice when the peer process died.
    "check the logs of the remote worker",
    "gloo/transport",
    "connection reset by peer",
    "broken pipe",
    "distbackenderror",
    "ncclerror",
    "nccl error",
    "watchdog",
    "socket timeout",
    "timed out",
    "sigterm",
)


def _failure_summary(failure, log_dir: str) -> tuple[str, bool]:
    """``(error text, secondary)`` for one failed worker: the exception its
    excepthook recorded, else the error block at the end of its stderr
    (detcore's one-paragraph error, an exception's last line), or the signal
    that killed it. ``secondary``: the rank most likely failed only because
    a peer went away first."""
    import glob
    import signal

    if failure.exitcode < 0:
        try:
            name = signal.Signals(-failure.exitcode).name
        except ValueError:
            name = f"signal {-failure.exitcode}"
        return f"killed by {name}", name in ("SIGTERM", "SIGINT")
    text = ""
    data = getattr(failure, "error_file_data", None) or {}
    if isinstance(data.get("message"), dict):
        # Written by the worker's excepthook (see _report_uncaught_to_launcher).
        text = str(data["message"].get("message") or "")
    if not text:
        # DefaultLogsSpecs layout: <log_dir>/<run id>_<x>/attempt_<n>/<local rank>/stderr.log
        pattern = os.path.join(
            glob.escape(log_dir), "*", "attempt_*", str(failure.local_rank), "stderr.log"
        )
        found = sorted(glob.glob(pattern))
        try:
            with open(found[-1] if found else os.devnull, errors="replace") as fh:
                lines = [ln.rstrip() for ln in fh.read().splitlines() if ln.strip()]
        except OSError:
            lines = []
        for i in range(len(lines) - 1, -1, -1):
            if lines[i].startswith("detcore: error:"):
                text = " ".join(lines[i:])[len("detcore: error:") :]
                break
        if not text and lines:
            text = re.sub(r"^(\[rank\d+\]:\s*)+", "", lines[-1])  # torch's excepthook prefix
    text = " ".join(text.split())[:1000] or failure.message or "no error output"
    return text, any(s in text.lower() for s in _SECONDARY)


def _exit_code(exitcode: int) -> int:
    return 128 - exitcode if exitcode < 0 else (exitcode or 1)


def launch_local(
    nproc: int, argv: list[str], port: int | None = None, *, log_dir: str | None = None
) -> int:
    """Run ``detcore ARGV`` in ``nproc`` local worker processes and return the
    exit status (0 when every rank succeeded).

    Called by ``detcore train RUN --nproc N`` with ``argv`` = the command line
    after ``detcore`` (``["train", "run.toml", ...]``; ``--nproc``/``--launcher``
    are removed here). Workers are started by torch.distributed's elastic
    agent (what torchrun runs) with a c10d rendezvous on 127.0.0.1: on a free
    port picked atomically by the OS when ``port`` is ``None`` (so two jobs
    started at once never clash), else on ``port`` (``dist.port``), which
    must be free: a taken one raises :class:`PortInUseError` naming it.

    Each worker finds that command line (``--nproc N`` included) as JSON in
    ``DETCORE_LAUNCH_ARGV``, e.g. for a "resume with" hint.

    Worker output goes to the console prefixed ``[rankN]:`` and to log files
    under ``log_dir`` (a temporary folder, removed after success). When a
    rank fails, the agent stops the others and this prints one line naming
    the failing rank and its error, and returns its exit status.
    """
    import json
    import logging
    import shutil
    import tempfile
    import uuid

    if nproc < 1:
        raise DetcoreError(f"--nproc must be at least 1, got {nproc}")
    if port is not None:
        check_port_free(port)

    from torch.distributed import DistNetworkError
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    own_dir = log_dir is None
    log_dir = tempfile.mkdtemp(prefix="detcore-nproc-") if own_dir else log_dir
    # The workers inherit this process's environment (the agent has no
    # per-launch variables); what is set here is put back afterwards.
    saved_env = {
        k: os.environ.get(k)
        for k in ("OMP_NUM_THREADS", "DETCORE_LAUNCH_ARGV", "TORCHELASTIC_SIGNALS_TO_HANDLE")
    }
    if "OMP_NUM_THREADS" not in os.environ:
        # torchrun's rule, but dividing the cores instead of using one each.
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        # Free port: torchrun --standalone's c10d rendezvous on port 0, the
        # workers' store on another OS-chosen port. Explicit port: a static
        # rendezvous, so that MASTER_PORT is exactly dist.port.
        rdzv_backend="c10d" if port is None else "static",
        rdzv_endpoint=f"127.0.0.1:{port or 0}",
        rdzv_configs={"is_host": True} if port is None else {"rank": 0},
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
        local_addr="127.0.0.1",
        logs_specs=DefaultLogsSpecs(log_dir=log_dir, tee=Std.ALL),
        log_line_prefix_template="[rank${rank}]:",
    )
    # The agent's own INFO/WARNING chatter (rendezvous details, "Stopping
    # worker group") would bury the workers' output; its failure report is
    # replaced by the one line printed below.
    # (Each elastic module sets its logger's level itself, so every one of
    # them is quietened, not just the parent.)
    quiet = {
        name: lg.level
        for name, lg in logging.root.manager.loggerDict.items()
        if name.startswith("torch.distributed.elastic") and isinstance(lg, logging.Logger)
    }
    for name in quiet:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # For the workers' "resume with: detcore ..." hint: the command to type
    # again is the launcher's (with --nproc), not the worker's.
    os.environ["DETCORE_LAUNCH_ARGV"] = json.dumps(
        [*strip_launch_args(list(argv)), "--nproc", str(nproc)]
    )
    try:
        elastic_launch(config, sys.executable)(
            "-u", "-m", "detcore", *strip_launch_args(list(argv))
        )
    except ChildFailedError as exc:
        summaries = []
        for rank, failure in exc.failures.items():
            text, secondary = _failure_summary(failure, log_dir)
            summaries.append((secondary, failure.timestamp, rank, failure, text))
        secondary, _, rank, failure, text = min(summaries, key=lambda s: s[:3])
        others = ", ".join(str(s[2]) for s in summaries if s[2] != rank)
        also = f" (rank {others} failed too)" if others else ""
        print(
            f"detcore: error: rank {rank} of {nproc} failed with exit code {failure.exitcode}: {text}{also}; "
            f"the other ranks were stopped. Worker logs: {log_dir}",
            file=sys.stderr,
            flush=True,
        )
        return _exit_code(failure.exitcode)
    except (RendezvousError, DistNetworkError) as exc:
        # Taken between check_port_free and the store's bind (another job).
        if port is not None and _is_addr_in_use(exc):
            raise PortInUseError(port_in_use_message(port)) from None
        raise DetcoreError(
            f"the local workers could not meet (rendezvous on 127.0.0.1 failed): {exc}"
        ) from None
    except SignalException as exc:
        # The agent has passed the signal on to the workers (the runner
        # saves a checkpoint on SIGTERM/SIGINT) and stopped them.
        print(f"detcore: interrupted by {exc.sigval.name}; worker logs: {log_dir}", file=sys.stderr)
        return 128 + int(exc.sigval)
    except KeyboardInterrupt:
        print("detcore: interrupted", file=sys.stderr)
        return 130
    finally:
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if own_dir:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0
