"""Reading images: one reader from the file to the model's frame.

`open_image` reads the header only (no size limit yet), `load_image` decodes to 8-bit RGB (EXIF
rotation applied, transparency onto white, 16-bit/float and palette images converted), shrinking
huge images cheaply without a full-size decode and refusing decompression bombs it cannot shrink;
`transform_image` is the official resize and centre crop to the model's size (pipeline spec §5.4).
`read_image` is the whole image as a tensor, within Pillow's own size limit.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from engine.errors import MediaError
from engine.media.files import require_file

# Above this many pixels an image is shrunk cheaply (JPEG DCT scaling, else `reduce`) to about twice
# the needed size before the exact transform; at or below it the result is the official transform's.
PRESHRINK_PIXELS = 16_000_000


def open_image(path: str | Path, *, load: bool = False):
    """Open an image file: by default its header only, with no size limit yet (`load_image` decides
    how to decode); with `load`, its pixels as stored, within Pillow's own size limit (what
    `media_info` and `read_metadata` look at: format, mode, text chunks)."""
    from PIL import Image, UnidentifiedImageError

    path = require_file(path)
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            if not load:
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                Image.MAX_IMAGE_PIXELS = None
            image = Image.open(path)
            if load:
                image.load()
            return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise MediaError(f"cannot read image {path}: {error}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def load_image(image, min_side: Optional[int] = None):
    """Decode an opened image to 8-bit RGB (`image_to_rgb`), shrinking huge ones without a full-size
    decode.

    With `min_side`, above PRESHRINK_PIXELS JPEGs are decoded at 1/2..1/8 scale (`draft`) and other
    formats up to Pillow's own bomb limit are decoded and `reduce`d, keeping at least 2 * `min_side`
    pixels on the short side; larger non-JPEG images are refused.
    """
    from PIL import Image

    name = Path(image.filename or "image").name
    width, height = image.size
    factor = min(width, height) // (2 * min_side) if min_side and width * height > PRESHRINK_PIXELS else 1
    if factor >= 2:
        if image.format == "JPEG":
            image.draft(None, (width // factor, height // factor))
        elif Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
            raise MediaError(
                f"{name} is {width}x{height}: too large to decode (at most {Image.MAX_IMAGE_PIXELS // 1_000_000} "
                "megapixels except for JPEG); scale it down first."
            )
    try:
        image.load()
        rgb = image_to_rgb(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise MediaError(f"cannot decode image {name}: {error}") from None
    factor = min(rgb.size) // (2 * min_side) if factor >= 2 else 1
    return rgb.reduce(factor) if factor >= 2 else rgb


def image_to_rgb(image):
    """A loaded PIL image as 8-bit RGB: EXIF rotation applied, transparency composited onto white,
    16-bit/float and palette images converted (scaled, not clipped)."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # Pillow's RGB conversion clips 16-bit values at 255; scale them to 8 bits instead.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode != "F" else max(float(values.max()), 1.0)
        image = Image.fromarray(np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def read_image(path: str | Path):
    """A whole image as a torch uint8 tensor [H, W, 3] (RGB), converted as `load_image` does."""
    return to_tensor(load_image(open_image(path, load=True)))


def to_tensor(image):
    """An RGB PIL image as a torch uint8 tensor [H, W, 3]."""
    import torch

    return torch.from_numpy(np.array(image, dtype=np.uint8))


def resized_size(width: int, height: int, target_w: int, target_h: int) -> tuple[int, int]:
    """The official transform's resize: the side that fits is the target, the other floored."""
    if width / height <= target_w / target_h:
        size = (target_w, int(target_w / (width / height)))
    else:
        size = (int((width / height) * target_h), target_h)
    # Float error can floor a matching side one pixel short (spec pitfall 20): never below the target.
    return max(size[0], target_w), max(size[1], target_h)


def transform_image(image, height: int, width: int):
    """PIL RGB image -> uint8 [height, width, 3]: official resize (LANCZOS) and centre crop."""
    import torch
    from PIL import Image

    new_w, new_h = resized_size(image.width, image.height, width, height)
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), resample=Image.LANCZOS)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    array = np.array(image, dtype=np.uint8)[top:top + height, left:left + width]
    return torch.from_numpy(np.ascontiguousarray(array))
