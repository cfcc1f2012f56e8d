"""Photos as test input: centre crops of an ImageFolder's real photos (``tests/kernels``), and photo-like
images made here (``tests/decode``, ``tests/loader``): a smooth random field with fine noise and hard
edges, so a window shifted by a few pixels or resampled differently shows up in a mean absolute difference."""
import io
from pathlib import Path

import numpy as np
from PIL import Image


def center_crops(root: Path, count: int = 3, size: int = 224) -> np.ndarray:
    """(count, 3, size, size) uint8: the first ``count`` photos under ``root`` (ImageFolder), each resized
    (bicubic) so its short side is ``size`` and centre-cropped to a square."""
    files = sorted(root.glob("*/*.JPEG"))[:count]
    out = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            s = size / min(im.size)
            im = im.resize((max(size, round(im.size[0] * s)), max(size, round(im.size[1] * s))), Image.BICUBIC)
            left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
            out.append(np.asarray(im.crop((left, top, left + size, top + size))).transpose(2, 0, 1))
    return np.stack(out)


def photo_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like (height, width) RGB image (see the module docstring)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 24 + 2, width // 24 + 2, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float64)
    yy, xx = np.mgrid[:height, :width]
    edges = 60.0 * (((xx // 37) + (yy // 29)) % 2)[..., None]   # a checker of hard edges
    return Image.fromarray(np.clip(base + edges + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8))


def encoded(im: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    """``im`` saved as ``fmt`` (Pillow's save options in ``kw``)."""
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def bad_component(jpeg: bytes) -> bytes:
    """``jpeg`` whose scan names a component its frame does not have: libjpeg refuses it from the headers."""
    data = bytearray(jpeg)
    data[data.find(b"\xff\xda") + 5] = 9
    return bytes(data)
