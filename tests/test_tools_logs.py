"""detcore plot / analyze on scalars logs written here in the runner's format."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from detcore.cli import analyze, plot
from detcore.testing import run_detcore


def write_log(work_dir, *, data_time=0.01, best_at=2, slow_start=True, n_epochs=3, iters_per_epoch=4):
    """A scalars.jsonl like the runner's: train records every iteration, a
    val record per epoch."""
    work_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    it = 0
    for epoch in range(n_epochs):
        for _ in range(iters_per_epoch):
            it += 1
            t = 0.5 if (slow_start and it == 1) else 0.1
            lines.append({
                "mode": "train", "epoch": epoch + 1, "iter": it, "lr": 0.01 * it / 12,
                "loss": 2.0 / it, "loss_cls": 1.0 / it, "bbox_regression": 1.0 / it,
                "data_time": data_time, "time": t, "eta_s": 3.0, "memory_mb": 100.0 + it,
            })
        m = 0.3 + 0.1 * epoch if epoch <= best_at else 0.2
        # validation runs after the epoch: its record counts completed epochs
        lines.append({"mode": "val", "epoch": epoch + 1, "iter": it, "bbox_mAP": m, "bbox_mAP_50": m + 0.2})
    (work_dir / "scalars.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return work_dir


def test_analyze_summary_figures(tmp_path):
    wd = write_log(tmp_path / "run", data_time=0.06, best_at=1)
    s = analyze.summarize(analyze.read_scalars(wd))
    assert s["metric"] == "bbox_mAP"
    assert s["best"] == pytest.approx(0.4)
    assert s["best_epoch"] == 2 and s["best_iter"] == 8
    assert s["last"] == pytest.approx(0.2)
    # the slow first window (start-up) is left out of steady-state timing
    assert s["time_per_iter"] == pytest.approx(0.1)
    assert s["data_share"] == pytest.approx(0.6)
    assert s["max_memory"] == 112
    text = analyze.format_summary("run", s)
    assert "best bbox_mAP" in text and "epoch 2" in text and "60%" in text
    assert "data pipeline is a bottleneck" in text


def test_analyze_less_rule_and_unknown_metric(tmp_path):
    wd = write_log(tmp_path / "run")
    s = analyze.summarize(analyze.read_scalars(wd), metric="bbox_mAP", rule="less")
    assert s["best"] == pytest.approx(0.3) and s["best_epoch"] == 1
    with pytest.raises(analyze.DetcoreError, match="bbox_mAP_50"):
        analyze.summarize(analyze.read_scalars(wd), metric="segm_mAP")


def test_read_scalars_bad_lines(tmp_path):
    wd = write_log(tmp_path / "run")
    f = wd / "scalars.jsonl"
    # a run killed mid-write leaves a truncated last line: skipped
    f.write_text(f.read_text() + '{"iter": 13, "lo')
    assert len(analyze.read_scalars(wd)) == 15
    f.write_text('{"iter": 1}\nnot json\n{"iter": 2}\n')
    with pytest.raises(analyze.DetcoreError, match="line 2"):
        analyze.read_scalars(wd)
    with pytest.raises(analyze.DetcoreError, match="no scalars.jsonl"):
        analyze.read_scalars(tmp_path)
    with pytest.raises(analyze.DetcoreError, match="no such work directory"):
        analyze.read_scalars(tmp_path / "missing")


def test_plot_default_keys_and_unknown_key(tmp_path):
    runs = {"a": analyze.read_scalars(write_log(tmp_path / "a"))}
    # FCOS's loss term bbox_regression is a training scalar, not a metric
    assert analyze.metric_keys(runs["a"]) == ["bbox_mAP", "bbox_mAP_50"]
    assert plot.default_keys(runs) == ["loss", "lr", "bbox_mAP", "bbox_mAP_50"]
    xs, ys = plot.series(runs["a"], "bbox_mAP")
    assert xs == [4, 8, 12] and ys == pytest.approx([0.3, 0.4, 0.5])
    with pytest.raises(analyze.DetcoreError, match="did you mean 'loss_cls'"):
        plot.plot_runs(runs, ["loss_clss"], tmp_path / "x.png")


def test_plot_labels_both_axes_of_every_panel(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    runs = {"a": analyze.read_scalars(write_log(tmp_path / "a")), "b": analyze.read_scalars(write_log(tmp_path / "b"))}
    keys = ["loss", "lr", "bbox_mAP", "bbox_mAP_50"]
    fig = plot.curves_figure(runs, keys, title="two runs")
    try:
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in panels] == keys
        assert [ax.get_xlabel() for ax in panels] == ["iteration"] * 4
        assert [ax.get_ylabel() for ax in panels] == keys
        assert all(len(ax.get_lines()) == 2 for ax in panels)  # one line per run
    finally:
        plt.close(fig)


def _png_size(path):
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        return len(im.getbands()), im.height, im.width


@pytest.mark.slow
def test_plot_cli_overlays_runs(tmp_path):
    a = write_log(tmp_path / "baseline")
    b = write_log(tmp_path / "bigger_lr", best_at=0)
    out = tmp_path / "curves.png"
    r = run_detcore("plot", a, b, "--keys", "loss,bbox_mAP", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "2 panel(s)" in r.stdout and "2 run(s)" in r.stdout
    c, h, w = _png_size(out)
    assert c in (3, 4) and w == 1000 and h == 340  # 2 panels of 5 x 3.4 inches at 100 dpi

    # a missing work dir is a one-line error, not a traceback
    r = run_detcore("plot", tmp_path / "nope", "--out", out)
    assert r.returncode == 1 and "no such work directory" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_plot_without_matplotlib_says_how_to_install(tmp_path):
    wd = write_log(tmp_path / "run")
    # A module finder that hides matplotlib, as if the extra were not installed.
    code = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'matplotlib' or name.startswith('matplotlib.'):\n"
        "            raise ImportError('No module named matplotlib')\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from detcore.cli.main import main\n"
        f"sys.exit(main(['plot', {str(wd)!r}, '--out', {str(tmp_path / 'c.png')!r}]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "pip install 'detcore[plot]'" in r.stderr


@pytest.mark.slow
def test_analyze_cli(tmp_path):
    wd = write_log(tmp_path / "run")
    r = run_detcore("analyze", wd)
    assert r.returncode == 0, r.stderr
    assert "best bbox_mAP:" in r.stdout and "0.5000" in r.stdout and "time per iteration:  100.0 ms" in r.stdout
    r = run_detcore("analyze", wd, "--json")
    assert json.loads(r.stdout)[str(wd)]["best_iter"] == 12


@pytest.mark.slow
def test_tool_commands_keep_help_light():
    # Building the parser configures every tool command: none may import torch.
    code = (
        "import sys, contextlib, io\n"
        "from detcore.cli.main import main\n"
        "for argv in (['--help'], ['plot', '--help'], ['export', '--help'], ['benchmark', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'matplotlib') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
