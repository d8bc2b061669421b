"""Training-step time and inference speed of the real-time DETRs from
detcore-transformers (D-FINE-S, RT-DETRv2-S) against FCOS-R50 at the same
input size, all built from their run-file tables with random weights.

    python benchmarks/detr_speed.py                       # CPU, 640 px, batch 2
    python benchmarks/detr_speed.py --device cuda --batch 8 --steps 20
    python benchmarks/detr_speed.py --size 320 --threads 1 --cpu-time   # steadier on a shared CPU

For each model: milliseconds per training step (forward with losses,
backward, AdamW update) and images per second in eval mode (no_grad, the
model's own post-processing included), each followed by its ratio to
FCOS-R50 (the baseline, measured in the same run right before: shared
machines drift). Images are square ``--size`` pixels, so every model sees
the same input: D-FINE and RT-DETRv2 resize to ``input_size = [size, size]``,
FCOS has ``min_size = max_size = size``.
"""

from __future__ import annotations

import argparse
import time

import torch


def _batch(n: int, size: int, num_classes: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=g).to(device) for _ in range(n)]
    targets = []
    for _ in range(n):
        k = 6
        xy = torch.rand(k, 2, generator=g) * (size * 0.6)
        wh = size * 0.05 + torch.rand(k, 2, generator=g) * (size * 0.3)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).clamp(max=size - 1).to(device),
                        "labels": torch.randint(0, num_classes, (k,), generator=g).to(device)})
    return images, targets


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step_s(model, batch, steps: int, device, clock=time.perf_counter) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    images, targets = batch
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps
            _sync(device)
            start = clock()
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return (clock() - start) / steps


@torch.no_grad()
def images_per_s(model, batch, steps: int, device, clock=time.perf_counter) -> float:
    model.eval()
    images, _ = batch
    for i in range(steps + 2):
        if i == 2:
            _sync(device)
            start = clock()
        model(images)
    _sync(device)
    return steps * len(images) / (clock() - start)


def build(table: dict):
    from detcore.catalog import Catalog
    from detcore.plugins import get_plugin_manager
    from detcore.runfile.components import validate_component

    catalog = Catalog.from_plugin_manager(get_plugin_manager(entrypoints=True))
    validate_component(catalog, "detector", table, "model")
    return catalog.build("detector", table, path="model")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=640, help="square input size in pixels (default 640)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps after 2 warm-up steps (default 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-classes", type=int, default=80)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with the process's CPU time instead of wall time (CPU only; steadier on a shared "
                         "machine, and with --threads 1 close to an idle core's wall time)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.cpu_time and device.type != "cpu":
        ap.error("--cpu-time measures CPU work: use it with --device cpu")
    clock = time.process_time if args.cpu_time else time.perf_counter
    size, n = args.size, args.num_classes
    models = {
        "FCOS-R50 (baseline)": {
            "type": "fcos", "num_classes": n, "min_size": size, "max_size": size,
            "backbone": {"type": "resnet", "depth": 50, "out_indices": [1, 2, 3]},
            "neck": {"type": "fpn", "out_channels": 256, "extra": "p6p7"},
        },
        "D-FINE-S": {"type": "dfine", "num_classes": n, "size": "s", "input_size": [size, size]},
        "RT-DETRv2-S": {"type": "rtdetr_v2", "num_classes": n, "size": "r18", "input_size": [size, size]},
    }
    batch = _batch(args.batch, size, n, device)
    print(f"device {device}, {size}x{size} px, batch {args.batch}, {args.steps} timed steps, "
          f"{args.threads} CPU threads, {'CPU' if args.cpu_time else 'wall'} time, random weights")
    base_train = base_infer = None
    for name, table in models.items():
        torch.manual_seed(0)
        model = build(table).to(device)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        if base_train is not None:  # re-measure the baseline right before each model
            base_model = build(models["FCOS-R50 (baseline)"]).to(device)
            base_train = train_step_s(base_model, batch, args.steps, device, clock)
            base_infer = images_per_s(base_model, batch, args.steps, device, clock)
            del base_model
        t = train_step_s(model, batch, args.steps, device, clock)
        ips = images_per_s(model, batch, args.steps, device, clock)
        if base_train is None:
            base_train, base_infer = t, ips
        print(f"{name:20s} {params:5.1f} M params  train {t * 1000:7.0f} ms/step ({t / base_train:.2f}x FCOS-R50's "
              f"time)  inference {ips:6.2f} img/s ({ips / base_infer:.2f}x FCOS-R50's speed)")
        del model


if __name__ == "__main__":
    main()
