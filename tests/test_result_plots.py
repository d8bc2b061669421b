"""detcore.plots: confusion matrix counting, PR-curve and confusion-matrix figures."""

from __future__ import annotations

import numpy as np
import pytest

from detcore.plots import box_iou, confusion_matrix, save_confusion_matrix, save_pr_curves


def test_box_iou_against_torchvision():
    import torch
    from torchvision.ops import box_iou as tv_box_iou

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(7, 2, generator=g) * 50
    a = torch.cat([xy, xy + torch.rand(7, 2, generator=g) * 30 + 1], 1)
    xy = torch.rand(5, 2, generator=g) * 50
    b = torch.cat([xy, xy + torch.rand(5, 2, generator=g) * 30 + 1], 1)
    assert np.allclose(box_iou(a.numpy(), b.numpy()), tv_box_iou(a.double(), b.double()).numpy())
    assert box_iou(np.zeros((0, 4)), b.numpy()).shape == (0, 5)


def test_confusion_matrix_counts_matches_confusions_misses_and_false_positives():
    gts = [
        {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], "labels": [0, 1, 2]},
        {"boxes": [[0, 0, 10, 10]], "labels": [1]},
    ]
    preds = [
        {
            "boxes": [[0, 0, 10, 10], [21, 21, 30, 30], [80, 80, 90, 90], [0, 0, 10, 10]],
            "labels": [0, 0, 2, 1],  # right; class 1 called 0; a false positive; a duplicate
            "scores": [0.9, 0.8, 0.7, 0.6],
        },
        {"boxes": [[0, 0, 10, 10], [1, 1, 10, 10]], "labels": [1, 1], "scores": [0.9, 0.1]},  # 0.1 < thr
    ]
    m = confusion_matrix(preds, gts, 3, iou_thr=0.5, score_thr=0.25)
    expected = np.zeros((4, 4), dtype=int)
    expected[0, 0] = 1  # image 0: class 0 found
    expected[0, 1] = 1  # image 0: the class-1 box detected as class 0
    expected[3, 2] = 1  # image 0: the class-2 box missed (background row)
    expected[2, 3] = 1  # image 0: a class-2 detection on nothing (background column)
    expected[1, 3] = 1  # image 0: the duplicate of an already matched box
    expected[1, 1] = 1  # image 1: found; the low-scoring detection is left out
    assert (m == expected).all(), m
    assert m[:, :3].sum() == 4  # every ground-truth box counted once
    with pytest.raises(Exception, match="outside the 3 classes"):
        confusion_matrix([{"boxes": [[0, 0, 1, 1]], "labels": [5], "scores": [1.0]}],
                         [{"boxes": np.zeros((0, 4)), "labels": []}], 3)


def _png(path):
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB")).astype(int)


def test_pr_curves_and_confusion_matrix_figures(tmp_path):
    pytest.importorskip("matplotlib")
    recall = np.linspace(0, 1, 101)
    precision = np.stack([1 - 0.5 * recall, np.clip(1.2 - recall, 0, 1), -np.ones_like(recall)], 1)
    path = save_pr_curves(recall, precision, ["cat", "dog", "absent"], tmp_path / "pr.png")
    img = _png(path)
    assert img.shape[0] >= 400 and img.shape[1] >= 500
    # non-trivial: many colours (curves, text), not a blank canvas
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20 and (img < 128).any()
    m = np.array([[5, 1, 0], [0, 3, 2], [1, 0, 0]])
    path = save_confusion_matrix(m, ["cat", "dog"], tmp_path / "cm.png")
    img = _png(path)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20
    # the darkest blue of the colour map is where the largest share is
    assert ((img[..., 2] > 80) & (img[..., 0] < 40)).any()
    with pytest.raises(ValueError, match="expected"):
        save_confusion_matrix(m, ["cat"], tmp_path / "bad.png")


def test_the_figures_are_labelled(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import detcore.plots as plots

    figures = []
    real = plots._save

    def keep(fig, path):
        figures.append(fig)
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    recall = np.linspace(0, 1, 11)
    plots.save_pr_curves(recall, np.ones((11, 2)) * 0.5, ["cat", "dog"], tmp_path / "pr.png")
    plots.save_confusion_matrix(np.eye(3, dtype=int), ["cat", "dog"], tmp_path / "cm.png")
    pr_ax, cm_ax = figures[0].axes[0], figures[1].axes[0]
    assert (pr_ax.get_xlabel(), pr_ax.get_ylabel()) == ("recall", "precision")
    assert [t.get_text() for t in pr_ax.get_legend().get_texts()] == ["cat 0.500", "dog 0.500", "all classes 0.500"]
    assert (cm_ax.get_xlabel(), cm_ax.get_ylabel()) == ("true class", "predicted class")
    assert [t.get_text() for t in cm_ax.get_xticklabels()] == ["cat", "dog", "background"]


def test_end_of_run_plots_never_fail_a_finished_run(tmp_path, caplog):
    import logging
    from types import SimpleNamespace

    from detcore.builtin.plots import detcore_after_run
    from detcore.errors import DetcoreError

    class Draws:
        def save_plots(self, out_dir):
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "x.png").write_bytes(b"png")
            return [out_dir / "x.png"]

    class NeedsAnExtra:
        def save_plots(self, out_dir):
            raise DetcoreError("drawing figures needs matplotlib ... pip install 'detcore[plot]'")

    class Broken:
        def save_plots(self, out_dir):
            raise ZeroDivisionError("oops")

    logger = logging.getLogger("detcore.test_plots")
    runner = SimpleNamespace(is_main=True, last_metrics={"m": 1.0}, work_dir=tmp_path, logger=logger,
                             metrics=[object(), NeedsAnExtra(), Broken(), Draws()])
    with caplog.at_level(logging.INFO, logger="detcore.test_plots"):
        detcore_after_run(runner)
    text = caplog.text
    assert "NeedsAnExtra: no result plots" in text and "detcore[plot]" in text
    assert "Broken: drawing the result plots failed: ZeroDivisionError: oops" in text
    assert f"Draws: wrote {tmp_path / 'plots' / 'x.png'}" in text
    # nothing drawn by other processes, or before any validation
    caplog.clear()
    for other in (dict(is_main=False), dict(last_metrics={})):
        detcore_after_run(SimpleNamespace(**{**vars(runner), **other}))
    assert caplog.text == ""
