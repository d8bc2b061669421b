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
