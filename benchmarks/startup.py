"""Start-up time of the ``detcore`` command against a bare Python start.

Measures, in one run and interleaved (so that machine load hits all alike),
the wall time of

* ``python -c pass``                       (the floor: interpreter start-up)
* ``detcore --help``                       (plugin discovery + parser)
* ``detcore config check RUN.toml``        (+ run-file loading and validation)

and prints the median of each, the ratio to ``python -c pass`` and whether
torch got imported along the way (it must not be: the goal is under 0.5 s
absolute on a 2-core machine). Installed plugins are loaded as usual, so the
figures include their registration modules.

    python benchmarks/startup.py              # 15 rounds
    python benchmarks/startup.py --rounds 50
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN_FILE = """\
# A small run file whose components come from a local plugin module.
plugins = ["startup_plugin"]

[model]
type = "bench_detector"
num_classes = 3
backbone = { type = "bench_backbone", depth = 18 }

[data.train]
type = "bench_dataset"
root = "data/train"
transforms = [{ type = "random_horizontal_flip", p = 0.5 }, { type = "resize", size = 128 }]

[optimizer]
lr = 0.01

[train]
max_epochs = 2
"""

PLUGIN = """\
from detcore import Sub, hookimpl


def bench_backbone(depth: int = 18):
    raise AssertionError


def bench_detector(backbone: Sub["backbone"], num_classes: int):
    raise AssertionError


def bench_dataset(root: str, transforms: list[Sub["transform"]] = []):
    raise AssertionError


@hookimpl
def detcore_backbones():
    return {"bench_backbone": bench_backbone}


@hookimpl
def detcore_detectors():
    return {"bench_detector": bench_detector}


@hookimpl
def detcore_datasets():
    return {"bench_dataset": bench_dataset}
"""

TORCH_PROBE = (
    "import sys\n"
    "from detcore.cli.main import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    "print('torch' in sys.modules)\n"
)


def time_once(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def imports_torch(args: list[str], cwd: Path) -> bool:
    proc = subprocess.run([sys.executable, "-c", TORCH_PROBE, *args], cwd=cwd, capture_output=True, text=True)
    return proc.stdout.strip().splitlines()[-1] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    detcore = str(Path(sys.executable).with_name("detcore"))
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "run.toml").write_text(RUN_FILE)
        (cwd / "startup_plugin.py").write_text(PLUGIN)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "detcore --help": [detcore, "--help"],
            "detcore config check run.toml": [detcore, "config", "check", "run.toml"],
        }
        for cmd in commands.values():  # warm the file-system cache and .pyc files
            time_once(cmd, cwd)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, cmd in commands.items():
                times[name].append(time_once(cmd, cwd))
        torch_loaded = {
            "detcore --help": imports_torch(["--help"], cwd),
            "detcore config check run.toml": imports_torch(["config", "check", "run.toml"], cwd),
        }

    base = statistics.median(times["python -c pass"])
    print(f"{'command':32} {'median s':>9} {'min s':>7} {'x python':>9}  torch imported")
    for name, values in times.items():
        med = statistics.median(values)
        torch_note = "" if name not in torch_loaded else ("YES" if torch_loaded[name] else "no")
        print(f"{name:32} {med:9.3f} {min(values):7.3f} {med / base:9.2f}  {torch_note}")
    print(f"({args.rounds} rounds, interleaved; python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
