"""Built-in plugin "detcore.synthetic": the ``synthetic`` dataset (generated
images with coloured boxes; no files, no extra packages). Light: torch is
imported when the factory is called."""

from __future__ import annotations

from typing import Union

from detcore import hookimpl
from detcore.catalog import Sub, check_with
from detcore.errors import ConfigCheckError, shorten

TransformSpec = Sub["transform"]


def _check(args: dict, ctx) -> None:
    for key in ("num_images", "num_classes", "max_objects"):
        v = args.get(key)
        if isinstance(v, int) and v < 1:
            raise ConfigCheckError(f"{key} must be >= 1, got {v}", key=key)
    size = args.get("image_size")
    if isinstance(size, list) and (len(size) != 2 or any(not isinstance(s, int) or s < 8 for s in size)):
        raise ConfigCheckError(f"image_size must be an int or [height, width], each >= 8, got {shorten(size)}", key="image_size")
    if isinstance(size, int) and size < 8:
        raise ConfigCheckError(f"image_size must be >= 8, got {size}", key="image_size")
    classes = args.get("classes")
    if isinstance(classes, list) and not classes:
        raise ConfigCheckError("classes must name at least one class", key="classes")
    palette = args.get("palette")
    if isinstance(palette, list) and any(
        not isinstance(c, list) or len(c) != 3 or any(not isinstance(v, int) or not 0 <= v <= 255 for v in c)
        for c in palette
    ):
        raise ConfigCheckError("palette must be a list of [r, g, b] with values 0..255", key="palette")
    num = args.get("num_classes", 3)
    names = classes if isinstance(classes, list) else [f"class{i}" for i in range(num)] if isinstance(num, int) else None
    ctx.declare(masks=False, **({"class_names": names} if names else {}))


@check_with(_check)
def synthetic(
    num_images: int = 16,
    image_size: Union[int, list[int]] = 64,
    num_classes: int = 3,
    classes: list[str] | None = None,
    palette: list[list[int]] | None = None,
    max_objects: int = 3,
    vary_aspect: bool = False,
    seed: int = 0,
    transforms: list[TransformSpec] = [],  # noqa: B006 - never mutated
):
    """Generated images (noisy grey background, one to ``max_objects``
    filled rectangles coloured by class), deterministic from ``seed``.
    ``image_size`` is an int or ``[height, width]``; ``vary_aspect`` makes
    every other image portrait; ``classes`` names the classes (else
    ``class0``...)."""
    from detcore.data.synthetic import SyntheticDataset
    from detcore.data.transforms import build_pipeline

    size = [image_size, image_size] if isinstance(image_size, int) else image_size
    return SyntheticDataset(
        num_images,
        size,
        num_classes,
        classes=classes,
        palette=palette,
        max_objects=max_objects,
        vary_aspect=vary_aspect,
        seed=seed,
        transforms=build_pipeline(transforms) if transforms else None,
    )


@hookimpl
def detcore_datasets():
    return {"synthetic": synthetic}
