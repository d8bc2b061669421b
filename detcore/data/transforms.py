"""Box- and mask-aware data transforms, registered by name for run files.

Every factory here is light (torchvision is imported when it is called), so
the built-in plugin that registers them costs nothing at ``detcore --help``.
They return ``torchvision.transforms.v2`` transforms, which move
``tv_tensors.BoundingBoxes`` and ``tv_tensors.Mask`` together with the image
and pass every other target entry (``labels``, ``image_id``, ``orig_size``)
through untouched.

A dataset builds its run-file list with :func:`build_pipeline`, which always
ends the pipeline with :func:`clip_boxes` and :func:`sanitize_boxes`: boxes
that leave the image are clipped to it, and boxes left smaller than a pixel
are dropped together with their label, ``iscrowd`` flag and mask. Doing that
once at the end (as torchvision's detection references do) keeps every
transform consistent about what happens to boxes that leave the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Union

from detcore.catalog import check_with
from detcore.errors import ConfigCheckError, shorten

if TYPE_CHECKING:
    from detcore.catalog import Spec

__all__ = [
    "TRANSFORMS",
    "build_pipeline",
    "clip_boxes",
    "color_jitter",
    "photometric_distortion",
    "random_crop",
    "random_grayscale",
    "random_horizontal_flip",
    "random_iou_crop",
    "random_resize",
    "random_vertical_flip",
    "random_zoom_out",
    "resize",
    "sanitize_boxes",
    "scale_jitter",
]


def _pair(value, name: str) -> list[float]:
    if len(value) != 2:
        raise ConfigCheckError(f"expected two numbers [low, high], got {shorten(value)}", key=name)
    if value[0] > value[1]:
        raise ConfigCheckError(f"expected [low, high] with low <= high, got {shorten(value)}", key=name)
    return [float(v) for v in value]


def _prob(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ConfigCheckError(f"a probability must be in [0, 1], got {p}", key="p")
    return float(p)


# Checks attached with ``check_with`` so ``detcore config check`` rejects bad
# arguments without building anything; the factories run the same checks (via
# _pair, _prob and the _check_* functions) when called directly. ``args`` are
# the run-file table's arguments, already type-checked against the signature.


def _checks(*, pairs: tuple[str, ...] = (), prob: bool = False):
    """A check for the ``[low, high]`` arguments ``pairs`` and, with
    ``prob``, the probability ``p``."""

    def check(args: dict, ctx=None) -> None:
        for name in pairs:
            if name in args:
                _pair(args[name], name)
        if prob and "p" in args:
            _prob(args["p"])

    return check


def _positive(values, name: str) -> None:
    """Output sizes in pixels: torchvision accepts 0 or -3 when the transform
    is built and fails in a DataLoader worker on the first image."""
    for v in values if isinstance(values, list) else [values]:
        if v is not None and v < 1:
            raise ConfigCheckError(f"{name} must be at least 1 pixel, got {shorten(values)}", key=name)


def _check_resize(args: dict, ctx=None) -> None:
    size, max_size = args.get("size"), args.get("max_size")
    _positive(size, "size")
    _positive(max_size, "max_size")
    if isinstance(size, list):
        if len(size) != 2:
            raise ConfigCheckError(f"size must be one integer (shorter side) or [h, w], got {shorten(size)}", key="size")
        if max_size is not None:
            raise ConfigCheckError("max_size only applies when size is one integer (the shorter side)", key="max_size")
    elif max_size is not None and size is not None and max_size <= size:
        # torchvision's Resize needs the cap strictly above the shorter side.
        raise ConfigCheckError(
            f"max_size ({max_size}) must be greater than size ({size}); leave max_size out to "
            f"only set the shorter side",
            key="max_size",
        )


def _check_random_resize(args: dict, ctx=None) -> None:
    if "sizes" in args and not args["sizes"]:
        raise ConfigCheckError("sizes must list at least one shorter-side length", key="sizes")
    _positive(args.get("sizes"), "sizes")
    _positive(args.get("max_size"), "max_size")


def _check_scale_jitter(args: dict, ctx=None) -> None:
    target_size = args.get("target_size")
    if target_size is not None and len(target_size) != 2:
        raise ConfigCheckError(f"target_size must be [h, w], got {shorten(target_size)}", key="target_size")
    _positive(target_size, "target_size")
    _checks(pairs=("scale_range",))(args)


def _check_random_crop(args: dict, ctx=None) -> None:
    _positive(args.get("size"), "size")


def _check_sanitize(args: dict, ctx=None) -> None:
    for name in ("min_size", "min_area"):
        value = args.get(name, 1.0)
        if value < 1:
            raise ConfigCheckError(f"{name} must be >= 1, got {value}", key=name)


@check_with(_checks(prob=True))
def random_horizontal_flip(p: float = 0.5):
    """Flip image, boxes and masks left-right with probability ``p``."""
    from torchvision.transforms import v2

    return v2.RandomHorizontalFlip(_prob(p))


@check_with(_checks(prob=True))
def random_vertical_flip(p: float = 0.5):
    """Flip image, boxes and masks upside down with probability ``p``."""
    from torchvision.transforms import v2

    return v2.RandomVerticalFlip(_prob(p))


@check_with(_check_resize)
def resize(size: Union[int, list[int]], max_size: int | None = None, antialias: bool = True):
    """Resize: ``size = 800`` sets the shorter side (aspect ratio kept, the
    longer side capped at ``max_size``); ``size = [h, w]`` sets both."""
    from torchvision.transforms import v2

    _check_resize({"size": size, "max_size": max_size})
    if isinstance(size, list):
        return v2.Resize(list(size), antialias=antialias)
    return v2.Resize(size, max_size=max_size, antialias=antialias)


@check_with(_check_random_resize)
def random_resize(sizes: list[int], max_size: int | None = None, antialias: bool = True):
    """Multi-scale training: the shorter side is drawn from ``sizes`` for each
    image (the longer side capped at ``max_size``)."""
    from torchvision.transforms import v2

    _check_random_resize({"sizes": sizes, "max_size": max_size})
    return v2.RandomShortestSize(min_size=list(sizes), max_size=max_size, antialias=antialias)


@check_with(_check_scale_jitter)
def scale_jitter(target_size: list[int], scale_range: list[float] = [0.1, 2.0], antialias: bool = True):  # noqa: B006
    """Large-scale jitter (Copy-Paste paper): rescale so the image fits
    ``target_size = [h, w]`` times a factor drawn from ``scale_range``."""
    from torchvision.transforms import v2

    _check_scale_jitter({"target_size": target_size})
    return v2.ScaleJitter(tuple(target_size), scale_range=tuple(_pair(scale_range, "scale_range")), antialias=antialias)


def random_iou_crop(
    min_scale: float = 0.3,
    max_scale: float = 1.0,
    min_aspect_ratio: float = 0.5,
    max_aspect_ratio: float = 2.0,
    sampler_options: list[float] | None = None,
    trials: int = 40,
):
    """SSD's random crop: a crop whose IoU with the boxes reaches a threshold
    drawn from ``sampler_options`` (2.0 in the list means "no crop")."""
    from torchvision.transforms import v2

    return v2.RandomIoUCrop(
        min_scale=min_scale,
        max_scale=max_scale,
        min_aspect_ratio=min_aspect_ratio,
        max_aspect_ratio=max_aspect_ratio,
        sampler_options=sampler_options,
        trials=trials,
    )


@check_with(_checks(pairs=("side_range",), prob=True))
def random_zoom_out(fill: int = 0, side_range: list[float] = [1.0, 4.0], p: float = 0.5):  # noqa: B006
    """SSD's zoom out: place the image on a canvas up to ``side_range[1]``
    times larger, filled with ``fill`` (masks are padded with 0)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    return v2.RandomZoomOut(
        fill={tv_tensors.Image: fill, "others": 0},
        side_range=tuple(_pair(side_range, "side_range")),
        p=_prob(p),
    )


@check_with(_check_random_crop)
def random_crop(size: Union[int, list[int]], pad_if_needed: bool = True, fill: int = 0):
    """Crop a random ``size`` (int: square, or ``[h, w]``) window; boxes are
    clipped to it and boxes left outside are dropped at the end of the pipeline."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    _check_random_crop({"size": size})
    return v2.RandomCrop(
        size if isinstance(size, int) else list(size),
        pad_if_needed=pad_if_needed,
        fill={tv_tensors.Image: fill, "others": 0},
    )


@check_with(_checks(pairs=("brightness", "contrast", "saturation", "hue"), prob=True))
def photometric_distortion(
    brightness: list[float] = [0.875, 1.125],  # noqa: B006
    contrast: list[float] = [0.5, 1.5],  # noqa: B006
    saturation: list[float] = [0.5, 1.5],  # noqa: B006
    hue: list[float] = [-0.05, 0.05],  # noqa: B006
    p: float = 0.5,
):
    """SSD's photometric distortion: brightness, contrast, saturation, hue and
    channel order, each applied with probability ``p``."""
    from torchvision.transforms import v2

    return v2.RandomPhotometricDistort(
        brightness=tuple(_pair(brightness, "brightness")),
        contrast=tuple(_pair(contrast, "contrast")),
        saturation=tuple(_pair(saturation, "saturation")),
        hue=tuple(_pair(hue, "hue")),
        p=_prob(p),
    )


def color_jitter(brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0):
    """torchvision's ColorJitter (factors drawn from [1 - x, 1 + x], hue from [-hue, hue])."""
    from torchvision.transforms import v2

    return v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)


@check_with(_checks(prob=True))
def random_grayscale(p: float = 0.1):
    """Convert to grayscale (kept as 3 channels) with probability ``p``."""
    from torchvision.transforms import v2

    return v2.RandomGrayscale(_prob(p))


def clip_boxes():
    """Clip boxes to the image (always run at the end of a dataset's pipeline)."""
    from torchvision.transforms import v2

    return v2.ClampBoundingBoxes()


def _labels_and_crowd(inputs) -> Any:
    # Everything that has one row per box must be filtered together with the
    # boxes; masks are handled by SanitizeBoundingBoxes itself.
    target = inputs[1] if isinstance(inputs, (tuple, list)) and len(inputs) > 1 else inputs
    if not isinstance(target, dict):
        return None
    return tuple(target[k] for k in ("labels", "iscrowd", "area") if k in target)


@check_with(_check_sanitize)
def sanitize_boxes(min_size: float = 1.0, min_area: float = 1.0):
    """Drop boxes narrower/shorter than ``min_size`` pixels or smaller than
    ``min_area``, or outside the image, with their labels, ``iscrowd`` and masks
    (always run at the end of a dataset's pipeline with the defaults)."""
    from torchvision.transforms import v2

    _check_sanitize({"min_size": min_size, "min_area": min_area})
    return v2.SanitizeBoundingBoxes(min_size=min_size, min_area=min_area, labels_getter=_labels_and_crowd)


# name -> factory; registered by the built-in plugin "detcore.data".
TRANSFORMS: dict[str, Callable[..., Any]] = {
    "random_horizontal_flip": random_horizontal_flip,
    "random_vertical_flip": random_vertical_flip,
    "resize": resize,
    "random_resize": random_resize,
    "scale_jitter": scale_jitter,
    "random_iou_crop": random_iou_crop,
    "random_zoom_out": random_zoom_out,
    "random_crop": random_crop,
    "photometric_distortion": photometric_distortion,
    "color_jitter": color_jitter,
    "random_grayscale": random_grayscale,
    "clip_boxes": clip_boxes,
    "sanitize_boxes": sanitize_boxes,
}


class Pipeline:
    """The transforms of one dataset, applied in order to ``(image, target)``,
    followed by clipping and sanitizing of the boxes."""

    def __init__(self, transforms: list):
        from torchvision.transforms import v2

        self.transforms = list(transforms)
        self._compose = v2.Compose([*self.transforms, clip_boxes(), sanitize_boxes()])

    def __call__(self, image, target):
        return self._compose(image, target)

    def min_scale(self, height: int, width: int) -> float:
        """The least fraction of a ``height`` x ``width`` image's size that
        this pipeline's output can depend on: the scale of its first
        resizing transform (the largest it may pick), found by looking past
        flips and colour changes. 1.0 when the first geometric transform is
        not a resize (a crop must see full-size pixels). A dataset may decode
        the image at any size at or above this scale (see
        :func:`detcore.data.image_io.read_image`)."""
        from torchvision.transforms import v2

        neutral = (
            v2.RandomHorizontalFlip,
            v2.RandomVerticalFlip,
            v2.RandomPhotometricDistort,
            v2.ColorJitter,
            v2.RandomGrayscale,
        )
        short, long = min(height, width), max(height, width)
        for t in self.transforms:
            if isinstance(t, neutral):
                continue
            if isinstance(t, v2.Resize) and t.size is not None:
                if len(t.size) == 2:
                    scale = max(t.size[0] / height, t.size[1] / width)
                else:
                    scale = t.size[0] / short
                    if t.max_size is not None:
                        scale = min(scale, t.max_size / long)
            elif isinstance(t, v2.RandomShortestSize):
                scale = max(s / short for s in t.min_size)
                if t.max_size is not None:
                    scale = min(scale, t.max_size / long)
            elif isinstance(t, v2.ScaleJitter):
                th, tw = t.target_size
                scale = min(th / height, tw / width) * t.scale_range[1]
            else:
                return 1.0
            return min(scale, 1.0)
        return 1.0

    def __repr__(self) -> str:
        inner = ", ".join(type(t).__name__ for t in self.transforms)
        return f"Pipeline([{inner}] + clip + sanitize)"


def build_pipeline(specs: Sequence[Spec | Callable] | None) -> Pipeline:
    """Build a dataset's ``transforms`` list (the ``Spec`` objects a
    ``list[Sub["transform"]]`` parameter receives, or transforms already
    built) into one callable ``(image, target) -> (image, target)`` that
    applies them in order, then clips boxes to the image and drops boxes
    left empty (with their labels, ``iscrowd`` and masks)."""
    from detcore.catalog import Spec

    built = [s() if isinstance(s, Spec) else s for s in (specs or [])]
    return Pipeline(built)
