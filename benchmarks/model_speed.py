"""Train-step time of the demo-sized detectors on the CPU.

    python benchmarks/model_speed.py [--threads 2] [--steps 10]

Times one SGD step (forward, backward, update) at batch 8 and 128 px for
FCOS with a ResNet-18 FPN and with the tiny backbone, and prints the ratio
against torchvision's own ``fcos_resnet50_fpn`` head on the same ResNet-18
FPN built by hand, measured in the same run (the baseline).
"""

from __future__ import annotations

import argparse
import time

import torch


def _batch(n: int, size: int, num_classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
    targets = []
    for _ in range(n):
        k = 3
        xy = torch.rand(k, 2, generator=g) * (size * 0.6)
        wh = 12 + torch.rand(k, 2, generator=g) * (size * 0.3)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).clamp(max=size - 1),
                        "labels": torch.randint(0, num_classes, (k,), generator=g)})
    return images, targets


def time_steps(model, batch, steps: int, clock=time.perf_counter) -> float:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    model.train()
    images, targets = batch
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps
            start = clock()
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (clock() - start) / steps


def build(table: dict):
    from detcore.catalog import Catalog
    from detcore.plugins import get_plugin_manager
    from detcore.runfile.components import validate_component

    catalog = Catalog.from_plugin_manager(get_plugin_manager(entrypoints=False))
    validate_component(catalog, "detector", table, "model")
    return catalog.build("detector", table, path="model")


def baseline():
    """torchvision's FCOS on torchvision's BackboneWithFPN (ResNet-18, FPN 128)."""
    from torchvision.models import resnet18
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    bb = BackboneWithFPN(resnet18(weights=None), {"layer2": "0", "layer3": "1", "layer4": "2"},
                         [128, 256, 512], 128, extra_blocks=LastLevelP6P7(128, 128))
    return FCOS(bb, 3, min_size=128, max_size=128)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cpu-time", action="store_true",
                    help="report process CPU time per step instead of wall time (steadier on a "
                         "shared machine; with --threads 1 it approximates an idle core's wall time)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = _batch(8, 128, 3)
    neck = {"type": "fpn", "out_channels": 128, "extra": "p6p7"}
    clock = time.process_time if args.cpu_time else time.perf_counter
    reference = baseline()
    for name, backbone in [("resnet18", {"type": "resnet", "depth": 18, "out_indices": [1, 2, 3]}),
                           ("tiny", {"type": "tiny"})]:
        model = build({"type": "fcos", "num_classes": 3, "backbone": backbone, "neck": neck})
        # Baseline measured right before each model: shared machines drift.
        base = time_steps(reference, batch, args.steps, clock)
        print(f"baseline torchvision FCOS + resnet18 FPN(128): {base * 1000:.0f} ms/step")
        t = time_steps(model, batch, args.steps, clock)
        print(f"detcore fcos + {name} + fpn(128), batch 8, 128 px, {args.threads} threads: "
              f"{t * 1000:.0f} ms/step ({t / base:.2f}x baseline)")


if __name__ == "__main__":
    main()
