"""``detcore benchmark RUN.toml [--checkpoint CKPT] [--device DEV]``:
inference images/s and latency percentiles after a warm-up, and the training
step time (with its data-loading share), on the chosen device."""

from __future__ import annotations

import argparse
import json
import time

from detcore.cli.config import add_runfile_args, load_from_args
from detcore.cli.inference import add_device_arg
from detcore.errors import RunFileError, UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    add_runfile_args(parser)
    parser.add_argument("--checkpoint", metavar="CKPT", help="weights to load (default: the model as initialised)")
    add_device_arg(parser)
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default 3)")
    parser.add_argument("--iters", type=int, default=20, help="timed inference batches (default 20)")
    parser.add_argument("--batch-size", type=int, help="inference batch size (default 1: latency per image)")
    parser.add_argument("--train-iters", type=int, default=10, help="timed training steps (default 10; 0: skip)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method)."""
    s = sorted(values)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_inference(model, images, device, *, warmup: int, iters: int, batch_size: int) -> dict:
    import torch

    from detcore.engine.batches import image_to_float

    model.eval()
    batches = [images[(i * batch_size) % len(images):][:batch_size] for i in range(warmup + iters)]
    batches = [b if len(b) == batch_size else (b + images)[:batch_size] for b in batches]
    latencies = []
    with torch.inference_mode():
        for i, batch in enumerate(batches):
            t0 = time.perf_counter()
            model([image_to_float(im, device) for im in batch])
            _sync(device)
            if i >= warmup:
                latencies.append(time.perf_counter() - t0)
    total = sum(latencies)
    return {
        "batch_size": batch_size,
        "batches": len(latencies),
        "images_per_s": batch_size * len(latencies) / total,
        "latency_ms": {f"p{q}": percentile(latencies, q) * 1000 for q in (50, 90, 99)},
        "latency_mean_ms": total / len(latencies) * 1000,
    }


def bench_training(model, loader, device, *, warmup: int, iters: int, lr: float) -> dict:
    import torch

    from detcore.engine.batches import batch_to_device

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    # Plain SGD: the step cost of the run file's optimizer differs by a few
    # percent at most; what matters here is forward + backward + data.
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    step_times, data_times = [], []
    it = iter(loader)
    n = 0
    while n < warmup + iters:
        t0 = time.perf_counter()
        try:
            images, targets = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        images, targets = batch_to_device(images, targets, device)
        t1 = time.perf_counter()
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        t2 = time.perf_counter()
        if n >= warmup:
            step_times.append(t2 - t0)
            data_times.append(t1 - t0)
        n += 1
    batch = loader.batch_size
    mean = sum(step_times) / len(step_times)
    return {
        "batch_size": batch,
        "steps": len(step_times),
        "step_ms": mean * 1000,
        "step_p90_ms": percentile(step_times, 90) * 1000,
        "data_ms": sum(data_times) / len(data_times) * 1000,
        "images_per_s": batch / mean,
    }


def run(args) -> int:
    import torch

    from detcore.cli.inference import pick_device
    from detcore.data.loader import collate
    from detcore.engine.inference import build_dataset, build_model, load_model

    if args.iters < 1 or args.warmup < 0 or args.train_iters < 0:
        raise UsageError("--iters must be >= 1, --warmup and --train-iters >= 0")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_from_args(args)
    cfg = loaded.cfg
    device = pick_device(args, loaded)
    torch.manual_seed(cfg.seed or 0)
    if args.checkpoint:
        model, _ = load_model(loaded, args.checkpoint, device)
    else:
        model = build_model(loaded).to(device)
    report: dict = {"device": str(device), "threads": torch.get_num_threads(), "model": cfg.model.get("type")}

    split, dataset = None, None
    for s in ("test", "val", "train"):
        if getattr(cfg.data, s) is not None:
            split, dataset = build_dataset(loaded, s)
            break
    if dataset is None or len(dataset) == 0:
        raise RunFileError("the run file has no dataset to take images from", file=str(loaded.path), key="data")
    n_images = min(len(dataset), 32)
    images = [dataset[i][0] for i in range(n_images)]
    h, w = images[0].shape[-2:]
    report["inference"] = {
        "split": split,
        "image_size": [int(h), int(w)],
        **bench_inference(model, images, device, warmup=args.warmup, iters=args.iters, batch_size=args.batch_size or 1),
    }
    if args.train_iters and cfg.data.train is not None:
        _, train_ds = build_dataset(loaded, "train")
        loader = torch.utils.data.DataLoader(
            train_ds,
            batch_size=cfg.data.batch_size,
            shuffle=True,
            num_workers=cfg.data.workers,
            collate_fn=collate,
            pin_memory=device.type == "cuda",
            persistent_workers=cfg.data.workers > 0,
        )
        report["training"] = bench_training(
            model, loader, device, warmup=max(1, args.warmup), iters=args.train_iters, lr=cfg.optimizer.lr
        )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    inf = report["inference"]
    lat = inf["latency_ms"]
    print(f"detcore benchmark: {report['model']} on {report['device']} ({report['threads']} CPU thread(s))")
    print(
        f"  inference ({inf['split']} images {inf['image_size'][0]}x{inf['image_size'][1]}, batch "
        f"{inf['batch_size']}, {args.warmup} warm-up + {inf['batches']} timed): "
        f"{inf['images_per_s']:.2f} images/s; latency p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, "
        f"p99 {lat['p99']:.1f} ms"
    )
    if "training" in report:
        tr = report["training"]
        print(
            f"  training (batch {tr['batch_size']}, {tr['steps']} timed steps): {tr['step_ms']:.1f} ms/step "
            f"(p90 {tr['step_p90_ms']:.1f} ms), data {tr['data_ms']:.1f} ms/step, {tr['images_per_s']:.2f} images/s"
        )
    return 0
