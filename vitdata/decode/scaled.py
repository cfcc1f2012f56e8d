"""Decoding a JPEG at the scale the step needs.

A step that outputs S x S pixels from a w x h window of a W x H photo needs no more than S pixels across
the window. libjpeg-turbo can run the inverse DCT at 1/2, 1/4 or 1/8 of the size (a reduced IDCT per 8x8
block, then upsampling and colour conversion on 4, 16 or 64 times fewer pixels), and Pillow asks for it
with ``Image.draft``. :func:`reduction_factor` picks the largest factor r that keeps the window at least S
pixels across after the reduction (``w / r >= S`` and ``h / r >= S``: a reduced decode is never upsampled),
and :func:`decode_region` decodes at 1/r and returns the pixels around the window with the window's exact
(fractional) bounds, so the resize that follows reads the same window of the scene as after a full decode.

What it saves: the IDCT, upsampling, colour conversion and the resize's input shrink by r^2; the
entropy (Huffman) decoding of the whole file does not, so the saving is largest on large, moderately
compressed photos. What it costs: the reduced IDCT acts as a box filter before the resize's own filter;
on ImageNet photos the mean absolute difference from a full decode + the same resize is well under
2/255 (the tests pin it).

Only plain JPEGs take this route (:attr:`Header.reducible`): a 3-component (YCbCr or RGB) JPEG whose EXIF
orientation is absent or 1. PNG, grayscale and CMYK JPEGs and EXIF-rotated photos are decoded in full.
"""
from __future__ import annotations

import io
import math
from typing import NamedTuple

import numpy as np
from PIL import Image, JpegImagePlugin

from vitdata.decode.crop import CropBox

REDUCTIONS = (8, 4, 2)          # libjpeg-turbo's power-of-two DCT scalings, largest first
_ORIENTATION = 0x0112           # EXIF tag
_TRANSPOSED = (5, 6, 7, 8)      # orientations that swap width and height


class Header(NamedTuple):
    """What a decode needs to know before it starts: the size after EXIF orientation, and whether the
    file may be decoded at a reduced scale."""
    width: int
    height: int
    reducible: bool


def reduction_factor(box_w: int, box_h: int, out_w: int, out_h: int) -> int:
    """The largest r of :data:`REDUCTIONS` with ``box_w / r >= out_w`` and ``box_h / r >= out_h``, else 1."""
    for r in REDUCTIONS:
        if box_w >= r * out_w and box_h >= r * out_h:
            return r
    return 1


def probe(data: bytes) -> Header:
    """The :class:`Header` of encoded bytes from Pillow's lazy open (the header only, no pixels). Raises
    what Pillow raises when it cannot open the bytes."""
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    try:
        orientation = int(im.getexif().get(_ORIENTATION, 1))
    except Exception:   # an unreadable EXIF block: decode in full, where exif_transpose decides
        return Header(w, h, False)
    if orientation in _TRANSPOSED:
        w, h = h, w
    reducible = isinstance(im, JpegImagePlugin.JpegImageFile) and im.mode == "RGB" and orientation == 1
    return Header(w, h, reducible)


def open_scaled(data: bytes, factor: int) -> tuple[Image.Image, float]:
    """(RGB image decoded at 1/``factor``, the factor libjpeg applied). ``data`` must be :attr:`Header.reducible`.

    The request is ``(W // factor, H // factor)``: Pillow picks the largest DCT scaling whose output is at
    least that large, which is exactly ``factor`` (the output is ``ceil(W / factor)`` wide)."""
    im = Image.open(io.BytesIO(data))
    width = im.size[0]
    _, scaled = im.draft("RGB", (max(1, width // factor), max(1, im.size[1] // factor)))
    im.load()
    return im, width / scaled[2]


def decode_region(data: bytes, box: CropBox, factor: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Decode ``data`` at 1/``factor`` and cut the whole pixels that hold ``box``.

    Returns ``pixels`` (h, w, 3) uint8 and ``roi`` = (top, left, bottom, right): the window in the pixels'
    own coordinates, fractional, for a resize that reads exactly that region. Pixel k of a 1/r decode
    covers source pixels [k r, (k + 1) r), so source coordinate c is c / r there."""
    im, r = open_scaled(data, factor)
    x0, y0, x1, y1 = box.x / r, box.y / r, (box.x + box.w) / r, (box.y + box.h) / r
    ix0, iy0 = int(math.floor(x0)), int(math.floor(y0))
    ix1, iy1 = min(im.size[0], int(math.ceil(x1))), min(im.size[1], int(math.ceil(y1)))
    pixels = np.asarray(im.crop((ix0, iy0, ix1, iy1)))
    return pixels, (y0 - iy0, x0 - ix0, y1 - iy0, x1 - ix0)


def scaled_box(box: CropBox, factor: float) -> tuple[float, float, float, float]:
    """``box`` as Pillow's ``resize(box=...)`` takes it, in the coordinates of a 1/``factor`` decode."""
    return box.x / factor, box.y / factor, (box.x + box.w) / factor, (box.y + box.h) / factor
