"""Reading images for datasets: torchvision.io decoding with a PIL fallback.

EXIF orientation is applied in both paths, so an image reads the way a photo
viewer shows it (and the way annotation tools that honour EXIF labelled it).
Errors name the file; the dataset adds the record.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

from detcore.errors import DetcoreError

if TYPE_CHECKING:
    import torch

# torchvision 0.29 deprecates its decoders in favour of TorchCodec, which is not
# a dependency; they still work, and the warning would repeat for every image.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning)


class ImageReadError(DetcoreError):
    """An image file that is missing or cannot be decoded.

    Takes a single message so that it survives being re-raised from a
    DataLoader worker process.
    """


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode ``path`` as a uint8 RGB tensor ``[3, H, W]`` (EXIF orientation applied).

    torchvision.io decodes JPEG/PNG/WebP/GIF; anything else (BMP, TIFF ...)
    goes through PIL. Raises :class:`ImageReadError` naming the file.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_image, read_file

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageReadError(f"image file not found: '{path}'")
    try:
        data = read_file(path)
    except (OSError, RuntimeError) as exc:
        raise ImageReadError(f"cannot read image file '{path}': {exc}") from None
    try:
        return decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except (RuntimeError, ValueError):
        pass  # a format torchvision.io does not decode: let PIL try
    try:
        from PIL import Image, ImageOps

        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            import numpy as np

            arr = np.asarray(im, dtype=np.uint8).copy()
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    except Exception as exc:  # PIL raises many types for broken files
        raise ImageReadError(
            f"cannot decode image file '{path}' ({type(exc).__name__}: {exc}); the file is "
            f"corrupt or not an image"
        ) from None


def image_size(path: str | os.PathLike, *, decode: bool = False) -> tuple[int, int]:
    """``(height, width)`` of an image as displayed (EXIF orientation applied),
    read from the header; with ``decode=True`` the whole image is decoded so
    that truncated or corrupt files are caught. Raises :class:`ImageReadError`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageReadError(f"image file not found: '{path}'")
    try:
        from PIL import Image

        with Image.open(path) as im:
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
