"""Test-only plugin: a ``dist-probe`` command that exercises
detcore.engine.dist in real worker processes (started by torchrun or by
``--nproc``), and writes what each rank saw to ``--out/rank<N>.json``.

Loaded with ``-p detcore_dist_probe`` and this folder on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from detcore import hookimpl
from detcore.catalog import Command


def configure(parser) -> None:
    parser.add_argument("--out", required=True)
    parser.add_argument("--launcher", choices=["none", "torchrun", "slurm", "mpi"])
    parser.add_argument("--nproc", type=int)
    parser.add_argument("--port", type=int)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    parser.add_argument("--eval-timeout-s", type=float, default=60.0)
    parser.add_argument(
        "--slow", type=float, default=0.0, help="rank 0 works this long before sharing"
    )
    parser.add_argument(
        "--plain-share", action="store_true", help="share on the default group (negative control)"
    )
    parser.add_argument(
        "--fail-rank", type=int, help="this rank raises while the others wait in a barrier"
    )
    parser.add_argument("--kill-rank", type=int, help="this rank kills itself with SIGKILL")


def run(args) -> int:
    from detcore.engine import dist

    if args.nproc:
        return dist.launch_local(args.nproc, sys.argv[1:], port=args.port)
    info, device = dist.init_distributed(args.launcher, "auto", "cpu", timeout_s=args.timeout_s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rec = {
        "rank": info.rank,
        "world_size": info.world_size,
        "local_rank": info.local_rank,
        "launcher": info.launcher,
        "device": str(device),
        "master_port": os.environ.get("MASTER_PORT"),
        "backend": __import__("torch.distributed").distributed.get_backend()
        if dist.is_initialized()
        else None,
    }
    if args.fail_rank is not None:
        if info.rank == args.fail_rank:
            time.sleep(0.5)
            raise RuntimeError(f"probe failure on rank {info.rank}")
        dist.barrier()
    if args.kill_rank is not None:
        if info.rank == args.kill_rank:
            import signal

            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGKILL)
        dist.barrier()
    # Uneven payloads: rank r sends r + 1 items.
    gathered = dist.gather_to_main([info.rank] * (info.rank + 1), timeout_s=args.eval_timeout_s)
    rec["gathered"] = gathered
    result = None
    if info.is_main:
        time.sleep(args.slow)
        result = {"total": sum(len(g) for g in gathered), "ranks": [g[0] for g in gathered]}
    t0 = time.monotonic()
    if args.plain_share:
        rec["shared"] = dist.broadcast_object(result)
    else:
        rec["shared"] = dist.share_from_main(result, timeout_s=args.eval_timeout_s)
    rec["waited_s"] = time.monotonic() - t0
    # A training-style collective after the long wait still works.
    rec["after"] = dist.all_gather_object(info.rank)
    rec["any"] = [dist.any_rank(info.rank == 1), dist.any_rank(False)]
    dist.barrier()
    (out / f"rank{info.rank}.json").write_text(json.dumps(rec))
    dist.cleanup()
    return 0


@hookimpl
def detcore_commands():
    return {"dist-probe": Command("test-only: probe detcore.engine.dist", configure, run)}
