"""Resume cost: time from start to the first trained iteration after
``--resume``, for a checkpoint early in an epoch and one late in it.

One epoch of ``--images`` images (``--images / 2`` batches) is trained to
iteration ``--early`` and, continuing from there, to ``--late``; both
checkpoints are genuine. Each is then resumed ``--rounds`` times
(alternating) in this process, and the time from calling the runner to the
end of the first trained iteration is measured (setup, checkpoint loading
and the sampler positioning included). detcore positions the sampler by
index, so the two figures should be the same; for comparison the script
also measures how long loading the skipped batches would take, which is
what a resume that replays the data loader pays first.

    python benchmarks/resume.py
    python benchmarks/resume.py --images 4000 --late 1900 --size 128

Trains the runner tests' run (tests/runner_plugins/runner_testutil.py: a
small test detector; the model is not what is measured) and stops it with
``detcore.testing.StopAt``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from detcore import hookimpl
from detcore.testing import StopAt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "runner_plugins"))

from runner_testutil import write_run  # noqa: E402


class FirstIter:
    """Stops after the first trained iteration and records when it ended."""

    def __init__(self):
        self.t = None

    @hookimpl
    def detcore_after_train_iter(self, runner, iteration, losses):
        if self.t is None:
            self.t = time.perf_counter()
            runner.stop_training = True


def train(run_file: Path, work_dir: Path, hook, resume: str | None = None) -> None:
    from detcore.engine.train import train as run_train
    from detcore.runfile import load_run

    run = load_run(run_file, [f"work_dir = '{work_dir}'"])
    run.pm.register(hook, name="bench-hook")
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        status = run_train(run, resume=resume)
    assert status == 0, status


def time_to_first_iter(run_file: Path, work_dir: Path, checkpoint: Path) -> float:
    hook = FirstIter()
    t0 = time.perf_counter()
    train(run_file, work_dir, hook, resume=str(checkpoint))
    return hook.t - t0


def replay_cost(run_file: Path, batches: int) -> tuple[float, int]:
    """Seconds to load ``batches`` batches through the training loader, as a
    replaying resume would (measured on up to 200 batches, extrapolated)."""
    from detcore.data.loader import build_train_loader
    from detcore.runfile import load_run

    run = load_run(run_file)
    ds = run.catalog.build("dataset", run.cfg.data.train, path="data.train")
    loader = build_train_loader(ds, batch_size=run.cfg.data.batch_size, workers=run.cfg.data.workers, seed=0)
    n = min(batches, 200)
    t0 = time.perf_counter()
    for i, _ in enumerate(loader):
        if i + 1 == n:
            break
    return (time.perf_counter() - t0) * batches / n, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--early", type=int, default=10)
    p.add_argument("--late", type=int, default=900)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if not args.early < args.late < args.images // 2:
        p.error("need early < late < images / 2 (one epoch)")

    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="detcore-resume-"))
    data = {"workers": args.workers, "train": {"num_images": args.images, "image_size": args.size}}
    run_file = write_run(tmp, name="resume.toml", train={"max_epochs": 1, "log_interval": 50}, data=data)
    t = time.perf_counter()
    train(run_file, tmp / "prep", StopAt(args.early))
    early = tmp / "prep" / f"iter_{args.early}.pth"
    train(run_file, tmp / "prep", StopAt(args.late), resume=str(early))
    late = tmp / "prep" / f"iter_{args.late}.pth"
    print(f"prepared checkpoints at iterations {args.early} and {args.late} of {args.images // 2} "
          f"in {time.perf_counter() - t:.1f}s", flush=True)
    times = {"early": [], "late": []}
    for r in range(args.rounds):
        times["early"].append(time_to_first_iter(run_file, tmp / f"e{r}", early))
        times["late"].append(time_to_first_iter(run_file, tmp / f"l{r}", late))
        print(f"round {r + 1}: early {times['early'][-1]:.3f}s, late {times['late'][-1]:.3f}s", flush=True)
    e, late_t = statistics.median(times["early"]), statistics.median(times["late"])
    replay, measured = replay_cost(run_file, args.late)
    print(f"time to first trained iteration after --resume ({args.images}x{args.size}px images, batch 2, "
          f"{args.workers} workers; medians of {args.rounds}):")
    print(f"  resume at iteration {args.early:>6}: {e:.3f} s")
    print(f"  resume at iteration {args.late:>6}: {late_t:.3f} s   (late / early = {late_t / e:.2f})")
    print(f"  loading the {args.late} skipped batches instead (a replaying resume) would take about "
          f"{replay:.1f} s first (measured on {measured} batches)")


if __name__ == "__main__":
    main()
