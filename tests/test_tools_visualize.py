"""Drawing (detcore.visualize), input collection for predict, export comparison."""

from __future__ import annotations

import pytest
import torch

from detcore.cli.inputs import collect_inputs, unique_stems
from detcore.visualize import PALETTE, class_color, draw_detections, save_image


def test_box_pixels_where_the_box_is():
    img = torch.zeros(3, 64, 96, dtype=torch.uint8)
    out = draw_detections(img, torch.tensor([[10.0, 20.0, 50.0, 40.0]]), torch.tensor([2]), torch.tensor([0.9]), ["a", "b", "c"])
    assert out.shape == img.shape and out.dtype == torch.uint8
    color = torch.tensor(PALETTE[2], dtype=torch.uint8)
    # the left and bottom edges carry the class colour; the inside and outside stay black
    assert torch.equal(out[:, 30, 10], color) and torch.equal(out[:, 40, 30], color)
    assert int(out[:, 36, 45].sum()) == 0 and int(out[:, 5, 80].sum()) == 0
    assert int(img.sum()) == 0  # the input is not modified


def test_masks_and_clipping_and_empty():
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 4:12, 4:12] = 0.9
    out = draw_detections(img, [[-5.0, -5.0, 100.0, 100.0]], [0], [0.5], ["a"], masks=mask)
    assert out[:, 8, 8].sum() > 0  # mask filled
    assert out[:, 20, 20].sum() == 0  # outside the mask, inside the box
    assert torch.equal(out[:, 16, 0], torch.tensor(class_color(0), dtype=torch.uint8))  # clipped box edge
    assert torch.equal(draw_detections(img, torch.zeros(0, 4), torch.zeros(0), None, []), img)
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(img.float(), [[0, 0, 1, 1]], [0])


def test_save_image_formats(tmp_path):
    from PIL import Image

    img = torch.randint(0, 255, (3, 24, 40), dtype=torch.uint8)
    for name, fmt in (("a.png", "PNG"), ("b.jpg", "JPEG"), ("sub/c.jpeg", "JPEG")):
        p = save_image(img, tmp_path / name)
        with Image.open(p) as im:
            assert im.format == fmt and im.size == (40, 24)
    with Image.open(tmp_path / "a.png") as im:
        assert torch.equal(torch.from_numpy(__import__("numpy").array(im)).permute(2, 0, 1), img)


def test_collect_inputs(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for p in ("d/a.jpg", "d/b.PNG", "d/notes.txt", "d/sub/c.jpg", "e.jpg"):
        (tmp_path / p).write_bytes(b"x")
    files, problems = collect_inputs([str(tmp_path / "d"), str(tmp_path / "e.jpg"), str(tmp_path / "d" / "a.jpg")])
    assert [f.name for f in files] == ["a.jpg", "b.PNG", "e.jpg"]  # no duplicates, no .txt
    files, _ = collect_inputs([str(tmp_path / "d")], recursive=True)
    assert [f.name for f in files] == ["a.jpg", "b.PNG", "c.jpg"]
    files, _ = collect_inputs([str(tmp_path / "**" / "*.jpg")])
    assert sorted(f.name for f in files) == ["a.jpg", "c.jpg", "e.jpg"]
    files, problems = collect_inputs([str(tmp_path / "missing.jpg"), str(tmp_path / "*.bmp"), str(tmp_path / "d" / "sub")])
    assert [f.name for f in files] == ["c.jpg"]
    assert [r for _, r in problems] == ["no such file or folder", "pattern matches no file"]


def test_unique_stems(tmp_path):
    from pathlib import Path

    assert unique_stems([Path("a/x.jpg"), Path("b/x.png"), Path("b/y.jpg")]) == ["a_x", "b_x", "y"]
    assert unique_stems([Path("p/a/x.jpg"), Path("q/a/x.jpg")]) == ["a_x_0", "a_x_1"]


def test_export_compare_ignores_order_but_not_values():
    from detcore.engine.export import compare

    a = {"boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]), "scores": torch.tensor([0.5, 0.5]),
         "labels": torch.tensor([0, 1])}
    swapped = {k: v.flip(0) for k, v in a.items()}
    assert compare(a, swapped).ok
    moved = dict(a, boxes=a["boxes"] + torch.tensor([[0.0, 0, 0, 1], [0, 0, 0, 0]]))
    c = compare(a, moved)
    assert not c.ok and c.max_box_diff == pytest.approx(1.0)
    fewer = {k: v[:1] for k, v in a.items()}
    assert not compare(a, fewer).ok
    relabeled = dict(a, labels=torch.tensor([1, 1]))
    assert not compare(a, relabeled).ok


# ----------------------------------------------------------------------
# labels and captions
# ----------------------------------------------------------------------

YELLOW, BLUE = 10, 0  # PALETTE[10] = (255, 255, 0): black text; PALETTE[0] = (31, 119, 180): white text


def _share(region, color) -> float:
    """The share of pixels of ``region`` ([3, h, w]) that are exactly ``color``."""
    return float((region == torch.tensor(color, dtype=torch.uint8).view(3, 1, 1)).all(0).float().mean())


def _dark(region):
    """Text pixels of black (anti-aliased) text: [h, w] bool."""
    return region.float().mean(0) < 60


def _bright(region):
    return region.float().min(0).values > 190


def test_label_on_a_filled_box_in_a_contrasting_colour():
    from detcore.visualize import font_size_for, text_color

    img = torch.full((3, 240, 320), 90, dtype=torch.uint8)
    names = [f"class{i}" for i in range(11)]
    out = draw_detections(img, [[40.0, 100.0, 200.0, 200.0], [60.0, 30.0, 140.0, 90.0]], [YELLOW, BLUE],
                          [0.9, 0.8], names)
    fs = font_size_for(240, 320)
    # Above each box's top-left corner: a box filled with the class colour ...
    yellow_label = out[:, 100 - fs : 100 - 2, 42 : 42 + 2 * fs]
    blue_label = out[:, 30 - fs : 30 - 2, 62 : 62 + 2 * fs]
    assert _share(yellow_label, PALETTE[YELLOW]) > 0.4 and _share(blue_label, PALETTE[BLUE]) > 0.4
    # ... with the text in black on yellow and white on blue.
    assert text_color(PALETTE[YELLOW]) == (0, 0, 0) and text_color(PALETTE[BLUE]) == (255, 255, 255)
    assert _dark(yellow_label).float().mean() > 0.05 and not _bright(yellow_label).any()
    assert _bright(blue_label).float().mean() > 0.05 and not _dark(blue_label).any()
    assert _share(out[:, 150:190, 60:180], PALETTE[YELLOW]) == 0  # the box's inside is untouched


def test_font_scales_with_the_image():
    from detcore.visualize import font_size_for

    def label_height(size):
        img = torch.zeros(3, size, size, dtype=torch.uint8)
        out = draw_detections(img, [[size / 4, size / 2, size * 3 / 4, size * 0.9]], [YELLOW], [0.9], None)
        above = out[:, : size // 2]  # the label, above the box
        rows = (above == torch.tensor(PALETTE[YELLOW], dtype=torch.uint8).view(3, 1, 1)).all(0).any(1)
        return int(rows.sum())

    assert font_size_for(128, 128) == 10 and font_size_for(1280, 1280) == 38
    small, large = label_height(160), label_height(1280)
    assert 2.5 < large / small < 5, (small, large)


def test_labels_are_never_cut_at_the_image_edge():
    img = torch.zeros(3, 200, 200, dtype=torch.uint8)
    name = "a_rather_long_class_name"
    # a box in the top-right corner: no room above it, little room to its right
    out = draw_detections(img, [[170.0, 0.0, 199.0, 60.0]], [YELLOW], [0.95], ["x"] * 10 + [name])
    is_label = (out == torch.tensor(PALETTE[YELLOW], dtype=torch.uint8).view(3, 1, 1)).all(0)
    rows = is_label[2:12]  # just inside the box's top edge
    cols = rows.any(0).nonzero().flatten()
    # the label starts left of the box (moved in from the edge) and ends at the edge
    assert int(cols.min()) < 170 - 40 and int(cols.max()) == 199
    # the text fits: its last pixel column is inside the filled box
    text = _dark(out[:, 2:12]) & rows.any(0, keepdim=True)
    assert text.any() and int(text.any(0).nonzero().max()) < 199


def test_a_label_wider_than_the_image_is_shortened_not_cut():
    from PIL import Image, ImageDraw

    from detcore.visualize import _fit, _font

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = _font(10)
    short = _fit(draw, "x" * 200, font, 100)
    assert short.endswith("…") and draw.textlength(short, font=font) <= 100
    out = draw_detections(torch.zeros(3, 100, 100, dtype=torch.uint8), [[10.0, 40.0, 60.0, 90.0]], [YELLOW],
                          None, ["y" * 200] * 11)
    assert out.shape == (3, 100, 100)


def test_ground_truth_and_prediction_panels_are_captioned():
    from detcore.visualize import CAPTION_BACKGROUND, PANEL_GAP, ground_truth_and_predictions

    img = torch.full((3, 120, 160), 90, dtype=torch.uint8)
    gt = {"boxes": torch.tensor([[20.0, 40.0, 100.0, 110.0]]), "labels": torch.tensor([1])}
    pred = {"boxes": torch.tensor([[22.0, 42.0, 100.0, 108.0]]), "labels": torch.tensor([1]),
            "scores": torch.tensor([0.7])}
    out = ground_truth_and_predictions(img, gt, pred, ["a", "b"], score_thr=0.3)
    strip = out.shape[1] - 120
    assert 8 <= strip <= 30 and out.shape[2] == 2 * 160 + 4
    for x0 in (0, 164):  # each panel has a dark caption strip with white text in it
        cap = out[:, :strip, x0 : x0 + 160]
        assert _share(cap, CAPTION_BACKGROUND) > 0.6 and _bright(cap).float().mean() > 0.01
    assert _share(out[:, :, 160:164], PANEL_GAP) == 1.0
    # under the captions: the image with the ground truth (left) and the prediction (right)
    assert torch.equal(out[:, strip + 110, 60], torch.tensor(class_color(1), dtype=torch.uint8))
    assert torch.equal(out[:, strip + 108, 164 + 60], torch.tensor(class_color(1), dtype=torch.uint8))
    # the captions differ (text pixels in other places)
    assert not torch.equal(out[:, :strip, :160], out[:, :strip, 164:])
    # panels of different heights cannot be joined
    from detcore.visualize import panels

    with pytest.raises(ValueError, match="one height"):
        panels([("a", img), ("b", img[:, :100])])


def test_docs_drawing_snippet_runs_as_written(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    from PIL import Image

    doc = (Path(__file__).resolve().parents[1] / "docs" / "tools.md").read_text()
    snippet = re.search(r"<!-- drawing-snippet -->\n```python\n(.*?)```", doc, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "docs/tools.md", "exec"), {})
    with Image.open(tmp_path / "drawn.png") as im:
        assert im.size == (320, 240)
    with Image.open(tmp_path / "panels.png") as im:
        assert im.size[0] == 2 * 320 + 4 and im.size[1] > 240
