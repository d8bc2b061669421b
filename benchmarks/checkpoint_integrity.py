"""Cost of checkpoint integrity: writing and reading a training checkpoint of
torchvision's Faster R-CNN R50-FPN (model + SGD momentum, about 330 MB) with
and without the SHA-256 digest detcore stores and verifies.

Baseline (same run, same file system): a plain ``torch.save`` to a file and
``torch.load(weights_only=True)``. Measured: ``seal`` + ``torch.save``, and
``detcore.weights.read_checkpoint`` (load + verify). Prints each time (best
of ``--rounds``) and the ratio to the baseline.

    python benchmarks/checkpoint_integrity.py
    python benchmarks/checkpoint_integrity.py --rounds 5 --dir /fast/disk
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def best_of(rounds: int, fn) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", help="where to write the files (default: a temporary folder)")
    args = parser.parse_args()

    import torch
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    from detcore.integrity import payload_digest, seal
    from detcore.weights import read_checkpoint

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    state = model.state_dict()
    momentum = {i: {"momentum_buffer": torch.randn_like(v)} for i, v in enumerate(state.values()) if v.is_floating_point()}
    ckpt = {"detcore": {"format": 1}, "meta": {"iter": 1}, "model": state, "optimizer": {"state": momentum}}
    size = sum(v.numel() * v.element_size() for v in state.values()) * 2

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        plain, sealed = Path(tmp) / "plain.pth", Path(tmp) / "sealed.pth"

        def save(obj, path):
            with open(path, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())

        t_save = best_of(args.rounds, lambda: save(ckpt, plain))
        t_seal_save = best_of(args.rounds, lambda: save(seal(ckpt), sealed))
        t_load = best_of(args.rounds, lambda: torch.load(plain, map_location="cpu", weights_only=True))
        t_read = best_of(args.rounds, lambda: read_checkpoint(sealed))
        t_digest = best_of(args.rounds, lambda: payload_digest(ckpt))

    print(f"checkpoint: {size / 1e6:.0f} MB of tensors (Faster R-CNN R50-FPN weights + momentum)")
    print(f"digest alone      {t_digest:7.3f} s  ({size / 1e6 / t_digest:.0f} MB/s)")
    print(f"save              {t_save:7.3f} s")
    print(f"seal + save       {t_seal_save:7.3f} s  ratio {t_seal_save / t_save:.2f}")
    print(f"load              {t_load:7.3f} s")
    print(f"load + verify     {t_read:7.3f} s  ratio {t_read / t_load:.2f}")


if __name__ == "__main__":
    main()
