"""The colour policy of every Pillow decode in vitdata (the same as DALI's decoder): EXIF orientation
applied; grayscale, CMYK, palette and RGBA converted to RGB; 16-bit images scaled to 8 bits by 1/257."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps


def decode_rgb(data: bytes) -> Image.Image:
    """Encoded bytes -> 8-bit RGB PIL image, EXIF orientation applied, 16-bit scaled by 1/257."""
    im = Image.open(io.BytesIO(data))
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8), "L")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im
