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

import hashlib
import math
import struct
from typing import NamedTuple

# Mixed into the seed of the window's generator so it never shares a stream with another draw of vitdata.
_CROP_STREAM = 0xC809


class CropBox(NamedTuple):
    """A window in source pixels (after EXIF orientation): left ``x``, top ``y``, width ``w``, height ``h``."""
    x: int
    y: int
    w: int
    h: int


class WindowRng:
    """Uniform draws from a counter-mode BLAKE2b stream of a 40-byte key: each draw hashes (key, counter).
    A window needs 2-4 draws per try, so this costs a few microseconds per sample where seeding a NumPy
    ``PCG64`` or a Mersenne Twister per sample cost ~10x more in the source's hot loop."""

    def __init__(self, key: bytes):
        self.key, self.counter = key, 0

    def random(self) -> float:
        """A float in [0, 1) with 53 random bits."""
        self.counter += 1
        digest = hashlib.blake2b(self.key + struct.pack("<q", self.counter), digest_size=8).digest()
        return (int.from_bytes(digest, "little") >> 11) / 9007199254740992.0

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()

    def randint(self, lo: int, hi: int) -> int:
        """An int in [lo, hi], both included."""
        return lo + min(hi - lo, int(self.random() * (hi - lo + 1)))


def crop_rng(seed: int, epoch: int, rank: int, position: int) -> WindowRng:
    """The generator of the window of one sample: a pure function of (seed, epoch, rank, position in the
    epoch), so a resumed, replayed or re-sharded epoch draws the same windows at the same positions."""
    return WindowRng(struct.pack("<5q", int(seed), int(epoch), int(rank), int(position), _CROP_STREAM))


def sample_crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
                    rng: WindowRng, attempts: int = 10) -> CropBox:
    """A random-resized-crop window inside a ``width`` x ``height`` image (see the module docstring)."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return CropBox(rng.randint(0, width - w), rng.randint(0, height - h), w, h)
    aspect = width / height
    if aspect < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif aspect > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    w, h = max(1, min(w, width)), max(1, min(h, height))
    return CropBox((width - w) // 2, (height - h) // 2, w, h)
