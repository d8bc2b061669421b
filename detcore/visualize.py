"""Drawing detections and ground truth on images (torchvision.utils underneath).

Used by ``detcore test --show-dir``, ``detcore predict``, ``detcore
browse-dataset`` and by plugins that draw images (detcore-hooks'
visualisation hook). Everything works on uint8 ``[3, H, W]`` tensors.
"""

from __future__ import annotations

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
):
    """Return a copy of ``image_uint8`` (uint8 ``[3, H, W]``) with boxes,
    ``"class score"`` labels and, when given, masks drawn in per-class colours.

    ``boxes``: float ``[K, 4]`` xyxy in the image's pixels; ``labels``: int
    ``[K]`` (0-based, indexing ``class_names``); ``scores``: ``[K]`` or
    ``None`` (ground truth: names only); ``masks``: ``[K, H, W]`` or
    ``[K, 1, H, W]``, bool/uint8, or float probabilities (thresholded at 0.5).
    """
    import torch
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    image = torch.as_tensor(image_uint8)
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"draw_detections needs a uint8 image [3, H, W], got {image.dtype} {list(image.shape)}"
        )
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    image = image.detach().cpu().contiguous()
    boxes = torch.as_tensor(boxes, dtype=torch.float32).detach().cpu().reshape(-1, 4)
    labels = torch.as_tensor(labels).detach().cpu().reshape(-1).long()
    if scores is not None:
        scores = torch.as_tensor(scores).detach().cpu().reshape(-1)
    if len(boxes) == 0:
        return image.clone()
    colors = [class_color(int(lab), palette) for lab in labels]
    if masks is not None and len(masks):
        m = torch.as_tensor(masks).detach().cpu()
        if m.ndim == 4:
            m = m[:, 0]
        m = m > 0.5 if m.is_floating_point() else m.bool()
        image = draw_segmentation_masks(image, m, alpha=0.45, colors=colors)
    h, w = image.shape[-2:]
    # Boxes partly outside the image are clipped for drawing only.
    boxes = boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
    texts = [
        _label_text(lab, None if scores is None else scores[i], class_names)
        for i, lab in enumerate(labels.tolist())
    ]
    width = width if width is not None else max(1, round(min(h, w) / 160))
    # Labels are drawn only where there is room for text (tiny images stay readable).
    show_text = min(h, w) >= 96
    return draw_bounding_boxes(
        image,
        boxes,
        labels=texts if show_text else None,
        colors=colors,
        width=width,
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
