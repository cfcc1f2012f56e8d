"""The random-resized-crop window, drawn from the image's size before any pixel is decoded.

Both backends draw it here, so a window depends only on (seed, epoch, rank, position in the epoch) and the
image's size after EXIF orientation: never on how the image is then decoded (full, ROI, or at 1/2, 1/4,
1/8 scale), nor on the backend, nor on the worker that draws it.

The draw is torchvision's ``RandomResizedCrop`` rule (Szegedy et al.): up to ``attempts`` tries of an area
fraction uniform in ``scale`` and a log-uniform aspect ratio in ``ratio``, rounded to whole pixels; a
window that fits is placed uniformly; after the last failed try, the centred window with the ratio
clamped into ``ratio``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# Mixed into the seed of the window's generator so it never shares a stream with another draw of vitdata.
_CROP_STREAM = 0xC809


class CropBox(NamedTuple):
    """A window in source pixels (after EXIF orientation): left ``x``, top ``y``, width ``w``, height ``h``."""
    x: int
    y: int
    w: int
    h: int


def crop_rng(seed: int, epoch: int, rank: int, position: int) -> np.random.Generator:
    """The generator of the window of one sample: a pure function of (seed, epoch, rank, position in the
    epoch), so a resumed, replayed or re-sharded epoch draws the same windows at the same positions."""
    return np.random.Generator(np.random.PCG64(
        np.random.SeedSequence([int(seed), int(epoch), int(rank), int(position), _CROP_STREAM])))


def sample_crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
                    rng: np.random.Generator, attempts: int = 10) -> CropBox:
    """A random-resized-crop window inside a ``width`` x ``height`` image (see the module docstring)."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return CropBox(int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h)
    aspect = width / height
    if aspect < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif aspect > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    w, h = max(1, min(w, width)), max(1, min(h, height))
    return CropBox((width - w) // 2, (height - h) // 2, w, h)
