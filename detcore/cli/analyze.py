"""``detcore analyze WORK_DIR``: a short text summary of a training run from
its ``scalars.jsonl`` (best metric and when, time per iteration, data-time
share, peak memory)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from detcore.errors import DetcoreError

SCALARS_FILE = "scalars.jsonl"

# Keys the runner writes for the x axis and timings (see docs/tools.md).
STEP_KEYS = ("iter", "iteration", "step")
TIME_KEYS = ("time", "iter_time")
DATA_TIME_KEYS = ("data_time",)
MEMORY_KEYS = ("memory", "memory_mb", "max_memory", "max_mem")
# Not curves: bookkeeping fields that are numbers but not worth plotting.
NOT_SCALARS = {"epoch", "eta", "eta_s", *STEP_KEYS}


def scalars_path(work_dir: str | Path) -> Path:
    """The scalars log of a work dir (or the file itself when given one)."""
    p = Path(work_dir)
    if p.is_file():
        return p
    f = p / SCALARS_FILE
    if not p.exists():
        raise DetcoreError(f"{p}: no such work directory")
    if not f.is_file():
        raise DetcoreError(
            f"{p}: no {SCALARS_FILE} in this directory. Give the work dir of a 'detcore train' "
            f"run (it writes {SCALARS_FILE} every train.log_interval iterations)."
        )
    return f


def read_scalars(work_dir: str | Path) -> list[dict]:
    """The records of a scalars log, one dict per line, in order. A truncated
    last line (a run killed mid-write) is skipped; any other bad line is an
    error naming the file and line."""
    path = scalars_path(work_dir)
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == len(lines):
                break
            raise DetcoreError(f"{path}, line {n}: not a JSON object ({exc.msg})") from None
        if isinstance(rec, dict):
            records.append(rec)
    return records


def first_key(rec: dict, keys) -> str | None:
    for k in keys:
        if k in rec:
            return k
    return None


def step_of(rec: dict, default: int) -> float:
    k = first_key(rec, STEP_KEYS)
    return float(rec[k]) if k is not None else float(default)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def metric_keys(records: list[dict]) -> list[str]:
    """Evaluation metrics in the log, ``*_mAP`` first: the numbers of the
    runner's validation records (``"mode": "val"``), or, in a log without
    modes, the keys that look like COCO metrics."""
    has_modes = any("mode" in r for r in records)
    seen: dict[str, None] = {}
    for rec in records:
        if has_modes and rec.get("mode") != "val":
            continue
        for k, v in rec.items():
            if not is_number(v) or k in NOT_SCALARS:
                continue
            if has_modes or "mAP" in k or "AR@" in k:
                seen.setdefault(k, None)
    keys = list(seen)
    return sorted(keys, key=lambda k: (not k.endswith("_mAP"), keys.index(k)))


def run_settings(work_dir: str | Path) -> dict:
    """What the work dir's ``resolved.toml`` says about the run (empty when
    there is none): whether it counts epochs, the ``save_best`` metric and its
    rule, and the best checkpoint from ``latest.json``."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib

    wd = Path(work_dir)
    if wd.is_file():
        wd = wd.parent
    out: dict = {}
    try:
        with open(wd / "resolved.toml", "rb") as f:
            cfg = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        cfg = {}
    train = cfg.get("train") or {}
    if train:
        out["by_epoch"] = train.get("max_epochs") is not None
    ck = cfg.get("checkpoint") or {}
    if ck.get("save_best"):
        out["metric"] = ck["save_best"]
        out["rule"] = ck.get("best_rule", "greater")
    try:
        best = json.loads((wd / "latest.json").read_text()).get("best")
    except (OSError, ValueError, AttributeError):
        best = None
    if best:
        out["best_checkpoint"] = str(wd / best)
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(records: list[dict], metric: str | None = None, rule: str = "greater") -> dict:
    """Figures of a run as a dict (what :func:`format_summary` prints)."""
    train = [r for r in records if first_key(r, TIME_KEYS) is not None]
    times = [float(r[first_key(r, TIME_KEYS)]) for r in train]
    data_times = [float(r[k]) for r in train if (k := first_key(r, DATA_TIME_KEYS))]
    # The first logging window holds start-up costs (worker start, cudnn
    # autotuning); leave it out of the steady-state figures when there are more.
    steady = times[1:] if len(times) > 2 else times
    steady_data = data_times[1:] if len(data_times) > 2 else data_times
    out: dict = {
        "records": len(records),
        "last_iter": max((step_of(r, i) for i, r in enumerate(records)), default=None),
        "time_per_iter": _mean(steady),
        "data_time_per_iter": _mean(steady_data),
    }
    if out["time_per_iter"] and out["data_time_per_iter"] is not None:
        out["data_share"] = out["data_time_per_iter"] / out["time_per_iter"]
    losses = [r for r in records if is_number(r.get("loss"))]
    if losses:
        out["first_loss"] = float(losses[0]["loss"])
        out["last_loss"] = float(losses[-1]["loss"])
    mems = [float(r[k]) for r in records if (k := first_key(r, MEMORY_KEYS)) and is_number(r[k])]
    if mems:
        out["max_memory"] = max(mems)
    metrics = metric_keys(records)
    metric = metric or (metrics[0] if metrics else None)
    if metric is not None:
        if metric not in metrics and not any(metric in r for r in records):
            raise DetcoreError(
                f"metric '{metric}' is not in the log; it has: {', '.join(metrics) or 'no metrics'}"
            )
        evals = [(i, r) for i, r in enumerate(records) if is_number(r.get(metric))]
        if evals:
            pick = max if rule == "greater" else min
            i, best = pick(evals, key=lambda ir: ir[1][metric])
            out.update(
                metric=metric,
                best=float(best[metric]),
                best_epoch=best.get("epoch"),
                best_iter=step_of(best, i),
                last=float(evals[-1][1][metric]),
                evaluations=len(evals),
            )
    return out


def format_summary(name: str, s: dict) -> str:
    lines = [f"{name}:"]

    def row(label: str, value: str) -> None:
        lines.append(f"  {label + ':':<20} {value}")

    if s.get("last_iter") is not None:
        row("iterations logged", f"{int(s['last_iter'])} ({s['records']} log records)")
    if "metric" in s:
        when = f"iteration {int(s['best_iter'])}"
        # Iteration-based runs validate mid-epoch: the epoch says little there.
        if s.get("best_epoch") is not None and s.get("by_epoch", True):
            when = f"epoch {int(s['best_epoch'])}, {when}"
        row(f"best {s['metric']}", f"{s['best']:.4f} ({when})")
        row(f"last {s['metric']}", f"{s['last']:.4f} ({s['evaluations']} evaluation(s))")
    else:
        lines.append("  no evaluation metrics in the log")
    if s.get("best_checkpoint"):
        row("best checkpoint", s["best_checkpoint"])
    if s.get("time_per_iter") is not None:
        row("time per iteration", f"{s['time_per_iter'] * 1000:.1f} ms")
    if s.get("data_time_per_iter") is not None:
        share = s.get("data_share")
        row("data time", f"{s['data_time_per_iter'] * 1000:.1f} ms"
            + (f" ({share:.0%} of the iteration)" if share is not None else ""))
        if share is not None and share > 0.3:
            lines.append(
                "  -> the data pipeline is a bottleneck: raise data.workers, simplify "
                "transforms or decode smaller images"
            )
    if "last_loss" in s:
        row("loss", f"{s['first_loss']:.4f} -> {s['last_loss']:.4f}")
    if "max_memory" in s:
        row("peak memory", f"{s['max_memory']:.0f} MB")
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("work_dirs", nargs="+", metavar="WORK_DIR", help="work dir(s) of training runs")
    parser.add_argument("--metric", help="metric to rank evaluations by (default: the run's checkpoint.save_best, else the first *_mAP logged)")
    parser.add_argument("--rule", choices=["greater", "less"], help="whether greater or smaller --metric is better (default: the run's checkpoint.best_rule, else greater)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args) -> int:
    results = {}
    for wd in args.work_dirs:
        records = read_scalars(wd)
        settings = run_settings(wd)
        metric = args.metric or settings.get("metric")
        if metric and not args.metric and not any(metric in r for r in records):
            metric = None  # save_best names a metric this run has not logged yet
        rule = args.rule or (settings.get("rule", "greater") if metric == settings.get("metric") else "greater")
        summary = summarize(records, metric, rule)
        summary.update({k: v for k, v in settings.items() if k in ("by_epoch", "best_checkpoint")})
        results[str(wd)] = summary
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n".join(format_summary(name, s) for name, s in results.items()))
    return 0
