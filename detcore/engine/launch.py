"""``detcore train RUN --nproc N``: start N local worker processes with
torch.distributed's elastic agent (what ``torchrun`` runs), report the
failing rank in one line, and check an explicit rendezvous port first."""

from __future__ import annotations

import os
import re
import socket
import sys

from detcore.errors import DetcoreError

__all__ = [
    "PortInUseError",
    "check_port_free",
    "free_port",
    "is_addr_in_use",
    "launch_local",
    "port_in_use_message",
    "strip_launch_args",
]


def is_addr_in_use(exc: BaseException) -> bool:
    text = f"{exc} {exc.__cause__ or ''}".lower()
    return "address already in use" in text or "eaddrinuse" in text


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
    # dist.RankFailure: this rank stopped because another one failed.
    "stopped because rank",
)


def _failure_summary(failure, log_dir: str) -> tuple[str, bool]:
    """``(error text, secondary)`` for one failed worker: the exception its
    excepthook recorded, else the error block at the end of its stderr
    (detcore's one-paragraph error, an exception's last line), or the signal
    that killed it. ``secondary``: the rank most likely failed only because
    a peer went away first."""
    import glob
    import signal

    text = ""
    data = getattr(failure, "error_file_data", None) or {}
    if isinstance(data.get("message"), dict):
        # Written by the worker's excepthook (see _report_uncaught_to_launcher),
        # also when the agent killed the worker while it was exiting.
        text = str(data["message"].get("message") or "")
    if not text and failure.exitcode < 0:
        try:
            name = signal.Signals(-failure.exitcode).name
        except ValueError:
            name = f"signal {-failure.exitcode}"
        return f"killed by {name}", name in ("SIGTERM", "SIGINT")
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
        if re.match(rf"rank \d+ of {nproc} hung", text):
            # dist.RankFailure from the rank that waited: the hung one is named.
            head = text.rstrip(".")
        else:
            head = f"rank {rank} of {nproc} failed with exit code {failure.exitcode}: {text}{also}"
        print(
            f"detcore: error: {head}; the other ranks were stopped. Worker logs: {log_dir}",
            file=sys.stderr,
            flush=True,
        )
        return _exit_code(failure.exitcode)
    except (RendezvousError, DistNetworkError) as exc:
        # Taken between check_port_free and the store's bind (another job).
        if port is not None and is_addr_in_use(exc):
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
