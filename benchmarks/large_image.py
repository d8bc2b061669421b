"""Memory and time of one training item from a very large JPEG (issue 16,
item 8): the coco dataset with ``resize`` to ``--size``, reading a
``--side`` x ``--side`` photo, against the baseline of decoding it whole
(``read_image`` without ``min_scale``, what the dataset did before), in the
same run.

Each variant runs in a fresh process (peak RSS is per process); the figures
are the peak RSS added by loading the item (above the process's RSS after
its imports) and the time of ``dataset[0]``:

    python benchmarks/large_image.py                 # 12000 x 12000, resize 800
    python benchmarks/large_image.py --side 6000 --size 128
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from detcore_coco.dataset import CocoDataset
from detcore.data import image_io
from detcore.data.transforms import resize

ann, img_dir, size, full = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "full"
ds = CocoDataset(ann, img_dir, transforms=[resize(size)])
if full:  # the baseline: decode the whole image, as before min_scale existed
    read = image_io.read_image
    import detcore_coco.dataset as mod
    mod.read_image = lambda path, min_scale=None: read(path)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
image, target = ds[0]
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mb": (peak - base) / 1024, "s": elapsed, "shape": list(image.shape)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=12000)
    parser.add_argument("--size", type=int, default=800, help="resize: shorter side")
    args = parser.parse_args()

    import numpy as np
    from detcore_coco.testing import write_coco
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "img").mkdir()
        rng = np.random.default_rng(0)
        small = Image.fromarray(rng.integers(0, 255, (args.side // 10, args.side // 10, 3), dtype=np.uint8))
        Image.MAX_IMAGE_PIXELS = None  # writing our own large test image
        small.resize((args.side, args.side)).save(tmp / "img" / "big.jpg", quality=85)
        s = args.side
        write_coco(str(tmp / "a.json"), [{"id": 1, "file_name": "big.jpg", "width": s, "height": s}],
                   [{"image_id": 1, "category_id": 1, "bbox": [s / 4, s / 4, s / 2, s / 2]}], [{"id": 1, "name": "x"}])
        results = {}
        for variant in ("full", "reduced"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(tmp / "a.json"), str(tmp / "img"), str(args.size), variant],
                capture_output=True, text=True, check=True,
            )
            results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    full, reduced = results["full"], results["reduced"]
    print(f"{args.side}x{args.side} JPEG, resize {args.size}: item {reduced['shape']}")
    print(f"  decode whole (baseline): +{full['mb']:.0f} MB peak RSS, {full['s']:.2f} s")
    print(f"  reduced decode (draft):  +{reduced['mb']:.0f} MB peak RSS, {reduced['s']:.2f} s")
    print(f"  ratio reduced/baseline: memory {reduced['mb'] / max(full['mb'], 1e-9):.3f}, time {reduced['s'] / full['s']:.3f}")


if __name__ == "__main__":
    main()
