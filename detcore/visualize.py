"""Drawing detections and ground truth on images (torchvision.utils underneath).

Used by ``detcore test --show-dir``, ``detcore predict``, ``detcore
browse-dataset`` and by plugins that draw images (detcore-hooks'
visualisation hook). Everything works on uint8 ``[3, H, W]`` tensors.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Distinct, saturated colours (Tableau 10 + a few): class ``i`` gets
# ``PALETTE[i % len(PALETTE)]`` so a class has the same colour in every image.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (255, 255, 0), (0, 255, 255), (255, 0, 255), (0, 128, 255), (128, 255, 0),
)


def class_color(label: int, palette: Sequence[tuple[int, int, int]] | None = None) -> tuple[int, int, int]:
    """The colour of class ``label`` in ``palette`` (default :data:`PALETTE`)."""
    pal = palette or PALETTE
    return tuple(pal[int(label) % len(pal)])


def image_to_uint8(image: torch.Tensor) -> torch.Tensor:
    """A dataset or model-input image ``[3, H, W]`` (uint8, or float in
    0..1) as a uint8 tensor on the same device, ready for drawing."""
    import torch

    image = image.as_subclass(torch.Tensor) if isinstance(image, torch.Tensor) else torch.as_tensor(image)
    if image.is_floating_point():
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return image


def _label_text(label: int, score, class_names: Sequence[str] | None) -> str:
    label = int(label)
    name = class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)
    return name if score is None else f"{name} {float(score):.2f}"


def font_size_for(height: int, width: int) -> int:
    """Label font size (pixels) for an image of ``height x width``: 3% of the
    mean side, at least 10, so labels read the same at any resolution."""
    return max(10, round(0.03 * (height + width) / 2))


def text_color(background: Sequence[int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with ``background`` (RGB):
    ITU-R BT.601 luma above the middle gets black text."""
    r, g, b = (int(c) for c in background[:3])
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


@functools.lru_cache(maxsize=32)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: scalable built-in font
    except TypeError:  # older Pillow: one fixed-size bitmap font
        return ImageFont.load_default()


def _fit(draw, text: str, font, max_width: int) -> str:
    """``text``, shortened with an ellipsis until it is at most ``max_width`` wide."""
    if draw.textlength(text, font=font) <= max_width:
        return text
    while len(text) > 1 and draw.textlength(text + "…", font=font) > max_width:
        text = text[:-1]
    return text + "…"


def _draw_label(draw, text: str, box: Sequence[float], color, font, size: tuple[int, int], line: int) -> None:
    """A filled label in the box's colour with contrasting text, above the
    box's top-left corner, or just inside it when there is no room above;
    moved left (and shortened as a last resort) so it is never cut at the
    image's edge."""
    h, w = size
    pad = max(1, font.size // 6) if hasattr(font, "size") else 1
    text = _fit(draw, text, font, w - 2 * pad)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left, bottom - top
    bw, bh = tw + 2 * pad, th + 2 * pad
    x1, y1 = int(box[0]), int(box[1])
    y = y1 - bh if y1 - bh >= 0 else min(y1 + line, max(0, h - bh))
    x = min(max(0, x1), max(0, w - bw))
    draw.rectangle((x, y, x + bw - 1, y + bh - 1), fill=tuple(color))
    draw.text((x + pad - left, y + pad - top), text, fill=text_color(color), font=font)


def draw_detections(
    image_uint8,
    boxes,
    labels,
    scores=None,
    class_names: Sequence[str] | None = None,
    masks=None,
    palette: Sequence[tuple[int, int, int]] | None = None,
    *,
    width: int | None = None,
    font_size: int | None = None,
):
    """Return a copy of ``image_uint8`` (uint8 ``[3, H, W]``) with boxes,
    ``"class score"`` labels and, when given, masks drawn in per-class colours.

    ``boxes``: float ``[K, 4]`` xyxy in the image's pixels; ``labels``: int
    ``[K]`` (0-based, indexing ``class_names``); ``scores``: ``[K]`` or
    ``None`` (ground truth: names only); ``masks``: ``[K, H, W]`` or
    ``[K, 1, H, W]``, bool/uint8, or float probabilities (thresholded at 0.5).

    Each label is written on a filled box of its class colour in black or
    white (whichever contrasts), at ``font_size`` pixels (default
    :func:`font_size_for` the image), inside the image even for boxes at its
    edge. Images smaller than 96 pixels get boxes only (no room for text).
    """
    import torch
    from PIL import ImageDraw
    from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    image = torch.as_tensor(image_uint8)
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"draw_detections needs a uint8 image [3, H, W], got {image.dtype} {list(image.shape)}"
        )
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    image = image.detach().cpu().contiguous()

    def plain(x):  # tv_tensors (BoundingBoxes, Mask) and GPU tensors to plain CPU tensors
        return torch.as_tensor(x).detach().cpu().as_subclass(torch.Tensor)

    boxes = plain(boxes).float().reshape(-1, 4)
    labels = plain(labels).reshape(-1).long()
    if scores is not None:
        scores = plain(scores).reshape(-1)
    if len(boxes) == 0:
        return image.clone()
    colors = [class_color(int(lab), palette) for lab in labels]
    if masks is not None and len(masks):
        m = plain(masks)
        if m.ndim == 4:
            m = m[:, 0]
        m = m > 0.5 if m.is_floating_point() else m.bool()
        image = draw_segmentation_masks(image, m, alpha=0.45, colors=colors)
    h, w = image.shape[-2:]
    # Boxes partly outside the image are clipped for drawing only.
    boxes = boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
    width = width if width is not None else max(1, round(min(h, w) / 160))
    out = draw_bounding_boxes(image, boxes, colors=colors, width=width)
    if min(h, w) < 96:
        return out
    pil = to_pil_image(out)
    draw = ImageDraw.Draw(pil)
    font = _font(font_size or font_size_for(h, w))
    # Highest score last, so its label is on top where labels overlap.
    order = range(len(boxes)) if scores is None else scores.argsort().tolist()
    for i in order:
        text = _label_text(int(labels[i]), None if scores is None else scores[i], class_names)
        _draw_label(draw, text, boxes[i].tolist(), colors[i], font, (h, w), width)
    return pil_to_tensor(pil)


# The strip above a captioned panel, and the gap between panels.
CAPTION_BACKGROUND = (32, 32, 32)
PANEL_GAP = (128, 128, 128)


def caption(image_uint8, text: str, *, short: str | None = None, font_size: int | None = None):
    """``image_uint8`` (uint8 ``[3, H, W]``) under a dark strip holding
    ``text`` in white (``short`` instead when ``text`` does not fit the
    width; shortened with an ellipsis if neither does). The strip's height
    depends on the font size only, so panels of one size line up."""
    import torch
    from PIL import Image, ImageDraw
    from torchvision.transforms.v2.functional import pil_to_tensor

    image = torch.as_tensor(image_uint8)
    h, w = int(image.shape[-2]), int(image.shape[-1])
    font = _font(font_size or font_size_for(h, w))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad = max(2, getattr(font, "size", 10) // 4)
    if short is not None and probe.textlength(text, font=font) > w - 2 * pad:
        text = short
    text = _fit(probe, text, font, w - 2 * pad)
    _, top, _, bottom = probe.textbbox((0, 0), "Agy", font=font)
    strip = Image.new("RGB", (w, bottom - top + 2 * pad), CAPTION_BACKGROUND)
    ImageDraw.Draw(strip).text((pad, pad - top), text, fill=(255, 255, 255), font=font)
    return torch.cat([pil_to_tensor(strip), image.to(torch.uint8)], dim=-2)


def panels(captioned: Sequence[tuple[str, object]], *, short: Sequence[str] | None = None, gap: int = 4):
    """Images of one height side by side, each under its caption, with a
    grey ``gap`` between them: ground truth next to predictions.

    ``captioned``: ``(caption, uint8 [3, H, W])`` pairs; ``short``: a
    shorter caption for each, used when the long one does not fit the panel.
    """
    import torch

    heights = {int(img.shape[-2]) for _, img in captioned}
    if len(heights) != 1:
        raise ValueError(f"panels need images of one height, got {sorted(heights)}")
    h = heights.pop()
    size = min(font_size_for(h, int(img.shape[-1])) for _, img in captioned)
    shorts = list(short) if short is not None else [None] * len(captioned)
    out = [caption(img, text, short=sh, font_size=size) for (text, img), sh in zip(captioned, shorts)]
    if gap > 0 and len(out) > 1:
        bar = torch.tensor(PANEL_GAP, dtype=torch.uint8).view(3, 1, 1).expand(3, out[0].shape[-2], gap)
        out = [p for panel in out for p in (panel, bar)][:-1]
    return torch.cat(out, dim=-1)


def ground_truth_and_predictions(image_uint8, gt: dict, pred: dict, class_names: Sequence[str] | None,
                                 score_thr: float | None = None):
    """The ground truth (left) and the predictions (right) drawn on
    ``image_uint8``, each panel captioned. ``gt``: ``boxes``, ``labels``
    (and ``masks``); ``pred``: ``boxes``, ``labels``, ``scores`` (and
    ``masks``), already filtered by score; ``score_thr`` is named in the
    caption."""
    left = draw_detections(image_uint8, gt["boxes"], gt["labels"], None, class_names, gt.get("masks"))
    right = draw_detections(image_uint8, pred["boxes"], pred["labels"], pred["scores"], class_names,
                            pred.get("masks"))
    n_gt, n_pred = len(gt["boxes"]), len(pred["boxes"])
    thr = "" if score_thr is None else f", score >= {score_thr:g}"
    return panels(
        [(f"ground truth ({n_gt})", left), (f"prediction ({n_pred}{thr})", right)],
        short=[f"GT {n_gt}", f"pred {n_pred}"],
    )


def save_image(image_uint8, path: str | Path) -> Path:
    """Write a uint8 ``[3, H, W]`` tensor as PNG (``.png``) or JPEG (anything
    else); the parent folder is created."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = image_uint8.detach().cpu().permute(1, 2, 0).contiguous().numpy()
    im = Image.fromarray(arr, mode="RGB") if arr.shape[2] == 3 else Image.fromarray(arr[..., 0], mode="L")
    if path.suffix.lower() == ".png":
        im.save(path, format="PNG")
    else:
        im.save(path, format="JPEG", quality=92)
    return path
