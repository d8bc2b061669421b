"""Runner overhead: ``detcore train`` vs a bare hand-written PyTorch loop.

Both train the same detector (built from the same table, same seed) on the
same synthetic data with the same batch size, thread count, optimizer and
number of iterations, in this one process, alternating (bare, detcore, bare,
detcore, ...) so machine load affects both alike; the medians and the best
round of each are compared. Throughput is measured
after ``--warmup`` iterations, data loading included; the detcore run
logs every ``--log-interval`` iterations and writes a checkpoint half-way
through the measured window (its bookkeeping is what is being measured).

    python benchmarks/overhead.py                      # FCOS, tiny backbone, CPU
    python benchmarks/overhead.py --device cuda --size 256 --batch 8 \
        --model '{ type = "fcos", num_classes = 3, backbone = { type = "resnet", depth = 18 }, neck = { type = "fpn", out_channels = 128, extra = "p6p7" }, min_size = 256, max_size = 256 }'

Prints images/s of both and the ratio (target: detcore >= 0.97 x bare), by
wall time and, on CPU without loader workers, by process CPU time (which
other processes on a busy machine disturb much less).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from detcore import hookimpl

DEFAULT_MODEL = (
    '{ type = "fcos", num_classes = 3, backbone = { type = "tiny", width = 16 }, '
    'neck = { type = "fpn", out_channels = 32, extra = "p6p7" }, min_size = 96, max_size = 96 }'
)

RUN = """\
seed = 0
device = "{device}"
model = {model}

[data]
batch_size = {batch}
workers = {workers}
aspect_ratio_grouping = false

[data.train]
type = "synthetic"
num_images = {num_images}
image_size = {size}
max_objects = 4

[optimizer]
type = "sgd"
lr = 0.01
momentum = 0.9
weight_decay = 1e-4

[lr_schedule]
type = "constant"
warmup = "none"

[train]
max_iters = {iters}
log_interval = {log_interval}

[checkpoint]
interval = {ckpt_interval}
keep = 1
"""


class Timer:
    """A runner hook recording when iteration ``start`` and the last end."""

    def __init__(self, start: int):
        self.start = start
        self.t0 = self.t1 = self.c0 = self.c1 = None

    @hookimpl
    def detcore_after_train_iter(self, runner, iteration, losses):
        if runner.iter == self.start:
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        elif runner.iter == runner.max_iters:
            self.t1, self.c1 = time.perf_counter(), time.process_time()


def bare_loop(run, args) -> tuple[float, float]:
    """(images/s by wall time, images/s by process CPU time) of a plain loop: DataLoader -> float on device -> forward ->
    sum of losses -> .item() (as torchvision's reference script) -> backward
    -> step."""
    import torch

    from detcore.data.loader import collate

    torch.manual_seed(0)
    model = run.catalog.build("detector", run.cfg.model, path="model")
    dataset = run.catalog.build("dataset", run.cfg.data.train, path="data.train")
    device = torch.device(args.device)
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers, collate_fn=collate, drop_last=False
    )
    it, t0 = 0, None
    while it < args.iters:
        for images, targets in loader:
            imgs = [i.to(device).float().div_(255) for i in images]
            tgts = [
                {"boxes": t["boxes"].as_subclass(torch.Tensor).to(device).float(), "labels": t["labels"].to(device)}
                for t in targets
            ]
            losses = model(imgs, tgts)
            loss = sum(losses.values())
            loss.item()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            it += 1
            if it == args.warmup:
                _sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
            if it == args.iters:
                break
    _sync(device)
    images = (args.iters - args.warmup) * args.batch
    return images / (time.perf_counter() - t0), images / (time.process_time() - c0)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def detcore_loop(run_file: Path, work_dir: Path, args) -> tuple[float, float]:
    from detcore.engine.train import train
    from detcore.runfile import load_run

    run = load_run(run_file, [f"work_dir = '{work_dir}'"])
    timer = Timer(args.warmup)
    run.pm.register(timer, name="bench-timer")
    # Console lines go to /dev/null; the log file and scalars.jsonl are written as usual.
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        status = train(run)
    assert status == 0, status
    images = (args.iters - args.warmup) * args.batch
    return images / (timer.t1 - timer.t0), images / (timer.c1 - timer.c0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="the [model] table as an inline TOML table")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-interval", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians and bests are reported")
    args = p.parse_args()

    import torch

    from detcore.runfile import load_run

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="detcore-overhead-"))
    run_file = tmp / "overhead.toml"
    run_file.write_text(
        RUN.format(
            device=args.device, model=args.model, batch=args.batch, workers=args.workers, size=args.size,
            num_images=args.batch * 25, iters=args.iters, log_interval=args.log_interval,
            ckpt_interval=args.warmup + (args.iters - args.warmup) // 2,
        )
    )
    run = load_run(run_file)
    bare, det = [], []
    for r in range(args.rounds):
        bare.append(bare_loop(run, args))
        det.append(detcore_loop(run_file, tmp / f"w{r}", args))
        print(f"round {r + 1}: bare {bare[-1][0]:.2f} img/s ({bare[-1][1]:.2f} by CPU time), "
              f"detcore {det[-1][0]:.2f} img/s ({det[-1][1]:.2f} by CPU time)", flush=True)
    print(
        f"model {run.cfg.model['type']}, {args.size}px, batch {args.batch}, {args.iters - args.warmup} measured "
        f"iterations, {args.threads} thread(s), {args.workers} loader workers, device {args.device}, {args.rounds} rounds"
    )
    for i, clock in enumerate(("wall time", "process CPU time")):
        if i == 1 and (args.device != "cpu" or args.workers):
            break  # CPU time says nothing about GPU work or worker processes
        b, d = [x[i] for x in bare], [x[i] for x in det]
        mb, md = statistics.median(b), statistics.median(d)
        print(f"by {clock}:")
        print(f"  bare loop:     {mb:8.2f} images/s median, {max(b):8.2f} best")
        print(f"  detcore train: {md:8.2f} images/s median, {max(d):8.2f} best")
        print(f"  ratio detcore/bare: {md / mb:.3f} of medians, {max(d) / max(b):.3f} of bests (target >= 0.97)")


if __name__ == "__main__":
    main()
