"""``detcore plot WORK_DIR... --out curves.png``: loss, LR and metric curves
from the runner's ``scalars.jsonl``, several runs overlaid for comparison.

matplotlib is an optional extra (``pip install 'detcore[plot]'``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from detcore.cli.analyze import NOT_SCALARS, is_number, metric_keys, read_scalars, step_of
from detcore.errors import DetcoreError


def default_keys(runs: dict[str, list[dict]]) -> list[str]:
    """``loss``, ``lr`` and the headline metrics (``*_mAP``, ``*_mAP_50``)
    found in any of the runs (any metric when there are none of those)."""
    keys = []
    for key in ("loss", "lr"):
        if any(is_number(r.get(key)) for recs in runs.values() for r in recs):
            keys.append(key)
    metrics: list[str] = []
    for recs in runs.values():
        for k in metric_keys(recs):
            if k not in metrics:
                metrics.append(k)
    headline = [k for k in metrics if k.endswith(("_mAP", "_mAP_50"))]
    return keys + (sorted(headline, key=lambda k: (k.split("_mAP")[0], k)) or metrics[:4])


def available_keys(runs: dict[str, list[dict]]) -> list[str]:
    seen: dict[str, None] = {}
    for recs in runs.values():
        for r in recs:
            for k, v in r.items():
                if is_number(v) and k not in NOT_SCALARS:
                    seen.setdefault(k, None)
    return list(seen)


def series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, r in enumerate(records):
        v = r.get(key)
        if is_number(v):
            xs.append(step_of(r, i))
            ys.append(float(v))
    return xs, ys


def plot_runs(runs: dict[str, list[dict]], keys: list[str], out: str | Path, title: str | None = None) -> Path:
    """Draw one panel per key, one line per run, and save to ``out``."""
    fig = curves_figure(runs, keys, title)  # first: it says what to install without matplotlib
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def curves_figure(runs: dict[str, list[dict]], keys: list[str], title: str | None = None):
    """The matplotlib figure of :func:`plot_runs`: one panel per key (titled
    and labelled on both axes), one line per run."""
    from detcore.plots import pyplot

    plt = pyplot()
    known = available_keys(runs)
    for key in keys:
        if key not in known:
            from detcore.errors import did_you_mean

            raise DetcoreError(
                f"key '{key}' is in none of the logs{did_you_mean(key, known)}. "
                f"Logged keys: {', '.join(known) or 'none'}."
            )
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, recs in runs.items():
            xs, ys = series(recs, key)
            if not xs:
                continue
            # Metrics are logged once per evaluation: markers keep single points visible.
            ax.plot(xs, ys, label=name, marker="o" if len(xs) < 30 else None, markersize=3)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    if len(runs) > 1:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=min(4, len(runs)), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.92 if len(runs) > 1 else 1))
    return fig


def run_names(work_dirs: list[str]) -> list[str]:
    """Short unique labels: the directory names, or the paths when those clash."""
    names = [Path(w).resolve().name if Path(w).is_dir() else Path(w).resolve().parent.name for w in work_dirs]
    return names if len(set(names)) == len(names) else [str(w) for w in work_dirs]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("work_dirs", nargs="+", metavar="WORK_DIR", help="work dir(s) (or scalars.jsonl files); several are overlaid")
    parser.add_argument("--keys", help="comma-separated keys to plot (default: loss, lr and the evaluation metrics)")
    parser.add_argument("--out", default="curves.png", help="image to write (.png, .pdf, .svg; default curves.png)")
    parser.add_argument("--title", help="figure title")


def run(args) -> int:
    runs = {}
    for name, wd in zip(run_names(args.work_dirs), args.work_dirs):
        recs = read_scalars(wd)
        if not recs:
            raise DetcoreError(f"{wd}: the scalars log is empty (no iteration logged yet)")
        runs[name] = recs
    keys = [k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else default_keys(runs)
    if not keys:
        raise DetcoreError("nothing to plot: the logs have no numeric scalars")
    out = plot_runs(runs, keys, args.out, args.title)
    print(f"wrote {out} ({len(keys)} panel(s): {', '.join(keys)}; {len(runs)} run(s))")
    return 0
