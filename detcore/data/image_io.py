"""Reading images for datasets: torchvision.io decoding with a PIL fallback.

EXIF orientation is applied in both paths, so an image reads the way a photo
viewer shows it (and the way annotation tools that honour EXIF labelled it).
Errors name the file; the dataset adds the record.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import TYPE_CHECKING

from detcore.errors import DetcoreError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("detcore.data")

# torchvision 0.29 deprecates its decoders in favour of TorchCodec, which is not
# a dependency; they still work, and the warning would repeat for every image.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning)


class ImageReadError(DetcoreError):
    """An image file that is missing or cannot be decoded.

    Takes a single message so that it survives being re-raised from a
    DataLoader worker process.
    """


# An image more than this many times larger (per side) than what the caller
# keeps of it is "far larger": a JPEG is decoded at reduced size, anything
# else is decoded whole with one warning naming the file.
LARGE_IMAGE_FACTOR = 4

# Files already warned about in this process (one warning per file, not per epoch).
_warned_large: set[str] = set()


def read_image(path: str | os.PathLike, *, min_scale: float | None = None) -> torch.Tensor:
    """Decode ``path`` as a uint8 RGB tensor ``[3, H, W]`` (EXIF orientation applied).

    torchvision.io decodes JPEG/PNG/WebP/GIF; anything else (BMP, TIFF ...)
    goes through PIL. Raises :class:`ImageReadError` naming the file.

    ``min_scale`` is the least fraction of the image's size the caller needs
    (a dataset's ``Pipeline.min_scale``). Below ``1 / LARGE_IMAGE_FACTOR`` a
    JPEG is decoded at 1/2, 1/4 or 1/8 of its size (JPEG's DCT scaling, PIL's
    ``draft``), never below ``min_scale``, so a 12000x12000 photo bound for an
    800-pixel input does not hold 430 MB; other formats are decoded whole,
    with one warning naming the file. The result's size says what was done:
    a caller scales its boxes by it.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageReadError(f"image file not found: '{path}'")
    large = min_scale is not None and min_scale * LARGE_IMAGE_FACTOR < 1
    if large:
        reduced = _read_jpeg_reduced(path, min_scale)
        if reduced is not None:
            return reduced
    image = _read_full(path)
    if large and path not in _warned_large:
        _warned_large.add(path)
        h, w = image.shape[-2:]
        logger.warning(
            "image '%s' is %dx%d pixels, over %dx what the transforms keep of it; it is decoded at full "
            "size (%d MB) each time it is read. Shrink the file (and scale its boxes) to save memory and time.",
            path, w, h, LARGE_IMAGE_FACTOR, image.numel() // 2**20,
        )
    return image


def _read_full(path: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        data = read_file(path)
    except (OSError, RuntimeError) as exc:
        raise ImageReadError(f"cannot read image file '{path}': {exc}") from None
    try:
        return decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except (RuntimeError, ValueError):
        pass  # a format torchvision.io does not decode: let PIL try
    try:
        from PIL import Image

        with Image.open(path) as im:
            return _pil_to_tensor(im)
    except Exception as exc:  # PIL raises many types for broken files
        raise ImageReadError(
            f"cannot decode image file '{path}' ({type(exc).__name__}: {exc}); the file is "
            f"corrupt or not an image"
        ) from None


def _pil_to_tensor(im):
    import numpy as np
    import torch
    from PIL import ImageOps

    im = ImageOps.exif_transpose(im).convert("RGB")
    arr = np.asarray(im, dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _read_jpeg_reduced(path: str, min_scale: float):
    """A JPEG decoded at a reduced size not below ``min_scale``; ``None`` for
    other formats or when JPEG's scales (1/2, 1/4, 1/8) cannot go below full size."""
    import math

    from PIL import Image

    try:
        with warnings.catch_warnings():
            # PIL's decompression-bomb warning is about full-size decoding,
            # which is what this avoids.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.format != "JPEG":
                    return None
                w, h = im.size
                # draft picks the largest reduction that keeps at least this size.
                im.draft("RGB", (math.ceil(w * min_scale), math.ceil(h * min_scale)))
                if im.size == (w, h):
                    return None
                return _pil_to_tensor(im)
    except Exception:  # noqa: BLE001 - full decoding below reports a broken file
        return None


def image_size(path: str | os.PathLike, *, decode: bool = False) -> tuple[int, int]:
    """``(height, width)`` of an image as displayed (EXIF orientation applied),
    read from the header; with ``decode=True`` the whole image is decoded so
    that truncated or corrupt files are caught. Raises :class:`ImageReadError`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageReadError(f"image file not found: '{path}'")
    try:
        from PIL import Image

        with warnings.catch_warnings():
            if not decode:  # a header read decodes nothing, however large
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            try:
                orientation = im.getexif().get(0x0112, 1)
            except Exception:
                orientation = 1
            if decode:
                im.load()
    except Exception as exc:
        raise ImageReadError(
            f"cannot read image file '{path}' ({type(exc).__name__}: {exc}); the file is corrupt "
            f"or not an image"
        ) from None
    # EXIF orientations 5-8 swap width and height.
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return h, w
